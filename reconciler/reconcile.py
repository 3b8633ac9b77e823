"""Setting the engine up, for ``diff``, ``sync``, ``health``, ``export`` and the daemon: where the
registry is (:class:`Target`) and its client, what model files may do, prune settings, and
loading the files (a thread, or worker processes when many need parsing; the parse cache). The
pipeline itself is :mod:`reconciler.engine`; the decisions live in :mod:`reconciler.plan`."""

from __future__ import annotations

import gc
import multiprocessing as mp
import operator
import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any
from urllib.request import getproxies

import httpx

from . import defaults, source
from .clock import Clock
from .config import FileConfig, Settings
from .plan import Desired, FieldPath, PruneOptions
from .registry import RegistryClient
from .registry.transport import ShardedTransport
from .source import DesiredState, Problem
from .source.cache import Cached, ParseCache, Stat, Table, file_stat
from .source.files import Walked, discover_keys
from .source.wire import PARALLEL_FROM, Loaded, from_wire, to_wire


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
    plain = target.url.strip().lower().startswith("http://")

    # Plain HTTP uses no TLS, yet httpx's default transport loads the CA bundle (a sixth of a
    # second, a third of a no-op sync's run); over HTTPS every pool shares one context.
    verify: Any = False if plain else None

    def pool(size: int) -> httpx.AsyncBaseTransport:
        nonlocal verify
        if verify is None:
            verify = httpx.create_ssl_context()
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        return httpx.AsyncHTTPTransport(verify=verify, limits=limits)

    transport: httpx.AsyncBaseTransport | None = None
    # Small pools side by side (see registry.transport). Only without proxy variables over
    # HTTPS: given a transport, httpx would no longer route through the proxy they name.
    if plain or not getproxies():
        transport = ShardedTransport(pool, connections)
    if wrap is not None:
        transport = wrap(transport or pool(connections))
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


CHUNKS_PER_WORKER = 8


def _load_chunk(paths: list[str], root: str, policy: source.LoadPolicy) -> list[Loaded]:
    out: list[Loaded] = []
    for path in paths:
        r = source.load_file(path, root, policy=policy)
        out.append(Loaded(r.path, r.declared_id, r.body, r.errors, r.warnings, r.sensitive))
    return out


def _load_chunk_wire(paths: list[str], root: str, policy: source.LoadPolicy) -> bytes:
    """:func:`_load_chunk` in a worker, its results on the wire (:mod:`.source.wire`)."""
    # Equal values shared: a diff's bodies are read, never written.
    return to_wire(_load_chunk(paths, root, policy), values=True)


def _unwire(wire: bytes) -> list[Loaded]:
    return from_wire(wire, Loaded)


def _worker_signals() -> None:
    # Ctrl-C reaches the whole process group: the parent decides how to stop (see cli.interrupt);
    # a worker that died of it would break the pool under a run that is finishing its writes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # A worker lives for one load and makes no cycles worth finding: the collector would only
    # walk the growing results again and again.
    gc.disable()


def _combine(loaded: Iterable[Loaded], files: int) -> DesiredState:
    """:func:`source.combine` for plain bodies."""
    valid, errors, warnings, invalid = source.check_ids(list(loaded), lambda r: r.body is not None)
    models = {
        r.body["id"]: Desired(r.body, r.path, r.sensitive) for r in valid if r.body is not None
    }
    return DesiredState(models, tuple(errors), tuple(warnings), invalid, files)


_NOTHING: frozenset[FieldPath] = frozenset()


def _from_cache(path: str, hit: Cached) -> Loaded:
    declared_id, body, warnings = hit
    problems = (
        tuple(Problem(path, m, f, line, "warning", col, code) for m, f, line, col, code in warnings)
        if warnings
        else ()
    )
    return Loaded(path, declared_id, body, (), problems, _NOTHING)


def _whole_state(table: Table) -> DesiredState | None:
    """The desired state of files all as the last run found them (see
    :meth:`ParseCache.whole`), built column by column; None when ids repeat (the per-file path
    names the files that share one)."""
    ids, paths, n = table.ids, table.paths, len(table.ids)
    if len(set(ids)) != n:
        return None
    models = dict(zip(ids, map(Desired, table.bodies, paths, repeat(_NOTHING, n)), strict=True))
    where = map(paths.__getitem__, table.warned)
    fields = zip(
        where,
        table.messages,
        table.fields,
        table.lines,
        repeat("warning"),
        table.columns,
        table.codes,
    )
    # Problem._make without a Python call a warning: 10,000 naming warnings in ~2 ms.
    warnings = tuple(map(tuple.__new__, repeat(Problem), fields))
    return DesiredState(models, (), warnings, {}, n)


_CACHED = operator.itemgetter(1, 2, 3, 5, 6)  # a Problem's message, field, line, column, code


def _remember(cache: ParseCache, loaded: Loaded, key: Stat | None) -> None:
    found = loaded.warnings
    warnings = tuple(map(_CACHED, found)) if found else ()
    codes = tuple(w.code for w in found) if found else ()
    clean = not loaded.errors and not loaded.sensitive
    body = loaded.body if clean else None
    cache.put(loaded.path, key, loaded.declared_id, body, warnings, codes, bool(loaded.sensitive))


class Loading:
    """Files being loaded while other work runs (listing the registry): create it, :meth:`start`
    it as the registry is asked, then take :meth:`result`. Same answer as
    :func:`source.load_dir`.

    Many files to parse go to worker processes, which start at once; otherwise a thread loads
    them, so the wait for the registry's answer is not idle. With ``cache`` (a folder, see
    :mod:`reconciler.source.cache`), files unchanged since the last run come from the parse
    cache; once a cache exists for the directory, most files are expected from it and a
    thread does the rest (every file as the last run found it: the cache's columns taken
    whole, see :func:`_whole_state`)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        workers: int | None = None,
        policy: source.LoadPolicy = source.DEFAULT_POLICY,
        cache: Path | ParseCache | None = None,
    ) -> None:
        self._root = Path(root)
        self._policy = policy
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[Future[bytes]] = []
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._failure: BaseException | None = None
        self._done: DesiredState | None = None
        self._cache: ParseCache | None = None
        self._paths: list[str] = []
        self._keys: list[Stat | None] = []
        self._slots: list[Loaded | None] = []
        self._todo: list[int] = []
        self._walked: Walked | None = None
        if cache is not None:
            # Made first: its clock is read before any file is stat-ed (the racy-file rule).
            self._cache = (
                cache if isinstance(cache, ParseCache) else ParseCache(root, policy, cache)
            )
            if self._cache.exists():
                # Most files are expected from the cache: found, stat-ed and taken in a thread.
                self._later()
                return
        if not self._discover():
            return
        workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        if (
            workers < 2
            or len(self._paths) < PARALLEL_FROM
            or "fork" not in mp.get_all_start_methods()
        ):
            self._later()
            return
        paths = self._paths  # with their keys (when caching) taken before the workers read them
        # fork: workers start with everything imported; they are created here, before any
        # event loop or thread exists, which is when forking is safe.
        self._pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("fork"), initializer=_worker_signals
        )
        # Several chunks a worker: each result, and its transients in this process (the pickle
        # and the bodies' bytes), a few hundred kB rather than megabytes.
        size = max(-(-len(paths) // (workers * CHUNKS_PER_WORKER)), PARALLEL_FROM // 4)
        self._futures = [
            self._pool.submit(_load_chunk_wire, paths[i : i + size], str(self._root), self._policy)
            for i in range(0, len(paths), size)
        ]

    def _later(self) -> None:
        # Started by start(): sooner, it would only slow the steps to the list call down.
        self._thread = threading.Thread(target=self._inline, name="load", daemon=True)

    def _discover(self) -> bool:
        """Find the files, each with its key when caching; False when there is none (then the
        loader's one error is the result)."""
        paths: list[str] = []
        keys: list[Stat | None] = []
        listed = self._cache.listed() if self._cache is not None else None
        if listed is not None:  # no directory changed: the same files as last time, stat-ed
            paths, self._walked = listed
            keys = [file_stat(p) for p in paths]
        elif self._root.is_dir():
            if self._cache is not None:
                paths, keys, self._walked = discover_keys(self._root)
            else:
                paths = list(source.discover(self._root))
        if not paths:  # no directory, or no model file in it
            self._done = source.load_dir(self._root, policy=self._policy)
            return False
        self._paths, self._keys = paths, keys or [None] * len(paths)
        self._slots = [None] * len(paths)
        self._todo = list(range(len(paths)))
        return True

    def _inline(self) -> None:
        try:
            if not self._paths and not self._discover():
                return
            cache = self._cache
            if cache is not None:
                table = cache.whole(self._paths, self._keys)
                done = _whole_state(table) if table is not None else None
                if done is not None:  # every file as the last run found it
                    cache.save(self._paths, self._walked)  # only if the walk is new to it
                    self._settle(done)
                    return
                todo = []
                for i, path in enumerate(self._paths):
                    hit = cache.get(path, self._keys[i])
                    if hit is None:
                        todo.append(i)
                    else:
                        self._slots[i] = _from_cache(path, hit)
                self._todo = todo
            missing = [self._paths[i] for i in self._todo]
            self._fill(_load_chunk(missing, str(self._root), self._policy))
        except BaseException as exc:  # handed to result(), in the caller's thread
            self._failure = exc

    def _fill(self, loaded: list[Loaded]) -> None:
        for i, item in zip(self._todo, loaded, strict=True):
            self._slots[i] = item
            if self._cache is not None:
                _remember(self._cache, item, self._keys[i])
        if self._cache is not None:
            self._cache.save(self._paths, self._walked)
        slots = [s for s in self._slots if s is not None]
        self._settle(_combine(slots, len(self._paths)))

    def _settle(self, done: DesiredState) -> None:
        self._done = done
        # The cache's entries as read and written, and the stats (2 MB at 10,000 files):
        # garbage from here on.
        self._cache = None
        self._paths, self._slots, self._keys, self._todo = [], [], [], []

    def start(self) -> None:
        """Start loading in a thread, if a thread loads (once; :meth:`result` starts it too):
        call it just before the registry is asked for its list."""
        with self._starting:
            if self._thread is not None and self._thread.ident is None:
                self._thread.start()

    def result(self) -> DesiredState:
        """Wait for the load; the desired state (files in discovery order, as the loader)."""
        if self._thread is not None:
            self.start()
            self._thread.join()
            self._thread = None
        if self._failure is not None:  # raised again on each call
            raise self._failure
        if self._done is None:
            assert self._pool is not None
            try:
                loaded: list[Loaded] = []
                self._futures.reverse()
                while self._futures:
                    # Each worker's result (its marshal bytes) let go once decoded, before the
                    # next one's is: a future holds its result as long as it is held.
                    loaded += _unwire(self._futures.pop().result())
                self._fill(loaded)
            except BaseException as exc:
                self._failure = exc
                raise
            finally:
                self._pool.shutdown()
        assert self._done is not None
        return self._done

    def bodies(self) -> dict[str, Any]:
        """Each valid model's body by id, waiting for the load (nothing if it failed: then
        :meth:`result` says why). What the list's decoder may share values with
        (``RegistryClient.share``)."""
        try:
            return {key: model.body for key, model in self.result().models.items()}
        except Exception:
            return {}

    def cancel(self) -> None:
        """Stop the workers without waiting for their results (an error elsewhere)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def load_desired(
    root: str | os.PathLike[str],
    workers: int | None = None,
    policy: source.LoadPolicy = source.DEFAULT_POLICY,
    cache: Path | ParseCache | None = None,
) -> DesiredState:
    """Load every model file under ``root`` (in parallel when there are many)."""
    return Loading(root, workers, policy, cache).result()
