"""When the registry client retries, paces and gives up: pure policy, time injected.

:class:`RetryPolicy` is one call's backoff; :class:`Spacer` spaces requests (``--rps``);
:class:`Breaker` is shared by every call of one client, so a registry that stopped answering
ends the run instead of every remaining call retrying on its own. See :mod:`reconciler.registry`
for the contract these implement.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    """The official SDK's backoff: 0.5 s first wait, x1.5, 5 s cap, 15 s in all, plus jitter.

    ``connect_total`` is the shorter budget for a registry that refuses the connection or whose
    name does not resolve: nothing is listening, so waiting the full 15 s only hides it.
    """

    first_wait: float = 0.5
    factor: float = 1.5
    max_wait: float = 5.0
    total: float = 15.0
    jitter: float = 0.1  # each wait is stretched by up to this fraction, at random
    connect_total: float = 2.5

    def backoff(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0 = the first retry), jitter included."""
        base = min(self.max_wait, self.first_wait * self.factor**attempt)
        return base * (1 + random.uniform(0, self.jitter)) if self.jitter else base

    def budget(self, cannot_connect: bool) -> float:
        """Seconds one call may spend retrying, given how its last attempt failed."""
        return min(self.total, self.connect_total) if cannot_connect else self.total


NO_RETRY = RetryPolicy(first_wait=0.0, total=0.0, jitter=0.0, connect_total=0.0)


def retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


class Spacer:
    """Client-side rate limit: requests start at least 1/rps apart, across all concurrent calls."""

    def __init__(self, rps: float | None, clock: Clock, sleep: Sleep) -> None:
        if rps is not None and rps <= 0:
            raise ValueError("rps must be positive (or None for no limit)")
        self._interval = 1.0 / rps if rps else 0.0
        self._next = -math.inf
        self._clock = clock
        self._sleep = sleep

    async def wait(self) -> None:
        """Wait for this request's slot."""
        if not self._interval:
            return
        # No await between reading and booking the slot, so concurrent callers queue up in order.
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)


class Breaker:
    """A circuit breaker over "did the registry answer at all", shared by one client's calls.

    It opens after ``threshold`` attempts in a row got no answer (any call, any error without
    an HTTP status), or when one call spent its whole retry budget and the registry has not
    answered any call for at least that long (:meth:`silent_for`). While open,
    calls not yet sent fail at once and calls in their backoff stop retrying. Any answer closes
    it; so does :meth:`reset` or ``cooldown`` seconds passing (a long-lived client tries again).
    """

    def __init__(self, clock: Clock, *, threshold: int = 8, cooldown: float = 30.0) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._clock = clock
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0  # attempts in a row without an answer
        self.answered_at: float | None = None  # when the registry last answered anything
        self.opened_at: float | None = None
        self.cause: str | None = None  # the failure that opened it, for "not attempted" messages
        self.warned = False  # the one "retrying" notice of this silence was given

    @property
    def is_open(self) -> bool:
        """Whether calls should not be sent now (the cooldown, once over, closes it)."""
        if self.opened_at is None:
            return False
        if self._clock() - self.opened_at >= self.cooldown:
            self.reset()
            return False
        return True

    def answered(self) -> None:
        """An HTTP answer came (any status): the registry is alive."""
        self.answered_at = self._clock()
        self.failures = 0
        self.warned = False
        self.opened_at = None
        self.cause = None

    def failed(self, cause: str) -> None:
        """An attempt got no answer."""
        self.failures += 1
        if self.failures >= self.threshold:
            self.trip(cause)

    def silent_for(self, seconds: float) -> bool:
        """Whether no call got an answer in the last ``seconds`` (or ever)."""
        return self.answered_at is None or self._clock() - self.answered_at >= seconds

    def trip(self, cause: str) -> None:
        """Open now (a call spent its budget without an answer)."""
        if self.opened_at is None:
            self.opened_at = self._clock()
            self.cause = cause

    def reset(self) -> None:
        """Close and forget (a new run of a long-lived client)."""
        self.failures = 0
        self.warned = False
        self.opened_at = None
        self.cause = None
