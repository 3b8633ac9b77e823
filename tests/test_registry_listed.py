"""The list answer of a one-shot run, decoded as it arrives (reconciler.registry.listed): the
same entries and errors as the answer decoded whole, whatever the chunks, equal values shared."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from helpers import listed_entry as item

from reconciler.plan import Action, Desired, make_plan
from reconciler.registry import RegistryClient, RegistryError, RetryPolicy
from reconciler.registry.listed import ListDecoder, is_streamed

SAME = [
    '{"object":"list","data":[{"a":1},{"b":[1,2,{"c":null}]}],"has_more":false}',
    ' [ 1 , 2 ,"x" ] ',
    "{}",
    "[]",
    '{"data": []}',
    '{"a": {"b": [1]}, "data" : [ {"x":"\\u00e9"} , {} ] }\n',
    '{"data": [123, 4.5e1, true, null, "s"], "has_more": true}',
    '{"a": 1, "a": 2}',
    '{"data": [{"x": 1}], "data": [{"y": 2}, 3]}',  # the last wins, as in json.loads
    '{"data": [1], "data": {"not": "a list"}}',
    '{"data": {"a": 1}}',
    '"x"',
    "12",
    '{"big": 123456789012345678901234567890, "f": 1.5e3, "n": NaN, "data": [-Infinity]}',
    '{"data": ["' + "x" * 100_000 + '", 1], "after": "' + "y" * 50_000 + '"}',
    '{"data": ["\u00e9t\u00e9 \u2603 \U0001f600", "\\ud83d\\ude00"]}',
]
BROKEN = ['{"a":1,}', "[1,]", '{"a" 1}', '{"a":1} x', "{", '{"data": [1, 2', '{"data": [1 2]}']


def streamed(data: bytes, size: int) -> Any:
    """What the decoder makes of ``data`` fed ``size`` bytes at a time, the elements it handed
    over put back where their array stood."""
    items: list[Any] = []
    decoder = ListDecoder(items.append, items.clear)
    for i in range(0, len(data), size):
        decoder.feed(data[i : i + size])
    doc = decoder.close()
    if isinstance(doc, dict) and is_streamed(doc.get("data")):
        doc["data"] = items
    elif is_streamed(doc):
        doc = items
    return doc


def same_json(a: Any, b: Any) -> bool:
    # NaN is not equal to itself: compare as text.
    return json.dumps(a) == json.dumps(b)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1 << 20])
@pytest.mark.parametrize("text", SAME)
def test_the_same_value_as_json_loads_whatever_the_chunks(text: str, size: int) -> None:
    data = text.encode()
    assert same_json(streamed(data, size), json.loads(data))


@pytest.mark.parametrize("size", [1, 3, 1 << 20])
@pytest.mark.parametrize("text", BROKEN)
def test_what_json_loads_refuses_is_refused(text: str, size: int) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        streamed(text.encode(), size)


@pytest.mark.parametrize(
    "data", [b"\xef\xbb\xbf[1, 2]", '{"data": [1, "\u00e9"]}'.encode("utf-16")]
)
def test_a_byte_order_mark_or_utf_16_reads_as_json_loads_reads_it(data: bytes) -> None:
    assert streamed(data, 3) == json.loads(data)


def test_not_utf_8_is_refused_and_an_empty_answer_is_no_document() -> None:
    with pytest.raises(ValueError):
        streamed(b'{"data": ["\xff"]}', 4)
    assert streamed(b"", 4) is None


# --- through the client -----------------------------------------------------------------------

BASE = "http://registry.test"


def chunked(data: bytes, size: int, fail_after: int | None = None) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        for n, i in enumerate(range(0, len(data), size)):
            if fail_after is not None and n == fail_after:
                raise httpx.ReadError("connection reset mid-answer")
            yield data[i : i + size]

    return chunks()


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def listed(handler: Any, bodies: dict[str, Any] | None) -> Any:
    async def go() -> Any:
        c = RegistryClient(
            BASE,
            "key",
            transport=httpx.MockTransport(handler),
            retry=RetryPolicy(jitter=0.0),
            sleep=_sleep,
        )
        if bodies is not None:
            c.share = lambda: bodies
        async with c:
            return await c.list()

    return asyncio.run(go())


def varied() -> tuple[dict[str, Any], dict[str, Any]]:
    """A catalogue of unlike entries, and the files' bodies of some of them."""
    a = item("meetkai:a", rpm=120, caps={"reasoning": True}, tags=["x"])
    b = item("meetkai:b", rpm=60, caps={"reasoning": 1})  # 1 is not true: not its file's body
    c = item("meetkai:c", rpm=1)
    c["health"] = {"is_available": True, "last_health_check": 1700000000, "error": None}
    d = item("meetkai:d")
    d["health"] = {"is_available": False, "last_health_check": 5.5, "error": "down", "extra": 1}
    e = item("other:e", nested={"deep": [{"k": "v"}]})
    e["region"] = "eu"  # a key the client does not know: kept
    del e["health"]
    bodies = {
        "meetkai:a": {"id": "meetkai:a", "rpm": 120, "caps": {"reasoning": True}, "tags": ["x"]},
        "meetkai:b": {"id": "meetkai:b", "rpm": 60, "caps": {"reasoning": True}},
        "meetkai:c": {"id": "meetkai:c", "rpm": 2},
        "meetkai:d": {"id": "meetkai:d"},
    }
    return {"object": "list", "data": [a, b, c, d, e], "has_more": True}, bodies


@pytest.mark.parametrize("size", [5, 64, 1 << 20])
def test_streamed_entries_equal_the_entries_decoded_whole(size: int) -> None:
    doc, bodies = varied()
    data = json.dumps(doc).encode()
    whole = listed(lambda request: httpx.Response(200, content=data), None)
    streamed_ = listed(lambda request: httpx.Response(200, content=chunked(data, size)), bodies)
    assert streamed_ == whole and streamed_.has_more is whole.has_more is True
    dumps = [e.model_dump(exclude_unset=True) for e in streamed_]
    assert dumps == [e.model_dump(exclude_unset=True) for e in whole]
    a, b, c, d, e = streamed_
    assert a.definition["caps"] is bodies["meetkai:a"]["caps"]  # its file's very values
    assert a.definition == doc["data"][0]["definition"]
    assert b.definition["caps"] is not bodies["meetkai:b"]["caps"]
    assert type(b.definition["caps"]["reasoning"]) is int
    assert a.id is bodies["meetkai:a"]["id"]
    # One health object for entries of the same health, each kept as the registry said it.
    assert a.health is b.health and c.health is not a.health
    assert c.health.last_health_check == 1700000000.0 and d.health.error == "down"
    assert d.health.model_extra == {"extra": 1} and e.model_extra == {"region": "eu"}
    assert e.health == whole[4].health and "health" not in e.model_fields_set


def test_held_names_only_definitions_that_are_their_bodies_and_the_plan_agrees() -> None:
    # a and d hold their body (and source/immutable); b's 1 is not true, c's rpm differs; f
    # holds its body plus a key no file wrote; g is listed twice, the last time changed.
    doc, bodies = varied()
    f = item("meetkai:f", rpm=5)
    f["definition"]["region"] = "eu"
    g1, g2 = item("meetkai:g", rpm=7), item("meetkai:g", rpm=8)
    doc["data"] += [f, g1, g2]
    bodies |= {
        "meetkai:f": {"id": "meetkai:f", "rpm": 5},
        "meetkai:g": {"id": "meetkai:g", "rpm": 7},
    }
    data = json.dumps(doc).encode()
    live = listed(lambda request: httpx.Response(200, content=chunked(data, 64)), bodies)
    assert live.held == {"meetkai:a": bodies["meetkai:a"], "meetkai:d": bodies["meetkai:d"]}
    whole = listed(lambda request: httpx.Response(200, content=data), None)
    assert whole.held == {}
    desired = {k: Desired(v, f"{k}.toml") for k, v in bodies.items()}
    trusted = make_plan(desired, live, held=live.held)
    assert trusted == make_plan(desired, whole) == make_plan(desired, live)
    # f is in sync too (no file can spell "region"): held is the plan's shortcut, not its rule.
    unchanged = {c.id for c in trusted.changes if c.action is Action.UNCHANGED}
    assert unchanged == {"meetkai:a", "meetkai:d", "meetkai:f"}


def test_the_answer_is_read_once_the_files_are_loaded() -> None:
    # The bodies are asked for before the answer's first byte is read: it waits in the socket.
    order: list[str] = []
    doc, bodies = varied()
    data = json.dumps(doc).encode()

    async def chunks() -> AsyncIterator[bytes]:
        order.append("read")
        yield data

    def share() -> dict[str, Any]:
        order.append("bodies")
        return bodies

    async def go() -> Any:
        c = RegistryClient(
            BASE,
            "key",
            transport=httpx.MockTransport(lambda r: httpx.Response(200, content=chunks())),
        )
        c.share = share
        async with c:
            return await c.list()

    assert len(asyncio.run(go())) == 5
    assert order == ["bodies", "read"]


def test_a_connection_lost_mid_answer_is_tried_again() -> None:
    doc, bodies = varied()
    data = json.dumps(doc).encode()
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            200, content=chunked(data, 16, fail_after=3 if len(calls) == 1 else None)
        )

    assert [e.id for e in listed(handler, bodies)] == [i["id"] for i in doc["data"]]
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html>oops</html>", "unexpected answer to list: not JSON ('<html>oops</html>')"),
        (b'{"data": [{"id": "a"}, {"id": 1}]', "unexpected answer to list: not JSON"),
        (b'{"object": "list"}', "unexpected answer to list: no data array"),
        (b'{"data": {"id": "a"}}', "unexpected answer to list: no data array"),
        (b"", "unexpected answer to list: no data array"),
        (b'{"data": [{"id": "a"}, {"id": 1}]}', "unexpected answer to list: not a registry entry"),
        (b'{"data": [{"id": ["a"]}]}', "unexpected answer to list: not a registry entry"),
        (b'{"data": [{"id": {"a": 1}}]}', "unexpected answer to list: not a registry entry"),
        (
            b'{"data": [{"id": "a", "health": {"is_available": "maybe"}}]}',
            "unexpected answer to list: not a registry entry",
        ),
    ],
)
def test_errors_are_those_of_the_answer_decoded_whole(content: bytes, message: str) -> None:
    for bodies in (None, {"a": {"id": "a"}}):
        with pytest.raises(RegistryError) as info:
            listed(lambda request: httpx.Response(200, content=chunked(content, 3)), bodies)
        assert str(info.value).startswith(message)


def test_a_definition_nested_too_deeply_to_walk_is_kept_as_decoded() -> None:
    deep: Any = "leaf"
    for _ in range(900):
        deep = [deep]
    doc = {"data": [item("meetkai:a", deep=deep)]}
    data = json.dumps(doc).encode()
    (a,) = listed(lambda request: httpx.Response(200, content=data), {"meetkai:a": {"id": "x"}})
    assert a.definition["deep"] == deep


def test_beyond_the_memo_each_health_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry's check times make as many healths as entries: no memo of them all.
    monkeypatch.setattr("reconciler.registry.listed.MEMO", 2)
    items = [item(f"meetkai:{i}") for i in range(6)]
    for i, it in enumerate(items[:4]):
        it["health"] = {"is_available": True, "last_health_check": float(i), "error": None}
    data = json.dumps({"data": items}).encode()
    entries = listed(lambda request: httpx.Response(200, content=data), {})
    assert [e.health.last_health_check for e in entries] == [0.0, 1.0, 2.0, 3.0, None, None]
    assert entries[4].health is not entries[5].health  # the memo was full by then
