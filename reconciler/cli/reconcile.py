"""``reconciler diff`` and ``reconciler sync``: load, plan, maybe apply, report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from .. import defaults
from ..plan import Plan, pending
from ..text import json_text, printable
from .common import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    AtExit,
    Collector,
    ConcurrencyOpt,
    ConfigOpt,
    DirOpt,
    ForceOpt,
    MaxDeletesOpt,
    NoCacheOpt,
    OnBehalfOfOpt,
    OwnsOpt,
    PlanOutput,
    PruneOpt,
    QuietOpt,
    RegistryUrlOpt,
    RpsOpt,
    SelectOpt,
    StrictOpt,
    TimeoutOpt,
    UpdateMethod,
    UpdateMethodOpt,
    VerboseOpt,
    console,
    fail,
    load_file_config,
    load_settings,
)
from .environments import AllEnvsOpt, EnvOpt
from .interrupt import Interrupt, Interrupted, registry_gone
from .progress import Progress, write_private

if TYPE_CHECKING:
    from ..apply import Outcome
    from ..source import DesiredState

PlanOutputOpt = Annotated[
    PlanOutput,
    typer.Option(
        "--output",
        "-o",
        help="text for people, json for programs, markdown for a pull-request comment, "
        "github for workflow annotations.",
    ),
]


@dataclass(frozen=True)
class Run:
    """What a diff or sync was asked to do (the parsed options)."""

    directory: Path
    registry_url: str | None
    on_behalf_of: str | None
    config_path: Path | None
    prune: bool
    owns: list[str] | None
    max_deletes: int | None
    force: bool
    strict: bool
    output: PlanOutput
    select: list[str] | None
    quiet: bool
    verbose: bool
    concurrency: int = defaults.CONCURRENCY
    rps: float | None = None
    timeout: float = defaults.TIMEOUT
    update_method: UpdateMethod = UpdateMethod.ADD
    write: bool = False
    dry_run: bool = False
    out_path: Path | None = None  # diff --out
    plan_path: Path | None = None  # sync --plan
    env: list[str] | None = None  # --env: one run per environment (environments.py)
    all_envs: bool = False
    no_cache: bool = False


def _reconcile(run: Run) -> int:
    """diff (write=False) and sync: load, plan, maybe apply, report; the exit code (130/143: a
    signal stopped it), the collector paused meanwhile (see ``Collector``)."""
    out, err = console(), console(stderr=True)
    interrupt = Interrupt(err)
    with interrupt.guard(), Collector() as collector:
        try:
            return _run(run, interrupt, out, err, collector)
        except Interrupted:
            return interrupt.report_early()


def _run(run: Run, interrupt: Interrupt, out: Console, err: Console, collector: Collector) -> int:
    import anyio

    from .. import diagnostics, engine, planfile, reconcile, report, review
    from ..plan import writes
    from ..registry import RegistryError
    from ..source.cache import cache_dir
    from . import environments

    as_json = run.output is PlanOutput.JSON
    text = run.output is PlanOutput.TEXT
    config = load_file_config(err, run.config_path, as_json=as_json)
    settings = load_settings(err, as_json=as_json)
    cache = None if run.no_cache or not config.cache else cache_dir()  # the parse cache's folder
    if environments.wanted(config, run.env, run.all_envs):
        alone = [o for o, v in (("--out", run.out_path), ("--plan", run.plan_path)) if v]
        if alone:
            # A saved plan names one registry; with environments there are several.
            fail(
                err,
                f"{', '.join(alone)}: not available with environments yet (a saved plan names "
                "one registry); diff and sync the environments directly",
                as_json=as_json,
            )
        chosen = environments.resolve(
            err,
            config,
            run.env,
            run.all_envs,
            registry_url=run.registry_url or settings.api_url,
            on_behalf_of=run.on_behalf_of or settings.on_behalf_of,
            prune=run.prune,
            owns=run.owns or (),
            max_deletes=run.max_deletes,
            force=run.force,
            as_json=as_json,
        )
        how = environments.EnvReconcile(
            directory=run.directory,
            strict=run.strict,
            as_json=as_json,
            write=run.write,
            dry_run=run.dry_run,
            concurrency=run.concurrency,
            rps=run.rps,
            timeout=run.timeout,
            update_method=run.update_method.value,
            policy=reconcile.load_policy(config),
            select=tuple(run.select or ()),
            output=run.output.value,
            cache=cache,
        )
        return environments.reconcile(chosen, how, interrupt, out, err, collector)
    try:
        prune_opts = reconcile.prune_options(
            run.prune,
            run.owns or (),
            config,
            max_deletes=defaults.MAX_DELETES if run.max_deletes is None else run.max_deletes,
            force=run.force,
        )
        target = reconcile.resolve_target(
            settings, config, registry_url=run.registry_url, on_behalf_of=run.on_behalf_of
        )
    except reconcile.SetupError as exc:
        fail(err, str(exc), as_json=as_json)
    saved: dict[str, Any] | None = None
    if run.plan_path is not None:
        try:
            saved = planfile.parse(
                run.plan_path.read_text(encoding="utf-8"),
                registry=target.url,
                on_behalf_of=target.on_behalf_of,
            )
        except OSError as exc:
            fail(err, f"{run.plan_path}: {exc.strerror or exc}", as_json=as_json)
        except (planfile.PlanFileError, UnicodeDecodeError) as exc:
            fail(err, f"{run.plan_path}: {exc}", as_json=as_json)
    # Files are parsed (in worker processes when there are many) while the registry is listed.
    loading = reconcile.Loading(run.directory, policy=reconcile.load_policy(config), cache=cache)
    outcomes: list[Outcome] = []
    loaded: list[DesiredState] = []
    saw: list[Any] = []
    show = Progress(out, quiet=run.quiet or not text)

    async def go() -> Plan:
        client = reconcile.make_client(
            target,
            timeout=run.timeout,
            rps=run.rps,
            concurrency=run.concurrency,
            on_retry=lambda notice: err.print(notice, markup=False),
        )
        client.share = loading.bodies  # the list decoded once the files are: no second copy
        async with client:
            pipeline = engine.Engine(
                client,
                show,
                concurrency=run.concurrency,
                update_method=run.update_method.value,
            )
            try:
                loading.start()  # the files load while the registry answers
                live = await pipeline.live()
            except BaseException:
                loading.cancel()
                raise
            if getattr(live, "has_more", False):
                err.print(
                    f"warning: the registry's list answer says has_more (it pages): only the "
                    f"{len(live)} entries it returned were compared",
                    markup=False,
                )
            state = loading.result()
            loaded.append(state)
            saw.extend(live)
            if saved is not None:
                plan = planfile.restore(saved, state.models, live)
                pipeline.planned(plan)
            else:
                plan = pipeline.plan(
                    state,
                    live,
                    prune=prune_opts,
                    ignore=config.ignore_rules(),
                    select=engine.Selector(run.select or ()),
                )
            todo = writes(plan)
            if text:  # the plan before any write
                diagnostics.render(
                    err, state.errors, state.warnings, verbose=run.verbose, quiet=run.quiet
                )
                report.render_plan(out, plan, load=state)
            if not run.write or run.dry_run or not todo:
                return plan
            collector.resume()
            interrupt.writing = True
            with show:
                outcomes.extend(await pipeline.apply(plan, stop=interrupt.stop))
            return plan

    try:
        plan = anyio.run(interrupt.run, go)
    except RegistryError as exc:
        fail(err, exc.message, as_json=as_json)
    except planfile.StalePlan as exc:
        for reason in exc.reasons:
            err.print(f"error: {printable(reason)}", markup=False)
        stale = f"{run.plan_path}: the plan is stale, nothing was written; run diff --out again"
        fail(err, stale, as_json=as_json)
    load = loaded[0]
    AtExit.keep(loading, loaded, saw, plan)  # freed with the process, not object by object
    if as_json:
        doc = report.plan_json(plan, load=load, outcomes=outcomes)
        print(json_text(json.dumps(doc, ensure_ascii=False)))
    elif run.output is PlanOutput.MARKDOWN:
        print(review.markdown(plan, load, title=f"reconciler {'sync' if run.write else 'diff'}"))
    elif run.output is PlanOutput.GITHUB:
        print("\n".join(review.annotations(plan, load)))
    if not text:
        diagnostics.render(err, load.errors, (), verbose=run.verbose)
        if plan.prune_skipped:
            err.print(f"error: {plan.prune_skipped}", markup=False)
    elif outcomes:
        failures = [o for o in outcomes if not o.ok]
        report.emit(
            out,
            [
                *(
                    line
                    for change in plan.changes
                    for o in failures
                    if o.id == change.id
                    for line in report.change_lines(change, o)
                ),
                (report.result_line(outcomes), "bold red" if failures else "bold green"),
            ],
        )
    elif run.write:
        out.print("Nothing to write." if not writes(plan) else "Dry run: nothing written.")

    if interrupt.signal is not None:
        return interrupt.report(outcomes)
    gone = registry_gone(outcomes)
    if gone:
        err.print(f"error: {gone}", markup=False)
    failed = (
        load.errors
        or any(not o.ok for o in outcomes)
        or (run.strict and _immutable(plan))
        or (plan.prune_skipped and saved is None)
    )
    code = EXIT_ERROR if failed else EXIT_OK
    if code == EXIT_OK and not run.write and pending(plan):
        code = EXIT_CHANGES
    if run.out_path is not None:
        if code == EXIT_ERROR:
            err.print(f"error: {run.out_path}: plan not written (fix the errors first)")
        else:
            doc = planfile.dump(
                plan,
                saw,
                registry=target.url,
                on_behalf_of=target.on_behalf_of,
                directory=str(run.directory),
            )
            try:
                write_private(run.out_path, json.dumps(doc, indent=1, ensure_ascii=False))
            except OSError as exc:
                fail(err, f"{run.out_path}: {exc.strerror or exc}", as_json=as_json)
            if text and not run.quiet:
                err.print(
                    f"Saved the plan to {run.out_path}: apply exactly it with "
                    f"reconciler sync --plan {run.out_path}",
                    markup=False,
                )
    return code


def _immutable(plan: Plan) -> bool:
    from ..plan import Action

    return any(c.action is Action.IMMUTABLE for c in plan.changes)


def diff(
    directory: DirOpt = Path(defaults.DIRECTORY),
    registry_url: RegistryUrlOpt = None,
    on_behalf_of: OnBehalfOfOpt = None,
    config: ConfigOpt = None,
    prune: PruneOpt = False,
    owns: OwnsOpt = None,
    max_deletes: MaxDeletesOpt = None,
    force: ForceOpt = False,
    strict: StrictOpt = False,
    output: PlanOutputOpt = PlanOutput.TEXT,
    select: SelectOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Save the plan to this file, for sync --plan (no secret in it).",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    timeout: TimeoutOpt = defaults.TIMEOUT,
    env: EnvOpt = None,
    all_envs: AllEnvsOpt = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Show what sync would change; changes nothing. Exit 0 in sync, 2 pending, 1 on error."""
    raise typer.Exit(
        _reconcile(
            Run(
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
                select=select,
                quiet=quiet,
                verbose=verbose,
                timeout=timeout,
                out_path=out,
                env=env,
                all_envs=all_envs,
                no_cache=no_cache,
            )
        )
    )


def sync(
    directory: DirOpt = Path(defaults.DIRECTORY),
    registry_url: RegistryUrlOpt = None,
    on_behalf_of: OnBehalfOfOpt = None,
    config: ConfigOpt = None,
    prune: PruneOpt = False,
    owns: OwnsOpt = None,
    max_deletes: MaxDeletesOpt = None,
    force: ForceOpt = False,
    strict: StrictOpt = False,
    output: PlanOutputOpt = PlanOutput.TEXT,
    select: SelectOpt = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="Apply exactly this saved plan (diff --out), if no entry changed since.",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    concurrency: ConcurrencyOpt = defaults.CONCURRENCY,
    rps: RpsOpt = None,
    timeout: TimeoutOpt = defaults.TIMEOUT,
    update_method: UpdateMethodOpt = UpdateMethod.ADD,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and print; write nothing.")
    ] = False,
    env: EnvOpt = None,
    all_envs: AllEnvsOpt = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Make the registry match the files. Exit 0 when every write succeeded, 1 otherwise."""
    raise typer.Exit(
        _reconcile(
            Run(
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
                select=select,
                quiet=quiet,
                verbose=verbose,
                concurrency=concurrency,
                rps=rps,
                timeout=timeout,
                update_method=update_method,
                write=True,
                dry_run=dry_run,
                plan_path=plan,
                env=env,
                all_envs=all_envs,
                no_cache=no_cache,
            )
        )
    )
