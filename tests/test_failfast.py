"""A registry that stops answering, a run asked to stop, a list that pages: the client's breaker,
apply's stop seam and ``has_more``, against httpx.MockTransport with a fake clock.

The clock moves only when the client sleeps (concurrent sleeps add up, so elapsed time is
over-counted: a bound that holds here holds for real). No timed tests here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
from helpers import minimal

from reconciler.apply import ABANDONED, Outcome, Stop, apply_plan
from reconciler.engine import Engine
from reconciler.plan import Action, Change, Desired, Plan, PruneOptions
from reconciler.registry import (
    NotAttemptedError,
    RegistryClient,
    RetryPolicy,
    UnreachableError,
)
from reconciler.registry.retry import Breaker
from reconciler.source import DesiredState

BASE = "http://registry.test"
NO_JITTER = RetryPolicy(jitter=0.0)
REFUSED = httpx.ConnectError("[Errno 111] Connection refused")


class FakeTime:
    """A clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def make_client(
    handler: Callable[[httpx.Request], Any], fake: FakeTime, **kwargs: Any
) -> RegistryClient:
    return RegistryClient(
        BASE,
        "key",
        transport=httpx.MockTransport(handler),
        retry=kwargs.pop("retry", NO_JITTER),
        sleep=fake.sleep,
        clock=fake.clock,
        **kwargs,
    )


def entry_json(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "provider": "p", "modelId": "m", "definition": minimal(model_id)}


def creates(n: int) -> Plan:
    ids = [f"meetkai:m{i:03d}" for i in range(n)]
    return Plan(tuple(Change(i, Action.CREATE, f"{i}.toml", body=minimal(i)) for i in ids))


class DiesAfter:
    """A registry that answers ``alive`` writes, then raises ``error`` for every request."""

    def __init__(
        self, alive: int, error: Exception = REFUSED, on_request: Callable[[], None] = lambda: None
    ) -> None:
        self.alive = alive
        self.error = error
        self.on_request = on_request
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.on_request()
        if self.requests > self.alive:
            raise self.error
        return httpx.Response(200, json=entry_json(f"meetkai:{self.requests}"))


def tally(outcomes: list[Outcome]) -> tuple[int, int, int]:
    """(landed, failed after an attempt, not attempted)."""
    landed = sum(o.ok for o in outcomes)
    skipped = sum(not o.attempted for o in outcomes)
    return landed, len(outcomes) - landed - skipped, skipped


# --- connection refused and DNS: short, announced once ---------------------------------------


@pytest.mark.parametrize(
    "error",
    [REFUSED, httpx.ConnectError("[Errno -2] Name or service not known")],
    ids=["refused", "dns"],
)
def test_nothing_listening_is_retried_for_2_5_s_with_one_notice(error: Exception) -> None:
    fake, notices = FakeTime(), []

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    async def scenario() -> list[BaseException | Any]:
        async with make_client(handler, fake, on_retry=notices.append) as c:
            return await asyncio.gather(*(c.get(f"m{i}") for i in range(4)), return_exceptions=True)

    start = fake.now
    results = run(scenario())
    assert all(isinstance(r, UnreachableError) for r in results)
    # Four calls at once (their waits add up on this clock): well under the 15 s budget.
    assert fake.now - start <= 4 * 2.5
    assert len(notices) == 1, notices
    assert notices[0].startswith("retrying for up to 2.5 s: cannot reach the registry at ")


def test_a_timeout_keeps_the_full_budget() -> None:
    fake = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(UnreachableError, match="no answer within 10 s"):
        run(make_client(handler, fake).list())
    assert fake.now - 1000.0 == pytest.approx(15.0)


def test_no_notice_for_answers_that_are_retried() -> None:
    fake, notices = FakeTime(), []
    answers = iter([httpx.Response(503), httpx.Response(200, json={"data": []})])
    c = make_client(lambda r: next(answers), fake, on_retry=notices.append)
    assert run(c.list()) == [] and notices == []


# --- the breaker ------------------------------------------------------------------------------


def test_registry_killed_mid_sync_ends_the_run_saying_what_landed() -> None:
    fake, registry = FakeTime(), DiesAfter(37)

    async def scenario() -> list[Outcome]:
        async with make_client(registry, fake) as c:
            return await apply_plan(creates(500), c, concurrency=4)

    start = fake.now
    outcomes = run(scenario())
    landed, failed, skipped = tally(outcomes)
    assert landed == 37
    assert failed <= 4  # only the writes in flight when it died were tried and failed
    assert skipped == 500 - 37 - failed
    # Requests after the death: each call in flight retried until the breaker opened.
    assert registry.requests - 37 <= 8 + 4
    assert fake.now - start < 10
    not_attempted = [o for o in outcomes if not o.attempted]
    assert not_attempted[0].error == (
        "not attempted: the registry stopped answering (connection refused)"
    )
    assert not any(o.ok for o in not_attempted)


def test_a_hung_registry_ends_the_run_within_a_minute() -> None:
    fake, registry = FakeTime(), DiesAfter(5, httpx.ReadTimeout("timed out"))

    async def scenario() -> list[Outcome]:
        async with make_client(registry, fake) as c:
            return await apply_plan(creates(500), c, concurrency=4)

    start = fake.now
    landed, failed, skipped = tally(run(scenario()))
    assert (landed, failed + skipped) == (5, 495) and skipped >= 490
    assert fake.now - start < 60


def test_a_flaky_registry_that_still_answers_never_opens_the_breaker() -> None:
    fake, seen = FakeTime(), set()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.content not in seen:  # every write's first attempt is lost
            seen.add(request.content)
            raise httpx.ReadError("connection reset")
        return httpx.Response(200, json=entry_json("meetkai:x"))

    async def scenario() -> list[Outcome]:
        async with make_client(handler, fake) as c:
            return await apply_plan(creates(40), c, concurrency=4)

    assert tally(run(scenario())) == (40, 0, 0)


def test_one_call_silent_for_its_whole_budget_opens_the_breaker() -> None:
    fake = FakeTime()
    # Each attempt waits out the 10 s timeout.
    registry = DiesAfter(0, httpx.ReadTimeout("timed out"), on_request=lambda: fake.advance(10))

    async def scenario() -> None:
        async with make_client(registry, fake) as c:
            with pytest.raises(UnreachableError) as first:
                await c.list()
            assert not isinstance(first.value, NotAttemptedError)
            sent = registry.requests
            assert sent < c.breaker.threshold  # the budget, not the count, opened it
            with pytest.raises(NotAttemptedError, match=r"^add meetkai:a: not attempted: the reg"):
                await c.add(minimal("meetkai:a"))
            assert registry.requests == sent  # nothing sent
            c.reset()  # a new run (the daemon does this) tries the registry again
            with pytest.raises(UnreachableError):
                await c.get("meetkai:a")
            assert registry.requests > sent

    run(scenario())


def test_breaker_counts_attempts_in_a_row_and_any_answer_closes_it() -> None:
    fake = FakeTime()
    breaker = Breaker(fake.clock, threshold=3, cooldown=30)
    breaker.failed("x")
    breaker.failed("x")
    breaker.answered()
    breaker.failed("x")
    breaker.failed("x")
    assert not breaker.is_open
    breaker.failed("connection refused")
    assert breaker.is_open and breaker.cause == "connection refused"
    fake.now += 29.9
    assert breaker.is_open
    fake.now += 0.1  # the cooldown over, a long-lived client tries again
    assert not breaker.is_open and breaker.failures == 0
    with pytest.raises(ValueError):
        Breaker(fake.clock, threshold=0)


def test_silence_is_measured_from_the_last_answer_of_any_call() -> None:
    fake = FakeTime()
    breaker = Breaker(fake.clock)
    assert breaker.silent_for(15)  # never answered
    breaker.answered()
    fake.now += 14.9
    assert not breaker.silent_for(15)
    fake.now += 0.1
    assert breaker.silent_for(15)


def test_without_a_retry_budget_one_failure_does_not_open_the_breaker() -> None:
    fake, registry = FakeTime(), DiesAfter(0)
    c = make_client(registry, fake, retry=RetryPolicy(total=0, connect_total=0, jitter=0))

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(UnreachableError) as info:
                await c.list()
            assert not isinstance(info.value, NotAttemptedError)

    run(scenario())
    assert registry.requests == 3


# --- stop: no new write starts, those in flight finish ----------------------------------------


class Gate:
    """An async handler that holds every request until released; counts what arrived."""

    def __init__(self) -> None:
        self.arrived = 0
        self.open = asyncio.Event()
        self.changed = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrived += 1
        self.changed.set()
        await self.open.wait()
        return httpx.Response(200, json=entry_json("meetkai:x"))

    async def until(self, n: int) -> None:
        while self.arrived < n:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


def test_stop_lets_the_writes_in_flight_finish_and_starts_no_other() -> None:
    gate, stop, seen = Gate(), Stop(), []

    async def scenario() -> list[Outcome]:
        async with make_client(gate, FakeTime()) as c:
            task = asyncio.create_task(
                apply_plan(creates(20), c, concurrency=4, stop=stop, on_result=seen.append)
            )
            await gate.until(4)
            stop.set("interrupted by SIGTERM")
            gate.open.set()
            return await asyncio.wait_for(task, 10)

    outcomes = run(scenario())
    assert gate.arrived == 4
    assert tally(outcomes) == (4, 0, 16)
    assert {o.error for o in outcomes if not o.attempted} == {
        "not attempted: interrupted by SIGTERM"
    }
    assert len(seen) == 20  # every outcome reported as it came


@pytest.mark.parametrize("how", ["grace", "abandon"])
def test_writes_that_outlive_the_grace_are_abandoned(how: str) -> None:
    gate = Gate()
    stop = Stop(grace=0 if how == "grace" else None)

    async def scenario() -> list[Outcome]:
        async with make_client(gate, FakeTime()) as c:
            task = asyncio.create_task(apply_plan(creates(6), c, concurrency=2, stop=stop))
            await gate.until(2)
            if how == "grace":
                stop.set()
            else:
                stop.set()
                await asyncio.sleep(0)
                assert not task.done()  # no grace limit: still waiting for the two
                stop.abandon()
            return await asyncio.wait_for(task, 10)  # the gate never opens

    outcomes = run(scenario())
    assert gate.arrived == 2
    assert [o.error for o in outcomes if o.attempted] == [ABANDONED, ABANDONED]
    assert tally(outcomes) == (0, 2, 4)


def test_a_stop_set_before_the_run_writes_nothing() -> None:
    gate, stop = Gate(), Stop()
    stop.set()

    async def scenario() -> list[Outcome]:
        async with make_client(gate, FakeTime()) as c:
            return await apply_plan(creates(3), c, stop=stop)

    assert tally(run(scenario())) == (0, 0, 3) and gate.arrived == 0


# --- a list that pages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "has_more"),
    [
        ({}, False),
        ({"has_more": False}, False),
        ({"has_more": True}, True),
        ({"hasMore": True}, True),
    ],
)
def test_list_reports_has_more(extra: dict[str, Any], has_more: bool) -> None:
    body = {"object": "list", "data": [entry_json("meetkai:a")], **extra}
    listing = run(make_client(lambda r: httpx.Response(200, json=body), FakeTime()).list())
    assert [e.id for e in listing] == ["meetkai:a"] and listing.has_more is has_more


def test_a_paged_list_refuses_prune_for_the_run() -> None:
    live = [entry_json("meetkai:team-a"), entry_json("meetkai:team-gone")]
    state = DesiredState({"meetkai:team-a": Desired(minimal("meetkai:team-a"), "a.toml")})
    prune = PruneOptions(owns=("meetkai:team-*",))

    def plan(extra: dict[str, Any]) -> Plan:
        body = {"object": "list", "data": live, **extra}
        c = make_client(lambda r: httpx.Response(200, json=body), FakeTime())
        pipeline = Engine(c)
        return pipeline.plan(state, run(pipeline.live()), prune=prune)

    paged = plan({"has_more": True})
    assert not any(c.action is Action.DELETE for c in paged.changes)
    assert paged.prune_skipped is not None and "has_more" in paged.prune_skipped
    whole = plan({"has_more": False})
    assert [c.id for c in whole.changes if c.action is Action.DELETE] == ["meetkai:team-gone"]
