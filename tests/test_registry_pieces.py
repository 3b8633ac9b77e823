"""The list answer decoded element by element reads exactly as ``json.loads`` would."""

from __future__ import annotations

import json

import pytest

from reconciler.registry import pieces

SAME = [
    '{"object":"list","data":[{"a":1},{"b":[1,2,{"c":null}]}],"has_more":false}',
    ' [ 1 , 2 ,"x" ] ',
    "{}",
    "[]",
    '{"data": []}',
    '{"a": {"b": [1]}, "data" : [ {"x":"\\u00e9"} , {} ] }\n',
    '{"a": 1, "a": 2}',
    '"x"',
    "12",
    '{"big": 123456789012345678901234567890, "f": 1.5e3, "n": NaN}',
]
BROKEN = ['{"a":1,}', "[1,]", '{"a" 1}', '{"a":1} x', "", "{", '{"data": [1, 2', "\xff"]


@pytest.mark.parametrize("text", SAME)
def test_the_same_value_as_json_loads(text: str) -> None:
    assert pieces.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", BROKEN)
def test_the_same_error_as_json_loads(text: str) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(text.encode("latin-1"))
    with pytest.raises(ValueError) as got:
        pieces.loads(text.encode("latin-1"))
    assert str(got.value) == str(expected.value)
