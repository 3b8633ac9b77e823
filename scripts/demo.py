"""``make demo``: a local registry in the background, then validate, diff, sync, diff, health.

Starts ``reconciler registry serve`` on a free loopback port with an in-memory database and a
random key, runs each step as a user would (the CLI, as a process), checks every exit code, and
stops the registry whatever happens. Exit status 0 only when every step did what it should.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.rule import Rule

START_DEADLINE = 20.0
LISTENING = re.compile(r"registry listening on (http://\S+)")

console = Console(highlight=False)


def start_registry(key: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the registry on a free port; its URL once it answers, or exit naming the cause."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKA1_")}
    args = ["registry", "serve", "--port", "0", "--db", ":memory:", "--api-key", key]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args], stdout=log, stderr=log, env=env
        )
    deadline = time.monotonic() + START_DEADLINE
    url = None
    while time.monotonic() < deadline and process.poll() is None:
        found = LISTENING.search(log_path.read_text(errors="replace"))
        if found:
            url = found.group(1)
            try:
                httpx.get(f"{url}/_control", headers={"Authorization": f"Bearer {key}"}, timeout=1)
                return process, url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    stop(process)
    sys.exit(f"the local registry did not start:\n{log_path.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def step(title: str, explain: str, args: list[str], env: dict[str, str], ok: set[int]) -> bool:
    """Run one CLI step under a heading; whether its exit code was one of ``ok``."""
    console.print()
    console.print(Rule(f"[bold]{title}[/bold]", align="left"))
    console.print(f"[dim]{explain}[/dim]")
    console.print(f"[bold cyan]$ reconciler {' '.join(args)}[/bold cyan]")
    sys.stdout.flush()
    code = subprocess.run([sys.executable, "-m", "reconciler", *args], env=env).returncode
    good = code in ok
    verdict = "[green]as expected[/green]" if good else "[bold red]UNEXPECTED[/bold red]"
    console.print(f"[dim]exit code {code}[/dim] ({verdict})")
    return good


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="models.d", help="model files to reconcile")
    directory = parser.parse_args().dir

    key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="reconciler-demo-") as tmp:
        log_path = Path(tmp) / "registry.log"
        console.print(Rule("[bold]Starting a local registry[/bold]", align="left"))
        process, url = start_registry(key, log_path)
        console.print(f"registry at {url} (in-memory database, a random API key)")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MKA1_")},
            "MKA1_API_URL": url,
            "MKA1_API_KEY": key,
        }
        steps = [
            ("1. validate", "Check every model file; nothing is sent anywhere.",
             ["validate", "--dir", directory], {0}),
            ("2. diff", "What sync would change: everything is new (exit 2 = changes pending).",
             ["diff", "--dir", directory], {2}),
            ("3. sync", "Make the registry match the files.",
             ["sync", "--dir", directory], {0}),
            ("4. diff again", "Nothing left to do (exit 0 = in sync).",
             ["diff", "--dir", directory], {0}),
            ("5. health", "Ask the registry to probe each model's endpoint. The shipped examples "
             "point at example hosts, so most show as unavailable (exit 1): that is expected.",
             ["health", "--dir", directory, "--check"], {0, 1}),
        ]  # fmt: skip
        results = []
        try:
            for title, explain, args, ok in steps:
                results.append(step(title, explain, args, env, ok))
        finally:
            stop(process)
        console.print()
        console.print(Rule("[bold]Done[/bold]", align="left"))
        console.print("registry stopped")
    if all(results):
        console.print("[green]every step did what it should[/green]")
        return 0
    failed = [s[0] for s, good in zip(steps, results, strict=False) if not good]
    console.print(f"[bold red]unexpected result in: {', '.join(failed)}[/bold red]")
    return 1


if __name__ == "__main__":
    sys.exit(main())
