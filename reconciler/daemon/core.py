"""The daemon's driver: watch the directory, reconcile one run at a time, check health.

State kept between runs: each file's last :class:`FileResult` (so a change re-reads one file),
and the live entries from the last full list, updated from our own writes (so a change plans
only the ids it touches, without listing the registry). A full resync (rescan + list + plan
everything) runs at start, on the timer, on SIGHUP, after errors and when a pruned file's grace
is over; it is what undoes edits made behind our back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from watchfiles import awatch

from .. import apply as apply_mod
from .. import reconcile
from ..plan import Action, Change, IgnoreRule, Plan, PruneOptions, is_immutable, make_plan
from ..registry import AuthError, RegistryClient, RegistryError
from ..secrets import hidden_values, scrub
from ..source import (
    DEFAULT_POLICY,
    FileResult,
    LoadPolicy,
    LoadResult,
    ModelFileFilter,
    combine,
    discover,
    load_file,
)
from ..spec import Entry
from .logs import event
from .metrics import Metrics
from .state import (
    ModelStatus,
    Readiness,
    State,
    affected_ids,
    due_orphans,
    jittered,
    keep_last_good,
    next_due,
    owned,
    retry_delay,
    state_after,
    track_orphans,
)

# Kubernetes swaps a ConfigMap volume's content by renaming this symlink: one event, all files.
CONFIGMAP_DATA = "..data"


@dataclass(frozen=True)
class Options:
    """Everything ``reconciler watch`` was told."""

    directory: Path
    prune: PruneOptions | None = None
    ignore: tuple[IgnoreRule, ...] = ()
    resync_interval: float = 60.0
    health_interval: float = 60.0
    prune_grace: float = 5.0
    concurrency: int = 4
    health_concurrency: int = 4
    update_method: apply_mod.UpdateMethod = "add"
    debounce_ms: int = 50
    step_ms: int = 20
    shutdown_timeout: float = 10.0
    load_policy: LoadPolicy = DEFAULT_POLICY


@dataclass
class LastRun:
    kind: str = ""
    at: float | None = None
    seconds: float | None = None
    ok: bool | None = None
    summary: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class Daemon:
    """One reconciler loop over one directory and one registry."""

    def __init__(
        self, options: Options, client: RegistryClient, log: logging.Logger, metrics: Metrics
    ) -> None:
        self.options = options
        self.root = Path(os.path.abspath(options.directory))
        self.client = client
        self.log = log
        self.metrics = metrics
        self.filter = ModelFileFilter()
        self.files: dict[str, FileResult] = {}
        self._stamps: dict[str, tuple[int, int, int]] = {}
        self.load = LoadResult()
        self.live: dict[str, Entry] | None = None
        self.models: dict[str, ModelStatus] = {}
        self.orphans: dict[str, float] = {}
        self.readiness = Readiness()
        self.dir_error: str | None = None
        self.last_sync: float | None = None
        self.last_run = LastRun()
        self.started = time.time()
        self.synced = asyncio.Event()
        self._pending: set[str] = set()
        self._full_reason: str | None = "start"
        self._resync_at = 0.0  # monotonic
        self._failures = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.stopping = False
        # The same seam as sync's signals: no write starts after stop(), those in flight finish.
        self.halt = apply_mod.Stop(grace=options.shutdown_timeout)

    # --- requests from the outside (watcher, signals) -----------------------------------------

    def request_full(self, reason: str) -> None:
        """Ask for a full resync as soon as the running reconcile (if any) is done."""
        self._full_reason = self._full_reason or reason
        self._wake.set()

    def notice(self, paths: Iterable[str]) -> None:
        """Files changed: fold them into the next run."""
        paths = list(paths)
        self.metrics.file_events.inc(len(paths))
        self._pending.update(paths)
        self._wake.set()

    def stop(self) -> None:
        """Finish the writes in flight (start no other), then stop."""
        self.stopping = True
        self.halt.set("the daemon is stopping")
        self._stop.set()
        self._wake.set()

    async def stopped(self) -> None:
        """Return once :meth:`stop` was called."""
        await self._stop.wait()

    # --- the worker ---------------------------------------------------------------------------

    async def worker(self) -> None:
        """Run reconciles one at a time until stopped; every change waiting is folded in."""
        while not self.stopping:
            delay = self._next_wake()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            if self.stopping:
                return
            await self.run_once()

    def _next_wake(self) -> float:
        if self._pending or self._full_reason:
            return 0.0
        now = time.monotonic()
        delays = [self._resync_at - now]
        due = next_due(self.orphans, time.time(), self.options.prune_grace)
        if due is not None:
            delays.append(due)
        return max(0.0, min(delays))

    async def run_once(self) -> None:
        """One reconcile: full when asked for or due, else only the files that changed."""
        reason = self._full_reason
        if reason is None and time.monotonic() >= self._resync_at:
            reason = "retry" if self._failures else "resync"
        if reason is None and due_orphans(self.orphans, time.time(), self.options.prune_grace):
            reason = "prune grace over"
        paths, self._pending = self._pending, set()
        self._full_reason = None
        kind = "full" if reason or self.live is None else "incremental"
        self.client.reset()  # a registry that stopped answering last run is tried afresh
        started = time.perf_counter()
        ok = False
        try:
            if kind == "full":
                ok = await self._full(reason or "no live cache", paths)
            elif paths:
                ok = await self._incremental(paths)
            else:
                return
        except Exception as exc:  # a bug must not end the daemon; the next resync retries
            self.log.exception("reconcile crashed", extra={"fields": {"kind": kind}})
            self.last_run.error = f"{type(exc).__name__}: {exc}"
            self._failed(auth=False)
        seconds = time.perf_counter() - started
        self.last_run.kind, self.last_run.at, self.last_run.seconds = kind, time.time(), seconds
        self.last_run.ok = ok
        self.metrics.runs.labels(kind=kind, result="ok" if ok else "error").inc()
        self.metrics.duration.labels(kind=kind).observe(seconds)
        self._publish()

    # --- full resync --------------------------------------------------------------------------

    async def _full(self, reason: str, forced: Iterable[str]) -> bool:
        changed = self._rescan(forced)
        self.load = combine(self.files.values())
        try:
            live = await self.client.list()
        except RegistryError as exc:
            self._registry_failed(exc, "list")
            return False
        self._registry_answered()
        self.live = {e.id: e for e in live}
        plan = make_plan(
            reconcile.desired_state(self.load),
            live,
            invalid=self.load.invalid_ids,
            prune=self.options.prune,
            ignore=self.options.ignore,
            load_errors=reconcile.failed_files(self.load),
            live_complete=not live.has_more,
        )
        now = time.time()
        deletes = [c.id for c in plan.changes if c.action is Action.DELETE]
        self.orphans = track_orphans(self.orphans, deletes, now)
        due = due_orphans(self.orphans, now, self.options.prune_grace)
        plan = Plan(
            tuple(c for c in plan.changes if c.action is not Action.DELETE or c.id in due),
            plan.prune_skipped,
        )
        outcomes = await self._apply(plan)
        keep = {c.id for c in plan.changes} | set(self.orphans)
        for model_id in list(self.models):
            if model_id not in keep:
                del self.models[model_id]
        for model_id in self.orphans:
            if model_id not in due:
                self._status(model_id).state = State.ORPHAN
        ok = all(o.ok for o in outcomes)
        self.last_run.summary = _summary(plan, outcomes)
        event(
            self.log,
            "full sync",
            reason=reason,
            files=len(self.files),
            changed_files=changed,
            live=len(live),
            **self.last_run.summary,
            prune_skipped=plan.prune_skipped if self.options.prune else None,
            orphans_waiting=len(self.orphans) or None,
        )
        if ok:
            self._failures = 0
            self.last_sync = time.time()
            self.last_run.error = None
            self.readiness.synced_once = True
            # Thousands of long-lived file results and entries would otherwise be walked by every
            # full garbage collection: a pause of 100+ ms in the middle of a change. Collect here,
            # where a pause costs nothing, and keep the survivors out of later collections.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.synced.set()
            self._resync_at = time.monotonic() + jittered(
                self.options.resync_interval, random.random()
            )
        else:
            self._failed(auth=False)
        return ok

    def _rescan(self, forced: Iterable[str]) -> int:
        """Re-read the files that changed on disk (or that the watcher named); how many."""
        if not self.root.is_dir():
            # Keep the last known files: a directory being replaced must not look like every
            # model was deleted.
            self._dir_missing()
            return 0
        self.dir_error = None
        forced = set(forced)
        seen: set[str] = set()
        changed = 0
        for path in discover(self.root):
            key = str(path)
            seen.add(key)
            stamp = _stamp(key)
            if key in forced or stamp is None or stamp != self._stamps.get(key):
                self._read(key, stamp)
                changed += 1
        for key in set(self.files) - seen:
            self._forget(key)
            changed += 1
        return changed

    # --- incremental --------------------------------------------------------------------------

    async def _incremental(self, paths: set[str]) -> bool:
        assert self.live is not None
        if not self.root.is_dir():
            self._dir_missing()
            return False
        before = {p: self.files.get(p) for p in paths}
        for p in paths:
            if os.path.lexists(p) and self.filter.accepts(p):
                self._read(p, _stamp(p))
            else:
                self._forget(p)
        after = [self.files.get(p) for p in paths]
        self.load = combine(self.files.values())
        ids = affected_ids(before.values(), after)
        desired = {i: d for i, d in reconcile.desired_state(self._subset(ids)).items()}
        invalid = {i: f for i, f in self.load.invalid_ids.items() if i in ids}
        live = [self.live[i] for i in ids if i in self.live]
        plan = make_plan(desired, live, invalid=invalid, ignore=self.options.ignore)
        outcomes = await self._apply(plan)
        now = time.time()
        for model_id in (*desired, *invalid):
            self.orphans.pop(model_id, None)  # its file is back (an editor's delete-and-rename)
        for model_id in sorted(ids - desired.keys() - invalid.keys()):
            entry = self.live.get(model_id)
            prune = self.options.prune
            if (
                prune is not None
                and entry is not None
                and not is_immutable(entry)
                and owned(model_id, prune.owns)
            ):
                self.orphans.setdefault(model_id, now)
                self._status(model_id).state = State.ORPHAN
                self._status(model_id).file = None
                event(self.log, "file gone", id=model_id, prune_in=self.options.prune_grace)
            else:
                self.models.pop(model_id, None)
        self.last_run.summary = _summary(plan, outcomes)
        event(
            self.log,
            "change",
            files=sorted(os.path.relpath(p, self.root) for p in paths),
            **self.last_run.summary,
        )
        ok = all(o.ok for o in outcomes)
        if not ok:
            self._failed(auth=False)
        return ok

    def _subset(self, ids: set[str]) -> LoadResult:
        models = {i: m for i, m in self.load.models.items() if i in ids}
        return LoadResult(models=models)

    # --- shared steps -------------------------------------------------------------------------

    async def _apply(self, plan: Plan) -> list[apply_mod.Outcome]:
        now = time.time()
        changes = {c.id: c for c in plan.changes}
        for change in plan.changes:
            status = self._status(change.id)
            if change.file:
                status.file = os.path.relpath(change.file, self.root)
            if change.action is Action.INVALID:
                status.state = State.INVALID
                status.last_error = self._file_error(change.file)
            elif change.action is Action.IMMUTABLE:
                status.state = State.IMMUTABLE
                status.last_error = change.reason
            elif change.action is Action.UNCHANGED:
                status.state = State.SYNCED
                status.last_error = None
            else:
                status.state = State.PENDING
        outcomes = await apply_mod.apply_plan(
            plan,
            self.client,
            concurrency=self.options.concurrency,
            update_method=self.options.update_method,
            stop=self.halt,
        )
        skipped = [o for o in outcomes if not o.attempted]
        if skipped:
            event(self.log, "writes not attempted", count=len(skipped), reason=skipped[0].error)
        for o in outcomes:
            if not o.attempted:
                continue  # still pending: the next run (or the next start) writes it
            change = changes[o.id]
            self.metrics.writes.labels(
                action=o.action.value, outcome="ok" if o.ok else "error"
            ).inc()
            level = logging.INFO if o.ok else logging.WARNING
            error = self._hide(o.id, o.error)
            event(self.log, "write", level, id=o.id, action=o.action.value, ok=o.ok, error=error)
            if o.ok:
                self._registry_answered()
                self._cache(change)
                if o.action is Action.DELETE:
                    self.models.pop(o.id, None)
                    self.orphans.pop(o.id, None)
                    continue
                status = self._status(o.id)
                status.last_applied, status.last_error = now, None
            else:
                if o.status is None or o.status >= 500:
                    self.readiness.registry_up = False
                    self.readiness.reason = error or "write failed"
                self._status(o.id).last_error = error
            self._status(o.id).state = state_after(change, o)
        return outcomes

    def _cache(self, change: Change) -> None:
        """Update the live cache from a write that succeeded, as the registry now holds it."""
        assert self.live is not None
        if change.action is Action.DELETE:
            self.live.pop(change.id, None)
            return
        body = dict(change.body or {})
        old = self.live.get(change.id)
        self.live[change.id] = Entry(
            id=change.id,
            provider=str(body.get("provider", "")),
            model_id=str(body.get("modelId", "")),
            definition=body,
            health=old.health if old else Entry(id=change.id).health,
        )

    def _read(self, path: str, stamp: tuple[int, int, int] | None) -> None:
        new = keep_last_good(
            load_file(path, self.root, policy=self.options.load_policy), self.files.get(path)
        )
        self.files[path] = new
        if stamp is not None:
            self._stamps[path] = stamp
        if new.errors:
            event(
                self.log,
                "invalid file",
                logging.WARNING,
                file=os.path.relpath(path, self.root),
                id=new.declared_id,
                error=str(new.errors[0]),
                errors=len(new.errors),
            )

    def _forget(self, path: str) -> None:
        self.files.pop(path, None)
        self._stamps.pop(path, None)

    def _file_error(self, file: str | None) -> str | None:
        result = self.files.get(file or "")
        problems = result.errors if result and result.errors else ()
        if not problems:
            problems = tuple(p for p in self.load.errors if p.path == file)
        if not problems:
            return "the file failed validation"
        first = problems[0]
        where = os.path.relpath(first.path, self.root) + (f":{first.line}" if first.line else "")
        what = f"{first.field}: " if first.field else ""
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{where}: {what}{first.message}{more}"

    def _hide(self, model_id: str, text: str | None) -> str | None:
        """``text`` (a registry's or a probe's words) without any secret or substituted value of
        this model: either may quote what it was sent."""
        model = self.load.models.get(model_id)
        if not text or model is None:
            return text
        return scrub(text, hidden_values(model.definition.to_api(), model.sensitive))

    def _status(self, model_id: str) -> ModelStatus:
        status = self.models.get(model_id)
        if status is None:
            status = self.models[model_id] = ModelStatus(model_id)
        return status

    def _dir_missing(self) -> None:
        message = f"{self.root}: no such directory (keeping the last known models)"
        if self.dir_error != message:
            event(self.log, "directory missing", logging.WARNING, dir=str(self.root))
        self.dir_error = message

    def _registry_answered(self) -> None:
        if not self.readiness.registry_up:
            event(self.log, "registry up")
        self.readiness.registry_up = True
        self.readiness.reason = "" if self.readiness.synced_once else "no sync yet"

    def _registry_failed(self, exc: RegistryError, what: str) -> None:
        auth = isinstance(exc, AuthError)
        self.readiness.registry_up = False
        self.readiness.reason = exc.message
        self.last_run.error = exc.message
        self._failed(auth=auth)
        event(
            self.log,
            "registry error",
            logging.ERROR,
            call=what,
            status=exc.status,
            error=exc.message,
            retry_in=round(self._resync_at - time.monotonic(), 2),
        )

    def _failed(self, *, auth: bool) -> None:
        self._failures += 1
        delay = retry_delay(self._failures, auth=auth, interval=self.options.resync_interval)
        self._resync_at = time.monotonic() + delay

    def _publish(self) -> None:
        self.metrics.ready.set(1 if self.readiness.ready else 0)
        self.metrics.registry_up.set(1 if self.readiness.registry_up else 0)
        self.metrics.invalid_files.set(reconcile.failed_files(self.load))
        if self.last_sync is not None:
            self.metrics.last_sync.set(self.last_sync)

    # --- health -------------------------------------------------------------------------------

    def managed_ids(self) -> list[str]:
        """Models whose file is valid and whose entry is in the registry (and writable)."""
        live = self.live or {}
        return sorted(i for i in self.load.models if i in live and not is_immutable(live[i]))

    async def health_loop(self) -> None:
        """Every ``health_interval`` seconds, ask the registry to probe each managed model."""
        interval = self.options.health_interval
        if interval <= 0:
            return
        await self.synced.wait()
        while not self.stopping:
            await self.check_health_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), jittered(interval, random.random()))

    async def check_health_once(self) -> None:
        """One round of health checks, a few at a time."""
        ids = self.managed_ids()
        if not ids:
            return
        results = await apply_mod.check_health(
            self.client, ids, concurrency=self.options.health_concurrency
        )
        now = time.time()
        down = 0
        for model_id, result in results.items():
            status = self.models.get(model_id)
            if status is None:
                continue
            if isinstance(result, RegistryError):
                status.health_error = f"health check failed: {result.message}"
                self.metrics.health_checks.labels(outcome="error").inc()
                down += 1
                continue
            if status.available is not None and status.available != result.is_available:
                event(
                    self.log,
                    "health changed",
                    logging.INFO if result.is_available else logging.WARNING,
                    id=model_id,
                    available=result.is_available,
                    error=self._hide(model_id, result.error),
                )
            status.available = result.is_available
            status.health_error = self._hide(model_id, result.error)
            status.checked_at = _seconds(result.checked_at) or now
            outcome = "available" if result.is_available else "unavailable"
            self.metrics.health_checks.labels(outcome=outcome).inc()
            down += 0 if result.is_available else 1
        event(self.log, "health checked", models=len(ids), unavailable=down)
        trouble = next(
            (
                r
                for r in results.values()
                if isinstance(r, RegistryError)
                and (r.status is None or r.status >= 500 or isinstance(r, AuthError))
            ),
            None,
        )
        if trouble is not None:
            # The registry itself is in trouble: not ready, and a full resync now finds out
            # more (and backs off) rather than waiting for the resync timer.
            self.readiness.registry_up = False
            self.readiness.reason = trouble.message
            self._resync_at = min(self._resync_at, time.monotonic())
            self._wake.set()
        elif len(results) > sum(isinstance(r, RegistryError) for r in results.values()):
            self._registry_answered()

    # --- the watcher --------------------------------------------------------------------------

    def _watch_filter(self, change: object, path: str) -> bool:
        return self.filter(change, path) or os.path.basename(path) == CONFIGMAP_DATA

    async def watch(self) -> None:
        """Feed file changes to the worker; survive the directory being deleted, recreated or
        swapped under a symlink (git-sync), by watching again and asking for a rescan."""
        was_missing = False
        while not self.stopping:
            if not self.root.is_dir():
                if not was_missing:
                    self._dir_missing()
                    was_missing = True
                await _wait(self._stop, 0.25)
                continue
            if was_missing:
                event(self.log, "directory back", dir=str(self.root))
                was_missing = False
                self.request_full("directory recreated")
            real = os.path.realpath(self.root)
            try:
                async for changes in awatch(
                    self.root,
                    watch_filter=self._watch_filter,
                    debounce=self.options.debounce_ms,
                    step=self.options.step_ms,
                    rust_timeout=500,
                    yield_on_timeout=True,
                    stop_event=self._stop,
                    recursive=True,
                ):
                    paths = {
                        self._key(p, real)
                        for _, p in changes
                        if os.path.basename(p) != CONFIGMAP_DATA
                    }
                    if len(paths) < len(changes):
                        self.request_full("configmap update")
                    if paths:
                        self.notice(paths)
                    if not self.root.is_dir():
                        break
                    if os.path.realpath(self.root) != real:
                        event(self.log, "directory replaced", dir=str(self.root))
                        self.request_full("directory replaced")
                        break
            except (OSError, RuntimeError) as exc:
                event(self.log, "watch error", logging.WARNING, error=str(exc))
                await _wait(self._stop, 0.5)

    def _key(self, path: str, real: str) -> str:
        """The path as :func:`discover` names it (under ``root`` as given, not as resolved)."""
        if real != str(self.root) and (path == real or path.startswith(real + os.sep)):
            return str(self.root) + path[len(real) :]
        return path


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _seconds(value: float | None) -> float | None:
    """The registry answers times in ms since epoch (or seconds): unix seconds either way."""
    if value is None:
        return None
    return value / 1000 if value > 10_000_000_000 else value


async def _wait(event_: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event_.wait(), seconds)


def _summary(plan: Plan, outcomes: list[apply_mod.Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for change in plan.changes:
        if change.action is not Action.UNCHANGED:
            counts[change.action.value] = counts.get(change.action.value, 0) + 1
    failed = sum(1 for o in outcomes if not o.ok)
    if failed:
        counts["failed"] = failed
    return counts
