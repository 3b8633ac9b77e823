"""``reconciler export``: write each registry entry as a model file."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import defaults
from ..text import printable
from . import environments
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    ConfigOpt,
    DirOpt,
    OnBehalfOfOpt,
    RegistryUrlOpt,
    TimeoutOpt,
    console,
    fail,
    load_file_config,
    load_settings,
    registry_target,
)
from .environments import AllEnvsOpt, EnvOpt

if TYPE_CHECKING:
    from rich.console import Console

    from ..reconcile import Target
    from ..spec import Entry


def export(
    directory: DirOpt = Path(defaults.DIRECTORY),
    include_immutable: Annotated[
        bool,
        typer.Option("--include-immutable", help="Also export the gateway's read-only entries."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace files that exist.")
    ] = False,
    with_secrets: Annotated[
        bool,
        typer.Option(
            "--with-secrets",
            help="Write inline secrets as they are instead of ${VARIABLE} placeholders.",
        ),
    ] = False,
    registry_url: RegistryUrlOpt = None,
    on_behalf_of: OnBehalfOfOpt = None,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = defaults.TIMEOUT,
    env: EnvOpt = None,
    all_envs: AllEnvsOpt = False,
) -> None:
    """Write each registry entry as a model file. Exit 1 when an entry could not be exported.
    With several environments, each is exported to its own folder under --dir."""

    from .. import reconcile
    from ..registry import RegistryError

    out, err = console(), console(stderr=True)
    file_config = load_file_config(err, config)
    if not environments.wanted(file_config, env, all_envs):
        target = registry_target(err, config, registry_url, on_behalf_of)

        async def run() -> list[Entry] | RegistryError:
            client = reconcile.make_client(
                target, timeout=timeout, on_retry=lambda notice: err.print(notice, markup=False)
            )
            try:
                async with client:
                    return await client.list()
            except RegistryError as exc:
                return exc

        # Through ``concurrently`` so that SIGINT/SIGTERM are handled in the loop: a signal
        # raised inside an asyncio callback would be logged there and lost (exit 0).
        [entries] = environments.concurrently(err, [run])
        if isinstance(entries, RegistryError):
            fail(err, entries.message)
        raise typer.Exit(
            _write(out, err, entries, directory, include_immutable, with_secrets, overwrite)
        )

    settings = load_settings(err)
    chosen = environments.resolve(
        err,
        file_config,
        env,
        all_envs,
        registry_url=registry_url or settings.api_url,
        on_behalf_of=on_behalf_of or settings.on_behalf_of,
    )

    async def one(name: str, target: Target) -> list[Entry] | RegistryError:
        try:
            client = reconcile.make_client(
                target, timeout=timeout, on_retry=lambda n: err.print(f"{name}: {n}", markup=False)
            )
            async with client:
                return await client.list()
        except RegistryError as exc:
            return exc

    listed = environments.concurrently(
        err, [functools.partial(one, e.name, e.target) for e in chosen]
    )
    answers = {e.name: answer for e, answer in zip(chosen, listed, strict=True)}
    code = EXIT_OK
    for e in chosen:
        # One environment: into --dir. Several: each into its own folder under --dir.
        where = directory if len(chosen) == 1 else directory / e.name
        out.print(f"== {e.name} ({e.origin}) -> {where} ==", markup=False, style="bold")
        answer = answers[e.name]
        if isinstance(answer, RegistryError):
            err.print(f"error: {e.name}: {answer.message}", markup=False)
            code = EXIT_ERROR
            continue
        done = _write(out, err, answer, where, include_immutable, with_secrets, overwrite)
        code = max(code, done)
    raise typer.Exit(code)


def _write(
    out: Console,
    err: Console,
    entries: list[Entry],
    directory: Path,
    include_immutable: bool,
    with_secrets: bool,
    overwrite: bool,
) -> int:
    """Write the entries as files in ``directory`` and say what happened; the exit code."""
    from .. import export as export_mod

    rendering = export_mod.render(
        entries, include_immutable=include_immutable, with_secrets=with_secrets
    )
    try:
        outcomes = export_mod.write_files(rendering.files, directory, overwrite=overwrite)
    except OSError as exc:
        fail(err, f"{directory}: {exc.strerror or exc}")

    for o in outcomes:
        verb = {"written": "wrote", "overwritten": "overwrote"}.get(o.status, "skipped")
        line = f"{verb} {o.path} ({o.file.model_id})" + (f": {o.detail}" if o.detail else "")
        (err if o.status in ("unsafe", "failed") else out).print(printable(line), markup=False)
    for f in rendering.files:
        if f.dropped:
            out.print(
                printable(
                    f"note: {f.model_id}: left out keys the registry added that model files "
                    f"cannot declare: {', '.join(f.dropped)}"
                ),
                markup=False,
            )
    for s in rendering.skipped:
        if s.rejected:
            err.print(printable(f"error: {s.model_id}: {s.reason}; not exported"), markup=False)
        else:
            out.print(printable(f"skipped {s.model_id}: {s.reason}"), markup=False)
    written = [o for o in outcomes if o.written]
    failed = [o for o in outcomes if o.status in ("unsafe", "failed")]
    out.print(
        f"Exported to {directory}: {len(written)} written, "
        f"{len(outcomes) - len(written) - len(failed) + len(rendering.skipped)} skipped, "
        f"{len(rendering.rejected) + len(failed)} failed.",
        markup=False,
    )
    variables = [v for o in written for v in o.file.variables]
    if variables:
        out.print(
            "\nInline secrets were written as ${VARIABLE} placeholders. Set these from your "
            "secret store before validate, diff or sync:",
            markup=False,
        )
        for v in variables:
            out.print(printable(f"export {v.name}=...  # {v.model_id} {v.field}"), markup=False)
    if any(o.file.has_secrets for o in written):
        err.print(
            "warning: inline secrets were written as they are (--with-secrets); "
            "keep these files out of version control",
            markup=False,
        )
    return EXIT_ERROR if rendering.rejected or failed else EXIT_OK
