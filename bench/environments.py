"""Environments: a no-op ``diff`` of N models against one environment and against three; and
``watch``: how soon a saved file reaches one environment, and all three.

Local registries (20 ms added per call), each holding the same N entries and accepting only
its own key. diff: the files are read once whatever the number of environments, so three should
cost well under three times one (wall time of the CLI as users run it, median of interleaved
runs). watch: two daemons run side by side, ``--env dev`` (one registry) and ``--all-envs``
(three), each on its own copy of the files; edits alternate between them, and a change has
reached a daemon's environments when every one of its registries holds it (the latest
``updated_at`` the registries stamped, minus the moment of the save).

Run: ``.venv/bin/python -m bench.environments [--models N] [--runs R] [--daemon-models N]
[--edits E]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import tomli_w

from bench.isolate import isolate
from bench.reconcile import (
    LATENCY_MS,
    Row,
    Server,
    clean_env,
    cli,
    definition,
    free_port,
    print_table,
    timed,
    write_models,
)
from reconciler.server.app import make_entry
from reconciler.server.store import Store

NAMES = ("dev", "staging", "prod")


def bench_environments(tmp: Path, models: int, runs: int) -> list[Row]:
    directory = tmp / f"models-{models}"
    write_models(directory, models)
    seed = tmp / "seed.db"
    store = Store(seed)
    now = int(time.time() * 1000)
    store.put_many(make_entry(definition(i), created_at=now, updated_at=now) for i in range(models))
    store.close()
    servers = []
    try:
        for name in NAMES:
            db = tmp / f"{name}.db"
            shutil.copy(seed, db)
            servers.append(Server(tmp, str(db)))
        config = tmp / "reconciler.toml"
        config.write_text(
            "\n".join(
                f'[environments.{n}]\nregistry_url = "{s.url}"\napi_key_env = "{n.upper()}_KEY"'
                for n, s in zip(NAMES, servers, strict=True)
            )
        )
        keys = {f"{n.upper()}_KEY": s.key for n, s in zip(NAMES, servers, strict=True)}
        env = {**clean_env(), **keys}
        base = ["diff", "--dir", str(directory), "--config", str(config)]
        ones, alls = [], []
        for _ in range(runs):  # interleaved, so load on the shared machine hits both alike
            ones.append(timed(cli(*base, "--env", "dev"), env)[0])
            alls.append(timed(cli(*base, "--all-envs"), env)[0])
        for s in servers:
            s.reset_counts()
        timed(cli(*base, "--all-envs"), env)
        writes = sum(s.counts()["writes"] for s in servers)
        lists = [s.counts()["list"] for s in servers]
    finally:
        for s in servers:
            s.stop()
    one, three = statistics.median(ones), statistics.median(alls)
    ratio = three / one
    return [
        Row(f"no-op diff of {models:,} models, 1 environment", f"{one:.2f} s"),
        Row(f"no-op diff of {models:,} models, 3 environments", f"{three:.2f} s ({ratio:.2f}x)",
            "well under 3x (<= 1.5x)", ratio <= 1.5),
        Row("3-environment diff: writes / list calls per registry", f"{writes} / {lists}",
            "0 / [1, 1, 1]", writes == 0 and lists == [1, 1, 1]),
    ]  # fmt: skip


class Daemon:
    """``reconciler watch`` over the environments of ``config``, on its own copy of the files."""

    def __init__(self, tmp: Path, name: str, directory: Path, config: Path, *args: str) -> None:
        self.directory = directory
        self.log = tmp / f"watch-{name}.log"
        port = free_port()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                cli("watch", "--dir", str(directory), "--config", str(config),
                    "--listen", f"127.0.0.1:{port}", "--health-interval", "0", *args),
                stdout=log, stderr=log, env=self.env(config),
            )  # fmt: skip

    @staticmethod
    def env(config: Path) -> dict[str, str]:
        return {**clean_env(), **{k: v for k, v in KEYS.items() if k in config.read_text()}}

    def wait_ready(self, deadline: float = 300) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        sys.exit(f"the daemon never got ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


KEYS: dict[str, str] = {}


def _config(path: Path, servers: dict[str, Server]) -> Path:
    path.write_text(
        "\n".join(
            f'[environments.{n}]\nregistry_url = "{s.url}"\napi_key_env = "{n.upper()}_KEY"'
            for n, s in servers.items()
        )
    )
    KEYS.update({f"{n.upper()}_KEY": s.key for n, s in servers.items()})
    return path


def _reached(servers: list[Server], model_id: str, rpm: int, saved: float) -> float:
    """Seconds from the save until the last of ``servers`` held ``rpm`` (its own stamp)."""
    target = "/api/v1/llm/models/registry/" + quote(model_id, safe="")
    stamps: dict[int, float] = {}
    deadline = time.monotonic() + 30
    while len(stamps) < len(servers):
        for n, s in enumerate(servers):
            if n not in stamps:
                entry = s.http.get(target).json()
                if entry["definition"].get("rpm") == rpm:
                    stamps[n] = entry["updated_at"] / 1000
        if time.monotonic() > deadline:
            sys.exit(f"an edit of {model_id} never arrived")
        time.sleep(0.005)
    return max(stamps.values()) - saved


def bench_daemon(tmp: Path, models: int, edits: int) -> list[Row]:
    """p50/p95 from a save to the entry updated: one environment, and all three."""
    seed = tmp / "daemon-seed.db"
    store = Store(seed)
    now = int(time.time() * 1000)
    store.put_many(make_entry(definition(i), created_at=now, updated_at=now) for i in range(models))
    store.close()
    servers: dict[str, Server] = {}
    daemons: list[Daemon] = []
    try:
        for name in ("solo", *NAMES):
            db = tmp / f"daemon-{name}.db"
            shutil.copy(seed, db)
            servers[name] = Server(tmp, str(db))
        one = _config(tmp / "one.toml", {"solo": servers["solo"]})
        three = _config(tmp / "three.toml", {n: servers[n] for n in NAMES})
        for name in ("one", "three"):
            write_models(tmp / f"daemon-{name}", models)
        daemons = [
            Daemon(tmp, "one", tmp / "daemon-one", one, "--env", "solo"),
            Daemon(tmp, "three", tmp / "daemon-three", three, "--all-envs"),
        ]
        for d in daemons:
            d.wait_ready()
        rng = random.Random(models)
        latencies: dict[int, list[float]] = {1: [], 3: []}
        for n in range(edits):
            for d, registries in ((daemons[0], [servers["solo"]]),
                                  (daemons[1], [servers[x] for x in NAMES])):  # fmt: skip
                i = rng.randrange(models)
                body = {**definition(i), "rpm": 1000 + n}
                time.sleep(rng.uniform(0.05, 0.15))  # both daemons idle, at a random phase
                path = d.directory / f"meetkai_bench-{i:05d}.toml"
                tmp_path = path.with_name(f".{path.name}.tmp")
                tmp_path.write_text(tomli_w.dumps(body), encoding="utf-8")
                saved = time.time()
                os.replace(tmp_path, path)
                latencies[len(registries)].append(
                    _reached(registries, str(body["id"]), 1000 + n, saved)
                )
    finally:
        for d in daemons:
            d.stop()
        for s in servers.values():
            s.stop()
    p50 = {k: statistics.median(v) for k, v in latencies.items()}
    p95 = {k: sorted(v)[round(0.95 * (len(v) - 1))] for k, v in latencies.items()}
    ratio = p50[3] / p50[1]
    return [
        Row(f"watch: save -> entry updated, 1 environment ({models:,} files)",
            f"p50 {p50[1] * 1000:.0f} ms, p95 {p95[1] * 1000:.0f} ms"),
        Row(f"watch: save -> entry updated in all 3 environments ({models:,} files)",
            f"p50 {p50[3] * 1000:.0f} ms ({ratio:.2f}x), p95 {p95[3] * 1000:.0f} ms",
            "as fast as one (p50 <= 1.3x)", ratio <= 1.3),
    ]  # fmt: skip


def run(
    models: int = 10_000, runs: int = 3, daemon_models: int = 1_000, edits: int = 30
) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-envs-") as tmp:
        rows = bench_environments(Path(tmp), models, runs)
        return rows + bench_daemon(Path(tmp), daemon_models, edits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--daemon-models", type=int, default=1_000)
    parser.add_argument("--edits", type=int, default=30, help="Edits per daemon.")
    args = parser.parse_args()
    isolate()
    rows = run(args.models, args.runs, args.daemon_models, args.edits)
    print_table(rows, f"environments benchmark ({LATENCY_MS} ms per call, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
