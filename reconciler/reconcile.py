"""The shared wiring of ``diff``, ``sync`` and the daemon: where the registry is, and files +
live entries -> plan. Thin on purpose: the decisions live in :mod:`reconciler.plan`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .config import FileConfig, Settings
from .plan import Desired, IgnoreRule, Plan, PruneOptions, make_plan
from .registry import RegistryClient
from .source import LoadResult


class SetupError(Exception):
    """A setting is missing or contradictory; the message says which flag or variable to set."""


@dataclass(frozen=True)
class Target:
    """Where the registry is and who we are to it."""

    url: str
    api_key: str | None
    on_behalf_of: str | None = None


def resolve_target(
    settings: Settings,
    config: FileConfig,
    *,
    registry_url: str | None = None,
    on_behalf_of: str | None = None,
) -> Target:
    """Flag, else environment, else config file; a missing URL names every way to give it."""
    url = registry_url or settings.api_url or config.registry_url
    if not url:
        raise SetupError(
            "no registry URL: pass --registry-url or set MKA1_API_URL "
            "(or registry_url in reconciler.toml)"
        )
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return Target(url, key or None, on_behalf_of or settings.on_behalf_of or None)


def make_client(
    target: Target,
    *,
    timeout: float = 10.0,
    rps: float | None = None,
    concurrency: int = 4,
) -> RegistryClient:
    """A client for ``target``; raises :class:`RegistryError` for a malformed URL."""
    return RegistryClient(
        target.url,
        target.api_key,
        on_behalf_of=target.on_behalf_of,
        timeout=timeout,
        rps=rps,
        max_connections=max(concurrency, 1),
    )


def prune_options(
    prune: bool, owns: Sequence[str], config: FileConfig, *, max_deletes: int, force: bool
) -> PruneOptions | None:
    """Prune settings from flags and config (flags win over the file's ``owns``); refuses prune
    without an ownership pattern, which would otherwise own nothing or everything."""
    if not prune:
        return None
    patterns = tuple(owns) or tuple(config.owns)
    if not patterns:
        raise SetupError(
            "--prune needs an ownership pattern: pass --owns 'meetkai:team-*' "
            "(repeatable) or set owns in reconciler.toml"
        )
    if max_deletes < 0:
        raise SetupError("--max-deletes must be 0 or more")
    return PruneOptions(patterns, max_deletes, force)


def desired_state(load: LoadResult) -> dict[str, Desired]:
    """The valid models of a load as plan input: API body and file, by id."""
    return {i: Desired(m.definition.to_api(), m.path) for i, m in load.models.items()}


def failed_files(load: LoadResult) -> int:
    """How many files failed to load (each counted once, whether or not it names an id)."""
    return len({p.path for p in load.errors})


async def plan_against(
    client: RegistryClient,
    load: LoadResult,
    *,
    prune: PruneOptions | None = None,
    ignore: Sequence[IgnoreRule] = (),
    invalid: Mapping[str, str] | None = None,
) -> Plan:
    """List the registry once and plan ``load`` against it."""
    live = await client.list()
    return make_plan(
        desired_state(load),
        live,
        invalid=load.invalid_ids if invalid is None else invalid,
        prune=prune,
        ignore=ignore,
        load_errors=failed_files(load),
    )
