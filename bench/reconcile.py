"""Benchmark: the issue's speed figures for ``diff`` and ``sync``, side by side in one run.

Every figure is wall time of a real process (the CLI as users run it, or a bare script doing the
floor's work) against ``reconciler registry serve`` on loopback with 20 ms added to every call:

- no-op ``diff`` of N models (default 10,000) vs the floor: a bare script that reads and parses
  the files with tomllib and fetches the list once; target at most 1.5x. Peak RSS of that diff
  (target under 300 MB).
- first ``sync`` of M new models (default 1,000) at concurrency 4, 8 and 16 vs a sequential loop
  of one add call per file; target at least 3.5x faster at concurrency 4.
- a second ``sync`` right after (median of three): zero writes counted at the server, at least
  50x faster than the sequential loop re-adding everything.

Run: ``.venv/bin/python -m bench.reconcile [--models N] [--sync-models M] [--runs R]``.
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

import httpx
import tomli_w

from reconciler.server.app import make_entry
from reconciler.server.store import Store

API = "/api/v1/llm/models/registry"
LATENCY_MS = 20
START_DEADLINE = 20.0

FLOOR_SCRIPT = """
import sys, tomllib, httpx
from pathlib import Path
for path in sorted(Path(sys.argv[1]).rglob("*.toml")):
    tomllib.loads(path.read_text(encoding="utf-8"))
with httpx.Client(base_url=sys.argv[2], headers={"Authorization": "Bearer " + sys.argv[3]},
                  trust_env=False, timeout=60) as client:
    response = client.get(sys.argv[4])
    response.raise_for_status()
    response.json()
"""

SEQUENTIAL_SCRIPT = """
import sys, tomllib, httpx
from pathlib import Path
with httpx.Client(base_url=sys.argv[2], headers={"Authorization": "Bearer " + sys.argv[3]},
                  trust_env=False, timeout=60) as client:
    for path in sorted(Path(sys.argv[1]).rglob("*.toml")):
        response = client.post(sys.argv[4], json=tomllib.loads(path.read_text(encoding="utf-8")))
        response.raise_for_status()
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


def write_models(directory: Path, count: int) -> None:
    directory.mkdir(parents=True)
    for i in range(count):
        path = directory / f"meetkai_bench-{i:05d}.toml"
        path.write_text(tomli_w.dumps(definition(i)), encoding="utf-8")


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


def timed(args: list[str], env: dict[str, str], expect: int = 0) -> tuple[float, float]:
    """Run a process to completion: (wall seconds, peak RSS in MB)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True
    )
    # wait4 gives this child's own rusage, so the peak RSS is the CLI's and nobody else's.
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    stderr = process.stderr.read() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if code != expect:
        sys.exit(f"{' '.join(args[:4])}... exited {code}, expected {expect}:\n{stderr}")
    return elapsed, usage.ru_maxrss / 1024


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


def bench_diff(tmp: Path, models: int, runs: int) -> list[Row]:
    directory = tmp / f"models-{models}"
    write_models(directory, models)
    db = tmp / "noop.db"
    store = Store(db)
    now = int(time.time() * 1000)
    store.put_many(make_entry(definition(i), created_at=now, updated_at=now) for i in range(models))
    store.close()
    server = Server(tmp, str(db))
    try:
        floor_args = [sys.executable, "-c", FLOOR_SCRIPT, str(directory), server.url, server.key]
        floor_args.append(API)
        floors, diffs, rss = [], [], []
        for _ in range(runs):  # interleaved, so load on the shared machine hits both alike
            floors.append(timed(floor_args, server.env())[0])
            elapsed, peak = timed(cli("diff", "--dir", str(directory)), server.env())
            diffs.append(elapsed)
            rss.append(peak)
        server.reset_counts()
        timed(cli("diff", "--dir", str(directory)), server.env())
        writes = server.counts()["writes"]
    finally:
        server.stop()
    floor, diff = statistics.median(floors), statistics.median(diffs)
    ratio = diff / floor
    return [
        Row(f"floor: parse {models:,} files + list once", f"{floor:.2f} s"),
        Row(f"no-op diff of {models:,} models", f"{diff:.2f} s ({ratio:.2f}x floor)", "<= 1.5x",
            ratio <= 1.5),
        Row("no-op diff writes", str(writes), "0", writes == 0),
        Row("peak RSS of that diff", f"{max(rss):.0f} MB", "< 300 MB", max(rss) < 300),
    ]  # fmt: skip


def bench_sync(tmp: Path, models: int) -> list[Row]:
    directory = tmp / f"sync-{models}"
    write_models(directory, models)
    rows: list[Row] = []

    server = Server(tmp, ":memory:")
    try:
        args = [sys.executable, "-c", SEQUENTIAL_SCRIPT, str(directory), server.url, server.key]
        sequential = timed([*args, API], server.env())[0]
        # The same loop again over existing entries: what "re-adding everything" costs.
        resequential = timed([*args, API], server.env())[0]
    finally:
        server.stop()
    rows.append(Row(f"sequential add loop, {models:,} models", f"{sequential:.2f} s"))

    for concurrency in (4, 8, 16):
        server = Server(tmp, ":memory:")
        try:
            run = cli("sync", "--dir", str(directory), "--concurrency", str(concurrency))
            first = timed(run, server.env())[0]
            added = server.counts()["add"]
            speedup = sequential / first
            target = ">= 3.5x" if concurrency == 4 else ""
            ok = (speedup >= 3.5 and added == models) if concurrency == 4 else added == models
            rows.append(
                Row(
                    f"first sync, concurrency {concurrency}",
                    f"{first:.2f} s ({speedup:.1f}x faster)",
                    target,
                    ok,
                )
            )
            if concurrency == 4:
                server.reset_counts()
                # Each repeat is the same no-op: the median of three damps a shared machine.
                second = statistics.median(timed(run, server.env())[0] for _ in range(3))
                writes = server.counts()["writes"]
                ratio = resequential / second
                rows.append(Row("second sync: writes at server", str(writes), "0", writes == 0))
                rows.append(
                    Row(
                        "second sync vs re-adding loop",
                        f"{second:.2f} s vs {resequential:.2f} s ({ratio:.0f}x faster)",
                        ">= 50x",
                        ratio >= 50,
                    )
                )
        finally:
            server.stop()
    return rows


def run(models: int = 10_000, sync_models: int = 1_000, runs: int = 3) -> list[Row]:
    """Every figure of the issue, as table rows."""
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        return bench_diff(Path(tmp), models, runs) + bench_sync(Path(tmp), sync_models)


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("measure", "figure", "target", "met"):
        table.add_column(column)
    for row in rows:
        met = "" if row.ok is None else ("yes" if row.ok else "NO")
        table.add_row(row.name, row.figure, row.target, met)
    Console(highlight=False, width=max(Console().width, 110)).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=10_000, help="models for the no-op diff")
    parser.add_argument("--sync-models", type=int, default=1_000, help="models for the syncs")
    parser.add_argument("--runs", type=int, default=3, help="diff/floor runs (median)")
    args = parser.parse_args()
    rows = run(args.models, args.sync_models, args.runs)
    print_table(
        rows, f"reconcile benchmark ({LATENCY_MS} ms added per call, {os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
