"""``reconciler diff`` and ``reconciler sync``: load, plan, maybe apply, report."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..plan import Plan, pending
from ..text import json_text
from .common import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    ConcurrencyOpt,
    ConfigOpt,
    DirOpt,
    ForceOpt,
    MaxDeletesOpt,
    OnBehalfOfOpt,
    Output,
    OutputOpt,
    OwnsOpt,
    PruneOpt,
    RegistryUrlOpt,
    RpsOpt,
    StrictOpt,
    TimeoutOpt,
    UpdateMethod,
    UpdateMethodOpt,
    console,
    fail,
    load_file_config,
    load_settings,
)
from .environments import AllEnvsOpt, EnvOpt
from .interrupt import Interrupt, Interrupted, registry_gone


def _reconcile(**kw: Any) -> int:
    """diff (write=False) and sync: load, plan, maybe apply, report; the exit code (130/143
    when a signal stopped it)."""
    out, err = console(), console(stderr=True)
    interrupt = Interrupt(err)
    with interrupt.guard():
        try:
            return _run(interrupt, out, err, **kw)
        except Interrupted:
            return interrupt.report_early()


def _run(
    interrupt: Interrupt,
    out: Console,
    err: Console,
    *,
    directory: Path,
    registry_url: str | None,
    on_behalf_of: str | None,
    config_path: Path | None,
    prune: bool,
    owns: list[str] | None,
    max_deletes: int | None,
    force: bool,
    strict: bool,
    output: Output,
    concurrency: int,
    rps: float | None,
    timeout: float,
    update_method: UpdateMethod,
    write: bool,
    dry_run: bool = False,
    env: list[str] | None = None,
    all_envs: bool = False,
) -> int:
    import anyio

    from .. import apply as apply_mod
    from .. import reconcile, report
    from ..plan import Action, writes
    from ..registry import RegistryError
    from . import environments

    config = load_file_config(err, config_path)
    settings = load_settings(err)
    if environments.wanted(config, env, all_envs):
        chosen = environments.resolve(
            err,
            config,
            env,
            all_envs,
            registry_url=registry_url or settings.api_url,
            on_behalf_of=on_behalf_of or settings.on_behalf_of,
            prune=prune,
            owns=owns or (),
            max_deletes=max_deletes,
            force=force,
            as_json=output is Output.JSON,
        )
        how = environments.EnvReconcile(
            directory=directory,
            strict=strict,
            as_json=output is Output.JSON,
            write=write,
            dry_run=dry_run,
            concurrency=concurrency,
            rps=rps,
            timeout=timeout,
            update_method=update_method.value,
            policy=reconcile.load_policy(config),
        )
        return environments.reconcile(chosen, how, interrupt, out, err)
    try:
        prune_opts = reconcile.prune_options(
            prune,
            owns or (),
            config,
            max_deletes=5 if max_deletes is None else max_deletes,
            force=force,
        )
        target = reconcile.resolve_target(
            settings, config, registry_url=registry_url, on_behalf_of=on_behalf_of
        )
    except reconcile.SetupError as exc:
        fail(err, str(exc))
    # Files are parsed (in worker processes when there are many) while the registry is listed.
    loading = reconcile.Loading(directory, policy=reconcile.load_policy(config))
    outcomes: list[apply_mod.Outcome] = []
    loaded: list[reconcile.DesiredState] = []

    async def run() -> Plan:
        client = reconcile.make_client(
            target,
            timeout=timeout,
            rps=rps,
            concurrency=concurrency,
            on_retry=lambda notice: err.print(notice, markup=False),
        )
        async with client:
            try:
                live = await client.list()
            except BaseException:
                loading.cancel()
                raise
            if getattr(live, "has_more", False):
                err.print(
                    f"warning: the registry's list answer says has_more (it pages): only the "
                    f"{len(live)} entries it returned were compared",
                    markup=False,
                )
            loaded.append(loading.result())
            plan = reconcile.plan_for(
                loaded[0], live, prune=prune_opts, ignore=config.ignore_rules()
            )
            todo = writes(plan)
            if not write or dry_run or not todo:
                return plan
            interrupt.writing = True
            progress = _progress(out, len(todo)) if output is Output.TEXT else None
            with progress or contextlib.nullcontext():
                task = progress.add_task("sync", total=len(todo)) if progress else None

                def advance(_: apply_mod.Outcome) -> None:
                    if progress is not None and task is not None:
                        progress.advance(task)

                outcomes.extend(
                    await apply_mod.apply_plan(
                        plan,
                        client,
                        concurrency=concurrency,
                        update_method=update_method.value,
                        on_result=advance,
                        stop=interrupt.stop,
                    )
                )
            return plan

    try:
        plan = anyio.run(interrupt.run, run)
    except RegistryError as exc:
        fail(err, exc.message)
    load = loaded[0]

    if output is Output.JSON:
        doc = report.plan_json(plan, load=load, outcomes=outcomes)
        print(json_text(json.dumps(doc, ensure_ascii=False)))
        if plan.prune_skipped:
            err.print(f"warning: {plan.prune_skipped}", markup=False)
    else:
        report.render_plan(out, plan, load=load, outcomes=outcomes)
        if write and not outcomes:
            out.print("Nothing to write." if not writes(plan) else "Dry run: nothing written.")
    if interrupt.signal is not None:
        return interrupt.report(outcomes)
    gone = registry_gone(outcomes)
    if gone:
        err.print(f"error: {gone}", markup=False)
    immutable = any(c.action is Action.IMMUTABLE for c in plan.changes)
    if load.errors or any(not o.ok for o in outcomes) or (strict and immutable):
        return EXIT_ERROR
    if not write and pending(plan):
        return EXIT_CHANGES
    return EXIT_OK


def _progress(console: Console, total: int) -> Progress | None:
    """A progress bar for a long sync on a terminal; none when piped or for a few writes."""
    if not console.is_terminal or total < 10:
        return None
    return Progress(
        TextColumn("syncing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def diff(
    directory: DirOpt = Path("models.d"),
    registry_url: RegistryUrlOpt = None,
    on_behalf_of: OnBehalfOfOpt = None,
    config: ConfigOpt = None,
    prune: PruneOpt = False,
    owns: OwnsOpt = None,
    max_deletes: MaxDeletesOpt = None,
    force: ForceOpt = False,
    strict: StrictOpt = False,
    output: OutputOpt = Output.TEXT,
    timeout: TimeoutOpt = 10.0,
    env: EnvOpt = None,
    all_envs: AllEnvsOpt = False,
) -> None:
    """Show what sync would change; changes nothing. Exit 0 in sync, 2 pending, 1 on error."""
    raise typer.Exit(
        _reconcile(
            directory=directory,
            registry_url=registry_url,
            on_behalf_of=on_behalf_of,
            config_path=config,
            prune=prune,
            owns=owns,
            max_deletes=max_deletes,
            force=force,
            strict=strict,
            output=output,
            concurrency=4,
            rps=None,
            timeout=timeout,
            update_method=UpdateMethod.ADD,
            write=False,
            env=env,
            all_envs=all_envs,
        )
    )


def sync(
    directory: DirOpt = Path("models.d"),
    registry_url: RegistryUrlOpt = None,
    on_behalf_of: OnBehalfOfOpt = None,
    config: ConfigOpt = None,
    prune: PruneOpt = False,
    owns: OwnsOpt = None,
    max_deletes: MaxDeletesOpt = None,
    force: ForceOpt = False,
    strict: StrictOpt = False,
    output: OutputOpt = Output.TEXT,
    concurrency: ConcurrencyOpt = 4,
    rps: RpsOpt = None,
    timeout: TimeoutOpt = 10.0,
    update_method: UpdateMethodOpt = UpdateMethod.ADD,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and print; write nothing.")
    ] = False,
    env: EnvOpt = None,
    all_envs: AllEnvsOpt = False,
) -> None:
    """Make the registry match the files. Exit 0 when every write succeeded, 1 otherwise."""
    raise typer.Exit(
        _reconcile(
            directory=directory,
            registry_url=registry_url,
            on_behalf_of=on_behalf_of,
            config_path=config,
            prune=prune,
            owns=owns,
            max_deletes=max_deletes,
            force=force,
            strict=strict,
            output=output,
            concurrency=concurrency,
            rps=rps,
            timeout=timeout,
            update_method=update_method,
            write=True,
            dry_run=dry_run,
            env=env,
            all_envs=all_envs,
        )
    )
