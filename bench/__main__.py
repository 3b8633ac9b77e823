"""``make bench``: every benchmark in one run, one table of figures and targets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench.environments import run as run_environments
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


def daemon_latency_rows() -> list[Row]:
    """bench/daemon_latency.py as a process; p50/p95 per directory size as rows."""
    script = Path(__file__).with_name("daemon_latency.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    rows = []
    for line in result.stdout.splitlines():
        found = re.match(r"\s+(\d+)\s.*?\s(\d+) ms\s*(\d+) ms\s*(\d+) ms.*(met|MISSED)$", line)
        if found:
            files, p50, p95, _, verdict = found.groups()
            rows.append(
                Row(
                    f"daemon: file saved -> entry updated, {int(files):,} files",
                    f"p50 {p50} ms, p95 {p95} ms",
                    "p50 <= 500 ms, p95 <= 1000 ms",
                    verdict == "met",
                )
            )
    if result.returncode and not rows:
        rows.append(Row("daemon latency", "failed: " + result.stderr[-200:], "", False))
    return rows


def main() -> None:
    rows = run() + run_environments() + registry_list_rows() + daemon_latency_rows()
    title = f"benchmarks ({LATENCY_MS} ms added per call, {load_note()})"
    print_table(rows, title)
    print(markdown(rows, title))  # the README's Speed table, as it is pasted there
    if any(row.ok is False for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
