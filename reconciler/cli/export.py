"""``reconciler export``: write each registry entry as a model file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..text import printable
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
    registry_target,
)

if TYPE_CHECKING:
    from ..spec import Entry


def export(
    directory: DirOpt = Path("models.d"),
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
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Write each registry entry as a model file. Exit 1 when an entry could not be exported."""
    import anyio

    from .. import export as export_mod
    from .. import reconcile
    from ..registry import RegistryError

    out, err = console(), console(stderr=True)
    target = registry_target(err, config, registry_url, on_behalf_of)

    async def run() -> list[Entry]:
        client = reconcile.make_client(
            target, timeout=timeout, on_retry=lambda notice: err.print(notice, markup=False)
        )
        async with client:
            return await client.list()

    try:
        entries = anyio.run(run)
    except RegistryError as exc:
        fail(err, exc.message)
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
    raise typer.Exit(EXIT_ERROR if rendering.rejected or failed else EXIT_OK)
