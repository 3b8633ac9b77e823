"""Benchmark: ``reconciler watch`` at growing directory sizes, every figure from one run per size.

For each size (default 1,000, 10,000, 20,000 and 50,000 files; the registry pre-filled to match,
so the first sync writes nothing) it starts ``reconciler registry serve``, times a no-op
``reconciler diff`` of the same directory (median of ``--diff-runs``, each with an empty parse
cache), then starts ``reconciler watch`` (health on; ``--starts`` times up to 20,000 files, once
at 50,000) and measures:

- start -> ready (wall, and the daemon's CPU with its worker processes; the median start),
  against the diff;
- ``/healthz`` polled every 25 ms: the slowest answer over every start and during a full resync
  (SIGHUP), which is also timed;
- file saved (temp file + rename) -> the registry's get showing the new value, over ``--edits``
  saves: p50 / p95, and the daemon's CPU per save;
- the size of ``/status`` (default and ``?models=all``);
- one health round: models probed and seconds, against the interval;
- the daemon's memory high-water (VmHWM) after all of that.

Ratios (save p50 against the smallest size, ready against the diff) come from the same run.
The last line is ``RESULT <json>`` for ``python -m bench``.

Run: ``.venv/bin/python -m bench.daemon_latency [--sizes 1000,10000,20000,50000] [--edits 40]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.isolate import isolate
from reconciler.server.app import make_entry
from reconciler.server.store import Store
from reconciler.source import load_file

API = "/api/v1/llm/models/registry"
HEALTH_INTERVAL = 30.0
TICK = os.sysconf("SC_CLK_TCK")


def model_file(i: int, rpm: int) -> str:
    return f"""id = "bench:model-{i:05d}"
provider = "openai-compatible"
modelId = "model-{i:05d}"
displayName = "Bench model {i}"
baseUrl = "https://models.example.com/v1"
apiFormat = "responses"
created = 1704067200
contextWindow = 131072
rpm = {rpm}

[auth]
type = "api-key"
envVar = "BENCH_API_KEY"

[capabilities]
reasoning = true
supportsTemperature = true

[capabilities.modalities]
input = ["text"]
output = ["text"]

[healthCheck]
mode = "off"
"""


def path_of(directory: Path, i: int) -> Path:
    return directory / f"bench_model-{i:05d}.toml"


def save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(what: str, check, deadline: float, log: Path) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}:\n{log.read_text(errors='replace')[-3000:]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (its worker processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def high_water_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(found.group(1)) / 1024 if found else 0.0


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and its children (the file-reading workers): what
    the pod's memory counts, shared pages split between the processes that share them."""
    pids = [str(pid)]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += (task / "children").read_text().split()
    total = 0
    for p in pids:
        try:
            found = re.search(
                r"^Pss:\s+(\d+) kB", Path(f"/proc/{p}/smaps_rollup").read_text(), re.M
            )
        except OSError:
            continue
        total += int(found.group(1)) if found else 0
    return total / 1024


class Poller(threading.Thread):
    """GET /healthz every 25 ms; each answered call's (sent at, seconds). Every 100 ms, the
    daemon's memory with its workers (``pid`` once started)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, float]] = []
        self.first: float | None = None
        self.done = threading.Event()
        self.pid: int | None = None
        self.pss_max = 0.0

    def run(self) -> None:
        with httpx.Client(timeout=30, trust_env=False) as http:
            tick = 0
            while not self.done.is_set():
                tick += 1
                if self.pid is not None and tick % 4 == 0:
                    with contextlib.suppress(OSError):
                        self.pss_max = max(self.pss_max, tree_pss_mb(self.pid))
                sent = time.perf_counter()
                try:
                    http.get(self.url)
                except httpx.TransportError:
                    time.sleep(0.025)
                    continue
                took = time.perf_counter() - sent
                self.first = self.first or sent
                self.samples.append((sent, took))
                time.sleep(max(0.0, 0.025 - took))

    def worst(self, start: float, end: float) -> float:
        return max((t for s, t in self.samples if start <= s <= end), default=0.0)


def fill(directory: Path, db: Path, size: int) -> None:
    """The files, and the registry holding exactly what they declare."""
    directory.mkdir()
    path_of(directory, 0).write_text(model_file(0, 100))
    template = load_file(path_of(directory, 0)).body
    assert template is not None
    now = int(time.time() * 1000)
    entries = []
    for i in range(size):
        path_of(directory, i).write_text(model_file(i, 100))
        body = copy.deepcopy(template)
        body.update(id=f"bench:model-{i:05d}", modelId=f"model-{i:05d}")
        body["displayName"] = f"Bench model {i}"
        entries.append(make_entry(body, created_at=now, updated_at=now))
    store = Store(db)
    store.put_many(entries)
    store.close()


def timed_diff(directory: Path, env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of a first no-op ``reconciler diff`` (exit 0 asserted)."""
    walls, cpus = [], []
    for _ in range(runs):
        # A first diff each time (an empty parse cache): the daemon's start reads every file.
        fresh = {**env, "XDG_CACHE_HOME": tempfile.mkdtemp(dir=directory.parent)}
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "diff", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=fresh,
        )  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
        walls.append(time.perf_counter() - started)
        cpus.append(usage.ru_utime + usage.ru_stime)
        if os.waitstatus_to_exitcode(status) != 0:
            assert process.stderr is not None
            sys.exit(f"diff was not a no-op: {process.stderr.read().decode()[-2000:]}")
    return statistics.median(walls), statistics.median(cpus)


def run_size(size: int, edits: int, diff_runs: int, starts: int, tmp: Path) -> dict[str, Any]:
    directory, db = tmp / f"models-{size}", tmp / f"registry-{size}.db"
    fill(directory, db, size)
    key, reg_port, port = secrets.token_urlsafe(16), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKA1_")}
    env.update(MKA1_API_URL=f"http://127.0.0.1:{reg_port}", MKA1_API_KEY=key)
    log_path = tmp / f"bench-{size}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    registry = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "registry", "serve",
         "--port", str(reg_port), "--db", str(db), "--api-key", key],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    daemon: subprocess.Popen[bytes] | None = None
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{reg_port}{API}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        trust_env=False,
    )
    web = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False)
    poller = Poller(f"http://127.0.0.1:{port}/healthz")
    out: dict[str, Any] = {"files": size}
    try:
        wait_until("the registry", lambda: api.get("/x").status_code == 404, 20, log_path)
        out["diff_s"], out["diff_cpu_s"] = timed_diff(directory, env, diff_runs)

        poller.start()
        readies: list[tuple[float, float]] = []
        worst_start = first_answer = 0.0
        for _ in range(starts):  # the median start; the last daemon runs on
            if daemon is not None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=60)
            for _ in range(5):  # the free port may be taken by another process meanwhile
                offset = log_path.stat().st_size if log_path.exists() else 0
                poller.first = None
                started = time.perf_counter()
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "reconciler", "watch", "--dir", str(directory),
                     "--listen", f"127.0.0.1:{port}", "--health-interval", str(HEALTH_INTERVAL),
                     "--resync-interval", "3600"],
                    stdout=log, stderr=log, env=env,
                )  # fmt: skip
                poller.pid = daemon.pid
                while daemon.poll() is None and poller.first is None:
                    time.sleep(0.01)
                if daemon.poll() is not None and b"cannot listen" in log_path.read_bytes():
                    port = free_port()
                    web = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
                    poller.url = f"http://127.0.0.1:{port}/healthz"
                    continue
                break
            assert daemon is not None
            probe = functools.partial(web.get, "/readyz")  # this start's port
            wait_until("/readyz", lambda p=probe: p().status_code == 200, 600, log_path)
            ready_at = time.perf_counter()
            readies.append((ready_at - started, cpu_seconds(daemon.pid)))
            first_answer = max(first_answer, (poller.first or ready_at) - started)
            # The slowest answer over every start: the worst case, not a median.
            worst_start = max(worst_start, poller.worst(poller.first or ready_at, ready_at))
        out["ready_s"] = statistics.median(r for r, _ in readies)
        out["ready_cpu_s"] = statistics.median(c for _, c in readies)
        out["starts"] = len(readies)
        out["healthz_first_s"] = first_answer
        out["healthz_start_max_ms"] = worst_start * 1000

        # The first health round starts once synced: the resync and saves run before the next.
        def rounds() -> list[str]:
            text = log_path.read_bytes()[offset:].decode(errors="replace")
            return [x for x in text.splitlines() if "health checked" in x]

        wait_until("a health round", rounds, 120, log_path)
        line = rounds()[0]
        probed = re.search(r"models=(\d+)", line)
        out["health_probed"] = int(probed.group(1)) if probed else 0
        took = re.search(r"seconds=([\d.]+)", line)
        out["health_round_s"] = float(took.group(1)) if took else 0.0

        # A full resync on demand, timed by the daemon and watched from /healthz.
        before = web.get("/status").json()["last_run"]["at"]
        cpu0, t0 = cpu_seconds(daemon.pid), time.perf_counter()
        daemon.send_signal(signal.SIGHUP)
        wait_until(
            "the resync",
            lambda: (
                (r := web.get("/status").json()["last_run"])["at"] != before and r["kind"] == "full"
            ),
            600,
            log_path,
        )
        out["resync_s"] = web.get("/status").json()["last_run"]["seconds"]
        out["resync_cpu_s"] = cpu_seconds(daemon.pid) - cpu0
        out["healthz_resync_max_ms"] = poller.worst(t0, time.perf_counter()) * 1000

        rng = random.Random(size)
        latencies: list[float] = []
        cpu0 = cpu_seconds(daemon.pid)
        for n in range(edits):
            i = rng.randrange(size)
            rpm = 1000 + n
            target = f"/{quote(f'bench:model-{i:05d}', safe='')}"
            time.sleep(rng.uniform(0.05, 0.15))  # the watcher idle, at a random phase
            t0 = time.perf_counter()
            save(path_of(directory, i), model_file(i, rpm))
            deadline = t0 + 10
            while api.get(target).json()["definition"].get("rpm") != rpm:
                if time.perf_counter() > deadline:
                    sys.exit(f"edit {n} never arrived:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.002)
            latencies.append(time.perf_counter() - t0)
        out["edit_cpu_ms"] = (cpu_seconds(daemon.pid) - cpu0) / edits * 1000
        out["p50_ms"] = percentile(latencies, 0.5) * 1000
        out["p95_ms"] = percentile(latencies, 0.95) * 1000

        out["status_kb"] = len(web.get("/status").content) / 1024
        out["status_all_kb"] = len(web.get("/status?models=all").content) / 1024

        out["health_interval_s"] = HEALTH_INTERVAL
        out["memory_mb"] = high_water_mb(daemon.pid)
        out["pss_max_mb"] = poller.pss_max
        return out
    finally:
        poller.done.set()
        for process in (daemon, registry):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
        api.close()
        web.close()
        log.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,20000,50000", help="File counts.")
    parser.add_argument("--edits", type=int, default=40, help="Saves timed per size.")
    parser.add_argument("--diff-runs", type=int, default=3, help="No-op diffs per size.")
    parser.add_argument("--starts", type=int, default=3, help="Daemon starts per size.")
    args = parser.parse_args()
    isolate()
    sizes = [int(s) for s in args.sizes.split(",")]

    print(
        f"daemon benchmark ({args.starts} starts per size up to 20,000, 1 at 50,000: median "
        "ready, slowest /healthz of all; health on)"
    )
    head = (
        "     files  ready (cpu)    diff (cpu)  ready/diff  /healthz start/resync max"
        "  resync (cpu)   save p50/p95  cpu/save  /status (all)    health round  VmHWM  +workers"
    )
    print(head)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            # 50,000 files: one diff (each is several seconds on 2 cores).
            several = size <= 20_000
            runs, starts = (args.diff_runs, args.starts) if several else (1, 1)
            r = run_size(size, args.edits, runs, starts, Path(tmp))
            r["ready_per_diff"] = r["ready_s"] / r["diff_s"]
            results.append(r)
            print(
                f"  {size:8d} {r['ready_s']:5.2f} ({r['ready_cpu_s']:4.1f}) s "
                f"{r['diff_s']:5.2f} ({r['diff_cpu_s']:4.1f}) s {r['ready_per_diff']:6.2f}x "
                f"{r['healthz_start_max_ms']:8.0f} / {r['healthz_resync_max_ms']:5.0f} ms "
                f"{r['resync_s']:11.2f} ({r['resync_cpu_s']:4.1f}) s "
                f"{r['p50_ms']:5.0f} / {r['p95_ms']:4.0f} ms {r['edit_cpu_ms']:6.1f} ms "
                f"{r['status_kb']:6.0f} ({r['status_all_kb']:5.0f}) kB "
                f"{r['health_probed']:6d} in {r['health_round_s']:4.1f} s "
                f"{r['memory_mb']:5.0f} MB {r['pss_max_mb']:5.0f} MB",
                flush=True,
            )
    base = results[0]
    for r in results[1:]:
        r["p50_vs_first"] = r["p50_ms"] / base["p50_ms"]
        first = f"{base['files']:,}"
        print(f"  save p50 at {r['files']:,} files: {r['p50_vs_first']:.2f}x that at {first}")
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
