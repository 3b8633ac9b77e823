"""What every command shares: consoles, the common options, settings and config loading, exits.

Exit codes, for every command: 0 success / in sync, 1 error (invalid files, failed writes, the
registry unreachable or refusing the key), 2 ``diff`` found pending changes.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from ..config import ConfigError, FileConfig, Settings, load_config
from ..text import printable

if TYPE_CHECKING:
    from ..reconcile import Target

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


class UpdateMethod(StrEnum):
    ADD = "add"
    PATCH = "patch"


DirOpt = Annotated[
    Path, typer.Option("--dir", "-d", help="Directory of model files (*.toml, *.json).")
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o")]
RegistryUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--registry-url", help="Registry base URL [env: MKA1_API_URL].", show_default=False
    ),
]
OnBehalfOfOpt = Annotated[
    str | None,
    typer.Option(
        "--on-behalf-of",
        help="X-On-Behalf-Of user id [env: MKA1_ON_BEHALF_OF].",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Config file (owns, ignore, allow_env...) [default: ./reconciler.toml if present].",
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
UpdateMethodOpt = Annotated[
    UpdateMethod,
    typer.Option("--update-method", help="add (POST, 409 falls back to PATCH) or patch."),
]


def console(stderr: bool = False) -> Console:
    """A console that prints ids as they are (no emoji codes, no highlighting, no wrapping)."""
    # emoji=False: ids like "meetkai:a:b" must not print as "meetkai🅰b".
    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


def load_settings(err: Console) -> Settings:
    """Environment settings, or exit 1 with one line naming the bad variable."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        err.print(f"error: MKA1_{str(first['loc'][0]).upper()}: {first['msg']}", markup=False)
        raise typer.Exit(EXIT_ERROR) from None


def load_file_config(err: Console, path: Path | None) -> FileConfig:
    """The config file, or exit 1 naming every problem in it."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(f"error: {line}", markup=False)
        raise typer.Exit(EXIT_ERROR) from None


def fail(err: Console, message: str) -> NoReturn:
    """One line on stderr and exit 1: no traceback for a condition a user can fix."""
    err.print(f"error: {printable(message)}", markup=False)
    raise typer.Exit(EXIT_ERROR)


def registry_target(
    err: Console, config_path: Path | None, url: str | None, obo: str | None
) -> Target:
    """Where the registry is (flag, env, config file), or exit 1 saying what to set."""
    from .. import reconcile

    config = load_file_config(err, config_path)
    settings = load_settings(err)
    try:
        return reconcile.resolve_target(settings, config, registry_url=url, on_behalf_of=obo)
    except reconcile.SetupError as exc:
        fail(err, str(exc))
