"""Webhook notifications: one JSON POST per event, Slack- and Mattermost-compatible (``text``).

:class:`Notifier` is an event sink. ``emit`` never waits: it filters, deduplicates and appends
to a bounded queue per webhook (the oldest dropped, and counted, when full); one task per
webhook drains it, paced by a token bucket and retried with backoff. The decisions
(:class:`Dedup`, :class:`TokenBucket`, :func:`backoff`) take the time as an argument; the
notifier reads it, and sleeps, through the injected :class:`~reconciler.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from ..clock import SYSTEM, Clock
from ..events import NOTIFY, Event, Kind
from ..registry import USER_AGENT
from .logs import event as log_event


@dataclass(frozen=True)
class Webhook:
    """Where to POST, and which events (None: every kind a notification can name)."""

    url: str
    events: frozenset[Kind] | None = None

    def wants(self, event: Event) -> bool:
        return event.kind in (NOTIFY if self.events is None else self.events)

    @property
    def shown(self) -> str:
        """The URL without its path: a webhook's path is its secret (Slack, Mattermost)."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}/..."


@dataclass(frozen=True)
class Policy:
    """How hard to try and how much to send."""

    queue: int = 500  # events waiting per webhook before the oldest is dropped
    attempts: int = 5
    first_wait: float = 1.0
    max_wait: float = 30.0
    timeout: float = 5.0
    dedup_window: float = 600.0  # the same event (id, fields, error) again within: not sent
    burst: int = 10  # token bucket: this many at once...
    per_minute: float = 20.0  # ...then this many a minute


def backoff(attempt: int, policy: Policy) -> float:
    """The wait after failed attempt ``attempt`` (0-based): 1 s, 2 s, 4 s... up to max_wait."""
    return min(policy.first_wait * 2**attempt, policy.max_wait)


class Dedup:
    """Remembers what was sent when, so a flapping model or a registry retried every second
    does not send the same message again within the window."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[tuple[object, ...], float] = {}

    def fresh(self, event: Event, now: float) -> bool:
        """True (and remembered) the first time within the window; False for a repeat."""
        if len(self._seen) > 10_000:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.window}
        key = event.key()
        last = self._seen.get(key)
        if last is not None and now - last < self.window:
            return False
        self._seen[key] = now
        return True


class TokenBucket:
    """``burst`` sends at once, refilled at ``rate`` per second."""

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self.burst, self.rate = float(burst), rate
        self.tokens, self.at = float(burst), now

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0: take it now, and it is taken)."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Notifier:
    """The notification sink: never blocks ``emit``; :meth:`run` delivers until cancelled."""

    def __init__(
        self,
        webhooks: Iterable[Webhook],
        *,
        count: Callable[[str], None],
        log: logging.Logger,
        policy: Policy | None = None,
        environment: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.webhooks = list(webhooks)
        self.policy = policy or Policy()
        self.count, self.log, self.environment = count, log, environment
        self.clock = clock
        self._queues = [deque[Event]() for _ in self.webhooks]
        self._wake = [asyncio.Event() for _ in self.webhooks]
        self._dedup = [Dedup(self.policy.dedup_window) for _ in self.webhooks]
        self._http = httpx.AsyncClient(
            timeout=self.policy.timeout,
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    def emit(self, event: Event) -> None:
        now = self.clock.monotonic()
        for i, hook in enumerate(self.webhooks):
            if not hook.wants(event):
                continue
            if not self._dedup[i].fresh(event, now):
                self.count("deduplicated")
                continue
            queue = self._queues[i]
            if len(queue) >= self.policy.queue:
                queue.popleft()
                self.count("dropped")
            queue.append(event)
            self._wake[i].set()

    def pending(self) -> int:
        """Events waiting to be sent."""
        return sum(len(q) for q in self._queues)

    async def run(self) -> None:
        """Deliver until cancelled: one task per webhook, so a slow one delays no other."""
        try:
            async with asyncio.TaskGroup() as group:
                for i in range(len(self.webhooks)):
                    group.create_task(self._drain(i))
        finally:
            await self._http.aclose()

    async def flush(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the queues to empty (at shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.pending():
                    await asyncio.sleep(0.05)

    async def _drain(self, i: int) -> None:
        hook, queue, wake = self.webhooks[i], self._queues[i], self._wake[i]
        bucket = TokenBucket(self.policy.burst, self.policy.per_minute / 60, self.clock.monotonic())
        while True:
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            wait = bucket.wait(self.clock.monotonic())
            if wait > 0:
                await self.clock.sleep(wait)
                continue
            event = queue[0]
            ok = await self._deliver(hook, event)
            if queue and queue[0] is event:  # not dropped meanwhile
                queue.popleft()
            self.count("sent" if ok else "failed")

    async def _deliver(self, hook: Webhook, event: Event) -> bool:
        body = event.as_json(self.environment)
        error = ""
        for attempt in range(self.policy.attempts):
            try:
                response = await self._http.post(hook.url, json=body)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            else:
                if response.status_code < 300:
                    return True
                error = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in (408, 429):
                    break  # the webhook refuses this message: retrying will not change that
            if attempt + 1 < self.policy.attempts:
                await self.clock.sleep(backoff(attempt, self.policy))
        log_event(
            self.log,
            "notification failed",
            logging.WARNING,
            webhook=hook.shown,
            notification=event.kind.value,
            id=event.id,
            error=error,
        )
        return False
