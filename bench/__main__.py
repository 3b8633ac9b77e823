"""``make bench``: every benchmark in one run, one table of figures and targets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from bench.environments import run as run_environments
from bench.isolate import isolate
from bench.reconcile import LATENCY_MS, Row, load_note, markdown, print_table, run


def registry_list_rows() -> list[Row]:
    """bench.registry_list as a process; its median list time as a row."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.registry_list", "--runs", "5"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    found = re.search(r"GET list \(answer received\)\s+([\d.]+) ms", result.stdout)
    if result.returncode or not found:
        return [Row("registry list of 10,000 entries", "failed: " + result.stderr[-200:], "")]
    return [Row("registry list of 10,000 entries (no latency)", f"{found.group(1)} ms")]


def daemon_rows() -> list[Row]:
    """bench.daemon_latency as a process: its per-size figures as rows, with the issue's
    targets where it sets one (save p50 and /healthz at 20,000 files, memory at 10,000)."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.daemon_latency"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    found = re.search(r"^RESULT (.*)$", result.stdout, re.MULTILINE)
    if not found:
        return [Row("daemon", "failed: " + (result.stderr or result.stdout)[-300:], "", False)]
    sizes = json.loads(found.group(1))
    first = sizes[0]["files"]
    rows = []
    for r in sizes:
        n = r["files"]
        at = f"{n:,} files"
        rows.append(
            Row(
                f"daemon: file saved -> entry updated, {at} (CPU per save)",
                f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms ({r['edit_cpu_ms']:.0f} ms)"
                + (
                    f"; p50 {r['p50_vs_first']:.2f}x that at {first:,}"
                    if "p50_vs_first" in r
                    else ""
                ),
                "p50 <= 1.3x that at 1,000" if n == 20_000 else "p50 <= 500 ms, p95 <= 1 s",
                r.get("p50_vs_first", 0) <= 1.3
                if n == 20_000
                else r["p50_ms"] <= 500 and r["p95_ms"] <= 1000,
            )
        )
        rows.append(
            Row(
                f"daemon: start -> ready, {at}, vs no-op diff (wall, CPU)",
                f"{r['ready_s']:.2f} s ({r['ready_cpu_s']:.1f} s CPU) vs {r['diff_s']:.2f} s "
                f"({r['diff_cpu_s']:.1f} s): {r['ready_per_diff']:.2f}x",
                "<= 1.5x" if n == 20_000 else "",
                r["ready_per_diff"] <= 1.5 if n == 20_000 else None,
            )
        )
        worst = max(r["healthz_start_max_ms"], r["healthz_resync_max_ms"])
        rows.append(
            Row(
                f"daemon: slowest /healthz at start / during a full resync, {at}",
                f"{r['healthz_start_max_ms']:.0f} / {r['healthz_resync_max_ms']:.0f} ms "
                f"(resync {r['resync_s']:.2f} s, {r['resync_cpu_s']:.1f} s CPU)",
                "<= 250 ms" if n <= 20_000 else "",
                worst <= 250 if n <= 20_000 else None,
            )
        )
        rows.append(
            Row(
                f"daemon: /status (default / ?models=all), {at}",
                f"{r['status_kb']:.1f} kB / {r['status_all_kb']:.0f} kB",
            )
        )
        rows.append(
            Row(
                f"daemon: one health round, {at} (interval {r['health_interval_s']:.0f} s)",
                f"{r['health_probed']:,} probed in {r['health_round_s']:.1f} s",
                "fits the interval",
                r["health_round_s"] <= r["health_interval_s"],
            )
        )
        rows.append(
            Row(
                f"daemon: memory high-water (VmHWM), health on, {at}",
                f"{r['memory_mb']:.0f} MB; with the file-reading workers at start (PSS) "
                f"{r['pss_max_mb']:.0f} MB",
                "<= 200 MB" if n == 10_000 else "",
                r["memory_mb"] <= 200 if n == 10_000 else None,
            )
        )
    return rows


def main() -> None:
    isolate()
    rows = run() + run_environments() + registry_list_rows() + daemon_rows()
    title = f"benchmarks ({LATENCY_MS} ms added per call, {load_note()})"
    print_table(rows, title)
    print(markdown(rows, title))  # the README's Speed table, as it is pasted there
    if any(row.ok is False for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
