"""``reconciler health``: each model's availability, optionally probed first."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import defaults, source
from ..secrets import hidden_values
from ..text import json_text
from . import environments
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
    load_settings,
    registry_target,
)
from .environments import AllEnvsOpt, EnvOpt

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..environments import Environment
    from ..reconcile import Target
    from ..registry import RegistryError
    from ..spec import Entry, HealthResult

    Answer = tuple[list[Entry], Mapping[str, HealthResult | RegistryError]] | RegistryError


def health(
    directory: DirOpt = Path(defaults.DIRECTORY),
    all_models: Annotated[
        bool, typer.Option("--all", help="Every registry entry, not only those declared in --dir.")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Ask the registry to probe each model first.")
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Probes in flight at once.")
    ] = defaults.HEALTH_CONCURRENCY,
    output: OutputOpt = Output.TEXT,
    registry_url: RegistryUrlOpt = None,
    on_behalf_of: OnBehalfOfOpt = None,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = defaults.TIMEOUT,
    env: EnvOpt = None,
    all_envs: AllEnvsOpt = False,
) -> None:
    """Show each model's availability. Exit 1 when any is unavailable (or unknown after --check)."""

    from .. import apply as apply_mod
    from .. import environments as envs_mod
    from .. import reconcile, report
    from ..registry import RegistryError

    out, err = console(), console(stderr=True)
    file_config = load_file_config(err, config)
    chosen: list[Environment] = []
    if environments.wanted(file_config, env, all_envs):
        settings = load_settings(err)
        chosen = environments.resolve(
            err,
            file_config,
            env,
            all_envs,
            registry_url=registry_url or settings.api_url,
            on_behalf_of=on_behalf_of or settings.on_behalf_of,
        )
        targets = [(e.name, e.target) for e in chosen]
    else:
        as_json = output is Output.JSON
        targets = [
            (None, registry_target(err, config, registry_url, on_behalf_of, as_json=as_json))
        ]
    # Which ids each registry is asked about (None: all), and what must never print.
    ids: dict[str | None, set[str] | None] = {name: None for name, _ in targets}
    hidden: set[str] = set()
    if not all_models:
        policy = reconcile.load_policy(file_config)
        base = reconcile.load_desired(directory, policy=policy)
        if not directory.is_dir() or base.errors[:1] == (source.no_model_files(directory),):
            why = f"{directory}: {base.errors[0].message}; pass --dir or --all"
            fail(err, why, as_json=output is Output.JSON)
        overlays = envs_mod.load_overlays(chosen, policy)
        for name, _ in targets:
            state = envs_mod.desired_for(base, overlays.get(name or ""))[0] if name else base
            ids[name] = set(state.models) | set(state.invalid_ids)
            for d in state.models.values():
                hidden |= hidden_values(d.body, d.sensitive)
        bad = base.failed_files
        if bad:
            err.print(
                f"warning: {bad} file(s) in {directory} did not load "
                "(see reconciler validate); their models are left out unless they name an id",
                markup=False,
            )

    async def one(target: Target, wanted: set[str] | None, name: str | None = None) -> Answer:
        def retrying(notice: str) -> None:
            err.print(f"{name}: {notice}" if name else notice, markup=False)

        try:
            client = reconcile.make_client(
                target, timeout=timeout, concurrency=concurrency, on_retry=retrying
            )
            async with client as c:
                entries = await c.list()
                checks: Mapping[str, HealthResult | RegistryError] = {}
                if check:
                    live = [e.id for e in entries if wanted is None or e.id in wanted]
                    checks = await apply_mod.check_health(c, live, concurrency=concurrency)
                return entries, checks
        except RegistryError as exc:
            return exc

    # One registry or several, the signals are handled in the loop (see ``concurrently``).
    answers = environments.concurrently(
        err, [functools.partial(one, target, ids[name], name) for name, target in targets]
    )
    if not chosen:  # one registry, as without environments
        answer = answers[0]
        if isinstance(answer, RegistryError):
            fail(err, answer.message, as_json=output is Output.JSON)
        rows = report.health_rows(answer[0], ids[None], answer[1], hidden)
        if output is Output.JSON:
            print(json_text(json.dumps(report.health_json(rows), ensure_ascii=False)))
        else:
            report.render_health(out, rows)
        raise typer.Exit(EXIT_ERROR if report.health_failed(rows, checked=check) else EXIT_OK)

    origins = {e.name: e.origin for e in chosen}
    failed, docs = False, []
    for (name, _), answer in zip(targets, answers, strict=True):
        doc: dict[str, object] = {"environment": name, "registry": origins[name], "error": None}
        if output is not Output.JSON:
            out.print(f"\n== {name} ({origins[name]}) ==", markup=False, style="bold")
        if isinstance(answer, RegistryError):
            failed = True
            doc["error"] = answer.message
            err.print(f"error: {name}: {answer.message}", markup=False)
        else:
            rows = report.health_rows(answer[0], ids[name], answer[1], hidden)
            failed = failed or report.health_failed(rows, checked=check)
            doc.update(report.health_json(rows))
            if output is not Output.JSON:
                report.render_health(out, rows)
        docs.append(doc)
    if output is Output.JSON:
        print(json_text(json.dumps({"environments": docs}, ensure_ascii=False)))
    raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)
