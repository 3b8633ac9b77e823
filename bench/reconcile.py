"""Benchmark: the issue's speed figures for ``diff`` and ``sync``, ratios taken in the same run.

Every figure is a real process (the CLI as users run it, or a bare script doing the floor's work)
against ``reconciler registry serve`` on loopback with 20 ms added to every call. Each process is
measured by ``wait4``: wall time, CPU (user + system, of the process and the children it waited
for) and peak RSS (the largest process of the tree).

- The floor: the simplest single-process, plain-stdlib program doing the work a no-op diff cannot
  avoid: tomllib-parse every file, fetch the list once with http.client, decode it. No httpx,
  no pydantic, no pool.
- No-op ``diff`` of N models (1,000, 10,000 and 50,000) against the floor, with files named
  after their ids and not (a naming warning per file): a first run (empty parse cache) and a
  repeated run (nothing changed, cache warm). Floor, first and repeated runs are interleaved and
  each figure is the median of R runs; ratios are of medians from the same run.
- First ``sync`` of M new models (default 1,000) at concurrency 4 to 64: models per second.
- A second ``sync`` right after: zero writes counted at the server.

Run: ``.venv/bin/python -m bench.reconcile [--sizes 1000,10000] [--sync-models M] [--runs R]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx
import tomli_w

from bench.isolate import isolate
from reconciler.server.app import make_entry
from reconciler.server.store import Store

API = "/api/v1/llm/models/registry"
LATENCY_MS = 20
START_DEADLINE = 20.0
SIZES = (1_000, 10_000, 50_000)
CONCURRENCIES = (4, 8, 16, 32, 64)

# Plain stdlib, one process: read + parse every file, one GET, decode the answer. Nothing else.
FLOOR_SCRIPT = """
import http.client, json, os, sys, tomllib
root, url, key, api = sys.argv[1:5]
for folder, _, names in os.walk(root):
    for name in names:
        if name.endswith(".toml"):
            with open(os.path.join(folder, name), "rb") as f:
                tomllib.load(f)
host, port = url.removeprefix("http://").split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=60)
conn.request("GET", api, headers={"Authorization": "Bearer " + key})
response = conn.getresponse()
assert response.status == 200, response.status
json.loads(response.read())
"""

# The naive client: one add call after the other, stdlib only.
SEQUENTIAL_SCRIPT = """
import http.client, json, os, sys, tomllib
root, url, key, api = sys.argv[1:5]
host, port = url.removeprefix("http://").split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=60)
headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
for name in sorted(os.listdir(root)):
    with open(os.path.join(root, name), "rb") as f:
        body = json.dumps(tomllib.load(f))
    conn.request("POST", api, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    assert response.status < 300, response.status
"""


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    name: str
    figure: str
    target: str = ""
    ok: bool | None = None


def definition(i: int) -> dict[str, object]:
    return {
        "id": f"meetkai:bench-{i:05d}",
        "provider": "openai-compatible",
        "modelId": f"bench-{i:05d}",
        "displayName": f"Bench model {i}",
        "baseUrl": "https://models.example.com/v1",
        "apiFormat": "responses",
        "created": 1704067200,
        "auth": {"type": "api-key", "envVar": "CUSTOM_MODEL_API_KEY"},
        "capabilities": {
            "modalities": {"input": ["text"], "output": ["text"]},
            "reasoning": True,
            "supportsTemperature": True,
        },
        "contextWindow": 131072,
        "rpm": 120,
        "defaultParams": {"temperature": 0.2, "topP": 0.95},
        "healthCheck": {"url": "https://models.example.com/health", "method": "GET"},
    }


def write_models(directory: Path, count: int, named: bool = True) -> None:
    """``count`` model files; unless ``named``, as ``model-N.toml`` (a naming warning each)."""
    directory.mkdir(parents=True)
    for i in range(count):
        name = f"meetkai_bench-{i:05d}.toml" if named else f"model-{i:05d}.toml"
        (directory / name).write_text(tomli_w.dumps(definition(i)), encoding="utf-8")


def seed_db(path: Path, count: int) -> None:
    """A registry database already holding the ``count`` bench models (a no-op diff's peer)."""
    store = Store(path)
    now = int(time.time() * 1000)
    store.put_many(make_entry(definition(i), created_at=now, updated_at=now) for i in range(count))
    store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MKA1_")}


class Server:
    """``reconciler registry serve`` in the background with added latency."""

    def __init__(self, tmp: Path, db: str) -> None:
        self.key = secrets.token_urlsafe(16)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = tmp / f"serve-{self.url.rsplit(':', 1)[1]}.log"
        args = ["--port", self.url.rsplit(":", 1)[1], "--db", db, "--api-key", self.key]
        args += ["--latency-ms", str(LATENCY_MS)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "registry", "serve", *args],
                stdout=log,
                stderr=log,
                env=clean_env(),
            )
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=60,
            trust_env=False,
        )
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                self.http.get("/_control")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    sys.exit("registry did not start: " + self.log_path.read_text())
                time.sleep(0.05)

    def counts(self) -> dict[str, int]:
        return self.http.get("/_control").json()["counts"]

    def reset_counts(self) -> None:
        self.http.post("/_control", json={"reset_counts": True}).raise_for_status()

    def env(self) -> dict[str, str]:
        return {**clean_env(), "MKA1_API_URL": self.url, "MKA1_API_KEY": self.key}

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Measured(NamedTuple):
    """One process run: wall and CPU seconds, peak RSS in MB."""

    wall: float
    cpu: float
    rss: float


def timed(args: list[str], env: dict[str, str], expect: int = 0) -> Measured:
    """Run a process to completion and measure it."""
    start = time.perf_counter()
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True
    )
    # wait4: this child's own rusage, with that of the children it waited for (worker
    # processes), so CPU and peak RSS are the CLI's and nobody else's on the machine.
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    stderr = process.stderr.read() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if code != expect:
        sys.exit(f"{' '.join(args[:4])}... exited {code}, expected {expect}:\n{stderr}")
    return Measured(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


def median(runs: list[Measured]) -> Measured:
    """Each field's median over the runs."""
    return Measured(*(statistics.median(r[i] for r in runs) for i in range(3)))


def figure(m: Measured, floor: Measured | None = None) -> str:
    out = f"{m.wall:.2f} s wall, {m.cpu:.2f} s CPU"
    if floor is not None:
        out += f" ({m.wall / floor.wall:.2f}x / {m.cpu / floor.cpu:.2f}x)"
    return out


def settle(since: float) -> None:
    """Wait until files written at ``since`` are old enough for the parse cache to trust."""
    time.sleep(max(0.0, since + 2.5 - time.time()))


def bench_diff(tmp: Path, models: int, runs: int, named: bool) -> list[Row]:
    """Floor, first (cold cache) and repeated (warm cache) no-op diff, interleaved."""
    tag = "named" if named else "unnamed"
    directory = tmp / f"models-{models}-{tag}"
    write_models(directory, models, named)
    written = time.time()
    db = tmp / f"noop-{models}-{tag}.db"
    seed_db(db, models)
    server = Server(tmp, str(db))
    floors, firsts, repeats = [], [], []
    try:
        settle(written)
        floor_args = [sys.executable, "-c", FLOOR_SCRIPT, str(directory), server.url, server.key]
        floor_args.append(API)
        diff = cli("diff", "--dir", str(directory))
        for n in range(runs):  # interleaved, so load on the shared machine hits all alike
            cache = tmp / f"cache-{models}-{tag}-{n}"  # a fresh one: the first run writes it
            env = {**server.env(), "XDG_CACHE_HOME": str(cache)}
            floors.append(timed(floor_args, env))
            firsts.append(timed(diff, env))
            repeats.append(timed(diff, env))
        server.reset_counts()
        timed(diff, server.env())
        writes = server.counts()["writes"]
    finally:
        server.stop()
    floor, first, repeat = median(floors), median(firsts), median(repeats)
    what = f"{models:,} files{'' if named else ', not named after their ids'}"
    # The targets are set at 10,000 files; the other sizes show the slope.
    aim = models == 10_000
    first_ok = first.wall <= floor.wall and first.cpu <= 1.3 * floor.cpu
    peak = max(r.rss for r in firsts)
    return [
        Row(f"floor: parse {what} + list once", figure(floor)),
        Row(f"no-op diff, first run, {what}", figure(first, floor),
            "<= 1.0x / 1.3x" if aim else "", first_ok if aim else None),
        Row(f"no-op diff, repeated, {what}", figure(repeat, floor),
            "<= 0.5x wall" if aim else "", repeat.wall <= 0.5 * floor.wall if aim else None),
        Row(f"peak RSS, first / repeated diff, {what}",
            f"{peak:.0f} / {max(r.rss for r in repeats):.0f} MB",
            "<= 100 MB" if aim else "", peak <= 100 if aim else None),
        Row(f"no-op diff writes, {what}", str(writes), "0", writes == 0),
    ]  # fmt: skip


def bench_sync(tmp: Path, models: int, runs: int) -> list[Row]:
    """First sync of ``models`` new models at each concurrency: models per second, over the
    whole run and over its writes alone (the run less a ``sync --dry-run`` of the same files
    against the same empty registry: start, load, list and plan, measured alongside)."""
    directory = tmp / f"sync-{models}"
    write_models(directory, models)
    rows: list[Row] = []
    server = Server(tmp, ":memory:")
    try:
        args = [sys.executable, "-c", SEQUENTIAL_SCRIPT, str(directory), server.url, server.key]
        sequential = timed([*args, API], server.env())
    finally:
        server.stop()
    rows.append(Row(f"sequential add loop (stdlib), {models:,} models",
                    f"{sequential.wall:.2f} s ({models / sequential.wall:.0f}/s)"))  # fmt: skip
    rates: dict[int, float] = {}
    for concurrency in CONCURRENCIES:
        walls, cpus, writes = [], [], []
        for n in range(runs):
            server = Server(tmp, ":memory:")
            try:
                run = cli("sync", "--dir", str(directory), "--concurrency", str(concurrency))
                env = {**server.env(), "RECONCILER_NO_CACHE": "1"}
                dry = timed([*run, "--dry-run"], env)
                m = timed(run, env)
                added = server.counts()["add"]
                if added != models:
                    sys.exit(f"sync at concurrency {concurrency} added {added} of {models}")
                if concurrency == CONCURRENCIES[0] and n == 0:
                    server.reset_counts()
                    timed(run, env)
                    again = server.counts()["writes"]
                    rows.append(Row("second sync: writes at the server", str(again), "0",
                                    again == 0))  # fmt: skip
            finally:
                server.stop()
            walls.append(m.wall)
            cpus.append(m.cpu)
            writes.append(max(m.wall - dry.wall, 1e-3))
        rates[concurrency] = models / statistics.median(writes)
        target, ok = "", None
        if concurrency == 32 and 16 in rates:
            target, ok = ">= 1.6x the rate at 16", rates[32] >= 1.6 * rates[16]
        first = min(rates)
        rows.append(Row(
            f"first sync of {models:,} new models, concurrency {concurrency}",
            f"writes {rates[concurrency]:.0f}/s ({rates[concurrency] / rates[first]:.2f}x at"
            f" {first}); run {models / statistics.median(walls):.0f}/s"
            f" ({statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} s CPU)",
            target, ok,
        ))  # fmt: skip
    return rows


def run(
    sizes: tuple[int, ...] = SIZES,
    sync_models: int = 1_000,
    runs: int = 3,
    big_runs: int = 3,
) -> list[Row]:
    """Every figure of the issue, as table rows (``big_runs`` for sizes over 10,000)."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        for size in sizes:
            for named in (True, False):
                rows += bench_diff(Path(tmp), size, runs if size <= 10_000 else big_runs, named)
        if sync_models:
            rows += bench_sync(Path(tmp), sync_models, runs)
    return rows


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("measure", "figure", "target", "met"):
        table.add_column(column)
    for row in rows:
        met = "" if row.ok is None else ("yes" if row.ok else "NO")
        table.add_row(row.name, row.figure, row.target, met)
    Console(highlight=False, width=max(Console().width, 140)).print(table)


def markdown(rows: list[Row], title: str) -> str:
    """The same rows as a Markdown table: what the README's Speed section pastes."""
    out = [f"_{title}_", "", "| measure | figure | target | met |", "|---|---|---|---|"]
    for row in rows:
        met = "" if row.ok is None else ("yes" if row.ok else "**no**")
        out.append(f"| {row.name} | {row.figure} | {row.target} | {met} |")
    return "\n".join(out)


def load_note() -> str:
    """What else the machine was doing: the load average when the run ended."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.1f} (1 min) / {five:.1f} (5 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="diff sizes")
    parser.add_argument("--sync-models", type=int, default=1_000, help="0: no sync figures")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--big-runs", type=int, default=3, help="runs above 10,000 files")
    args = parser.parse_args()
    isolate()
    sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    rows = run(sizes, args.sync_models, args.runs, args.big_runs)
    title = f"reconcile benchmark ({LATENCY_MS} ms added per call, {load_note()})"
    print_table(rows, title)
    print(markdown(rows, title))


if __name__ == "__main__":
    main()
