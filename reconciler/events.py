"""What the reconciler tells the outside world: typed events and the sinks that receive them.

The engine (:mod:`reconciler.engine`) and the daemon build an :class:`Event` and hand it to one
:class:`Sink` (usually a :class:`Fanout`: the terminal's progress, or the daemon's log, metrics
and notification sinks); nothing else decides where events go, so a new consumer (a status page,
drift notifications) is one more sink. An event holds ids, file names, field paths, counts and
messages, never a field's value, so no sink can leak a secret or a value that came from a
``${VAR}`` placeholder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


class Kind(StrEnum):
    """What happened. The first five are news a notification can subscribe to (``[[notify]]
    events = [...]``, :data:`NOTIFY`); the engine's steps come after them."""

    DRIFT_CORRECTED = "drift-corrected"  # someone changed an entry; the daemon put it back
    DRIFT_DETECTED = "drift-detected"  # an entry differs from its file (--dry-run: not written)
    SYNC_FAILED = "sync-failed"  # a write or the registry list failed
    INVALID_FILE = "invalid-file"  # a model file does not load
    HEALTH_CHANGED = "health-changed"  # a model turned available or unavailable
    # The engine's steps, every run (progress, a status page; too many to notify about):
    PLANNED = "planned"  # a plan was made: ``counts`` by action
    WRITTEN = "written"  # one write landed (``action``, ``id``)
    WRITE_FAILED = "write-failed"  # one write failed (``error``), or was never sent
    NOT_ATTEMPTED = "not-attempted"  # one write was never sent (a stop, a silent registry)


# What ``[[notify]] events`` may name (and a webhook gets when it names none).
NOTIFY = (
    Kind.DRIFT_CORRECTED,
    Kind.DRIFT_DETECTED,
    Kind.SYNC_FAILED,
    Kind.INVALID_FILE,
    Kind.HEALTH_CHANGED,
)
KINDS = tuple(k.value for k in NOTIFY)


def iso(timestamp: float) -> str:
    """``2024-01-01T00:00:00Z``: the one time format of events, ``/status`` and ``health``."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    """One thing that happened. ``fields`` are changed paths (``auth.value``), never values."""

    kind: Kind
    time: float  # unix seconds
    text: str  # one human sentence, e.g. for a chat message
    id: str | None = None
    file: str | None = None
    fields: tuple[str, ...] = ()
    error: str | None = None
    available: bool | None = None
    action: str | None = None  # create, update or delete: the write an engine event is about
    counts: tuple[tuple[str, int], ...] = ()  # PLANNED: changes by action, every action named

    def key(self) -> tuple[object, ...]:
        """What makes two events the same, for deduplication (the time aside)."""
        return (self.kind, self.id, self.file, self.fields, self.error, self.available)

    def as_json(self, environment: str | None = None) -> dict[str, Any]:
        """The notification body: ``event``, ``time`` (ISO 8601 UTC) and ``text`` always; the
        rest where they apply (``environment`` once environments are configured)."""
        body: dict[str, Any] = {"event": self.kind.value, "time": iso(self.time)}
        if self.id is not None:
            body["id"] = self.id
        if environment is not None:
            body["environment"] = environment
        if self.kind in (Kind.DRIFT_CORRECTED, Kind.DRIFT_DETECTED) or self.fields:
            body["fields"] = list(self.fields)
        if self.file is not None:
            body["file"] = self.file
        if self.error is not None:
            body["error"] = self.error
        if self.available is not None:
            body["available"] = self.available
        body["text"] = self.text
        return body


class Sink(Protocol):
    """Receives events. ``emit`` must return at once and never raise into the caller's loop."""

    def emit(self, event: Event) -> None: ...


class Fanout:
    """Hands each event to every sink; one failing sink costs the others nothing."""

    def __init__(self, sinks: Iterable[Sink], log: logging.Logger | None = None) -> None:
        self.sinks = list(sinks)
        self.log = log or logging.getLogger(__name__)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:  # a bug in one sink must not stop the reconcile loop
                self.log.exception("event sink failed", extra={"fields": {"sink": repr(sink)}})


class Discard:
    """A sink that drops every event: a run nobody watches."""

    def emit(self, event: Event) -> None:
        pass


class Recorder:
    """A sink that keeps what it receives: for tests, and for a run reported at its end."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
