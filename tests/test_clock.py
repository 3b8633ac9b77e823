"""The clock seam: the fake clock wakes sleepers in order and only when told; ``wait_event``
returns on the event or on the clock's timeout, whichever comes first."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.clock import SYSTEM, FakeClock, wait_event

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_time_moves_only_when_told_and_sleepers_wake_in_order() -> None:
    clock = FakeClock(wall=1_800_000_000.0, monotonic=10.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 5), ("a", 2), ("c", 60))]
    await asyncio.sleep(0)
    assert clock.next_deadline() == 12
    for _ in range(20):  # the loop turns, real time passes: fake time does not
        await asyncio.sleep(0)
    assert woke == [] and clock.monotonic() == 10.0

    await clock.advance(5)
    assert woke == [("a", 12.0), ("b", 15.0)]  # each at its own moment, in order
    assert clock.monotonic() == 15.0 and clock.time() == 1_800_000_005.0
    assert clock.next_deadline() == 70
    await clock.advance(100)
    assert woke[-1] == ("c", 70.0) and clock.monotonic() == 115.0
    await asyncio.gather(*tasks)


async def test_a_cancelled_sleeper_is_forgotten() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(3))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.next_deadline() is None
    await clock.advance(10)  # nothing to wake, nothing raised


async def test_wait_event_returns_on_the_event_or_the_timeout() -> None:
    clock = FakeClock()
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_event(clock, event, 30))
    await clock.advance(29)
    assert not waiting.done()
    await clock.advance(1)
    assert waiting.done() and waiting.result() is False

    waiting = asyncio.create_task(wait_event(clock, event, 30))
    await asyncio.sleep(0)
    event.set()
    assert await waiting is True
    assert clock.next_deadline() is None  # its timer went with it
    assert await wait_event(clock, event, 0) is True


async def test_the_system_clock_is_the_real_one() -> None:
    assert abs(SYSTEM.time() - __import__("time").time()) < 5
    before = SYSTEM.monotonic()
    assert await wait_event(SYSTEM, asyncio.Event(), 0.01) is False
    assert SYSTEM.monotonic() - before >= 0.01
