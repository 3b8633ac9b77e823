"""Desired + live -> plan. Pure: no I/O, plain data in and out, tested with plain data.

CONTRACT (filled in by the reconcile work, issue 4): the types below are the interface the
drivers, apply, report and daemon code against. Keep them small and immutable (kopf's diffs.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from .spec import Entry

FieldPath = tuple[str | int, ...]


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    IMMUTABLE = "immutable"  # the file declares an id the registry holds as immutable
    DELETE = "delete"  # only when pruning, within the owned scope
    INVALID = "invalid"  # the file failed validation: nothing is written for it


class FieldOp(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    CHANGE = "change"


class FieldChange(NamedTuple):
    path: FieldPath
    op: FieldOp
    old: Any = None
    new: Any = None


class Desired(NamedTuple):
    """One valid model file: its API body (camelCase, unset fields omitted) and where it lives."""

    body: Mapping[str, Any]
    file: str


class Change(NamedTuple):
    id: str
    action: Action
    file: str | None = None
    fields: tuple[FieldChange, ...] = ()
    reason: str = ""
    body: Mapping[str, Any] | None = None  # what to send for create/update


class PruneOptions(NamedTuple):
    owns: tuple[str, ...]  # fnmatch patterns of ids this reconciler owns
    max_deletes: int = 5
    force: bool = False


class IgnoreRule(NamedTuple):
    """Argo CD's ignoreDifferences: field paths (``capabilities.supportsTopP``) never diffed,
    for the ids matching any of ``ids`` (fnmatch patterns)."""

    paths: tuple[str, ...]
    ids: tuple[str, ...] = ("*",)


class Plan(NamedTuple):
    changes: tuple[Change, ...]
    # Why prune did not run (invalid files, empty directory, over max-deletes), if it did not.
    prune_skipped: str | None = None


def make_plan(
    desired: Mapping[str, Desired],
    live: Iterable[Entry],
    *,
    invalid: Mapping[str, str] | None = None,
    prune: PruneOptions | None = None,
    ignore: Sequence[IgnoreRule] = (),
) -> Plan:
    """Compare desired models with live entries: one :class:`Change` per id."""
    raise NotImplementedError
