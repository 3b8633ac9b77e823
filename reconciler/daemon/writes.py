"""Carry out one run's plan for the daemon: write it (or, with ``--dry-run``, only report it),
log each write field by field, keep the live cache and each model's state, and turn what
happened into events (``drift-corrected``, ``drift-detected``, ``sync-failed``)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from .. import apply as apply_mod
from ..events import Event, Kind
from ..plan import Action, Change, Plan, writes
from ..spec import Entry
from . import changes as words
from .logs import event
from .state import (
    State,
    due_orphans,
    fence_deletes,
    is_drift,
    prune_reason,
    state_after,
    track_orphans,
)

if TYPE_CHECKING:
    from .core import Daemon


async def apply(d: Daemon, plan: Plan, reread: set[str]) -> list[apply_mod.Outcome]:
    """Write the plan and record each model's state; ``reread`` are the files read in this run
    (a write for one of them follows an edit, not drift)."""
    now = d.clock.time()
    changes = {c.id: c for c in plan.changes}
    # The states before this run, of the planned ids only: a change costs what it touches.
    before = {c.id: s.state for c in plan.changes if (s := d.models.get(c.id)) is not None}
    root = str(d.root) + os.sep
    seen: list[str] = []  # ids managed from now on: their per-id counters start at zero
    for n, change in enumerate(plan.changes, 1):
        if n % 200 == 0:
            await asyncio.sleep(0)  # 50,000 rows: let the endpoints answer in between
        if change.id not in d.models:
            seen.append(change.id)
        status = d.status(change.id)
        if change.file:
            file = change.file  # relpath costs 100 ms over 20,000 rows; the prefix is enough
            status.file = (
                file[len(root) :] if file.startswith(root) else os.path.relpath(file, d.root)
            )
        if change.action is Action.INVALID:
            status.state = State.INVALID
            status.last_error = d.overlay.first_error(change.file) or d.model_files.first_error(
                change.file
            )
        elif change.action is Action.IMMUTABLE:
            status.state = State.IMMUTABLE
            status.last_error = change.reason
        elif change.action is Action.UNCHANGED:
            status.state = State.SYNCED
            status.last_error = None
            d.reported.pop(change.id, None)
        else:
            status.state = State.PENDING
    _count_from_zero(d, seen)
    if d.options.dry_run:
        report_only(d, plan, now)
        return []
    outcomes = await d.engine.apply(plan, stop=d.halt)
    skipped = [o for o in outcomes if not o.attempted]
    if skipped:
        event(d.log, "writes not attempted", count=len(skipped), reason=skipped[0].error)
    trouble: list[tuple[apply_mod.Outcome, str | None]] = []
    for o in outcomes:
        if not o.attempted:
            continue  # still pending: the next run (or the next start) writes it
        change = changes[o.id]
        d.metrics.of(
            d.metrics.writes, action=o.action.value, outcome="ok" if o.ok else "error"
        ).inc()
        error = words.scrub_text(d.hide(o.id, o.error), change)
        event(
            d.log,
            "write",
            logging.INFO if o.ok else logging.WARNING,
            id=o.id,
            action=o.action.value,
            ok=o.ok,
            error=error,
            changes=words.describe(change) or None,
        )
        if o.ok:
            d.registry_answered()
            _cache(d, change)
            if is_drift(change, before.get(o.id), change.file in reread):
                drift(d, Kind.DRIFT_CORRECTED, change, now)
            if o.action is Action.DELETE:
                d.models.pop(o.id, None)
                d.orphans.pop(o.id, None)
                d.deleted_at.append(now)
                continue
            status = d.status(o.id)
            status.last_applied, status.last_error = now, None
        else:
            if o.status is None or o.status >= 500:
                d.readiness.registry_up = False
                d.readiness.reason = error or "write failed"
                trouble.append((o, error))
            else:  # the registry refused this model's write: news about this model
                _failed(d, o, error, now)
            d.status(o.id).last_error = error
        d.status(o.id).state = state_after(change, o)
    if len(trouble) == 1:
        _failed(d, *trouble[0], now)
    elif trouble:
        # The registry is failing, not each model: one event for the run, not hundreds.
        o, error = trouble[0]
        cause = f"HTTP {o.status}" if o.status else "no answer from the registry"
        d.events.emit(
            Event(
                Kind.SYNC_FAILED,
                now,
                f"{len(trouble)} writes failed ({cause}), e.g. {o.action.value} {o.id}: {error}",
                error=cause,
            )
        )
    return outcomes


def fence(d: Daemon, plan: Plan) -> Plan:
    """Keep only the deletes whose grace is over, and only as many as ``--max-deletes``
    allows over the sliding window (files deleted one by one add up)."""
    prune = d.options.prune
    now = d.clock.time()
    deletes = [c.id for c in plan.changes if c.action is Action.DELETE]
    d.orphans = track_orphans(d.orphans, deletes, now)
    due = due_orphans(d.orphans, now, d.options.prune_grace)
    skipped = plan.prune_skipped
    d.fenced = set()
    if due and prune is not None and not prune.force:
        allowed, d.deleted_at = fence_deletes(
            d.deleted_at,
            len(due),
            now,
            window=d.options.delete_window,
            max_deletes=prune.max_deletes,
        )
        if not allowed:
            skipped = (
                f"prune skipped: {len(d.deleted_at)} entries deleted in the last "
                f"{d.options.delete_window / 60:.0f} min and {len(due)} more would pass "
                f"--max-deletes {prune.max_deletes}; pass --force (or a higher "
                "--max-deletes) to delete them"
            )
            d.fenced, due = due, set()
    if skipped and prune is not None:
        d.metrics.of(d.metrics.prune_skipped, reason=prune_reason(skipped)).inc()
    changes = tuple(c for c in plan.changes if c.action is not Action.DELETE or c.id in due)
    return Plan(changes, skipped)


def _count_from_zero(d: Daemon, ids: list[str]) -> None:
    """Start the per-id counters of newly managed models; thousands (the first sync) in a
    task of their own, a chunk at a time: 20,000 labelled children are 0.6 s of CPU that
    readiness need not wait for."""
    if len(ids) <= 500:
        for model_id in ids:
            d.metrics.model_seen(model_id)
        return

    async def in_chunks() -> None:
        for n, model_id in enumerate(ids, 1):
            d.metrics.model_seen(model_id)
            if n % 500 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(in_chunks(), name="per-id counters")
    d.background.add(task)  # held until done (the loop keeps only weak references)
    task.add_done_callback(d.background.discard)


def _failed(d: Daemon, o: apply_mod.Outcome, error: str | None, now: float) -> None:
    d.events.emit(
        Event(
            Kind.SYNC_FAILED,
            now,
            f"{o.action.value} {o.id} failed: {error}",
            id=o.id,
            file=d.status(o.id).file,
            error=error,
        )
    )


def report_only(d: Daemon, plan: Plan, now: float) -> None:
    """--dry-run: each write is logged and its model marked out of sync; drift not reported
    yet (or changed since) becomes a ``drift-detected`` event."""
    for change in writes(plan):
        status = d.status(change.id)
        status.state = State.ORPHAN if change.action is Action.DELETE else State.OUT_OF_SYNC
        event(
            d.log,
            "would write",
            id=change.id,
            action=change.action.value,
            changes=words.describe(change) or None,
        )
        signature = (change.action.value, *words.field_paths(change))
        if d.reported.get(change.id) != signature:
            d.reported[change.id] = signature
            drift(d, Kind.DRIFT_DETECTED, change, now)


def drift(d: Daemon, kind: Kind, change: Change, now: float) -> None:
    """Emit a drift event for ``change``: the paths that differ, never their values."""
    paths = words.field_paths(change)
    if change.action is Action.CREATE:
        what = "was missing from the registry"
    elif change.action is Action.DELETE:
        what = "is in the registry but no file declares it"
    else:
        what = "differed from its file: " + ", ".join(paths[:10])
        what += f" (+{len(paths) - 10} more)" if len(paths) > 10 else ""
    done = "put back" if kind is Kind.DRIFT_CORRECTED else "left as is (--dry-run)"
    status = d.models.get(change.id)
    d.events.emit(
        Event(
            kind,
            now,
            f"{change.id} {what}; {done}",
            id=change.id,
            file=status.file if status else None,
            fields=paths if change.action is Action.UPDATE else (),
        )
    )


def _cache(d: Daemon, change: Change) -> None:
    """Update the live cache from a write that succeeded, as the registry now holds it."""
    assert d.live is not None
    if change.action is Action.DELETE:
        d.live.pop(change.id, None)
        return
    body = dict(change.body or {})
    old = d.live.get(change.id)
    d.live[change.id] = Entry(
        id=change.id,
        provider=str(body.get("provider", "")),
        model_id=str(body.get("modelId", "")),
        definition=body,
        health=old.health if old else Entry(id=change.id).health,
    )


def summary(plan: Plan, outcomes: list[apply_mod.Outcome]) -> dict[str, int]:
    """What a run planned, by action (unchanged left out), and how many writes failed."""
    counts: dict[str, int] = {}
    for change in plan.changes:
        if change.action is not Action.UNCHANGED:
            counts[change.action.value] = counts.get(change.action.value, 0) + 1
    failed = sum(1 for o in outcomes if not o.ok)
    if failed:
        counts["failed"] = failed
    return counts
