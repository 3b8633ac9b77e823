"""``reconciler health``: each model's availability, optionally probed first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import source
from ..secrets import hidden_values
from ..text import json_text
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    ConfigOpt,
    DirOpt,
    OnBehalfOfOpt,
    Output,
    OutputOpt,
    RegistryUrlOpt,
    TimeoutOpt,
    console,
    fail,
    load_file_config,
    registry_target,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..spec import Entry, HealthResult


def health(
    directory: DirOpt = Path("models.d"),
    all_models: Annotated[
        bool, typer.Option("--all", help="Every registry entry, not only those declared in --dir.")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Ask the registry to probe each model first.")
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Probes in flight at once.")
    ] = 4,
    output: OutputOpt = Output.TEXT,
    registry_url: RegistryUrlOpt = None,
    on_behalf_of: OnBehalfOfOpt = None,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Show each model's availability. Exit 1 when any is unavailable (or unknown after --check)."""
    import anyio

    from .. import apply as apply_mod
    from .. import reconcile, report
    from ..registry import RegistryError

    out, err = console(), console(stderr=True)
    target = registry_target(err, config, registry_url, on_behalf_of)
    ids: set[str] | None = None
    hidden: set[str] = set()
    if not all_models:
        policy = reconcile.load_policy(load_file_config(err, config))
        load = source.load_dir(directory, policy=policy)
        if not directory.is_dir():
            fail(err, f"{directory}: {load.errors[0].message}; pass --dir or --all")
        ids = set(load.models) | set(load.invalid_ids)
        for m in load.models.values():
            hidden |= hidden_values(m.definition.to_api(), m.sensitive)
        bad = len({p.path for p in load.errors})
        if bad:
            err.print(
                f"warning: {bad} file(s) in {directory} did not load "
                "(see reconciler validate); their models are left out unless they name an id",
                markup=False,
            )

    async def run() -> tuple[list[Entry], Mapping[str, HealthResult | RegistryError]]:
        client = reconcile.make_client(
            target,
            timeout=timeout,
            concurrency=concurrency,
            on_retry=lambda notice: err.print(notice, markup=False),
        )
        async with client as c:
            entries = await c.list()
            checks: Mapping[str, HealthResult | RegistryError] = {}
            if check:
                live = [e.id for e in entries if ids is None or e.id in ids]
                checks = await apply_mod.check_health(c, live, concurrency=concurrency)
            return entries, checks

    try:
        entries, checks = anyio.run(run)
    except RegistryError as exc:
        fail(err, exc.message)
    rows = report.health_rows(entries, ids, checks, hidden)
    if output is Output.JSON:
        print(json_text(json.dumps(report.health_json(rows), ensure_ascii=False)))
    else:
        report.render_health(out, rows)
    raise typer.Exit(EXIT_ERROR if report.health_failed(rows, checked=check) else EXIT_OK)
