"""Environments: one directory of model files, several registries, each with its own key and
overlay. The files are read once; each environment gets the base models with its overlay
applied, is listed, planned and (for sync) written concurrently with the others, and fails
alone: a registry that is down is that environment's error, not the run's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import httpx

from . import apply as apply_mod
from . import defaults
from . import overlay as overlay_mod
from .config import EnvironmentConfig, FileConfig
from .engine import Engine, Selector
from .events import Discard, Sink
from .plan import Desired, IgnoreRule, Plan, PruneOptions, writes
from .reconcile import Loading, SetupError, Target, make_client
from .registry import Listing, RegistryError
from .source import DEFAULT_POLICY, DesiredState, LoadPolicy, Problem


@dataclass(frozen=True)
class Environment:
    """One selected environment, resolved: where its registry is, its key, what it owns."""

    name: str
    target: Target = field(repr=False)  # holds the key
    key_env: str
    prune: PruneOptions | None = None
    ignore: tuple[IgnoreRule, ...] = ()
    overlay: Path | None = None

    @property
    def origin(self) -> str:
        """The registry as shown: scheme, host and port, never user-info, path or query."""
        try:
            url = httpx.URL(self.target.url.strip())
        except (httpx.InvalidURL, TypeError):
            return "(not a URL)"
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}" if url.host else "(not a URL)"


def selected(config: FileConfig, names: Sequence[str], all_envs: bool) -> list[str]:
    """The environment names a command runs for: ``--env`` (repeatable) or ``--all-envs``.
    Raises :class:`SetupError` when environments are configured and none was chosen, for an
    unknown name, or when environments are asked for and none is configured."""
    known = list(config.environments)
    where = config.path or "reconciler.toml"
    if not known:
        if names or all_envs:
            flag = "--all-envs" if all_envs else "--env"
            raise SetupError(f"{flag}: no [environments.NAME] table in {where}")
        return []
    if names and all_envs:
        raise SetupError("pass --env NAME (repeatable) or --all-envs, not both")
    if all_envs:
        return known
    if not names:
        raise SetupError(
            f"{where} configures environments ({', '.join(known)}): "
            "pass --env NAME (repeatable) or --all-envs"
        )
    unknown = [n for n in names if n not in config.environments]
    if unknown:
        raise SetupError(
            f"unknown environment {unknown[0]!r}; {where} configures: {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def resolve(
    config: FileConfig,
    name: str,
    environ: Mapping[str, str],
    *,
    on_behalf_of: str | None = None,
    prune: bool = False,
    owns: Sequence[str] = (),
    max_deletes: int | None = None,
    force: bool = False,
) -> Environment:
    """One environment from the config, its key read from the variable it names (and only
    that one). Flags win over the environment's table, which wins over the top level."""
    env: EnvironmentConfig = config.environments[name]
    key = environ.get(env.api_key_env)
    if not key:
        raise SetupError(
            f"environment {name}: {env.api_key_env} is not set (api_key_env: the variable "
            "that holds this registry's key)"
        )
    target = Target(env.registry_url, key, on_behalf_of or env.on_behalf_of)
    prune_opts = None
    if prune:
        patterns = tuple(owns) or tuple(env.owns if env.owns is not None else config.owns)
        if not patterns:
            raise SetupError(
                f"environment {name}: --prune needs an ownership pattern: pass --owns or set "
                "owns in reconciler.toml (top level or in the environment)"
            )
        limit = max_deletes if max_deletes is not None else env.max_deletes
        limit = defaults.MAX_DELETES if limit is None else limit
        if limit < 0:
            raise SetupError("--max-deletes must be 0 or more")
        prune_opts = PruneOptions(patterns, limit, force)
    extra = tuple(IgnoreRule(tuple(i.paths), tuple(i.ids)) for i in env.ignore)
    where = overlay_dir(config, name)
    return Environment(
        name, target, env.api_key_env, prune_opts, config.ignore_rules() + extra, where
    )


def overlay_dir(config: FileConfig, name: str) -> Path | None:
    """Environment ``name``'s overlay directory (relative to the config file), if it has one."""
    env = config.environments[name]
    return _shown(config.directory / env.overlay) if env.overlay else None


def check_overlays(
    config: FileConfig,
    models: Mapping[str, Desired],
    invalid_ids: Mapping[str, str],
    policy: LoadPolicy = DEFAULT_POLICY,
) -> tuple[Problem, ...]:
    """Every environment's overlay problems against the model files, each once: what
    ``validate`` adds, offline (no key, no registry)."""
    found: dict[Problem, None] = {}
    for name in config.environments:
        where = overlay_dir(config, name)
        if where is not None:
            overlays = overlay_mod.load_overlays(where, policy=policy)
            done = overlay_mod.apply_overlays(models, invalid_ids, overlays)
            found.update(dict.fromkeys((*done.errors, *overlays.warnings)))
    return tuple(found)


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when inside it: shorter in every message."""
    try:
        return path.relative_to(Path.cwd()) if path.is_absolute() else path
    except ValueError:
        return path


def desired_for(
    base: DesiredState, overlays: overlay_mod.Overlays | None
) -> tuple[DesiredState, tuple[str, ...]]:
    """An environment's desired state: the base with its overlays (their errors added); and
    the ids its overlays leave out."""
    if overlays is None:
        return base, ()
    done = overlay_mod.apply_overlays(base.models, base.invalid_ids, overlays)
    state = replace(
        base,
        models=done.models,
        errors=base.errors + done.errors,
        warnings=base.warnings + overlays.warnings,
        invalid_ids=done.invalid_ids,
    )
    return state, done.excluded


@dataclass
class EnvRun:
    """What became of one environment: its plan and writes, or the error that stopped it."""

    env: Environment
    state: DesiredState | None = None
    plan: Plan | None = None
    live: Listing | None = None
    outcomes: list[apply_mod.Outcome] = field(default_factory=list)
    error: str | None = None
    excluded: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        """The registry failed, a file failed, or a write did."""
        if self.error is not None or self.state is None:
            return True
        return bool(self.state.errors) or any(not o.ok for o in self.outcomes)


@dataclass
class RunOptions:
    """How each environment is run (the same for all)."""

    write: bool = False
    timeout: float = defaults.TIMEOUT
    rps: float | None = None
    concurrency: int = defaults.CONCURRENCY
    update_method: apply_mod.UpdateMethod = "add"
    stop: apply_mod.Stop | None = None
    on_retry: Callable[[str], None] | None = None
    on_writing: Callable[[], None] | None = None  # before the first write of any environment
    events: Callable[[str], Sink] | None = None  # each environment's engine events, by name
    select: Selector | None = None  # --select: only these ids are planned (and pruned)


async def run_all(
    envs: Sequence[Environment],
    loading: Loading,
    overlays: Mapping[str, overlay_mod.Overlays],
    options: RunOptions,
) -> list[EnvRun]:
    """List, plan and (with ``options.write``) apply every environment concurrently; the files
    are loaded once (``loading``), while the registries are listed."""
    runs = [EnvRun(e) for e in envs]
    lock = threading.Lock()

    def loaded() -> DesiredState:
        with lock:  # the first to need it waits for the loader; the rest reuse its answer
            return loading.result()

    def bodies() -> dict[str, Any]:
        # What each list decoder shares values with (RegistryClient.share): the files' bodies
        # before any overlay. An entry an overlay changes shares nothing and is compared as
        # decoded; every other is held once, not once per environment.
        with lock:
            return loading.bodies()

    async def desired() -> DesiredState:
        return await anyio.to_thread.run_sync(loaded)

    async def one(run: EnvRun) -> None:
        env = run.env
        notify = options.on_retry

        def retrying(notice: str) -> None:
            if notify is not None:
                notify(f"{env.name}: {notice}")

        try:
            client = make_client(
                env.target,
                timeout=options.timeout,
                rps=options.rps,
                concurrency=options.concurrency,
                on_retry=retrying,
            )
        except RegistryError as exc:
            run.error = exc.message
            return
        client.share = bodies
        async with client:
            pipeline = Engine(
                client,
                options.events(env.name) if options.events else Discard(),
                concurrency=options.concurrency,
                update_method=options.update_method,
            )
            loading.start()  # the files load while the registries answer
            try:
                run.live = await pipeline.live()
            except RegistryError as exc:
                run.error = exc.message
                return
            run.state, run.excluded = desired_for(await desired(), overlays.get(env.name))
            run.plan = pipeline.plan(
                run.state, run.live, prune=env.prune, ignore=env.ignore, select=options.select
            )
            if not options.write or not writes(run.plan):
                return
            if options.on_writing is not None:
                options.on_writing()
            run.outcomes = await pipeline.apply(run.plan, stop=options.stop)

    try:
        async with anyio.create_task_group() as tg:
            for run in runs:
                tg.start_soon(one, run)
    except BaseException:
        loading.cancel()
        raise
    files = loaded()
    for run in runs:  # a registry that failed early: its file problems are still reported
        if run.state is None:
            run.state = desired_for(files, overlays.get(run.env.name))[0]
    return runs


def load_overlays(
    envs: Sequence[Environment], policy: LoadPolicy = DEFAULT_POLICY
) -> dict[str, overlay_mod.Overlays]:
    """Every selected environment's overlay directory, read (each is small), under the same
    policy as the model files."""
    return {
        e.name: overlay_mod.load_overlays(e.overlay, policy=policy)
        for e in envs
        if e.overlay is not None
    }
