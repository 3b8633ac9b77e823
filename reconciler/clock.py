"""The clock seam: wall time, monotonic time and sleeping, injected wherever time decides
something (the daemon's timers, grace periods and retries; the notifier's pacing).

:data:`SYSTEM` is the real clock. :class:`FakeClock` is time that moves only when told
(:meth:`FakeClock.advance`), so a test of a 60 s resync timer or a one-hour delete window takes
no real time, and what happens at each moment is decided by the test, not by the load of the
machine (the way kopf's tests run on looptime). It does not jump on its own when every task is
idle, as looptime does: a task waiting for a real server's answer looks idle too, and a jump
then would fire timers in the middle of a request.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """What the code that schedules things needs of time."""

    def time(self) -> float:
        """Wall time, unix seconds: for what is shown or stored (log lines, /status, events)."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back: for timers, deadlines and durations."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM: Clock = SystemClock()


async def wait_event(clock: Clock, event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds of ``clock`` have passed; whether it
    is set."""
    if event.is_set():
        return True
    if timeout <= 0:
        await asyncio.sleep(0)
        return event.is_set()
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(timeout))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
    return event.is_set()


class FakeClock:
    """Time that moves only when told: :meth:`advance` wakes each sleeper at its moment, in
    order, letting the woken tasks run before the next one (one event loop only)."""

    def __init__(self, wall: float = 1_800_000_000.0, monotonic: float = 1_000.0) -> None:
        self._offset = wall - monotonic
        self._now = monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._offset + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def next_deadline(self) -> float | None:
        """When (on :meth:`monotonic`'s scale) the earliest sleeper wakes; None: nobody sleeps."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper whose moment comes, in order."""
        await self.advance_to(self._now + seconds)

    async def advance_to(self, moment: float) -> None:
        """Move time forward to ``moment``, waking each sleeper due by then, in order; each
        woken task runs up to its next wait before time moves on."""
        await _run_ready()  # tasks about to sleep get to, before time moves
        while True:
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0][0] > moment:
                break
            when, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            future.set_result(None)
            await _run_ready()
        self._now = max(self._now, moment)
        await _run_ready()

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


async def _run_ready() -> None:
    # A few turns of the loop: the woken task runs up to its next await, and what it woke runs.
    for _ in range(5):
        await asyncio.sleep(0)
