"""What every command shares: consoles, the common options, settings and config loading, exits.

Exit codes, like Terraform's ``-detailed-exitcode``: 0 success / in sync, 2 ``diff`` found
pending changes, 1 anything else (usage errors included, not Click's 2, which would read as
"changes pending" to a pipeline).
"""

from __future__ import annotations

import gc
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

try:  # Typer >= 0.20 carries its own copy of Click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError
from typer.core import TyperGroup

from ..config import ConfigError, FileConfig, Settings, load_config
from ..text import printable

if TYPE_CHECKING:
    from ..reconcile import Target

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
# What a piped console is wide: tables and lines are never cut to 80 columns in a CI log.
PIPE_WIDTH = 100_000


class Group(TyperGroup):
    """The command group: a usage error (unknown option, bad value) exits 1, not Click's 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            exc.exit_code = EXIT_ERROR
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            exc.exit_code = EXIT_ERROR
            raise


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


class PlanOutput(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    GITHUB = "github"


class UpdateMethod(StrEnum):
    ADD = "add"
    PATCH = "patch"


DirOpt = Annotated[
    Path, typer.Option("--dir", "-d", help="Directory of model files (*.toml, *.json).")
]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for programs.")
]
RegistryUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--registry-url",
        envvar="MKA1_API_URL",
        show_envvar=True,
        help="Registry base URL (else registry_url in reconciler.toml).",
        show_default=False,
    ),
]
OnBehalfOfOpt = Annotated[
    str | None,
    typer.Option(
        "--on-behalf-of",
        envvar="MKA1_ON_BEHALF_OF",
        show_envvar=True,
        help="X-On-Behalf-Of user id.",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Config file (owns, ignore, allow_env, lint_file_names...).",
        show_default="./reconciler.toml if present",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No warnings and no progress; errors still print.")
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="List every warning instead of summarising.")
]
SelectOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--select",
        "-s",
        help="Only ids matching this fnmatch pattern (repeatable); prune stays inside them.",
        show_default=False,
    ),
]
PruneOpt = Annotated[
    bool, typer.Option("--prune", help="Delete owned live entries no file declares (needs --owns).")
]
OwnsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--owns",
        help="fnmatch pattern of ids this reconciler owns (repeatable).",
        show_default=False,
    ),
]
MaxDeletesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-deletes",
        help="Refuse to prune more than this [default: 5, or max_deletes of the environment].",
        show_default=False,
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Prune even beyond --max-deletes.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Treat immutable conflicts as errors.")]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, help="Writes in flight at once.")
]
RpsOpt = Annotated[
    float | None,
    typer.Option(
        "--rps", min=0.001, help="Client-side limit, requests per second.", show_default=False
    ),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.001, help="Seconds per request.")]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        envvar="RECONCILER_NO_CACHE",
        show_envvar=True,
        help="Parse every file afresh: no parse cache read or written (else cache in "
        "reconciler.toml).",
    ),
]
UpdateMethodOpt = Annotated[
    UpdateMethod,
    typer.Option("--update-method", help="add (POST, 409 falls back to PATCH) or patch."),
]


class AtExit:
    """What a run leaves for the process's exit: with the real entry point's fast exit
    (``cli.main``), a run's large objects need not be freed one by one when it returns."""

    kept: list[object] | None = None  # a list only once cli.main has set one

    @classmethod
    def keep(cls, *objects: object) -> None:
        """Hold ``objects`` until the process ends (nothing is held when run in-process)."""
        if cls.kept is not None:
            cls.kept.extend(objects)


class Collector:
    """The garbage collector paused while a run loads, lists and plans (a million objects
    and no cycle: 10 collections, 20 ms of a no-op diff of 10,000 files); resumed before the
    first write, so a long sync collects as usual. In a process of its own (``cli.main``) what
    was built by then is frozen (it lives as long as the run: collecting it once would walk a
    million objects), and the collector stays off at the end, which is the process's end."""

    def __enter__(self) -> Collector:
        self._was = gc.isenabled()
        gc.disable()
        return self

    def resume(self) -> None:
        if self._was and not gc.isenabled():
            if AtExit.kept is not None:
                gc.freeze()
            gc.enable()

    def __exit__(self, *exc: object) -> None:
        if AtExit.kept is None:  # in-process (tests): the collector as it was
            self.resume()


def console(stderr: bool = False) -> Console:
    """A console that prints ids as they are (no emoji codes, no highlighting, no wrapping);
    when piped, so wide that nothing is ever cut."""
    # emoji=False: ids like "meetkai:a:b" must not print as "meetkai🅰b".
    c = Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)
    if not c.is_terminal:
        c.width = PIPE_WIDTH
    return c


def json_error(message: str) -> None:
    """On failure with ``--output json``: still one JSON object on stdout, with an ``error``."""
    import json

    from ..report import FORMAT_VERSION

    print(json.dumps({"formatVersion": FORMAT_VERSION, "error": message}, ensure_ascii=False))


def load_settings(err: Console, *, as_json: bool = False) -> Settings:
    """Environment settings, or exit 1 with one line naming the bad variable."""
    from pydantic import ValidationError

    try:
        return Settings.from_env()
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        fail(err, f"MKA1_{str(first['loc'][0]).upper()}: {first['msg']}", as_json=as_json)


def load_file_config(err: Console, path: Path | None, *, as_json: bool = False) -> FileConfig:
    """The config file, or exit 1 naming every problem in it."""
    try:
        return load_config(path)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        for line in lines:
            err.print(f"error: {line}", markup=False)
        if as_json:
            json_error("; ".join(lines))
        raise typer.Exit(EXIT_ERROR) from None


def fail(err: Console, message: str, *, as_json: bool = False) -> NoReturn:
    """One line on stderr (and a JSON ``error`` object on stdout with ``as_json``), exit 1: no
    traceback for a condition a user can fix."""
    err.print(f"error: {printable(message)}", markup=False)
    if as_json:
        json_error(message)
    raise typer.Exit(EXIT_ERROR)


def registry_target(
    err: Console,
    config_path: Path | None,
    url: str | None,
    obo: str | None,
    *,
    as_json: bool = False,
) -> Target:
    """Where the registry is (flag, env, config file), or exit 1 saying what to set."""
    from .. import reconcile

    config = load_file_config(err, config_path, as_json=as_json)
    settings = load_settings(err, as_json=as_json)
    try:
        return reconcile.resolve_target(settings, config, registry_url=url, on_behalf_of=obo)
    except reconcile.SetupError as exc:
        fail(err, str(exc), as_json=as_json)
