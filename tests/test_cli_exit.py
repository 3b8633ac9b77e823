"""How a ``reconciler`` process starts and ends: one command built, the collector paused, the
fast exit at the real entry point (``cli.main``)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from conftest import RunningRegistry
from test_cli_reconcile import write_model

from reconciler.cli.common import AtExit


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_fast_exit_flushes_the_output_and_skips_the_teardown() -> None:
    done = _python(
        """
        import atexit, sys
        from reconciler.cli import fast_exit
        atexit.register(print, "teardown ran")
        print("out", end="")
        print("err", end="", file=sys.stderr)
        fast_exit(SystemExit(3))
        print("not reached")
        """
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, "out", "err")


def test_no_fast_exit_while_a_thread_or_a_child_process_still_runs() -> None:
    # The ordinary exit waits for them (and runs atexit): fast_exit returns and leaves it be.
    done = _python(
        """
        import multiprocessing, threading, time
        from reconciler.cli import fast_exit
        t = threading.Thread(target=time.sleep, args=(0.3,)); t.start()
        fast_exit(SystemExit(0)); print("thread: returned")
        t.join()
        p = multiprocessing.get_context("fork").Process(target=time.sleep, args=(0.3,)); p.start()
        fast_exit(SystemExit(0)); print("child: returned")
        p.join()
        fast_exit(SystemExit("a message")); print("message: returned")
        fast_exit(SystemExit(None))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["thread: returned", "child: returned", "message: returned"]


Run = Callable[..., subprocess.CompletedProcess[str]]


def test_in_process_runs_keep_nothing_for_the_exit(
    run_cli: Run, registry: RunningRegistry, tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    write_model(tmp_path / "models", "meetkai:kept")
    done = run_cli("diff", "--dir", str(tmp_path / "models"), env=registry.env())
    assert done.returncode == 2, done.stderr
    assert gc.isenabled()  # paused for the run (cli.reconcile.Collector), restored after it
    assert AtExit.kept is None  # only cli.main asks for it


def test_a_diff_process_exits_as_before(
    run_cli_process: Run, registry: RunningRegistry, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, "meetkai:a")
    first = run_cli_process("diff", "--dir", str(models), env=registry.env())
    assert first.returncode == 2, first.stderr  # pending
    assert "meetkai:a" in first.stdout
    gone = run_cli_process("diff", "--dir", str(tmp_path / "nope"), env=registry.env())
    assert gone.returncode == 1
    assert "no such directory" in gone.stderr


def test_a_run_builds_only_the_command_it_names() -> None:
    from reconciler.cli import COMMANDS, _app

    assert [c.name for c in _app("diff").registered_commands] == ["diff"]
    assert not _app("diff").registered_groups
    full = _app()
    assert [c.name for c in full.registered_commands] == list(COMMANDS)
    assert [g.name for g in full.registered_groups] == ["registry"]


def test_one_command_s_usage_errors_and_help_are_the_full_command_line_s(
    run_cli_process: Run, run_cli: Run, tmp_path: Path
) -> None:
    # The process runs diff alone (cli.main); in-process runs get every command (cli.app).
    for args in (["diff", "--bogus"], ["diff", "--out"], ["sync", "--concurrency", "0"]):
        alone, full = run_cli_process(*args, cwd=tmp_path), run_cli(*args, cwd=tmp_path)
        assert alone.returncode == full.returncode == 1
        assert alone.stderr.split() == full.stderr.split()
    alone, full = run_cli_process("diff", "--help"), run_cli("diff", "--help")
    assert alone.returncode == full.returncode == 0
    assert "Usage: reconciler diff [OPTIONS]" in alone.stdout
    assert "--registry-url" in alone.stdout
