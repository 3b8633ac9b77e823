"""Setting the engine up, for ``diff``, ``sync``, ``health``, ``export`` and the daemon: where the
registry is (:class:`Target`) and its client, what model files may do, prune settings, and
loading the files (in worker processes when there are many). The pipeline itself is
:mod:`reconciler.engine`; the decisions live in :mod:`reconciler.plan`."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from . import defaults, source
from .clock import Clock
from .config import FileConfig, Settings
from .plan import Desired, FieldPath, PruneOptions
from .registry import RegistryClient
from .source import DesiredState, Problem


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
    timeout: float = defaults.TIMEOUT,
    rps: float | None = None,
    concurrency: int = defaults.CONCURRENCY,
    on_retry: Callable[[str], None] | None = None,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    clock: Clock | None = None,
) -> RegistryClient:
    """A client for ``target``; raises :class:`RegistryError` for a malformed URL. ``on_retry``
    gets the one-line notice when the registry stops answering (see :mod:`reconciler.registry`);
    ``wrap`` wraps the transport (the daemon times every call there); ``clock`` times its
    retries and spacing (default: the real clock)."""
    connections = max(concurrency, 1)
    transport: httpx.AsyncBaseTransport | None = None
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    if target.url.strip().lower().startswith("http://"):
        # Plain HTTP uses no TLS, yet httpx's default transport loads the CA bundle (a sixth of
        # a second, a third of a no-op sync's run). Env proxies are then not used for it.
        transport = httpx.AsyncHTTPTransport(verify=False, limits=limits)
    if wrap is not None:
        transport = wrap(transport or httpx.AsyncHTTPTransport(limits=limits))
    return RegistryClient(
        target.url,
        target.api_key,
        on_behalf_of=target.on_behalf_of,
        timeout=timeout,
        rps=rps,
        max_connections=connections,
        transport=transport,
        on_retry=on_retry,
        sleep=clock.sleep if clock is not None else None,
        clock=clock.monotonic if clock is not None else None,
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


def load_policy(config: FileConfig) -> source.LoadPolicy:
    """What model files may do, from ``reconciler.toml``: the variables non-secret fields may
    name, the credentials none may, and the file size cap."""
    return source.LoadPolicy(
        tuple(config.allow_env),
        config.credential_env(),
        config.max_file_bytes,
        config.lint_file_names,
    )


class _Loaded(NamedTuple):
    """A file's load reduced to plain data, so it crosses a process boundary cheaply (a pickled
    pydantic Definition costs more to unpickle than the file costs to parse)."""

    path: str
    declared_id: str | None
    body: dict[str, Any] | None
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    sensitive: frozenset[FieldPath]


PARALLEL_FROM = 400  # files; below this a pool costs more than it saves


def _load_chunk(paths: list[str], root: str, policy: source.LoadPolicy) -> list[_Loaded]:
    out: list[_Loaded] = []
    for path in paths:
        r = source.load_file(path, root, policy=policy)
        out.append(_Loaded(r.path, r.declared_id, r.body, r.errors, r.warnings, r.sensitive))
    return out


def _worker_signals() -> None:
    # Ctrl-C reaches the whole process group: the parent decides how to stop (see cli.interrupt);
    # a worker that died of it would break the pool under a run that is finishing its writes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _combine(loaded: Iterable[_Loaded], files: int) -> DesiredState:
    """:func:`source.combine` for plain bodies."""
    valid, errors, warnings, invalid = source.check_ids(list(loaded), lambda r: r.body is not None)
    models = {
        r.body["id"]: Desired(r.body, r.path, r.sensitive) for r in valid if r.body is not None
    }
    return DesiredState(models, tuple(errors), tuple(warnings), invalid, files)


class Loading:
    """Files being loaded, in worker processes when there are many: start it, do other work
    (list the registry), then take :meth:`result`. Same answer as :func:`source.load_dir`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        workers: int | None = None,
        policy: source.LoadPolicy = source.DEFAULT_POLICY,
    ) -> None:
        self._root = Path(root)
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[Future[list[_Loaded]]] = []
        self._done: DesiredState | None = None
        paths = [str(p) for p in source.discover(self._root)] if self._root.is_dir() else []
        if not paths:  # no directory, or no model file in it: the loader's one error
            self._done = source.load_dir(self._root, policy=policy)
            return
        self._files = len(paths)
        workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        if workers < 2 or len(paths) < PARALLEL_FROM or "fork" not in mp.get_all_start_methods():
            self._done = _combine(_load_chunk(paths, str(self._root), policy), len(paths))
            return
        # fork: workers start with everything imported; they are created here, before any
        # event loop or thread exists, which is when forking is safe.
        self._pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("fork"), initializer=_worker_signals
        )
        size = -(-len(paths) // workers)
        self._futures = [
            self._pool.submit(_load_chunk, paths[i : i + size], str(self._root), policy)
            for i in range(0, len(paths), size)
        ]

    def result(self) -> DesiredState:
        """Wait for the workers; the desired state (files in discovery order, as the loader)."""
        if self._done is None:
            assert self._pool is not None
            try:
                loaded = [item for f in self._futures for item in f.result()]
            finally:
                self._pool.shutdown()
            self._done = _combine(loaded, self._files)
        return self._done

    def cancel(self) -> None:
        """Stop the workers without waiting for their results (an error elsewhere)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def load_desired(
    root: str | os.PathLike[str],
    workers: int | None = None,
    policy: source.LoadPolicy = source.DEFAULT_POLICY,
) -> DesiredState:
    """Load every model file under ``root`` (in parallel when there are many)."""
    return Loading(root, workers, policy).result()
