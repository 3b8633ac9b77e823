"""Desired + live -> plan. Pure: no I/O, plain data in and out, tested with plain data; the
types below (small, immutable) are what the engine, apply, report and the drivers code against."""

from __future__ import annotations

import copy
import fnmatch
import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from . import defaults
from .sameness import holds_same, same
from .secrets import FieldPath as FieldPath
from .spec import SERVER_MANAGED_KEYS, Entry, describe_loc


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
    """One valid model file: its API body (camelCase, unset fields omitted), where it lives, and
    the fields a ``${VARIABLE}`` filled (their values never print: see :mod:`.secrets`)."""

    body: Mapping[str, Any]
    file: str
    sensitive: frozenset[FieldPath] = frozenset()


class Change(NamedTuple):
    id: str
    action: Action
    file: str | None = None
    fields: tuple[FieldChange, ...] = ()
    reason: str = ""
    body: Mapping[str, Any] | None = None  # what to send for create/update
    sensitive: frozenset[FieldPath] = frozenset()  # Desired.sensitive: redact_field() them


class PruneOptions(NamedTuple):
    owns: tuple[str, ...]  # fnmatch patterns of ids this reconciler owns
    max_deletes: int = defaults.MAX_DELETES
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


_INVALID = "the file failed validation: nothing is written for this id"


def make_plan(
    desired: Mapping[str, Desired],
    live: Iterable[Entry],
    *,
    invalid: Mapping[str, str] | None = None,
    prune: PruneOptions | None = None,
    ignore: Sequence[IgnoreRule] = (),
    load_errors: int = 0,
    live_complete: bool = True,
    held: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """Compare desired models with live entries: one :class:`Change` per id, sorted by id.

    ``load_errors`` counts files that failed to load (some name no id at all): any of them, or
    any id in ``invalid``, skips prune for the whole run; so does ``live_complete=False`` (the
    registry paged its list: what is missing from it may still exist). ``held``: ids whose live
    definition holds that very body's values and only server-managed keys besides: not diffed."""
    invalid = invalid or {}
    held = held or {}
    live_by_id = {entry.id: entry for entry in live}
    rules = _compile_rules(ignore)
    changes: list[Change] = []

    for model_id, file in invalid.items():
        changes.append(Change(model_id, Action.INVALID, file, reason=_INVALID))

    for model_id, want in desired.items():
        if model_id in invalid:
            continue
        rules_here = [paths for ids, paths in rules if _matches_any(model_id, ids)]
        entry = live_by_id.get(model_id)
        if entry is None:
            fields = tuple(_added(want.body, rules_here))
            why = "not in the registry"
            changes.append(
                Change(model_id, Action.CREATE, want.file, fields, why, want.body, want.sensitive)
            )
            continue
        fields: tuple[FieldChange, ...] = ()  # a held body: nothing differs, nothing to ignore
        if held.get(model_id) is not want.body:
            fields = tuple(diff_definitions(want.body, entry.definition, rules_here))
        if is_immutable(entry):
            changes.append(
                Change(
                    model_id,
                    Action.IMMUTABLE,
                    want.file,
                    fields=fields,
                    reason=(
                        f"the registry holds {model_id} as immutable "
                        f"(source: {entry.source}): it is never written; "
                        "rename the model or drop the file"
                    ),
                    sensitive=want.sensitive,
                )
            )
        elif fields:
            n = len(fields)
            changes.append(
                Change(
                    model_id,
                    Action.UPDATE,
                    want.file,
                    fields=fields,
                    reason="1 field differs" if n == 1 else f"{n} fields differ",
                    body=_respect_ignored(want.body, entry.definition, rules_here),
                    sensitive=want.sensitive,
                )
            )
        else:
            changes.append(Change(model_id, Action.UNCHANGED, want.file, (), "in sync"))

    skipped: str | None = None
    if prune is not None:
        if not prune.owns:
            raise ValueError("prune needs at least one ownership pattern (owns)")
        orphans = sorted(
            e.id
            for e in live_by_id.values()
            if e.id not in desired and e.id not in invalid and prunable(e, prune.owns)
        )
        failed = max(load_errors, len(invalid))
        if failed:
            skipped = (
                f"prune skipped: {failed} file(s) failed validation; "
                "nothing is deleted until every file is valid"
            )
        elif not live_complete:
            skipped = (
                "prune skipped: the registry's list answer said has_more (it pages), so it is "
                "not the whole registry and nothing is deleted from it"
            )
        elif not desired:
            skipped = (
                "prune skipped: the directory holds no valid model "
                "(a wrong --dir would otherwise delete everything owned)"
            )
        elif len(orphans) > prune.max_deletes and not prune.force:
            skipped = (
                f"prune skipped: it would delete {len(orphans)} entries, more than "
                f"--max-deletes {prune.max_deletes}; pass --force (or a higher --max-deletes) "
                "to delete them"
            )
        else:
            changes.extend(
                Change(
                    model_id,
                    Action.DELETE,
                    reason="no file declares it and its id is owned (--owns)",
                )
                for model_id in orphans
            )

    changes.sort(key=lambda c: c.id)
    return Plan(tuple(changes), skipped)


# --- helpers for the drivers ------------------------------------------------------------------

SUMMARY_KEYS = ("create", "update", "delete", "unchanged", "immutable", "invalid")
PENDING = frozenset({Action.CREATE, Action.UPDATE, Action.DELETE})


def summary(plan: Plan) -> dict[str, int]:
    """How many changes of each action, every action named (zeros included)."""
    counts = dict.fromkeys(SUMMARY_KEYS, 0)
    for change in plan.changes:
        counts[change.action] += 1  # an Action is its value (a StrEnum): the same key
    return counts


def pending(plan: Plan) -> bool:
    """Whether a sync would write anything (immutable conflicts and invalid files do not)."""
    return any(change.action in PENDING for change in plan.changes)


def writes(plan: Plan) -> list[Change]:
    """The changes a sync writes, in plan order."""
    return [change for change in plan.changes if change.action in PENDING]


def is_immutable(entry: Entry) -> bool:
    """Whether the registry refuses writes to this entry (flag on the entry or its definition)."""
    return bool(entry.immutable or entry.definition.get("immutable") is True)


def prunable(entry: Entry, owns: Iterable[str]) -> bool:
    """Whether prune may delete this entry once no file declares it: owned, and writable."""
    return not is_immutable(entry) and _matches_any(entry.id, owns)


def parse_field_path(text: str) -> FieldPath:
    """``rerouteRules[0].trigger`` -> ``("rerouteRules", 0, "trigger")``; ``[*]`` stays ``"*"``."""
    parts: list[str | int] = []
    for name, index in _PATH_TOKEN.findall(text):
        if index == "*":
            parts.append("*")
        elif index:
            parts.append(int(index))
        else:
            parts.append(name)
    return tuple(parts)


# --- diffing ----------------------------------------------------------------------------------

_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]")
_Rule = tuple[tuple[str, ...], tuple[FieldPath, ...]]


def diff_definitions(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    ignore_paths: Sequence[Sequence[FieldPath]] = (),
) -> Iterator[FieldChange]:
    """Field-level differences between what a file declares and a live definition, after
    normalising both sides (server-managed keys, server defaults, 1 == 1.0)."""
    if holds_same(live, desired, SERVER_MANAGED_KEYS):
        return  # a diff's no-op: its list decoder gave the definition the file's very values
    paths = [p for group in ignore_paths for p in group]
    live, desired = _unmanaged(live), _unmanaged(desired)
    if same(desired, live):
        return  # the common no-op case, without building a path per field
    yield from _diff_dicts(desired, live, (), paths)


def _unmanaged(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` without the server-managed keys (a copy in C, then at most two deletions)."""
    out = dict(body)
    for key in SERVER_MANAGED_KEYS & out.keys():
        del out[key]
    return out


def is_empty(value: Any) -> bool:
    """A value a server may add by default and that means the same as the key's absence."""
    if value is None or value is False:
        return True
    if isinstance(value, (list, tuple)):
        return len(value) == 0
    if isinstance(value, Mapping):
        return all(is_empty(v) for v in value.values())
    return False


def values_equal(a: Any, b: Any) -> bool:
    """Equality after normalisation: 1 == 1.0 but True != 1; dicts ignore empty extras."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return next(_diff_dicts(a, b, (), ()), None) is None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (a != a and b != b)  # NaN == NaN here, or a nan field never settles
    return type(a) is type(b) and a == b


def _present(mapping: Mapping[str, Any], key: str) -> bool:
    # null says the same as an absent key, on either side.
    return mapping.get(key) is not None


def _diff_dicts(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    path: FieldPath,
    ignore: Sequence[FieldPath],
) -> Iterator[FieldChange]:
    for key in sorted(desired.keys() | live.keys(), key=str):
        here = (*path, key)
        if ignore and _ignored(here, ignore):
            continue
        want, have = _present(desired, key), _present(live, key)
        if want and have:
            yield from _diff_values(desired[key], live[key], here, ignore)
        elif want:
            if not is_empty(desired[key]):
                yield FieldChange(here, FieldOp.ADD, None, desired[key])
        elif have and not is_empty(live[key]) and _schema_knows(here):
            # A key the file cannot even spell (a newer API's field) is no difference: no file
            # edit could ever make it go away.
            yield FieldChange(here, FieldOp.REMOVE, live[key], None)


def _diff_values(
    want: Any, have: Any, path: FieldPath, ignore: Sequence[FieldPath]
) -> Iterator[FieldChange]:
    if isinstance(want, Mapping) and isinstance(have, Mapping):
        yield from _diff_dicts(want, have, path, ignore)
    elif (
        isinstance(want, list)
        and isinstance(have, list)
        and len(want) == len(have)
        and want
        and all(isinstance(x, Mapping) for x in (*want, *have))
    ):
        # Same-length lists of objects (reroute rules, strategies): per element, so a change
        # reads as rerouteRules[1].targetModelId rather than the whole list twice.
        for index, (w, h) in enumerate(zip(want, have, strict=True)):
            here = (*path, index)
            if not (ignore and _ignored(here, ignore)):
                yield from _diff_values(w, h, here, ignore)
    elif not values_equal(want, have):
        yield FieldChange(path, FieldOp.CHANGE, have, want)


def _added(body: Mapping[str, Any], rules: Sequence[Sequence[FieldPath]]) -> Iterator[FieldChange]:
    """A create's fields: every leaf the file sets (objects flattened, lists whole), no ``id``."""
    paths = [p for group in rules for p in group]

    def walk(node: Mapping[str, Any], path: FieldPath) -> Iterator[FieldChange]:
        for key in sorted(node):
            here = (*path, key)
            value = node[key]
            if value is None or (paths and _ignored(here, paths)):
                continue
            if isinstance(value, Mapping) and value:
                yield from walk(value, here)
            else:
                yield FieldChange(here, FieldOp.ADD, None, value)

    yield from walk({k: v for k, v in body.items() if k not in _NOT_LISTED}, ())


_NOT_LISTED = SERVER_MANAGED_KEYS | {"id"}


@functools.lru_cache(maxsize=1024)
def _schema_knows(path: FieldPath) -> bool:
    _, known = describe_loc(path)
    # Unknown shape (inside a union or a free-form map): be safe and diff it.
    return known is None or str(path[-1]) in known


# --- ignore rules -----------------------------------------------------------------------------


def _compile_rules(rules: Sequence[IgnoreRule]) -> list[_Rule]:
    return [(tuple(r.ids), tuple(parse_field_path(p) for p in r.paths)) for r in rules]


def _matches_any(model_id: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(model_id, p) for p in patterns)


def _ignored(path: FieldPath, rules: Sequence[FieldPath]) -> bool:
    return any(_rule_covers(rule, path) for rule in rules)


def _rule_covers(rule: FieldPath, path: FieldPath) -> bool:
    """Whether ``rule`` is a prefix of ``path``; a list index the rule does not name matches
    any element (``rerouteRules.log`` covers ``rerouteRules[2].log``)."""
    i = 0
    for part in path:
        if i == len(rule):
            return True
        want = rule[i]
        if isinstance(part, int):
            if want == "*" or want == part:
                i += 1
            elif isinstance(want, int):
                return False
            # else: a key in the rule skips over this unnamed index
        elif want == part:
            i += 1
        else:
            return False
    return i == len(rule)


def _respect_ignored(
    body: Mapping[str, Any], live: Mapping[str, Any], rules: Sequence[Sequence[FieldPath]]
) -> Mapping[str, Any]:
    """The body to send for an update, keeping the live value of every ignored field (Argo CD's
    RespectIgnoreDifferences): an ignored field is someone else's, so a write must not undo it."""
    paths = [p for group in rules for p in group if all(isinstance(x, str) for x in p)]
    if not paths:
        return body
    out: dict[str, Any] = copy.deepcopy(dict(body))
    for rule in paths:
        if rule[0] in SERVER_MANAGED_KEYS or "*" in rule:
            continue
        found, value = _lookup(live, rule)
        parent = out
        for key in rule[:-1]:
            child = parent.get(key)
            if not isinstance(child, dict):
                if not found:
                    break
                child = parent[key] = {}
            parent = child
        else:
            if found:
                parent[rule[-1]] = copy.deepcopy(value)
            else:
                parent.pop(rule[-1], None)
    return out


def _lookup(data: Mapping[str, Any], path: FieldPath) -> tuple[bool, Any]:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping) or node.get(key) is None:
            return False, None
        node = node[key]
    return True, node
