"""Benchmark: from a model file saved to its registry entry updated, with ``reconciler watch``.

Starts ``reconciler registry serve`` and ``reconciler watch`` as subprocesses on a temp
directory, first with a few model files, then with 10,000 (the registry pre-filled to match,
so the first sync writes nothing). Each edit saves one file the way editors do (temp file +
rename) with a new ``rpm``, then polls the registry's get for that id until it shows the new
value. Prints p50/p95/max per size; the target is p50 <= 0.5 s and p95 <= 1 s.

Run: ``.venv/bin/python bench/daemon_latency.py [--sizes 5,10000] [--edits 60]``.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from reconciler.server.app import make_entry
from reconciler.server.store import Store
from reconciler.source import load_file

API = "/api/v1/llm/models/registry"
TARGET_P50, TARGET_P95 = 0.5, 1.0


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


def run_size(size: int, edits: int, tmp: Path) -> tuple[list[float], float, float]:
    """Latencies of ``edits`` saves with ``size`` files; also start-up and first-sync seconds."""
    directory = tmp / f"models-{size}"
    directory.mkdir()
    db = tmp / f"registry-{size}.db"
    store = Store(db)
    now = int(time.time() * 1000)
    entries = []
    for i in range(size):
        path = path_of(directory, i)
        path.write_text(model_file(i, 100))
        body = load_file(path).body
        assert body is not None
        entries.append(make_entry(body, created_at=now, updated_at=now))
    store.put_many(entries)
    store.close()

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
        timeout=10,
        trust_env=False,
    )
    status = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False)
    try:
        wait_until("the registry", lambda: api.get("/x").status_code == 404, 20, log_path)
        started = time.perf_counter()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "watch", "--dir", str(directory),
             "--listen", f"127.0.0.1:{port}", "--health-interval", "0"],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        wait_until("/readyz", lambda: status.get("/readyz").status_code == 200, 300, log_path)
        ready = time.perf_counter() - started
        first_sync = status.get("/status").json()["last_run"]["seconds"] or 0.0

        rng = random.Random(size)
        latencies: list[float] = []
        for n in range(edits):
            i = rng.randrange(size)
            rpm = 1000 + n
            target = f"/{quote(f'bench:model-{i:05d}', safe='')}"
            # Let the watcher go idle between edits, at a random phase of its step.
            time.sleep(rng.uniform(0.05, 0.15))
            t0 = time.perf_counter()
            save(path_of(directory, i), model_file(i, rpm))
            deadline = t0 + 10
            while True:
                if api.get(target).json()["definition"].get("rpm") == rpm:
                    latencies.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() > deadline:
                    sys.exit(f"edit {n} never arrived:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.002)
        return latencies, ready, first_sync
    finally:
        for process in (daemon, registry):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        api.close()
        status.close()
        log.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="5,10000", help="Comma-separated file counts.")
    parser.add_argument("--edits", type=int, default=60, help="Edits per size (>= 50).")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    print(f"daemon latency benchmark: file saved -> registry entry updated, {args.edits} edits")
    print(f"  target: p50 <= {TARGET_P50} s, p95 <= {TARGET_P95} s")
    print("     files   start->ready  first sync      p50      p95      max     mean  target")
    missed = False
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            lat, ready, first = run_size(size, args.edits, Path(tmp))
            p50, p95 = percentile(lat, 0.5), percentile(lat, 0.95)
            ok = p50 <= TARGET_P50 and p95 <= TARGET_P95
            missed |= not ok
            print(
                f"  {size:8d} {ready:12.2f} s {first:9.2f} s "
                f"{p50 * 1000:6.0f} ms{p95 * 1000:6.0f} ms{max(lat) * 1000:6.0f} ms"
                f"{statistics.mean(lat) * 1000:6.0f} ms  {'met' if ok else 'MISSED'}"
            )
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
