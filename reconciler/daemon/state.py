"""The daemon's pure decisions: model state, prune grace, retry pacing, readiness, ``--listen``.

Plain data in, plain data out; no clock, no I/O (the time is always passed in), so each rule is
unit-tested with a handful of values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

from ..apply import Outcome
from ..events import iso
from ..plan import Action, Change
from ..source import FileResult, Problem


class State(StrEnum):
    """Where one model stands, as the status page and the ``reconciler_models`` gauge name it."""

    SYNCED = "synced"  # the registry holds what the file declares
    PENDING = "pending"  # a write is planned or in flight
    ERROR = "error"  # the last write failed; retried by the next resync
    INVALID = "invalid"  # the file is broken: its last good state is kept, nothing is written
    IMMUTABLE = "immutable"  # the registry holds the id read-only; never written
    ORPHAN = "orphan"  # no file declares it any more: pruned once the grace period is over
    OUT_OF_SYNC = "out-of-sync"  # differs from its file, and --dry-run leaves it so


# The states counted by ``reconciler_models_out_of_sync``.
UNSYNCED = frozenset({State.PENDING, State.ERROR, State.OUT_OF_SYNC})


@dataclass(slots=True)
class ModelStatus:
    """What the daemon knows about one model; mutated by the driver, read by the endpoints."""

    id: str
    file: str | None = None
    state: State = State.PENDING
    last_applied: float | None = None  # unix seconds of the last successful write
    last_error: str | None = None
    available: bool | None = None
    checked_at: float | None = None  # unix seconds of the last health answer
    health_error: str | None = None

    @property
    def health(self) -> str:
        """``up``, ``down`` or ``unknown`` (never checked, or the last check got no answer)."""
        if self.available is None:
            return "unknown"
        return "up" if self.available else "down"

    def as_json(self) -> dict[str, object]:
        """JSON-ready: ids, paths, states, ISO 8601 UTC times and messages (never a definition)."""
        return {
            "id": self.id,
            "file": self.file,
            "state": self.state.value,
            "last_applied": iso_or_none(self.last_applied),
            "last_error": self.last_error,
            "health": {
                "state": self.health,
                "available": self.available,
                "checked_at": iso_or_none(self.checked_at),
                "error": self.health_error,
            },
        }


def iso_or_none(timestamp: float | None) -> str | None:
    """ISO 8601 UTC (as ``health -o json``), or None."""
    return None if timestamp is None else iso(timestamp)


def state_after(change: Change, outcome: Outcome | None) -> State:
    """The state a model is in once ``change`` was planned and (maybe) written."""
    if change.action is Action.INVALID:
        return State.INVALID
    if change.action is Action.IMMUTABLE:
        return State.IMMUTABLE
    if change.action is Action.UNCHANGED:
        return State.SYNCED
    if outcome is None:
        return State.PENDING
    return State.SYNCED if outcome.ok else State.ERROR


class _Read(Protocol):
    declared_id: str | None
    errors: tuple[Problem, ...]


R = TypeVar("R", bound=_Read)


def keep_last_good(new: R, old: _Read | None) -> R:
    """A file that stopped parsing (an editor's half-written save) still names the id it held,
    so its model counts as invalid (kept as is) rather than gone (pruned). For a
    :class:`FileResult` or the daemon's record of a file (a NamedTuple)."""
    if not new.errors or new.declared_id is not None or old is None:
        return new
    if isinstance(new, tuple):
        return new._replace(declared_id=old.declared_id)  # type: ignore[attr-defined, no-any-return]
    return dataclasses.replace(new, declared_id=old.declared_id)  # type: ignore[type-var]


def affected_ids(old: Iterable[FileResult | None], new: Iterable[FileResult | None]) -> set[str]:
    """Every id a set of changed files declared before or declares now."""
    return {r.declared_id for r in (*old, *new) if r is not None and r.declared_id is not None}


# --- prune grace -----------------------------------------------------------------------------


def track_orphans(
    since: Mapping[str, float], orphans: Iterable[str], now: float
) -> dict[str, float]:
    """When each current orphan was first seen orphaned; ids no longer orphaned are forgotten,
    so a file that comes back (delete-and-rename save) restarts the clock next time."""
    return {i: since.get(i, now) for i in orphans}


def due_orphans(since: Mapping[str, float], now: float, grace: float) -> set[str]:
    """The orphans that have stayed away for at least ``grace`` seconds."""
    return {i for i, t in since.items() if now - t >= grace}


def next_due(since: Mapping[str, float], now: float, grace: float) -> float | None:
    """Seconds until the next orphan is due (0 if one already is), or None when there is none."""
    if not since:
        return None
    return max(0.0, min(since.values()) + grace - now)


# --- pacing ----------------------------------------------------------------------------------


def retry_delay(failures: int, *, auth: bool, interval: float) -> float:
    """The wait before the next full resync after ``failures`` failed in a row (>= 1).

    A registry that is down is retried quickly (0.5 s doubling, never slower than the resync
    interval nor 30 s); a refused key will not fix itself soon, so it is retried slowly.
    """
    n = max(failures, 1) - 1
    if auth:
        return min(5.0 * 2**n, 60.0)
    return min(0.5 * 2**n, 30.0, max(interval, 0.5))


def jittered(interval: float, unit: float) -> float:
    """``interval`` spread by up to +-10% (``unit`` in [0, 1)), so a fleet of daemons does not
    list the registry in lockstep."""
    return interval * (0.9 + 0.2 * unit)


@dataclass
class Readiness:
    """Ready once a full sync has succeeded, for as long as the registry keeps answering and
    the model directory is there."""

    synced_once: bool = False
    registry_up: bool = False
    reason: str = "no sync yet"
    failures: int = field(default=0)
    directory_missing: str | None = None

    @property
    def ready(self) -> bool:
        return self.synced_once and self.registry_up and self.directory_missing is None

    @property
    def why_not(self) -> str | None:
        """Why not ready (None when ready); a missing directory first, it is what to fix."""
        if self.ready:
            return None
        return self.directory_missing or self.reason or "not ready"


# --- drift and the delete fence --------------------------------------------------------------


def is_drift(change: Change, before: State | None, file_reread: bool) -> bool:
    """Whether a planned write undoes an edit made in the registry: the model was in sync and
    its file did not change since, yet the entry differs (or is gone)."""
    return (
        change.action in (Action.UPDATE, Action.CREATE)
        and before is State.SYNCED
        and not file_reread
    )


# What a prune_skipped message says -> the reason label of reconciler_prune_skipped_total.
_PRUNE_REASONS = (
    ("max-deletes", "max-deletes"),
    ("no valid model", "empty"),
    ("has_more", "paged"),
)


def prune_reason(message: str) -> str:
    """The metric's reason for a ``prune skipped: ...`` message."""
    return next((r for key, r in _PRUNE_REASONS if key in message), "invalid-files")


def fence_deletes(
    deleted_at: Iterable[float], wanted: int, now: float, *, window: float, max_deletes: int
) -> tuple[bool, list[float]]:
    """Whether ``wanted`` more deletes stay within ``max_deletes`` over the last ``window``
    seconds, and the delete times still inside the window. Files removed one by one add up
    like a directory that vanished at once."""
    recent = [t for t in deleted_at if now - t < window]
    return len(recent) + wanted <= max_deletes, recent


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:9180``, ``[::1]:9180`` or ``:9180`` (all interfaces) -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9180")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
