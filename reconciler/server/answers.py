"""What the server says: the JSON error body, and untrusted text made safe to show or log.

Ids and paths come from clients; a log line or an error message repeats them only through
:func:`printable`, so a ``%0a`` in a path cannot forge a log line and an ESC byte cannot reach a
terminal, and a 100,000-character id costs a bounded line.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from ..spec import describe_loc, error_hint
from ..text import printable as text_printable
from .store import dumps

SHOWN_CHARS = 200  # an id or a path longer than this is cut in messages and logs


def printable(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` with unprintable characters escaped (as everywhere in the product), cut at
    ``limit`` characters with a note of how many were left out."""
    shown = text_printable(text[:limit])
    return shown + f"...(+{len(text) - limit} chars)" if len(text) > limit else shown


def error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    """The error body every failure answers: ``{"error": {"message", "type", ...}}``."""
    headers = extra.pop("headers", None)
    return JSONResponse(
        {"error": {"message": message, "type": kind, **extra}}, status, headers=headers
    )


def validation_error(exc: ValidationError, what: str = "invalid model definition") -> JSONResponse:
    """422 naming each field, with "did you mean" for a near-miss key or enum value. The input is
    never echoed: it may be a credential (auth.value, custom header values)."""
    details = []
    for e in exc.errors(include_url=False):
        hint = error_hint(e)
        msg = f"{e['msg']}; {hint}" if hint else e["msg"]
        loc = printable(describe_loc(tuple(e["loc"]))[0])  # a key may be anything the client sent
        details.append({"loc": loc, "msg": msg, "type": e["type"]})
    first = f" ({details[0]['loc']}: {details[0]['msg']})" if details else ""
    message = f"{what}: {len(details)} error(s){first}"
    return error(422, "validation_error", message, details=details)


def json_answer(value: Any) -> Response:
    """A 200 answer with ``value`` as compact JSON."""
    return Response(dumps(value), media_type="application/json")
