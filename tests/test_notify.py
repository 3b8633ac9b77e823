"""Webhook notifications: the pure pacing rules on a fake clock, then the real thing against a
webhook receiver on loopback (retries, dedup, the bounded queue, failures counted)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from conftest import Receiver
from daemon_harness import InstantClock

from reconciler.daemon.notify import Dedup, Notifier, Policy, TokenBucket, Webhook, backoff
from reconciler.events import Event, Kind

pytestmark = pytest.mark.anyio
DEADLINE = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def drift(model_id: str = "team:a", fields: tuple[str, ...] = ("rpm",), at: float = 0.0) -> Event:
    return Event(Kind.DRIFT_CORRECTED, at, f"{model_id} put back", id=model_id, fields=fields)


class Counts(dict[str, int]):
    def __call__(self, outcome: str) -> None:
        self[outcome] = self.get(outcome, 0) + 1


async def until(what: str, check, deadline: float = DEADLINE) -> None:  # type: ignore[no-untyped-def]
    """Poll ``check`` until truthy; fail naming ``what`` at the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        if loop.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_backoff_doubles_up_to_the_cap() -> None:
    p = Policy(first_wait=1, max_wait=5)
    assert [backoff(i, p) for i in range(5)] == [1, 2, 4, 5, 5]


def test_dedup_sends_the_same_event_once_per_window() -> None:
    d = Dedup(window=600)
    assert d.fresh(drift(), 0)
    assert not d.fresh(drift(at=5), 10)  # the time of the event is not part of its identity
    assert d.fresh(drift(fields=("rpm", "displayName")), 20)  # a different drift is news
    assert d.fresh(drift("team:b"), 30)
    assert d.fresh(drift(), 600)  # the window is over


def test_a_flapping_model_sends_each_state_once_per_window() -> None:
    d = Dedup(window=600)

    def flip(up: bool) -> Event:
        return Event(Kind.HEALTH_CHANGED, 0, "x", id="a", available=up)

    sent = [d.fresh(flip(i % 2 == 0), i * 5.0) for i in range(100)]
    assert sent.count(True) == 2


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    b = TokenBucket(burst=3, rate=1.0, now=0)
    assert [b.wait(0) for _ in range(3)] == [0, 0, 0]
    assert b.wait(0) == pytest.approx(1.0)
    assert b.wait(0.5) == pytest.approx(0.5)
    assert b.wait(1.0) == 0


def _notifier(hooks, counts, fake, **policy) -> Notifier:  # type: ignore[no-untyped-def]
    return Notifier(
        hooks,
        count=counts,
        log=logging.getLogger("test.notify"),
        policy=Policy(**policy),
        clock=fake,
    )


async def test_posts_one_json_object_per_event_and_retries_with_backoff(receiver: Receiver):
    fake, counts = InstantClock(start=1000.0), Counts()
    n = _notifier([Webhook(receiver.url)], counts, fake)
    task = asyncio.create_task(n.run())
    try:
        receiver.fail_next(2)  # 503 twice: delivered on the third attempt
        n.emit(drift())
        await until("the delivery", lambda: counts.get("sent") == 1)
        assert receiver.attempts == 3
        assert fake.slept[:2] == [1.0, 2.0]
        (body,) = receiver.events()
        assert body == {
            "event": "drift-corrected",
            "time": "1970-01-01T00:00:00Z",
            "id": "team:a",
            "fields": ["rpm"],
            "text": "team:a put back",
        }
        n.emit(drift())  # the same again: deduplicated, never queued
        assert counts.get("deduplicated") == 1 and n.pending() == 0
    finally:
        task.cancel()


async def test_a_refusing_webhook_is_not_retried_and_failures_are_counted(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
):
    fake, counts = InstantClock(start=1000.0), Counts()
    n = _notifier([Webhook(receiver.url)], counts, fake, attempts=3)
    task = asyncio.create_task(n.run())
    try:
        receiver.fail_next(1, 400)
        n.emit(drift("team:a"))
        await until("the failure counted", lambda: counts.get("failed") == 1)
        assert receiver.attempts == 1  # a 400 will not change on retry
        receiver.fail_next(3, 500)
        n.emit(drift("team:b"))
        await until("the second failure", lambda: counts.get("failed") == 2)
        assert receiver.attempts == 4  # 500: three attempts
    finally:
        task.cancel()
    logged = caplog.text
    assert "notification failed" in logged
    assert "T0-secret-path" not in logged  # the webhook's path is its secret


async def test_a_full_queue_drops_the_oldest_and_counts_it(receiver: Receiver):
    fake, counts = InstantClock(start=1000.0), Counts()
    n = _notifier([Webhook(receiver.url)], counts, fake, queue=3)
    for i in range(5):  # nothing drains yet: emit never waits
        n.emit(drift(f"team:{i}"))
    assert counts == {"dropped": 2} and n.pending() == 3
    task = asyncio.create_task(n.run())
    try:
        await until("the queue drained", lambda: counts.get("sent") == 3)
        assert [b["id"] for b in receiver.events()] == ["team:2", "team:3", "team:4"]
    finally:
        task.cancel()


async def test_rate_limit_paces_without_losing_events(receiver: Receiver):
    fake, counts = InstantClock(start=1000.0), Counts()
    n = _notifier([Webhook(receiver.url)], counts, fake, burst=2, per_minute=6)
    task = asyncio.create_task(n.run())
    try:
        for i in range(4):
            n.emit(drift(f"team:{i}"))
        await until("all four sent", lambda: counts.get("sent") == 4)
        assert sum(fake.slept) == pytest.approx(20.0)  # two at once, then one per 10 s
    finally:
        task.cancel()


async def test_each_webhook_gets_only_the_events_it_asked_for(receiver: Receiver):
    fake, counts = InstantClock(start=1000.0), Counts()
    hooks = [Webhook(receiver.url, frozenset({Kind.INVALID_FILE}))]
    n = _notifier(hooks, counts, fake)
    task = asyncio.create_task(n.run())
    try:
        n.emit(drift())
        n.emit(Event(Kind.INVALID_FILE, 0, "x.toml is invalid", file="x.toml", error="bad"))
        await until("the invalid file sent", lambda: counts.get("sent") == 1)
        assert [b["event"] for b in receiver.events()] == ["invalid-file"]
    finally:
        task.cancel()
