"""Exact sameness (reconciler.sameness), with plain data: what ``==`` calls equal and the
registry does not, at any depth, whatever order each side holds its keys in."""

from __future__ import annotations

import math
from typing import Any

import pytest

from reconciler.sameness import holds_same, same

SAME: list[tuple[Any, Any]] = [
    ({"a": 1, "b": [1.5, "x", None]}, {"a": 1, "b": [1.5, "x", None]}),
    ({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"d": 3, "c": 2}, "a": 1}),  # key order
    ({"big": 2**80}, {"big": 2**80}),  # beyond orjson: the walk
    ({"s": "null", "n": None}, {"s": "null", "n": None}),
    ({"inf": math.inf}, {"inf": math.inf}),
    ([], []),
]
DIFFERENT: list[tuple[Any, Any]] = [
    ({"a": True}, {"a": 1}),
    ({"a": 1}, {"a": 1.0}),
    ({"a": [0]}, {"a": [False]}),
    ({"a": {"b": 1, "c": 2}}, {"a": {"c": 2.0, "b": 1}}),  # reordered and a float
    ({"a": math.nan}, {"a": None}),  # both written as null by orjson
    ({"a": None}, {"a": math.inf}),
    ({"a": math.inf}, {"a": -math.inf}),
    ({"a": float("nan")}, {"a": float("nan")}),  # two NaNs are unequal, as in the walk
    ({"big": 2**80}, {"big": float(2**80)}),
    ({"a": 1}, {"a": 1, "b": 2}),
    ({"a": "x"}, {"a": "y"}),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_same(a: Any, b: Any) -> None:
    assert same(a, b) and same(b, a)


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different(a: Any, b: Any) -> None:
    assert not same(a, b) and not same(b, a)


def test_holds_same_asks_for_the_very_objects_and_only_extra_keys_besides() -> None:
    inner = {"a": [1], "b": "x"}
    outer = {**inner, "source": "database"}
    assert holds_same(outer, inner, {"source"})
    assert not holds_same(outer, inner, set())  # a key beyond the extra ones
    assert not holds_same({**outer, "a": [1]}, inner, {"source"})  # equal, not the same object
    assert not holds_same({"b": "x"}, inner, {"source"})  # a field missing
