"""Benchmark: list 10,000 entries from a local registry served as users run it.

Fills a fresh SQLite file through the server's store (the fast path), starts
``reconciler registry serve`` on it, times ``GET /api/v1/llm/models/registry`` from a client and
prints the figures. Run: ``.venv/bin/python -m bench.registry_list [--entries N] [--runs N]``.
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
from pathlib import Path

import httpx

from bench.isolate import isolate
from bench.reconcile import definition
from reconciler.server.app import make_entry
from reconciler.server.store import Store

API = "/api/v1/llm/models/registry"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    isolate()

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        started = time.perf_counter()
        store = Store(db)
        now = int(time.time() * 1000)
        store.put_many(
            make_entry(definition(i), created_at=now, updated_at=now) for i in range(args.entries)
        )
        store.close()
        fill = time.perf_counter() - started

        key, port = secrets.token_urlsafe(16), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MKA1_")}
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "registry", "serve",
             "--port", str(port), "--db", str(db), "--api-key", key],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
                trust_env=False,
            ) as client:
                deadline = time.monotonic() + 15
                while True:
                    try:
                        client.get("/_control")
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline or server.poll() is not None:
                            sys.exit(
                                "registry did not start: " + (Path(tmp) / "serve.log").read_text()
                            )
                        time.sleep(0.05)
                answer, parse, size, count = [], [], 0, 0
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    response = client.get(API)
                    response.raise_for_status()
                    t1 = time.perf_counter()
                    body = response.json()
                    answer.append(t1 - t0)
                    parse.append(time.perf_counter() - t1)
                    size, count = len(response.content), len(body["data"])
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)
            log.close()

    print(f"registry list benchmark: {count} entries, {args.runs} runs, {size / 1e6:.2f} MB answer")
    print(f"  fill (direct store insert, once)  {fill * 1000:8.1f} ms")
    print("                                    median      min      max")
    for name, runs in (("GET list (answer received)", answer), ("client json parse", parse)):
        ms = [t * 1000 for t in runs]
        print(f"  {name:<32}{statistics.median(ms):7.1f} ms{min(ms):6.1f} ms{max(ms):6.1f} ms")


if __name__ == "__main__":
    main()
