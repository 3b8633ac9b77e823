"""Exact sameness of JSON-like values, as the plan needs it: ``True == 1`` and ``1 == 1.0`` in
Python, but a file saying ``true`` where the registry holds ``1`` is a difference. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Set
from itertools import repeat
from operator import is_
from typing import Any

import orjson

_SORTED = orjson.OPT_SORT_KEYS


def same(a: Any, b: Any) -> bool:
    """Equal, with bools, ints and floats kept apart, at any depth."""
    # In C: equal as JSON, where true, 1 and 1.0 are three different texts (10,000 models
    # compared in a few ms instead of a walk in Python). In the order each holds its keys
    # first (a no-op's common case), then with keys sorted.
    try:
        text = orjson.dumps(a)
        if text != orjson.dumps(b):
            if a != b:  # the walk is stricter than ==: unequal here is unequal there
                return False
            text = orjson.dumps(a, option=_SORTED)
            if text != orjson.dumps(b, option=_SORTED):
                return False
    except TypeError:  # what orjson cannot write (an int beyond 64 bits): the walk decides
        return _walk(a, b)
    # orjson writes NaN and the infinities as null: where a null is written, == tells them
    # apart (and keeps NaN unequal to itself, as the walk does).
    return b"null" not in text or a == b


def holds_same(outer: Mapping[str, Any], inner: Mapping[str, Any], extra: Set[str]) -> bool:
    """Whether ``outer`` holds each field of ``inner`` as the very same object, and besides them
    only keys in ``extra``: then the two are the same without writing either out."""
    found = map(outer.get, inner.keys(), repeat(_ABSENT))
    return all(map(is_, inner.values(), found)) and outer.keys() - inner.keys() <= extra


_ABSENT = object()


def _walk(a: Any, b: Any) -> bool:
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is dict:
        return a.keys() == b.keys() and all(_walk(value, b[key]) for key, value in a.items())
    if ta is list:
        return len(a) == len(b) and all(map(_walk, a, b))
    return a == b
