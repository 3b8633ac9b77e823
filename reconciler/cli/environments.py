"""``--env NAME`` / ``--all-envs``: ``diff`` and ``sync`` over the environments of
``reconciler.toml``, concurrently; output grouped by environment.

Exit code: 1 if any environment failed (its registry, a file, a write), else 2 if ``diff``
found changes pending in any, else 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from .. import defaults
from ..text import json_text
from .common import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, AtExit, Collector, fail
from .interrupt import Interrupt, Interrupted, registry_gone

if TYPE_CHECKING:
    from ..config import FileConfig
    from ..environments import Environment, EnvRun
    from ..source import LoadPolicy

EnvOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        "-e",
        help="Run for this environment of reconciler.toml (repeatable).",
        show_default=False,
    ),
]
AllEnvsOpt = Annotated[
    bool, typer.Option("--all-envs", help="Run for every environment of reconciler.toml.")
]


T = TypeVar("T")


def concurrently(err: Console, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` concurrently in one event loop; their results in order (each handles its
    own registry's errors). SIGINT/SIGTERM are handled in the loop, where they cancel the run
    cleanly (a signal raised from inside an asyncio callback would be logged and lost): the
    command then exits 130/143."""
    import anyio

    async def main() -> list[T]:
        results: dict[int, T] = {}

        async def slot(i: int, call: Callable[[], Awaitable[T]]) -> None:
            results[i] = await call()

        async with anyio.create_task_group() as tg:
            for i, call in enumerate(calls):
                tg.start_soon(slot, i, call)
        return [results[i] for i in range(len(calls))]

    interrupt = Interrupt(err)
    with interrupt.guard():
        try:
            return anyio.run(interrupt.run, main)
        except Interrupted:
            err.print(f"interrupted ({interrupt.signal_name})", markup=False)
            raise typer.Exit(interrupt.exit_code) from None


def wanted(config: FileConfig, names: Sequence[str] | None, all_envs: bool) -> bool:
    """Whether this run goes by environments (configured, or asked for)."""
    return bool(config.environments or names or all_envs)


def resolve(
    err: Console,
    config: FileConfig,
    names: Sequence[str] | None,
    all_envs: bool,
    *,
    registry_url: str | None = None,
    on_behalf_of: str | None = None,
    prune: bool = False,
    owns: Sequence[str] = (),
    max_deletes: int | None = None,
    force: bool = False,
    as_json: bool = False,
) -> list[Environment]:
    """The selected environments, resolved; or exit 1 saying what to pass or set."""
    from .. import environments
    from ..reconcile import SetupError

    try:
        chosen = environments.selected(config, names or (), all_envs)
        if registry_url:
            raise SetupError(
                "--registry-url (or MKA1_API_URL) names one registry; with environments each "
                "has its own registry_url in reconciler.toml"
            )
        return [
            environments.resolve(
                config,
                name,
                os.environ,
                on_behalf_of=on_behalf_of,
                prune=prune,
                owns=owns,
                max_deletes=max_deletes,
                force=force,
            )
            for name in chosen
        ]
    except SetupError as exc:
        fail(err, str(exc), as_json=as_json)  # with JSON, also {"formatVersion", "error"}


@dataclass(frozen=True)
class EnvReconcile:
    """What ``diff``/``sync`` asked of the environments (the options that matter here)."""

    directory: Path
    strict: bool
    as_json: bool
    write: bool
    dry_run: bool = False
    concurrency: int = defaults.CONCURRENCY
    rps: float | None = None
    timeout: float = defaults.TIMEOUT
    update_method: str = "add"
    policy: LoadPolicy | None = None  # what model files may do (reconciler.toml)
    select: tuple[str, ...] = ()  # --select: fnmatch patterns of ids
    output: str = "text"  # text, json, markdown or github
    cache: Path | None = None  # the parse cache's folder (None: off)


def reconcile(
    envs: Sequence[Environment],
    how: EnvReconcile,
    interrupt: Interrupt,
    out: Console,
    err: Console,
    collector: Collector | None = None,
) -> int:
    """diff or sync every environment concurrently; print grouped by environment; the exit
    code (130/143 when a signal stopped it, through ``interrupt``). ``collector``: resumed
    before the first write (see ``common.Collector``)."""
    import anyio

    from .. import engine, environments, reconcile
    from ..source import DEFAULT_POLICY

    policy = how.policy or DEFAULT_POLICY
    overlays = environments.load_overlays(envs, policy)
    loading = reconcile.Loading(how.directory, policy=policy, cache=how.cache)

    def writing() -> None:
        if collector is not None:
            collector.resume()
        interrupt.writing = True

    options = environments.RunOptions(
        write=how.write and not how.dry_run,
        timeout=how.timeout,
        rps=how.rps,
        concurrency=how.concurrency,
        update_method="patch" if how.update_method == "patch" else "add",
        stop=interrupt.stop,
        on_retry=lambda notice: err.print(notice, markup=False),
        on_writing=writing,
        select=engine.Selector(how.select) if how.select else None,
    )

    async def go() -> list[EnvRun]:
        return await environments.run_all(envs, loading, overlays, options)

    runs = anyio.run(interrupt.run, go)
    AtExit.keep(loading, runs)  # freed with the process, not object by object
    if how.as_json:
        print(json_text(json.dumps(plans_json(runs), ensure_ascii=False)))
    elif how.output in ("markdown", "github"):
        review_output(runs, how.output, err, write=how.write)
    else:
        render(out, err, runs, write=how.write)
    outcomes = [o for r in runs for o in r.outcomes]
    if interrupt.signal is not None:
        return interrupt.report(outcomes)
    return exit_code(runs, strict=how.strict, write=how.write)


def _immutable(run: EnvRun) -> bool:
    from ..plan import Action

    return run.plan is not None and any(c.action is Action.IMMUTABLE for c in run.plan.changes)


def exit_code(runs: Sequence[EnvRun], *, strict: bool, write: bool) -> int:
    """1 if any environment failed, else 2 if a diff has changes pending in any, else 0."""
    from ..plan import pending

    if any(r.failed or (strict and _immutable(r)) for r in runs):
        return EXIT_ERROR
    if not write and any(r.plan is not None and pending(r.plan) for r in runs):
        return EXIT_CHANGES
    return EXIT_OK


def _base_problems(runs: Sequence[EnvRun]) -> tuple[Any, ...]:
    """The problems every environment shares (the model files'), printed once."""
    states = [r.state for r in runs if r.state is not None]
    if not states:
        return ()
    shared = set(states[0].errors) | set(states[0].warnings)
    for s in states[1:]:
        shared &= set(s.errors) | set(s.warnings)
    first = states[0]
    return tuple(p for p in (*first.errors, *first.warnings) if p in shared)


@dataclass(frozen=True)
class _Only:
    """The problems of one environment alone (its overlay's), for :func:`report.render_plan`."""

    errors: tuple[Any, ...]
    warnings: tuple[Any, ...]


def render(out: Console, err: Console, runs: Sequence[EnvRun], *, write: bool) -> None:
    """Text: the shared file problems once, then a section per environment, then one line each."""
    from .. import diagnostics, report
    from ..plan import pending, writes

    shared = _base_problems(runs)
    diagnostics.render(  # problems go to stderr, in the one format
        err,
        tuple(p for p in shared if p.severity == "error"),
        tuple(p for p in shared if p.severity != "error"),
    )
    for run in runs:
        env = run.env
        out.print(f"\n== {env.name} ({env.origin}) ==", markup=False, style="bold")
        if run.state is not None:
            own = _Only(
                tuple(p for p in run.state.errors if p not in shared),
                tuple(p for p in run.state.warnings if p not in shared),
            )
        else:
            own = _Only((), ())
        if run.error is not None:
            diagnostics.render(err, own.errors, own.warnings)
            err.print(f"error: {env.name}: {run.error}", markup=False)
            out.print(f"{env.name}: failed: {run.error}", markup=False)
            continue
        assert run.plan is not None
        if run.excluded:
            out.print(f"left out by the overlay: {', '.join(sorted(run.excluded))}", markup=False)
        diagnostics.render(err, own.errors, own.warnings)
        report.render_plan(out, run.plan, load=own, outcomes=run.outcomes)
        if run.live is not None and getattr(run.live, "has_more", False):
            err.print(
                f"warning: {env.name}: the registry's list answer says has_more (it pages): "
                f"only the {len(run.live)} entries it returned were compared",
                markup=False,
            )
        gone = registry_gone(run.outcomes)
        if gone:
            err.print(f"error: {env.name}: {gone}", markup=False)
        if write and not run.outcomes:
            out.print("Nothing to write." if not writes(run.plan) else "Dry run: nothing written.")
    out.print("")
    for run in runs:
        if run.error is not None:
            verdict = "failed (registry)"
        elif run.failed:
            verdict = "failed"
        elif run.plan is not None and pending(run.plan) and not (write and run.outcomes):
            verdict = "changes pending"
        else:
            verdict = "in sync" if not run.outcomes else "applied"
        out.print(f"{run.env.name}: {verdict}", markup=False)


def review_output(runs: Sequence[EnvRun], output: str, err: Console, *, write: bool) -> None:
    """markdown: a section per environment (a PR comment); github: every environment's
    annotations, each line once. A registry that failed is an error line on stderr too."""
    from .. import review

    command = "sync" if write else "diff"
    seen: dict[str, None] = {}
    for run in runs:
        name = run.env.name
        if output == "markdown":
            if run.plan is None:
                print(f"## reconciler {command}: {name}\n\nfailed: {run.error}\n")
            else:
                print(review.markdown(run.plan, run.state, title=f"reconciler {command}: {name}"))
        elif run.plan is not None:
            seen.update(dict.fromkeys(review.annotations(run.plan, run.state)))
    if seen:
        print("\n".join(seen))
    for run in runs:
        if run.error is not None:
            err.print(f"error: {run.env.name}: {run.error}", markup=False)


def plans_json(runs: Sequence[EnvRun]) -> dict[str, Any]:
    """One JSON document: ``environments`` (summary, errors, registry error per environment)
    and ``changes``, each carrying its ``environment``."""
    from .. import diagnostics, report

    changes: list[dict[str, Any]] = []
    per_env: list[dict[str, Any]] = []
    for run in runs:
        name = run.env.name
        entry: dict[str, Any] = {"environment": name, "registry": run.env.origin}
        if run.plan is not None:
            doc = report.plan_json(run.plan, load=run.state, outcomes=run.outcomes)
            changes.extend({"environment": name, **c} for c in doc.pop("changes"))
            entry.update(doc)
        else:
            entry["errors"] = [
                diagnostics.problem_json(p) for p in (run.state.errors if run.state else ())
            ]
        entry["excluded"] = sorted(run.excluded)
        entry["error"] = run.error
        entry["failed"] = run.failed
        per_env.append(entry)
    return {"formatVersion": report.FORMAT_VERSION, "environments": per_env, "changes": changes}
