"""A write's changes in words, for the logs: ``rpm: 999 -> 5``, field by field.

Pure. Every value goes through :func:`reconciler.secrets.redact_field`: a credential
(``auth.value``, header values) or a value a ``${VAR}`` placeholder filled (``Change.sensitive``)
shows as ``(redacted)``, also inside an object or list that changed as a whole. Events and
notifications carry only the paths.
"""

from __future__ import annotations

import json
from typing import Any

from ..plan import Change, FieldChange, FieldOp
from ..secrets import REDACTED, hidden_values, redact_field, scrub
from ..spec import format_path

__all__ = ["REDACTED", "describe", "field_paths", "scrub_text"]

MAX_VALUE = 120


def field_paths(change: Change) -> tuple[str, ...]:
    """The changed paths (``rerouteRules[1].targetModelId``): what events carry."""
    return tuple(format_path(f.path) for f in change.fields)


def describe(change: Change, limit: int = 50) -> list[str]:
    """One line per changed field, secrets and substituted values redacted; at most ``limit``."""
    lines = [_line(redact_field(f, change.sensitive)) for f in change.fields[:limit]]
    if len(change.fields) > limit:
        lines.append(f"... {len(change.fields) - limit} more")
    return lines


def _line(f: FieldChange) -> str:
    path = format_path(f.path)
    if f.op is FieldOp.ADD:
        return f"{path}: (unset) -> {_show(f.new)}"
    if f.op is FieldOp.REMOVE:
        return f"{path}: {_show(f.old)} -> (unset)"
    return f"{path}: {_show(f.old)} -> {_show(f.new)}"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def scrub_text(text: str | None, change: Change | None) -> str | None:
    """``text`` (a registry error) without any secret or substituted value of ``change``'s
    body: a registry may echo what it was sent."""
    if text is None or change is None or not change.body:
        return text
    return scrub(text, hidden_values(change.body, change.sensitive))
