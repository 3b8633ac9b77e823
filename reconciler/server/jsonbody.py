"""A request's JSON object, or the 400 answer saying why there is none.

Whatever the bytes, the answer is a dict or a 400: never a 500, never a hang. Python's json
raises RecursionError on deep nesting (a 100k-deep array), and text that parses may still be
unusable: nesting deep enough to trouble validation or re-encoding, or a lone surrogate
(``"\\ud800"``) that SQLite and the UTF-8 answer cannot encode.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .answers import error

MAX_DEPTH = 32  # a definition nests 5 deep (auth.strategies[].headers); room for later versions


async def read_json(request: Request) -> dict[str, Any] | Response:
    """The body as a JSON object, or a 400 naming what is wrong (never the content)."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except RecursionError:
        return _bad(f"the JSON body is nested more than {MAX_DEPTH} levels deep")
    except (ValueError, UnicodeDecodeError) as exc:
        return _bad(f"the body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return _bad("the body must be a JSON object")
    problem = check(body)
    return _bad(problem) if problem else body


def check(value: Any) -> str | None:
    """What makes a parsed JSON value unfit to store (too deep, a lone surrogate), or None.

    Iterative, so a value as deep as the parser allowed cannot exhaust the stack here.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                return f"the JSON body is nested more than {MAX_DEPTH} levels deep"
            for key, child in item.items():
                if not _encodable(key):
                    return "the JSON body has a string that is not valid Unicode (lone surrogate)"
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                return f"the JSON body is nested more than {MAX_DEPTH} levels deep"
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and not _encodable(item):
            return "the JSON body has a string that is not valid Unicode (lone surrogate)"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad(message: str) -> Response:
    return error(400, "invalid_request_error", message)
