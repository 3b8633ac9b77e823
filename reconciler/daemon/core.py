"""The daemon's driver: reconcile one run at a time (the watcher and the health loop live in
:mod:`watcher` and :mod:`health`, the decisions in :mod:`state`).

State kept between runs: each file's last read and the desired state they combine to, kept up
to date file by file (:mod:`files`: a change re-reads one file and re-combines only the ids it
touches), and the live entries from the last full list, updated from our own writes (so a change
plans only those ids, without listing the registry). A full resync (rescan + list + plan
everything) runs at start, on the timer, on SIGHUP, after errors and when a pruned file's grace
is over; it is what undoes edits made behind our back, and reports them as drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import apply as apply_mod
from .. import defaults
from ..clock import SYSTEM, Clock, wait_event
from ..engine import Engine
from ..engine import plan as make_plan
from ..events import Event, Kind, Sink
from ..plan import Action, IgnoreRule, PruneOptions, is_immutable, prunable
from ..registry import AuthError, Listing, RegistryClient, RegistryError
from ..secrets import hidden_values, scrub
from ..source import DEFAULT_POLICY, DesiredState, LoadPolicy, ModelFileFilter
from ..spec import Entry
from . import health, writes
from .collect import Collector
from .files import ModelFiles
from .logs import Log, event
from .metrics import Metrics
from .notify import Webhook
from .overlays import NO_OVERLAY, Overlay
from .state import (
    ModelStatus,
    Readiness,
    State,
    jittered,
    next_due,
    retry_delay,
)


@dataclass(frozen=True)
class Options:
    """Everything ``reconciler watch`` was told."""

    directory: Path
    prune: PruneOptions | None = None
    ignore: tuple[IgnoreRule, ...] = ()
    resync_interval: float = defaults.RESYNC_INTERVAL
    health_interval: float = defaults.HEALTH_INTERVAL
    prune_grace: float = defaults.PRUNE_GRACE
    delete_window: float = defaults.DELETE_WINDOW  # --max-deletes counts deletes over this
    concurrency: int = defaults.CONCURRENCY
    health_concurrency: int = defaults.HEALTH_CONCURRENCY
    update_method: apply_mod.UpdateMethod = "add"
    debounce_ms: int = defaults.DEBOUNCE_MS
    step_ms: int = defaults.STEP_MS
    shutdown_timeout: float = defaults.GRACE
    load_policy: LoadPolicy = DEFAULT_POLICY
    dry_run: bool = False
    notify: tuple[Webhook, ...] = ()


@dataclass
class LastRun:
    kind: str = ""
    at: float | None = None
    seconds: float | None = None
    ok: bool | None = None
    summary: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class Daemon:
    """One reconciler loop over one directory and one registry; with environments, one per
    environment, ``files`` its view of the files read once for all, with its ``overlay``."""

    def __init__(
        self,
        options: Options,
        client: RegistryClient,
        log: Log,
        metrics: Metrics,
        events: Sink | None = None,
        clock: Clock = SYSTEM,
        files: ModelFiles | None = None,
        overlay: Overlay = NO_OVERLAY,
    ) -> None:
        self.options = options
        self.clock = clock
        self.root = Path(os.path.abspath(options.directory))
        self.client = client
        self.log = log
        self.metrics = metrics
        self.events: Sink = events if events is not None else metrics
        # The files' state is its own object: daemons over several registries can share one.
        self.model_files = files or ModelFiles(
            self.root, lambda: self.events, options.load_policy, clock
        )
        self.overlay = overlay
        self.live: dict[str, Entry] | None = None
        self.models: dict[str, ModelStatus] = {}
        self.orphans: dict[str, float] = {}
        self.fenced: set[str] = set()  # orphans due, held back by --max-deletes: wait for a resync
        self.deleted_at: list[float] = []  # our recent deletes, for the --max-deletes window
        self.reported: dict[str, tuple[str, ...]] = {}  # --dry-run: drift already reported
        self.readiness = Readiness()
        self.health_paused = False
        self.last_sync: float | None = None
        self.last_run = LastRun()
        self.started = self.clock.time()
        self.synced = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self._pending: set[str] = set()
        self._full_reason: str | None = "start"
        self._resync_at = 0.0  # monotonic
        self._failures = 0
        self._wake = asyncio.Event()
        self.stopping = False
        # The same seam as sync's signals: no write starts after stop(), those in flight finish.
        self.halt = apply_mod.Stop(grace=options.shutdown_timeout)
        self.collector = Collector(clock.monotonic)
        self.background: set[asyncio.Task[None]] = set()
        # The pipeline diff and sync use; its events (planned, written...) go to the same sink.
        self.engine = Engine(
            client,
            self.events,
            concurrency=options.concurrency,
            update_method=options.update_method,
            clock=clock.time,
        )
        metrics.watch_models(lambda: list(self.models.values()))
        self._scanning: asyncio.Task[set[str] | None] | None = None
        client.share = self._bodies

    async def _bodies(self) -> dict[str, Any]:
        """Each valid model's body by id once the files are read: the list is decoded after
        them, as it arrives, each definition equal to its file's body taking the body's values
        (decoded and built in half the time of a whole answer, and not held twice)."""
        if self._scanning is not None:
            with contextlib.suppress(Exception):  # the resync reports it, when it awaits it
                await asyncio.shield(self._scanning)
        return {key: model.body for key, model in self.model_files.models.items()}

    @property
    def dir_error(self) -> str | None:
        return self.readiness.directory_missing

    @property
    def load(self) -> DesiredState:
        """The files' desired state as one value (built on each call: O(models))."""
        return self.model_files.desired()

    @property
    def filter(self) -> ModelFileFilter:
        return self.model_files.filter

    # --- requests from the outside (watcher, signals) -----------------------------------------

    def request_full(self, reason: str) -> None:
        """Ask for a full resync as soon as the running reconcile (if any) is done."""
        self._full_reason = self._full_reason or reason
        self._wake.set()

    def notice(self, paths: Iterable[str]) -> None:
        """Files changed: fold them into the next run."""
        paths = list(paths)
        self.metrics.of(self.metrics.file_events).inc(len(paths))
        self._pending.update(paths)
        self._wake.set()

    def stop(self) -> None:
        """Finish the writes in flight (start no other), then stop."""
        self.stopping = True
        self.halt.set("the daemon is stopping")
        self.stop_requested.set()
        self._wake.set()

    async def stopped(self) -> None:
        """Return once :meth:`stop` was called."""
        await self.stop_requested.wait()

    # --- the worker ---------------------------------------------------------------------------

    async def worker(self) -> None:
        """Run reconciles one at a time until stopped; every change waiting is folded in."""
        while not self.stopping:
            delay = self._next_wake()
            if delay > 0:
                await wait_event(self.clock, self._wake, delay)
            self._wake.clear()
            if self.stopping:
                return
            await self.run_once()

    def _next_wake(self) -> float:
        if self._pending or self._full_reason:
            return 0.0
        resync, grace = self._resync_at - self.clock.monotonic(), self._grace_left()
        return max(0.0, resync if grace is None else min(resync, grace))

    async def run_once(self) -> None:
        """One reconcile: full when asked for or due, else only the files that changed."""
        reason = self._full_reason
        if reason is None and self.clock.monotonic() >= self._resync_at:
            reason = "retry" if self._failures else "resync"
        if reason is None and self._grace_left() == 0:
            reason = "prune grace over"
        paths, self._pending = self._pending, set()
        self._full_reason = None
        kind = "full" if reason or self.live is None else "incremental"
        self.client.reset()  # a registry that stopped answering last run is tried afresh
        started = self.clock.monotonic()
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
        seconds = self.clock.monotonic() - started
        self.last_run.kind, self.last_run.at, self.last_run.seconds = (
            kind,
            self.clock.time(),
            seconds,
        )
        self.last_run.ok = ok
        m = self.metrics
        m.of(m.runs, kind=kind, result="ok" if ok else "error").inc()
        m.of(m.duration, kind=kind).observe(seconds)
        self._publish()

    # --- full resync --------------------------------------------------------------------------

    async def _full(self, reason: str, forced: Iterable[str]) -> bool:
        # The files are read (off the event loop) while the registry is asked for its list;
        # the answer waits in the socket until they are (see _bodies).
        scanning = self._scanning = asyncio.create_task(
            self.model_files.rescan(forced), name="rescan"
        )
        # The last list goes before the next one comes: two at once are 40 MB more at 10,000
        # models. Without it the next change is a full resync too, which is what it needs.
        self.live = None
        try:
            live: Listing | RegistryError = await self.engine.live()
        except RegistryError as exc:
            live = exc
        except BaseException:
            scanning.cancel()
            raise
        rescanned = await scanning
        if rescanned is None:
            self.directory_missing()
        elif self.readiness.directory_missing:
            self.readiness.directory_missing = None
        reread = rescanned or set()
        if isinstance(live, RegistryError):
            self._registry_failed(live, "list")
            return False
        self.registry_answered()
        self.live = {e.id: e for e in live}
        # Planning 50,000 models is CPU work: in a thread (the pure step; the engine's event
        # is told here, on the loop), so the endpoints keep answering meanwhile.
        state = self.overlay.everything(self.model_files.desired())  # read again: may change
        plan = await asyncio.to_thread(
            make_plan, state, live, prune=self.options.prune, ignore=self.options.ignore
        )
        self.engine.planned(plan)
        plan = writes.fence(self, plan)
        outcomes = await writes.apply(self, plan, reread)
        await health.from_listing(self, live)
        keep = {c.id for c in plan.changes} | set(self.orphans)
        for model_id in list(self.models):
            if model_id not in keep:
                del self.models[model_id]
        for model_id in self.orphans:
            if model_id not in {c.id for c in plan.changes if c.action is Action.DELETE}:
                self.status(model_id).state = State.ORPHAN
        ok = all(o.ok for o in outcomes)
        self.last_run.summary = writes.summary(plan, outcomes)
        event(
            self.log,
            "full sync",
            reason=reason,
            files=len(self.model_files),
            changed_files=len(reread),
            live=len(live),
            **self.last_run.summary,
            prune_skipped=plan.prune_skipped if self.options.prune else None,
            orphans_waiting=len(self.orphans) or None,
            dry_run=self.options.dry_run or None,
        )
        if ok:
            self._failures = 0
            self.last_sync = self.clock.time()
            self.last_run.error = None
            self.readiness.synced_once = True
            self.collector.settle()  # see collect.py: no full collection stalls the loop
            self.synced.set()
            self._resync_at = self.clock.monotonic() + jittered(
                self.options.resync_interval, random.random()
            )
        else:
            self._failed(auth=False)
        return ok

    def _grace_left(self) -> float | None:
        """Seconds until an orphan's grace is over (0: it is; None: none waits). Those the fence
        holds back wait for the resync timer: waking for them now would list in a loop."""
        waiting = {i: t for i, t in self.orphans.items() if i not in self.fenced}
        return next_due(waiting, self.clock.time(), self.options.prune_grace)

    # --- incremental --------------------------------------------------------------------------

    async def _incremental(self, paths: set[str]) -> bool:
        assert self.live is not None
        if not self.root.is_dir():
            self.directory_missing()
            return False
        ids = await self.model_files.refresh(paths)
        # Only the ids the changed files declared (before or now) are planned: constant work.
        subset = self.overlay.subset(self.model_files.desired(ids), ids)
        desired, invalid = subset.models, subset.invalid_ids
        live = [self.live[i] for i in ids if i in self.live]
        plan = self.engine.plan(subset, live, ignore=self.options.ignore)
        outcomes = await writes.apply(self, plan, paths)
        now = self.clock.time()
        for model_id in (*desired, *invalid):
            self.orphans.pop(model_id, None)  # its file is back (an editor's delete-and-rename)
        for model_id in sorted(ids - desired.keys() - invalid.keys()):
            entry = self.live.get(model_id)
            prune = self.options.prune
            if prune is not None and entry is not None and prunable(entry, prune.owns):
                self.orphans.setdefault(model_id, now)
                self.status(model_id).state = State.ORPHAN
                self.status(model_id).file = None
                event(self.log, "file gone", id=model_id, prune_in=self.options.prune_grace)
            else:
                self.models.pop(model_id, None)
        self.last_run.summary = writes.summary(plan, outcomes)
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

    # --- shared steps -------------------------------------------------------------------------

    def hide(self, model_id: str, text: str | None) -> str | None:
        """``text`` (a registry's or a probe's words) without any secret or substituted value of
        this model: either may quote what it was sent."""
        model = self.model_files.models.get(model_id)
        if not text or model is None:
            return text
        hidden = hidden_values(model.body, model.sensitive)
        return scrub(text, hidden | self.overlay.hidden(model_id))

    def status(self, model_id: str) -> ModelStatus:
        """The model's row, created on first use."""
        status = self.models.get(model_id)
        if status is None:
            status = self.models[model_id] = ModelStatus(model_id)
        return status

    # --- readiness ----------------------------------------------------------------------------

    def directory_missing(self) -> None:
        """The directory is not there: not ready, and the last known models are kept."""
        message = f"{self.root}: no such directory (keeping the last known models)"
        if self.readiness.directory_missing != message:
            event(self.log, "directory missing", logging.WARNING, dir=str(self.root))
        self.readiness.directory_missing = message
        self._publish()

    def registry_answered(self) -> None:
        if not self.readiness.registry_up:
            event(self.log, "registry up")
        self.readiness.registry_up = True
        self.readiness.reason = "" if self.readiness.synced_once else "no sync yet"

    def registry_down(self, message: str) -> None:
        """A health round found the registry in trouble: not ready, and resync now."""
        self.readiness.registry_up = False
        self.readiness.reason = message
        self._resync_at = min(self._resync_at, self.clock.monotonic())
        self._wake.set()
        self._publish()

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
            retry_in=round(self._resync_at - self.clock.monotonic(), 2),
        )
        # Without the attempt count, the same outage retried every few seconds is one event.
        cause = re.sub(r" \(after \d+ attempts\)", "", exc.message)
        self.events.emit(
            Event(Kind.SYNC_FAILED, self.clock.time(), f"sync failed: {cause}", error=cause)
        )

    def _failed(self, *, auth: bool) -> None:
        self._failures += 1
        delay = retry_delay(self._failures, auth=auth, interval=self.options.resync_interval)
        self._resync_at = self.clock.monotonic() + delay

    def _publish(self) -> None:
        m = self.metrics
        m.of(m.ready).set(1 if self.readiness.ready else 0)
        m.of(m.registry_up).set(1 if self.readiness.registry_up else 0)
        m.of(m.invalid_files).set(len(self.model_files.failed) + self.overlay.failed_files)
        if self.last_sync is not None:
            m.of(m.last_sync).set(self.last_sync)

    def managed_ids(self) -> list[str]:
        """Models whose file is valid and whose entry is in the registry (and writable)."""
        live = self.live or {}
        models = self.model_files.models
        ids = (i for i in models if i in live and not is_immutable(live[i]))
        return sorted(i for i in ids if self.overlay.keeps(i))
