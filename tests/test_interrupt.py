"""End to end: real signals to a CLI (and daemon) subprocess writing to the local registry with
added latency, so writes are in flight; and the registry killed in the middle of a sync.

Every wait is on a condition with a deadline; no sleep-and-hope.
"""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, RunningRegistry, clean_env, free_port
from helpers import minimal

DEADLINE = 30.0
CONCURRENCY = 4


def wait_for(what: str, check: Callable[[], object], deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def model_files(directory: Path, n: int) -> list[str]:
    """``n`` valid model files (JSON: the loader takes the API body as it is)."""
    directory.mkdir(exist_ok=True)
    ids = [f"meetkai:stop-{i:03d}" for i in range(n)]
    for model_id in ids:
        body = minimal(model_id, healthCheck={"mode": "off"})
        (directory / f"{model_id.replace(':', '_')}.json").write_text(json.dumps(body))
    return ids


class Cli(subprocess.Popen[str]):
    """A CLI subprocess whose stdout goes to a file: a pipe nobody reads while the test waits on
    the registry would block it (sync prints its whole plan before the first write). stderr
    stays a pipe, short enough, for tests that read it as it comes."""

    def __init__(self, registry: RunningRegistry, cwd: Path, *args: str) -> None:
        self.log = cwd / "cli.stdout"
        with open(self.log, "w") as out:
            super().__init__(
                [sys.executable, "-m", "reconciler", *args],
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                env=registry.env(),
                cwd=cwd,
            )

    def communicate(
        self, input: str | None = None, timeout: float | None = None
    ) -> tuple[str, str]:
        _, err = super().communicate(input, timeout)
        return self.log.read_text(), err


def cli(registry: RunningRegistry, cwd: Path, *args: str) -> Cli:
    return Cli(registry, cwd, *args)


def connected(port: int) -> bool:
    """Whether some socket on this host has a connection established to ``port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                return True
    return False


INTERRUPTED = re.compile(r"^interrupted: (\d+) applied, (\d+) not attempted$", re.M)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_sync_starts_no_new_write_and_reports_what_landed(
    registry_factory: Callable[..., RunningRegistry],
    tmp_path: Path,
    sig: signal.Signals,
    code: int,
) -> None:
    registry = registry_factory(extra_args=["--latency-ms", "400"])
    ids = model_files(tmp_path / "models.d", 40)
    proc = cli(registry, tmp_path, "sync", "--dir", "models.d", "--concurrency", str(CONCURRENCY))
    try:
        wait_for("a first round of writes", lambda: registry.counts()["writes"] >= CONCURRENCY)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    received = registry.counts()["writes"]
    match = INTERRUPTED.search(err)
    assert match, err
    applied, skipped = int(match[1]), int(match[2])
    assert applied == received and applied + skipped == len(ids) and skipped > 0
    # When it handled the signal: what had landed, and what was in flight. The registry then
    # received exactly those in flight, no more (nothing new started).
    stopping = re.search(
        rf"^{sig.name}: stopping: (\d+) write\(s\) landed, .* (\d+) in flight", err, re.M
    )
    assert stopping, err
    landed, in_flight = int(stopping[1]), int(stopping[2])
    assert in_flight <= CONCURRENCY and received == landed + in_flight
    # The report names every write that landed, and says the rest were not attempted.
    assert f"Applied: {applied} of {len(ids)} writes succeeded" in out
    assert out.count("not attempted: interrupted by " + sig.name) == skipped


def test_a_second_signal_abandons_the_writes_in_flight(
    process_registry_factory: Callable[..., RunningRegistry], tmp_path: Path
) -> None:
    registry = process_registry_factory(extra_args=["--latency-ms", "300"])
    model_files(tmp_path / "models.d", 20)
    proc = cli(registry, tmp_path, "sync", "--dir", "models.d", "--concurrency", "2")
    assert registry.process is not None and proc.stderr is not None
    try:
        wait_for("two writes", lambda: registry.counts()["writes"] >= 2)
        registry.process.send_signal(signal.SIGSTOP)  # the writes in flight now never end
        proc.send_signal(signal.SIGINT)
        ready, _, _ = select.select([proc.stderr], [], [], DEADLINE)
        first = proc.stderr.readline() if ready else ""
        assert first.startswith("SIGINT: stopping"), first
        proc.send_signal(signal.SIGINT)  # do not wait for them
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        registry.process.send_signal(signal.SIGCONT)
        proc.kill()
    assert proc.returncode == 130, err
    in_flight = int(re.findall(r"(\d+) in flight", first)[0])
    match = re.search(r"^interrupted: (\d+) applied, (\d+) not attempted, (\d+) failed$", err, re.M)
    assert match, err
    assert int(match[3]) == in_flight == out.count("abandoned while stopping") >= 1
    assert sum(map(int, match.groups())) == 20


@pytest.mark.parametrize(
    ("args", "sig", "code", "said"),
    [
        (("diff", "--dir", "models.d"), signal.SIGTERM, 143, "interrupted: 0 applied"),
        (("sync", "--dir", "models.d"), signal.SIGINT, 130, "interrupted: 0 applied"),
        (("export", "--dir", "out.d"), signal.SIGTERM, 143, "interrupted (SIGTERM)"),
        (("health", "--all"), signal.SIGINT, 130, "interrupted (SIGINT)"),
    ],
    ids=["diff", "sync", "export", "health"],
)
def test_a_signal_while_reading_the_registry_ends_a_one_shot_command(
    registry_factory: Callable[..., RunningRegistry],
    tmp_path: Path,
    args: tuple[str, ...],
    sig: signal.Signals,
    code: int,
    said: str,
) -> None:
    registry = registry_factory()
    registry.control(latency_ms=5000)
    model_files(tmp_path / "models.d", 2)
    port = int(registry.url.rsplit(":", 1)[1])
    proc = cli(registry, tmp_path, *args)
    try:
        wait_for("the list call", lambda: connected(port))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err.startswith(said), err
    assert "Traceback" not in err


def test_registry_killed_mid_sync_ends_it_saying_what_landed(
    process_registry_factory: Callable[..., RunningRegistry], tmp_path: Path
) -> None:
    registry = process_registry_factory(extra_args=["--latency-ms", "300"])
    ids = model_files(tmp_path / "models.d", 200)
    proc = cli(registry, tmp_path, "sync", "--dir", "models.d", "--concurrency", str(CONCURRENCY))
    try:
        wait_for("some writes", lambda: registry.counts()["writes"] >= 2 * CONCURRENCY)
        registry.kill()  # writes are in flight: their connections drop, then nothing listens
        killed = time.monotonic()
        _, err = proc.communicate(timeout=60)  # "within a minute at most"
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    gone = re.search(
        r"^error: the registry stopped answering: (\d+) write\(s\) landed, (\d+) failed, "
        r"(\d+) not attempted",
        err,
        re.M,
    )
    assert gone, err
    landed, failed, skipped = map(int, gone.groups())
    assert landed >= CONCURRENCY and failed <= CONCURRENCY and skipped > 100
    assert landed + failed + skipped == len(ids)
    assert err.count("retrying") <= 1  # one notice, not one per write
    # Not 15 s per remaining write: the breaker ends it (a generous bound, not a benchmark).
    assert time.monotonic() - killed < 30


def test_sigterm_stops_the_daemon_starting_writes_and_it_exits_0(
    registry_factory: Callable[..., RunningRegistry], tmp_path: Path
) -> None:
    registry = registry_factory(extra_args=["--latency-ms", "400"])
    model_files(tmp_path / "models.d", 40)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "reconciler", "watch", "--dir", str(tmp_path / "models.d")),
                *("--listen", f"127.0.0.1:{free_port()}", "--concurrency", "2"),
                *("--log-format", "json"),
            ],
            stdout=sink,
            stderr=sink,
            env=registry.env(),
            cwd=REPO,
        )
    try:
        wait_for("the daemon's first writes", lambda: registry.counts()["writes"] >= 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0
    finally:
        proc.kill()
    output = log.read_text()
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    received = registry.counts()["writes"]
    (stopping,) = [e for e in events if e["event"] == "stopping"]
    # Only the writes in flight when it stopped arrived after: nothing new started.
    assert stopping["in_flight"] <= 2
    assert received == stopping["writes_landed"] + stopping["in_flight"], output
    # Each write that landed is logged; the rest are counted as not attempted.
    landed = [e for e in events if e["event"] == "write" and e["ok"] is True]
    assert len(landed) == received < 40
    (skipped,) = [e for e in events if e["event"] == "writes not attempted"]
    assert skipped["count"] == 40 - received
    assert events[-1]["event"] == "stopped"


def test_a_hung_registry_ends_the_sync_too(
    process_registry_factory: Callable[..., RunningRegistry], tmp_path: Path
) -> None:
    registry = process_registry_factory(extra_args=["--latency-ms", "200"])
    ids = model_files(tmp_path / "models.d", 100)
    # At most 4 writes in flight (sync's default is higher), so most are never attempted.
    args = ("sync", "--dir", "models.d", "--timeout", "1", "--concurrency", str(CONCURRENCY))
    proc = cli(registry, tmp_path, *args)
    assert registry.process is not None
    try:
        wait_for("some writes", lambda: registry.counts()["writes"] >= CONCURRENCY)
        # Frozen: the kernel still accepts connections, but nothing ever answers.
        registry.process.send_signal(signal.SIGSTOP)
        _, err = proc.communicate(timeout=60)
    finally:
        registry.process.send_signal(signal.SIGCONT)
        proc.kill()
    assert proc.returncode == 1, err
    gone = re.search(r"stopped answering: (\d+) write\(s\) landed, (\d+) failed, (\d+) not", err)
    assert gone, err
    assert sum(map(int, gone.groups())) == len(ids) and int(gone[3]) > 50
    assert "no answer within 1 s" in err


@pytest.mark.parametrize(
    "args",
    [("sync", "--dir", "models.d"), ("export", "--dir", "out.d"), ("health", "--all")],
    ids=["sync", "export", "health"],
)
def test_a_dead_registry_is_announced_once_and_ends_the_command(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, args: tuple[str, ...]
) -> None:
    model_files(tmp_path / "models.d", 2)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**clean_env(), "MKA1_API_URL": url, "MKA1_API_KEY": "k"}
    started = time.monotonic()
    result = run_cli(*args, env=env, cwd=tmp_path)
    assert result.returncode == 1
    notice, error = result.stderr.splitlines()
    assert (
        notice
        == f"retrying for up to 2.5 s: cannot reach the registry at {url}: connection refused"
    )
    assert error.startswith(f"error: cannot reach the registry at {url}: connection refused")
    assert time.monotonic() - started < 15  # the 2.5 s budget, not the 15 s one
