"""The ``reconciler`` command line (Typer): wires the adapters together, holds no logic of its own.

One module per command or group; each parses its options and wires the adapters. Exit codes are
in ``common``: 0 ok, 2 changes pending (diff), 1 anything else, usage errors included.
"""

from __future__ import annotations

import gc

# The collector off while the modules below load (their classes and pydantic's schemas are
# thousands of objects and no garbage): 80 collections, 12 ms of every command's start.
_collecting = gc.isenabled()
gc.disable()

import os
import sys
import threading
from typing import Annotated

# Two imports no command uses, a tenth of a no-op diff's start-up CPU when the machine is busy:
# pydantic reads the entry points of every installed distribution, looking for plugins, the first
# time a model is built (an explicit PYDANTIC_DISABLE_PLUGINS is kept), and httpx imports its
# own command line (click, pygments, rich.syntax) whenever click is installed (uvicorn needs it).
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # import fails: skipped

import typer

from . import export, health, reconcile, schema, validate, watch
from .common import AtExit, Group, console
from .interrupt import Interrupt, Interrupted
from .registry import registry_app

if _collecting:
    gc.enable()


def _app(only: str | None = None) -> typer.Typer:
    """The command line; with ``only``, that command alone (Typer builds the options of every
    command it holds before running one: a run needs only its own)."""
    made = typer.Typer(
        name="reconciler",
        cls=Group,
        help="Keep the MKA1 gateway's model registry in step with a directory of model files.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    made.callback()(_root)
    for name, command in COMMANDS.items():
        if only in (None, name):
            made.command(name)(command)
    if only in (None, "registry"):
        made.add_typer(registry_app, name="registry")
    return made


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"reconciler {version('reconciler')}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Keep the MKA1 gateway's model registry in step with a directory of model files."""


COMMANDS = {
    "validate": validate.validate,
    "diff": reconcile.diff,
    "sync": reconcile.sync,
    "export": export.export,
    "health": health.health,
    "watch": watch.watch,
    "schema": schema.schema,
}
app = _app()


def main() -> None:
    """Console-script entry point."""
    # What the imports built lives as long as the process: freeze it out of the collector's
    # view, and collect young objects less often. A no-op sync of 1,000 files spends ~15% of
    # its time in full collections otherwise; memory stays bounded (the bench checks it).
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    # A signal outside a command's own handling (diff/sync, watch and serve have theirs) ends a
    # one-shot command with 130/143, as shells expect; Typer would make Ctrl-C an exit 1.
    interrupt = Interrupt(console(stderr=True))
    AtExit.kept = []
    # The command named first (no option before it) is all this run needs of the command line.
    first = sys.argv[1] if len(sys.argv) > 1 else None
    run = _app(first) if first in COMMANDS else app
    try:
        with interrupt.guard():
            run(prog_name="reconciler")
    except Interrupted:
        interrupt.err.print(f"interrupted ({interrupt.signal_name})", markup=False)
        sys.exit(interrupt.exit_code)
    except SystemExit as done:
        fast_exit(done)
        raise


def fast_exit(done: SystemExit) -> None:
    """End the process now with ``done``'s status, skipping the interpreter's teardown (freeing
    a diff's million objects one by one: a twentieth of a no-op diff of 10,000 files), once the
    output is flushed. Returns (for the ordinary exit) when anything might still need that
    teardown: a thread other than daemon ones, a child process, a status that is not a number,
    output that cannot be flushed. Only at the process's own entry point, never in-process."""
    code = done.code
    if code is None:
        code = 0
    if type(code) is not int or not 0 <= code <= 255:
        return
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return
    children = sys.modules.get("multiprocessing")
    if children is not None and children.active_children():
        return
    try:
        logging = sys.modules.get("logging")
        if logging is not None:
            logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # a closed pipe and such: the ordinary exit reports it as it always did
        return
    os._exit(code)
