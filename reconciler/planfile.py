"""Saved plans (``diff --out PLAN``, ``sync --plan PLAN``): a plan as a file, and the checks that
make applying it later safe. Pure: JSON-ready data in and out, the caller reads and writes files.

A saved plan names the registry it was made against, and for every write the fingerprint of the
live entry it saw (none for a create). Applying refuses, writing nothing, when any entry changed
since. No secret is kept in clear: a credential, or a value a ``${VARIABLE}`` filled, is stored
as a salted hash, re-read from the files at apply time and checked against that hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .plan import Action, Change, Desired, FieldChange, FieldOp, FieldPath, Plan, writes
from .secrets import REDACTED, is_secret_path, is_under
from .spec import Entry, format_path

KIND = "reconciler-plan"
FORMAT_VERSION = 1
_SEALED = "$sealed"  # {"$sealed": "<hex>"} stands where a secret value was


class PlanFileError(Exception):
    """The file is not a saved plan this version can apply (or not for this registry)."""


class StalePlan(Exception):
    """The registry or the files moved on since the plan was made: ``reasons`` say where."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def _sensitive(change: Change) -> Collection[FieldPath]:
    return change.sensitive  # the fields a ${VARIABLE} filled


def _is_secret(path: FieldPath, sensitive: Collection[FieldPath]) -> bool:
    return is_secret_path(path) or is_under(path, sensitive)


def _digest(salt: str, *parts: Any) -> str:
    data = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(bytes.fromhex(salt), data.encode(), hashlib.sha256).hexdigest()


def fingerprint(entry: Entry | None, salt: str) -> str | None:
    """What a live entry looked like (its definition, source and immutability), salted; None
    when there is no entry."""
    if entry is None:
        return None
    return _digest(salt, entry.definition, entry.source, entry.immutable)


def _seal(value: Any, path: FieldPath, sensitive: Collection[FieldPath], salt: str) -> Any:
    if value is None:
        return None
    if _is_secret(path, sensitive):
        return {_SEALED: _digest(salt, list(path), value)}
    if isinstance(value, Mapping):
        return {k: _seal(v, (*path, k), sensitive, salt) for k, v in value.items()}
    if isinstance(value, list):
        return [_seal(v, (*path, i), sensitive, salt) for i, v in enumerate(value)]
    return value


def _field(f: FieldChange, sensitive: Collection[FieldPath]) -> dict[str, Any]:
    def shown(value: Any) -> Any:
        if value is None:
            return None
        if _is_secret(f.path, sensitive):
            return REDACTED
        # A whole auth block may hold a credential: never kept.
        nested = isinstance(value, (Mapping, list)) and f.path[:1] == ("auth",)
        return REDACTED if nested else value

    return {"path": list(f.path), "op": f.op.value, "old": shown(f.old), "new": shown(f.new)}


def dump(
    plan: Plan,
    live: Iterable[Entry],
    *,
    registry: str,
    on_behalf_of: str | None,
    directory: str,
    salt: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The saved form of ``plan``'s writes (JSON-ready), against the ``live`` entries it saw."""
    salt = salt or secrets.token_hex(16)
    by_id = {e.id: e for e in live}
    changes = []
    for c in writes(plan):
        sensitive = _sensitive(c)
        changes.append(
            {
                "id": c.id,
                "action": c.action.value,
                "file": c.file,
                "reason": c.reason,
                "fields": [_field(f, sensitive) for f in c.fields],
                "body": _seal(c.body, (), sensitive, salt),
                "live": fingerprint(by_id.get(c.id), salt),
            }
        )
    return {
        "kind": KIND,
        "formatVersion": FORMAT_VERSION,
        "created": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "registry": registry,
        "onBehalfOf": on_behalf_of,
        "directory": directory,
        "salt": salt,
        "changes": changes,
    }


def parse(text: str, *, registry: str, on_behalf_of: str | None) -> dict[str, Any]:
    """A saved plan read back, checked for its kind, version and registry."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PlanFileError(f"not a saved plan (invalid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise PlanFileError("not a saved plan (made by reconciler diff --out)")
    if doc.get("formatVersion") != FORMAT_VERSION:
        raise PlanFileError(
            f"plan format {doc.get('formatVersion')!r}; this reconciler applies {FORMAT_VERSION}"
        )
    if doc.get("registry") != registry or doc.get("onBehalfOf") != on_behalf_of:
        raise PlanFileError(
            f"the plan was made against {doc.get('registry')} "
            f"(on behalf of {doc.get('onBehalfOf')}), not {registry} (on behalf of {on_behalf_of})"
        )
    if not isinstance(doc.get("changes"), list) or not isinstance(doc.get("salt"), str):
        raise PlanFileError("not a saved plan (no changes or salt)")
    return doc


def restore(doc: Mapping[str, Any], desired: Mapping[str, Desired], live: Iterable[Entry]) -> Plan:
    """The saved plan as a :class:`Plan` to apply, its secrets re-read from ``desired`` (the
    files now). Raises :class:`StalePlan` naming every entry or secret that moved on."""
    salt = doc["salt"]
    by_id = {e.id: e for e in live}
    reasons: list[str] = []
    changes: list[Change] = []
    for saved in doc["changes"]:
        model_id, action = saved["id"], Action(saved["action"])
        seen, now = saved.get("live"), fingerprint(by_id.get(model_id), salt)
        if seen != now:
            what = ("is gone" if now is None else "changed") if seen else "exists now"
            reasons.append(f"{model_id}: the registry entry {what} since the plan was made")
            continue
        body = None
        sealed: set[FieldPath] = set()  # where secrets stood: never shown, as in the plan
        if saved.get("body") is not None:
            want = desired.get(model_id)
            current = want.body if want else None
            body = _unseal(saved["body"], (), current, salt, model_id, reasons, sealed)
        fields = tuple(
            FieldChange(tuple(f["path"]), FieldOp(f["op"]), f["old"], f["new"])
            for f in saved["fields"]
        )
        reason = saved.get("reason", "")
        changes.append(
            Change(model_id, action, saved.get("file"), fields, reason, body, frozenset(sealed))
        )
    if reasons:
        raise StalePlan(reasons)
    return Plan(tuple(changes))


def _unseal(
    value: Any,
    path: FieldPath,
    current: Mapping[str, Any] | None,
    salt: str,
    model_id: str,
    reasons: list[str],
    sealed: set[FieldPath],
) -> Any:
    """The body to send: each sealed value read from ``current`` (the file now) and checked."""

    def walk(value: Any, path: FieldPath) -> Any:
        if isinstance(value, Mapping) and set(value) == {_SEALED}:
            sealed.add(path)
            now = _at(current, path)
            planned = value[_SEALED]
            if now is None or not hmac.compare_digest(_digest(salt, list(path), now), planned):
                reasons.append(
                    f"{model_id}: {format_path(path)}: the secret in the files is not the one "
                    "planned (the file or its ${VARIABLE} changed)"
                )
            return now
        if isinstance(value, Mapping):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    return walk(value, path)


def _at(body: Any, path: FieldPath) -> Any:
    for part in path:
        if isinstance(body, Mapping) and isinstance(part, str):
            body = body.get(part)
        elif isinstance(body, list) and isinstance(part, int) and part < len(body):
            body = body[part]
        else:
            return None
    return body
