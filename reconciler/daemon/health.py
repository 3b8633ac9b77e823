"""The health loop: every ``--health-interval`` seconds, ask the registry to probe each model.

A round is skipped while the registry is down (it would only report the outage as every model
failing), and an answer that is the registry's own trouble (no answer, 5xx, a refused key)
leaves each model's last known health as it was: ``unknown`` until a real answer comes.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from .. import apply as apply_mod
from ..clock import wait_event
from ..events import Event, Kind
from ..registry import AuthError, RegistryError
from ..units import unix_seconds
from .logs import event
from .state import jittered

if TYPE_CHECKING:
    from .core import Daemon


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


async def check_once(daemon: Daemon) -> None:
    """One round of health checks, a few at a time; skipped while the registry is down."""
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
    results = await apply_mod.check_health(
        daemon.client, ids, concurrency=daemon.options.health_concurrency
    )
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
        error = daemon.hide(model_id, result.error)
        if status.available is not None and status.available != result.is_available:
            state = "available" if result.is_available else "unavailable"
            daemon.events.emit(
                Event(
                    Kind.HEALTH_CHANGED,
                    now,
                    f"{model_id} is now {state}" + (f": {error}" if error else ""),
                    id=model_id,
                    file=status.file,
                    error=error,
                    available=result.is_available,
                )
            )
        status.available = result.is_available
        status.health_error = error
        status.checked_at = _seconds(result.checked_at) or now
        outcome = "available" if result.is_available else "unavailable"
        metrics.of(metrics.health_checks, outcome=outcome).inc()
        down += 0 if result.is_available else 1
    event(
        daemon.log,
        "health checked",
        models=len(ids),
        unavailable=down,
        unanswered=sum(isinstance(r, RegistryError) for r in results.values()) or None,
    )
    if trouble is not None:
        # The registry itself is in trouble: not ready, and a full resync now finds out more
        # (and backs off) rather than waiting for the resync timer.
        daemon.registry_down(trouble.message)
    elif len(results) > sum(isinstance(r, RegistryError) for r in results.values()):
        daemon.registry_answered()


def _seconds(value: float | None) -> float | None:
    """The registry answers times in ms since epoch (or seconds): unix seconds either way."""
    return unix_seconds(value)
