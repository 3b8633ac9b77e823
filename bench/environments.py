"""Environments: a no-op ``diff`` of N models against one environment and against three.

Three local registries (20 ms added per call), each holding the same N entries and accepting
only its own key; the files are read once whatever the number of environments, so three should
cost well under three times one. Wall time of the CLI as users run it, median of interleaved
runs.

Run: ``.venv/bin/python -m bench.environments [--models N] [--runs R]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.reconcile import (
    LATENCY_MS,
    Row,
    Server,
    clean_env,
    cli,
    definition,
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


def run(models: int = 10_000, runs: int = 3) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-envs-") as tmp:
        return bench_environments(Path(tmp), models, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = run(args.models, args.runs)
    print_table(rows, f"environments benchmark ({LATENCY_MS} ms per call, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
