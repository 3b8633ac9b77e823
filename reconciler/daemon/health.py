"""Model health, from two sources: the ``health`` every list answer carries (the registry's last
known state, free with each full resync) and a round of probes every ``--health-interval``.

A round probes the models checked longest ago first, a few at a time, and starts no probe once
half the interval has passed: with 10,000 models a round still fits its interval, and the
models left out are first in line next round (a rotating subset). A round is skipped while the
registry is down (it would only report the outage as every model failing), and an answer that is
the registry's own trouble (no answer, 5xx, a refused key) leaves each model's last known health
as it was: ``unknown`` until a real answer comes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..clock import wait_event
from ..events import Event, Kind
from ..registry import AuthError, RegistryError
from ..spec import Entry, HealthResult
from ..units import unix_seconds
from .logs import event
from .state import jittered

if TYPE_CHECKING:
    from .core import Daemon

ROUND_SHARE = 0.5  # of the interval: the time a round may spend starting probes


def registry_trouble(error: RegistryError) -> bool:
    """Whether a failed check says the registry is in trouble, not the model."""
    return error.status is None or error.status >= 500 or isinstance(error, AuthError)


async def loop(daemon: Daemon) -> None:
    """Run health rounds until the daemon stops (none when the interval is 0)."""
    interval = daemon.options.health_interval
    if interval <= 0:
        return
    await daemon.synced.wait()
    while not daemon.stopping:
        await check_once(daemon)
        await wait_event(daemon.clock, daemon.stop_requested, jittered(interval, random.random()))


async def from_listing(daemon: Daemon, live: Iterable[Entry]) -> None:
    """Take the health each list entry carries when it is newer than what we know (probed by
    us, by the gateway, or by anyone): no call of our own."""
    if daemon.options.health_interval <= 0:
        return
    now = daemon.clock.time()
    for n, entry in enumerate(live, 1):
        if n % 1000 == 0:
            await asyncio.sleep(0)  # the endpoints answer in between
        checked = _seconds(entry.health.last_health_check)
        status = daemon.models.get(entry.id)
        if checked is None or entry.health.is_available is None or status is None:
            continue  # never checked: the registry's default says nothing
        if status.checked_at is not None and checked <= status.checked_at:
            continue
        _record(daemon, entry.id, entry.health.is_available, entry.health.error, checked, now)


async def check_once(daemon: Daemon, budget: float | None = None) -> None:
    """One round of probes, oldest check first, a few at a time, starting none after
    ``budget`` seconds (half the interval); skipped while the registry is down."""
    metrics = daemon.metrics
    if not daemon.readiness.registry_up:
        metrics.of(metrics.health_skipped).inc()
        if not daemon.health_paused:
            event(
                daemon.log,
                "health round skipped",
                logging.WARNING,
                reason="the registry is down; model health is left as last known",
            )
        daemon.health_paused = True
        return
    daemon.health_paused = False
    ids = daemon.managed_ids()
    if not ids:
        return
    models = daemon.models
    ids.sort(key=lambda i: (s.checked_at or 0.0) if (s := models.get(i)) else 0.0)
    if budget is None:
        budget = daemon.options.health_interval * ROUND_SHARE
    started = daemon.clock.monotonic()
    deadline = started + budget
    queue: Iterator[str] = iter(ids)
    results: dict[str, HealthResult | RegistryError] = {}

    async def prober() -> None:
        # A fixed number of workers, not a task per model: 10,000 waiting tasks cost memory.
        for model_id in queue:
            if daemon.stopping or daemon.clock.monotonic() >= deadline:
                return
            try:
                results[model_id] = await daemon.client.check_health(model_id)
            except RegistryError as exc:
                results[model_id] = exc
            except Exception as exc:  # one odd answer must not end the round
                results[model_id] = RegistryError(f"{type(exc).__name__}: {exc}"[:300])

    await asyncio.gather(*(prober() for _ in range(max(1, daemon.options.health_concurrency))))
    _take(daemon, results, total=len(ids), seconds=daemon.clock.monotonic() - started)


def _take(
    daemon: Daemon,
    results: dict[str, HealthResult | RegistryError],
    *,
    total: int,
    seconds: float,
) -> None:
    metrics = daemon.metrics
    now = daemon.clock.time()
    down = 0
    trouble: RegistryError | None = None
    for model_id, result in results.items():
        status = daemon.models.get(model_id)
        if status is None:
            continue
        if isinstance(result, RegistryError):
            metrics.of(metrics.health_checks, outcome="error").inc()
            if registry_trouble(result):
                trouble = trouble or result
            else:
                message = daemon.hide(model_id, result.message)
                status.health_error = f"health check failed: {message}"
            continue
        _record(
            daemon, model_id, result.is_available, result.error, _seconds(result.checked_at), now
        )
        outcome = "available" if result.is_available else "unavailable"
        metrics.of(metrics.health_checks, outcome=outcome).inc()
        down += 0 if result.is_available else 1
    unanswered = sum(isinstance(r, RegistryError) for r in results.values())
    event(
        daemon.log,
        "health checked",
        models=len(results),
        managed=total if total != len(results) else None,
        unavailable=down,
        unanswered=unanswered or None,
        seconds=round(seconds, 2),
    )
    if trouble is not None:
        # The registry itself is in trouble: not ready, and a full resync now finds out more
        # (and backs off) rather than waiting for the resync timer.
        daemon.registry_down(trouble.message)
    elif len(results) > unanswered:
        daemon.registry_answered()


def _record(
    daemon: Daemon,
    model_id: str,
    available: bool,
    error: str | None,
    checked_at: float | None,
    now: float,
) -> None:
    """One model's health as found; a change of availability is a ``health-changed`` event."""
    status = daemon.models.get(model_id)
    if status is None:
        return
    error = daemon.hide(model_id, error)
    if status.available is not None and status.available != available:
        state = "available" if available else "unavailable"
        daemon.events.emit(
            Event(
                Kind.HEALTH_CHANGED,
                now,
                f"{model_id} is now {state}" + (f": {error}" if error else ""),
                id=model_id,
                file=status.file,
                error=error,
                available=available,
            )
        )
    status.available = available
    status.health_error = error
    status.checked_at = checked_at or now


def _seconds(value: float | None) -> float | None:
    """The registry answers times in ms since epoch (or seconds): unix seconds either way."""
    return unix_seconds(value)
