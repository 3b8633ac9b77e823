"""Which values must never print, and how to hide them: the one place that says so.

Two kinds of value are hidden: credentials, by where they sit (:func:`is_secret_path`:
``auth.value`` and custom header values, also inside composite strategies), and anything a
``${VARIABLE}`` placeholder put into a file (the loader records those field paths as
``sensitive``). Every renderer of field values goes through :func:`redact_field` (or
:func:`redact`), and every message that may quote a request or an answer through :func:`scrub`.
Pure and dependency-free, so every layer can use it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

REDACTED = "(redacted)"
FieldPath = tuple[str | int, ...]

# Header names whose values export writes as placeholders (Authorization, *key*, *token*, ...).
_CREDENTIAL_HEADER = re.compile(
    r"authorization|key|token|secret|password|passwd|cookie|credential", re.IGNORECASE
)
# Shorter values are not worth hiding (and replacing them would garble every message).
_MIN_SCRUBBED = 4


def is_secret_path(path: FieldPath) -> bool:
    """Whether a value at this field path (API names) is a credential that must never print."""
    if not path or path[0] != "auth":
        return False
    rest = list(path[1:])
    if len(rest) >= 2 and rest[0] == "strategies" and isinstance(rest[1], int):
        rest = rest[2:]
    return rest == ["value"] or (len(rest) == 2 and rest[0] == "headers")


def is_credential_header(name: str) -> bool:
    """Whether a custom header's name says its value is a credential (export's placeholder rule;
    every header value is still a secret path and never prints)."""
    return bool(_CREDENTIAL_HEADER.search(name))


def is_under(path: FieldPath, paths: Collection[FieldPath]) -> bool:
    """Whether ``path`` is one of ``paths`` or lies inside one of them."""
    return bool(paths) and any(path[: len(p)] == p for p in paths)


def redact(path: FieldPath, value: Any, sensitive: Collection[FieldPath] = ()) -> Any:
    """``value`` (found at ``path``) with every credential and every value substituted from the
    environment (a path in ``sensitive``, or under one) replaced by ``(redacted)``."""
    if value is None:
        return None
    if is_secret_path(path) or is_under(path, sensitive):
        return REDACTED
    inside = [p for p in sensitive if p[: len(path)] == path]
    if (not path or path[0] != "auth") and not inside:
        return value  # nothing to hide below here: skip the walk
    if isinstance(value, Mapping):
        return {k: redact((*path, k), v, inside) for k, v in value.items()}
    if isinstance(value, list):
        return [redact((*path, i), v, inside) for i, v in enumerate(value)]
    return value


class _FieldLike(Protocol):
    path: FieldPath
    old: Any
    new: Any

    def _replace(self, **kwargs: Any) -> Any: ...


F = TypeVar("F", bound=_FieldLike)


def redact_field(field: F, sensitive: Collection[FieldPath] = ()) -> F:
    """A :class:`~reconciler.plan.FieldChange` safe to print: ``old`` and ``new`` redacted when
    the path holds a credential or lies under one of ``sensitive`` (the change's
    ``Change.sensitive``); call it before rendering any field value, in any format."""
    old, new = redact(field.path, field.old, sensitive), redact(field.path, field.new, sensitive)
    if old is field.old and new is field.new:
        return field
    return field._replace(old=old, new=new)


def hidden_values(body: Mapping[str, Any], sensitive: Collection[FieldPath] = ()) -> set[str]:
    """Every string in ``body`` that must never print: credentials and substituted values."""
    found: set[str] = set()
    for path, value in _strings(body, ()):
        if len(value) >= _MIN_SCRUBBED and (is_secret_path(path) or is_under(path, sensitive)):
            found.add(value)
    return found


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with each of ``values`` replaced by ``(redacted)``: for messages that may quote
    what was sent (a registry's error, a probe's answer)."""
    for value in sorted((v for v in values if len(v) >= _MIN_SCRUBBED), key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def _strings(value: Any, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))
