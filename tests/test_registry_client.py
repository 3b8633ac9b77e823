"""The registry client against httpx.MockTransport: URLs, headers, errors, retries, rate limit.

Time is fake: the client's ``sleep`` and ``clock`` are a :class:`FakeTime`, so retry and rate
limit tests record the waits they asked for instead of waiting. No timed tests here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from helpers import listed_entry as entry

from reconciler.registry import (
    API_PREFIX,
    NO_RETRY,
    USER_AGENT,
    AuthError,
    ConflictError,
    RegistryClient,
    RegistryError,
    RetryPolicy,
    UnreachableError,
    _retry_after,
)

BASE = "http://registry.test"
KEY = "sk-very-secret-key-123"
NO_JITTER = RetryPolicy(jitter=0.0)


class FakeTime:
    """A clock that only moves when the client sleeps; records every requested wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


Handler = Callable[[httpx.Request], httpx.Response]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def client(
    handler: Handler,
    fake: FakeTime | None = None,
    *,
    key: str | None = KEY,
    retry: RetryPolicy = NO_JITTER,
    **kwargs: Any,
) -> RegistryClient:
    fake = fake or FakeTime()
    return RegistryClient(
        BASE,
        key,
        transport=httpx.MockTransport(handler),
        retry=retry,
        sleep=fake.sleep,
        clock=fake.clock,
        **kwargs,
    )


async def call(c: RegistryClient, name: str, *args: Any) -> Any:
    async with c:
        return await getattr(c, name)(*args)


# --- URLs and headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "segment"),
    [
        ("meetkai:x", "meetkai%3Ax"),
        ("a/b", "a%2Fb"),
        ("what?x=1", "what%3Fx%3D1"),
        ("frag#1", "frag%231"),
        ("100%", "100%25"),
        ("two words", "two%20words"),
        ("../../etc", "..%2F..%2Fetc"),
    ],
)
def test_hostile_ids_are_one_encoded_path_segment(model_id: str, segment: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json=entry(model_id))

    got = run(call(client(handler), "get", model_id))
    assert got is not None and got.id == model_id
    assert seen == [f"{API_PREFIX}/{segment}"]


def test_every_call_uses_its_method_path_and_body() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.raw_path.decode(), body))
        path = request.url.raw_path.decode()
        if request.method == "GET" and path == API_PREFIX:
            return httpx.Response(200, json={"object": "list", "data": [entry(), entry("b")]})
        if request.method == "DELETE":
            return httpx.Response(200, json={"deleted": True})
        if path.endswith("/health"):
            return httpx.Response(200, json={"is_available": True, "checked_at": 5, "error": None})
        return httpx.Response(200, json=entry())

    async def scenario() -> None:
        async with client(handler) as c:
            assert [e.id for e in await c.list()] == ["meetkai:x", "b"]
            assert (await c.add({"id": "meetkai:x", "provider": "p"})).id == "meetkai:x"
            await c.update("meetkai:x", {"hidden": None})
            assert await c.remove("meetkai:x") is None
            health = await c.check_health("meetkai:x")
            assert health.is_available is True and health.checked_at == 5

    run(scenario())
    one = f"{API_PREFIX}/meetkai%3Ax"
    assert seen == [
        ("GET", API_PREFIX, None),
        ("POST", API_PREFIX, {"id": "meetkai:x", "provider": "p"}),
        ("PATCH", one, {"hidden": None}),
        ("DELETE", one, None),
        ("POST", f"{one}/health", None),
    ]


def test_base_url_path_prefix_and_trailing_slash_are_kept() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"object": "list", "data": []})

    c = RegistryClient(
        "https://gw.test/prefix/", KEY, transport=httpx.MockTransport(handler), retry=NO_RETRY
    )
    assert run(call(c, "list")) == []
    assert seen == [f"https://gw.test/prefix{API_PREFIX}"]


def test_headers_auth_on_behalf_of_user_agent_and_json() -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json=entry())

    run(call(client(handler, on_behalf_of="user-7"), "add", {"id": "meetkai:x"}))
    headers = seen[0]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["x-on-behalf-of"] == "user-7"
    assert headers["user-agent"] == USER_AGENT and USER_AGENT.startswith("reconciler/")
    assert headers["content-type"] == "application/json"


def test_no_key_sends_no_authorization_and_no_on_behalf_of_by_default() -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json={"object": "list", "data": []})

    run(call(client(handler, key=None), "list"))
    assert "authorization" not in seen[0] and "x-on-behalf-of" not in seen[0]


def test_secret_str_key_is_unwrapped() -> None:
    from pydantic import SecretStr

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"object": "list", "data": []})

    run(call(client(handler, key=SecretStr(KEY)), "list"))  # type: ignore[arg-type]
    assert seen == [f"Bearer {KEY}"]


def test_key_never_in_repr_or_error_messages() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # A server that echoes the header back must not leak it through us.
        return httpx.Response(401, json={"error": {"message": request.headers["authorization"]}})

    c = client(handler)
    assert KEY not in repr(c)
    with pytest.raises(AuthError) as info:
        run(call(c, "list"))
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert "(redacted)" in str(info.value)


@pytest.mark.parametrize("streamed", [False, True])
def test_key_never_in_a_not_json_answer_quoted_back(streamed: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # A proxy's debug page, 200 and not JSON, showing the request's headers.
        return httpx.Response(200, text=f"<pre>{request.headers['authorization']}</pre>")

    c = client(handler)
    if streamed:
        c.share = dict  # the list decoded as it arrives (diff, sync, the daemon)
    with pytest.raises(RegistryError, match="not JSON") as info:
        run(call(c, "list"))
    assert KEY not in str(info.value) and "(redacted)" in str(info.value)


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://host", "http://", "http://h?x=1", ""])
def test_bad_base_url_is_a_clear_error_at_construction(url: str) -> None:
    with pytest.raises(RegistryError, match="bad registry URL"):
        RegistryClient(url, KEY)


# --- error mapping ----------------------------------------------------------------------------


def answer(status: int, **kwargs: Any) -> Handler:
    return lambda request: httpx.Response(status, **kwargs)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"json": {"error": {"message": "nested says no"}}}, "nested says no"),
        ({"json": {"detail": "detail says no"}}, "detail says no"),
        ({"json": {"message": "flat says no"}}, "flat says no"),
        ({"text": "plain says no"}, "plain says no"),
    ],
)
def test_error_body_shapes(body: dict[str, Any], expected: str) -> None:
    with pytest.raises(RegistryError) as info:
        run(call(client(answer(400, **body)), "list"))
    assert info.value.status == 400
    assert "400" in str(info.value) and expected in str(info.value)


def test_long_plain_text_error_is_truncated_to_one_line() -> None:
    text = "<html>\n" + "x" * 5000 + "\n</html>"
    with pytest.raises(RegistryError) as info:
        run(call(client(answer(418, text=text)), "list"))
    message = str(info.value)
    assert "\n" not in message and len(message) < 400 and message.endswith("…")


def test_401_is_auth_error_saying_the_key_is_wrong() -> None:
    with pytest.raises(AuthError) as info:
        run(call(client(answer(401, json={"detail": "invalid token"})), "list"))
    assert info.value.status == 401
    assert "key is wrong" in str(info.value) and "invalid token" in str(info.value)


def test_401_without_key_says_it_is_missing() -> None:
    with pytest.raises(AuthError, match="no API key was given"):
        run(call(client(answer(401, json={"detail": "no auth"}), key=None), "list"))


def test_403_on_read_is_auth_error() -> None:
    with pytest.raises(AuthError) as info:
        run(call(client(answer(403, json={"detail": "admin only"})), "get", "m"))
    assert info.value.status == 403


def test_403_on_immutable_write_is_plain_registry_error_with_server_message() -> None:
    handler = answer(403, json={"error": {"message": "model meetkai:y is immutable"}})
    for name, args in [
        ("add", ({"id": "meetkai:y"},)),
        ("update", ("meetkai:y", {})),
        (
            "remove",
            ("meetkai:y",),
        ),
    ]:
        with pytest.raises(RegistryError) as info:
            run(call(client(handler), name, *args))
        assert type(info.value) is RegistryError
        assert info.value.status == 403 and "model meetkai:y is immutable" in str(info.value)


def test_403_on_write_not_about_immutability_is_auth_error() -> None:
    with pytest.raises(AuthError):
        run(call(client(answer(403, json={"detail": "forbidden"})), "add", {"id": "a"}))


def test_404_on_get_is_none_but_an_error_elsewhere() -> None:
    assert run(call(client(answer(404, json={"detail": "not found"})), "get", "gone")) is None
    with pytest.raises(RegistryError) as info:
        run(call(client(answer(404, json={"detail": "not found"})), "update", "gone", {}))
    assert info.value.status == 404
    with pytest.raises(RegistryError) as info:
        run(call(client(answer(404, json={"detail": "not found"})), "remove", "gone"))
    assert info.value.status == 404


def test_409_is_conflict_error() -> None:
    with pytest.raises(ConflictError) as info:
        run(call(client(answer(409, json={"error": {"message": "exists"}})), "add", {"id": "a"}))
    assert info.value.status == 409 and "exists" in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        {"detail": [{"loc": ["body", "contextWindow"], "msg": "must be an integer"}]},
        {
            "error": {
                "message": "validation failed",
                "details": [{"path": ["contextWindow"], "message": "must be an integer"}],
            }
        },
    ],
)
def test_422_includes_the_field_details(body: dict[str, Any]) -> None:
    with pytest.raises(RegistryError) as info:
        run(call(client(answer(422, json=body)), "add", {"id": "a"}))
    assert info.value.status == 422
    assert "contextWindow: must be an integer" in str(info.value)


def test_500_after_the_budget_names_status_message_and_attempts() -> None:
    fake = FakeTime()
    handler = answer(500, json={"error": {"message": "database on fire"}})
    with pytest.raises(RegistryError) as info:
        run(call(client(handler, fake), "list"))
    assert info.value.status == 500
    assert "database on fire" in str(info.value) and "attempts" in str(info.value)
    # Within the 15 s budget, never a single wait over the 5 s cap.
    assert sum(fake.waits) == pytest.approx(15.0)
    assert max(fake.waits) <= 5.0


def test_listed_entries_share_their_set_fields_yet_each_dumps_its_own() -> None:
    short = {k: v for k, v in entry("c").items() if k not in ("created_at", "updated_at")}
    body = {"object": "list", "data": [entry("a"), entry("b"), short]}
    a, b, c = run(call(client(lambda request: httpx.Response(200, json=body)), "list"))
    # One set per distinct key set (memory at 10,000 entries), not one per entry.
    assert a.model_fields_set is b.model_fields_set
    assert a.health.model_fields_set is b.health.model_fields_set
    assert "created_at" not in c.model_fields_set
    assert a.model_dump(exclude_unset=True) == {**entry("a"), "created_at": 1.0, "updated_at": 2.0}
    assert c.model_dump(exclude_unset=True) == short


def test_answer_that_is_not_an_entry_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="unexpected answer"):
        run(call(client(answer(200, text="<html>")), "get", "a"))
    with pytest.raises(RegistryError, match="unexpected answer"):
        run(call(client(answer(200, json={"object": "list"})), "list"))


# --- retries ----------------------------------------------------------------------------------


def sequence(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering with ``responses`` in turn (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses[min(len(seen), len(responses)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


def test_429_retry_after_seconds_is_honoured() -> None:
    fake = FakeTime()
    handler, seen = sequence(
        httpx.Response(429, headers={"Retry-After": "3"}, json={"detail": "slow down"}),
        httpx.Response(200, json={"object": "list", "data": []}),
    )
    assert run(call(client(handler, fake), "list")) == []
    assert len(seen) == 2 and fake.waits == [3.0]


def test_429_retry_after_http_date_is_honoured() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    waited = _retry_after(when)
    assert waited is not None and 2.5 < waited <= 4.0
    assert _retry_after("garbage") is None and _retry_after(None) is None


def test_retry_after_is_capped_at_the_remaining_budget() -> None:
    fake = FakeTime()
    handler, seen = sequence(
        httpx.Response(429, headers={"Retry-After": "3600"}),
        httpx.Response(200, json={"object": "list", "data": []}),
    )
    run(call(client(handler, fake), "list"))
    assert fake.waits == [15.0] and len(seen) == 2


def test_503_burst_is_recovered_with_exponential_backoff() -> None:
    fake = FakeTime()
    handler, seen = sequence(
        httpx.Response(503),
        httpx.Response(502),
        httpx.Response(504),
        httpx.Response(200, json={"object": "list", "data": [entry()]}),
    )
    assert len(run(call(client(handler, fake), "list"))) == 1
    assert len(seen) == 4
    assert fake.waits == pytest.approx([0.5, 0.75, 1.125])


def test_backoff_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(jitter=0.1)
    for attempt in range(10):
        base = min(5.0, 0.5 * 1.5**attempt)
        assert base <= policy.backoff(attempt) <= base * 1.1


def test_non_retryable_status_is_not_retried() -> None:
    fake = FakeTime()
    handler, seen = sequence(httpx.Response(400, json={"detail": "bad"}))
    with pytest.raises(RegistryError):
        run(call(client(handler, fake), "list"))
    assert len(seen) == 1 and fake.waits == []


def test_connection_refused_is_unreachable_after_retries_naming_the_host() -> None:
    fake = FakeTime()
    handler, seen = sequence(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(UnreachableError) as info:
        run(call(client(handler, fake), "list"))
    message = str(info.value)
    assert message.startswith("cannot reach the registry at http://registry.test: ")
    assert "connection refused" in message and "\n" not in message
    assert info.value.status is None
    # Nothing is listening: retried for the short connect budget, not the full 15 s.
    assert len(seen) > 3 and sum(fake.waits) == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (httpx.ConnectTimeout("timed out"), "connection timed out"),
        (httpx.ReadTimeout("timed out"), "no answer within 10 s"),
        (httpx.ConnectError("[Errno -2] Name or service not known"), "host name not found"),
        (httpx.RemoteProtocolError("peer closed"), "protocol error"),
        (httpx.ReadError("reset"), "connection dropped"),
    ],
)
def test_transport_errors_are_unreachable_with_a_one_line_cause(
    error: Exception, cause: str
) -> None:
    handler, _ = sequence(error)
    with pytest.raises(UnreachableError) as info:
        run(call(client(handler, retry=NO_RETRY), "list"))
    assert cause in str(info.value)


def test_real_refused_port_is_unreachable() -> None:
    c = RegistryClient("http://127.0.0.1:1", KEY, retry=NO_RETRY)
    with pytest.raises(UnreachableError, match=r"at http://127\.0\.0\.1:1: connection refused"):
        run(call(c, "list"))


def test_dropped_write_is_retried_and_delete_404_on_retry_counts_as_done() -> None:
    fake = FakeTime()
    handler, seen = sequence(
        httpx.RemoteProtocolError("server closed the connection"),
        httpx.Response(404, json={"detail": "not found"}),
    )
    assert run(call(client(handler, fake), "remove", "meetkai:x")) is None
    assert [r.method for r in seen] == ["DELETE", "DELETE"]


def test_dropped_add_is_retried_with_the_same_body() -> None:
    fake = FakeTime()
    handler, seen = sequence(httpx.ReadError("connection reset"), httpx.Response(200, json=entry()))
    run(call(client(handler, fake), "add", {"id": "meetkai:x", "created": 1}))
    assert len(seen) == 2 and seen[0].content == seen[1].content


# --- client-side rate limit -------------------------------------------------------------------


class FrozenTime(FakeTime):
    """A clock that stands still while tasks sleep: each wait shows when its caller would run."""

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def test_rps_spaces_concurrent_calls_one_interval_apart() -> None:
    fake = FrozenTime()

    async def scenario() -> None:
        async with client(answer(200, json=entry()), fake, rps=4) as c:
            await asyncio.gather(*(c.get(f"m{i}") for i in range(6)))

    run(scenario())
    # All six booked at the same instant: the first goes now, the k-th k * 0.25 s later.
    assert sorted(fake.waits) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25])


def test_rps_spaces_sequential_calls() -> None:
    fake = FakeTime()
    started: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        started.append(fake.now)
        return httpx.Response(200, json=entry())

    async def scenario() -> None:
        async with client(handler, fake, rps=2) as c:
            for i in range(4):
                await c.get(f"m{i}")

    run(scenario())
    assert [b - a for a, b in itertools.pairwise(started)] == pytest.approx([0.5] * 3)


def test_no_rps_means_no_waits() -> None:
    fake = FakeTime()

    async def scenario() -> None:
        async with client(answer(200, json=entry()), fake) as c:
            await asyncio.gather(*(c.get(f"m{i}") for i in range(6)))

    run(scenario())
    assert fake.waits == []


def test_rps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RegistryClient(BASE, KEY, rps=0)


def test_list_definitions_equal_to_their_files_share_the_files_values() -> None:
    same_one, other = entry("meetkai:a"), entry("meetkai:b")
    same_one["definition"].update(caps={"reasoning": True}, rpm=120)
    other["definition"].update(caps={"reasoning": 1}, rpm=120)  # 1 is not true: no sharing
    bodies = {
        "meetkai:a": {"id": "meetkai:a", "caps": {"reasoning": True}, "rpm": 120},
        "meetkai:b": {"id": "meetkai:b", "caps": {"reasoning": True}, "rpm": 120},
    }
    c = client(lambda request: httpx.Response(200, json={"data": [same_one, other]}))
    c.share = lambda: bodies
    a, b = run(call(c, "list"))
    assert a.definition == same_one["definition"] and b.definition == other["definition"]
    assert a.definition["caps"] is bodies["meetkai:a"]["caps"]
    assert a.definition["source"] == "database"  # the server's own keys stay
    assert b.definition["caps"] is not bodies["meetkai:b"]["caps"]
    assert b.definition["caps"]["reasoning"] == 1 and type(b.definition["caps"]["reasoning"]) is int


def test_a_coroutine_share_is_awaited_before_the_list_is_decoded() -> None:
    listed = entry("meetkai:a")
    listed["definition"].update(caps={"reasoning": True})
    body = {"id": "meetkai:a", "caps": {"reasoning": True}}
    calls: list[str] = []

    async def share() -> dict[str, Any]:  # the daemon's: its files are read on the same loop
        await asyncio.sleep(0)
        calls.append("share")
        return {"meetkai:a": body}

    c = client(lambda request: httpx.Response(200, json={"data": [listed]}))
    c.share = share
    (a,) = run(call(c, "list"))
    assert calls == ["share"]
    assert a.definition == listed["definition"] and a.definition["caps"] is body["caps"]
