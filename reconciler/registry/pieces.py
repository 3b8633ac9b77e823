"""``json.loads`` for a list answer, one element at a time.

A list of 20,000 entries is 14 MB of JSON; one decoding call (``orjson`` or ``json``) holds the
GIL for all of it (150 to 500 ms on a busy 2-core machine), so decoding it in a thread would
still stall an event loop that shares the process. Decoding each element of the top-level arrays
on its own gives the loop a turn in between, for about twice orjson's CPU: the daemon's choice
(``RegistryClient.decode_in_steps``), not the CLI's. Anything unexpected falls back to one
``json.loads`` (its result or error).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def loads(content: bytes) -> Any:
    """The JSON value of ``content``, as ``json.loads`` would answer it."""
    try:
        text = content.decode("utf-8")
        value, end = _value(text, _skip(text, 0))
        if _skip(text, end) != len(text):
            raise ValueError("extra data")
        return value
    except (ValueError, IndexError, RecursionError):
        return json.loads(content)  # the same answer, or its exact error, all at once


def _skip(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match else i


def _value(text: str, i: int) -> tuple[Any, int]:
    if text[i] == "{":
        return _object(text, i)
    if text[i] == "[":
        return _array(text, i)
    return _DECODER.raw_decode(text, i)


def _object(text: str, i: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    i = _skip(text, i + 1)
    if text[i] == "}":
        return out, i + 1
    while True:
        if text[i] != '"':
            raise ValueError("expected a key")
        key, i = _DECODER.raw_decode(text, i)
        i = _skip(text, i)
        if text[i] != ":":
            raise ValueError("expected ':'")
        i = _skip(text, i + 1)
        # Only the top level is taken apart: an array's elements are decoded whole.
        out[key], i = _array(text, i) if text[i] == "[" else _DECODER.raw_decode(text, i)
        i = _skip(text, i)
        if text[i] == "}":
            return out, i + 1
        if text[i] != ",":
            raise ValueError("expected ',' or '}'")
        i = _skip(text, i + 1)


def _interned(value: Any) -> Any:
    """``value`` with its keys shared with every other element's: one decoding call shares
    them within itself only, and 20,000 entries kept in memory would each hold their own."""
    if isinstance(value, dict):
        return {sys.intern(k): _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    return value


def _array(text: str, i: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    i = _skip(text, i + 1)
    if text[i] == "]":
        return items, i + 1
    while True:
        item, i = _DECODER.raw_decode(text, i)
        items.append(_interned(item))
        i = _skip(text, i)
        if text[i] == "]":
            return items, i + 1
        if text[i] != ",":
            raise ValueError("expected ',' or ']'")
        i = _skip(text, i + 1)
