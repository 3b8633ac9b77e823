"""Carry out a plan against the registry: bounded concurrency, one result per model.

Only create, update and delete changes are written; unchanged, immutable and invalid changes
get no call and no :class:`Outcome` (the plan already says what they are). A :class:`Stop`
(a signal, a daemon shutting down) lets no new write start and gives those in flight a grace
period; a registry that stopped answering (the client's breaker) has the same effect: the
writes not started come back ``attempted=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, NamedTuple

import anyio

from . import defaults
from .plan import Action, Change, FieldOp, Plan
from .ports import ConflictError, NotAttemptedError, Registry, RegistryError
from .spec import HealthResult

UpdateMethod = Literal["add", "patch"]
WRITES = frozenset({Action.CREATE, Action.UPDATE, Action.DELETE})
ABANDONED = "abandoned while stopping: its answer was not awaited, so it may have landed"


class Outcome(NamedTuple):
    """What became of one planned write."""

    id: str
    action: Action
    ok: bool
    error: str | None = None
    status: int | None = None  # HTTP status of the failure, if there was an answer
    attempted: bool = True  # False: never sent (stopped, or the registry had stopped answering)


class Stop:
    """Asked from outside a run (a signal, a shutdown): no new write starts once :meth:`set`;
    writes in flight get ``grace`` seconds (None: no limit), or none after :meth:`abandon`."""

    def __init__(self, grace: float | None = defaults.GRACE) -> None:
        self.grace = grace
        self.reason: str | None = None
        self.abandoned = False
        # What the runs it watches did so far, for the message that announces the stop.
        self.in_flight = 0
        self.landed = 0
        self._events: list[anyio.Event] = []

    def is_set(self) -> bool:
        """Whether writes should no longer start."""
        return self.reason is not None

    def set(self, reason: str = "interrupted") -> None:
        """Start no new write; ``reason`` ends the "not attempted" message."""
        if self.reason is None:
            self.reason = reason
        self._wake()

    def abandon(self) -> None:
        """Stop waiting for the writes in flight too (a second signal)."""
        self.abandoned = True
        self.set()

    def _wake(self) -> None:
        for event in self._events:
            event.set()

    async def _wait(self, done: Callable[[], bool]) -> None:
        while not done():
            event = anyio.Event()
            self._events.append(event)
            try:
                await event.wait()
            finally:
                self._events.remove(event)

    async def cancel_after_grace(self, in_flight: set[anyio.CancelScope]) -> None:
        """Once set, wait out the grace (or an abandon), then cancel the writes in flight."""
        await self._wait(self.is_set)
        with anyio.move_on_after(self.grace if self.grace is not None else math.inf):
            await self._wait(lambda: self.abandoned)
        for scope in in_flight:
            scope.cancel()


def patch_body(change: Change) -> dict[str, Any]:
    """The PATCH for a change: its full body without ``id``, plus null for every top-level field
    the plan says was removed (PATCH keeps omitted fields, so a drop must be said)."""
    patch = {k: v for k, v in (change.body or {}).items() if k != "id"}
    for field in change.fields:
        if field.op == FieldOp.REMOVE and len(field.path) == 1:
            patch.setdefault(str(field.path[0]), None)
    return patch


async def _write(change: Change, client: Registry, update_method: UpdateMethod) -> None:
    if change.action == Action.DELETE:
        await client.remove(change.id)
        return
    if change.body is None:
        raise RegistryError(f"{change.action} {change.id}: the plan has no body to send")
    body: Mapping[str, Any] = change.body
    if change.action == Action.UPDATE and update_method == "patch":
        await client.update(change.id, patch_body(change))
        return
    try:
        await client.add(body)
    except ConflictError:
        # The registry refuses add over an existing entry (or someone created it since the
        # plan): update it in place instead.
        await client.update(change.id, patch_body(change))


async def apply_plan(
    plan: Plan,
    client: Registry,
    *,
    concurrency: int = defaults.CONCURRENCY,
    update_method: UpdateMethod = "add",
    on_result: Callable[[Outcome], None] | None = None,
    stop: Stop | None = None,
) -> list[Outcome]:
    """Write every create/update/delete of ``plan``; one model's failure does not stop the rest.

    create: add. update: add (on 409, PATCH with the full body and null for dropped top-level
    fields) or PATCH directly with ``update_method="patch"``. delete: remove. Outcomes come back
    in plan order; ``on_result`` sees each as it finishes. ``stop`` is checked before each write
    starts; a write still in flight when its grace runs out is abandoned (failed, may have landed).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if update_method not in ("add", "patch"):
        raise ValueError(f"update_method must be 'add' or 'patch', not {update_method!r}")
    changes = [c for c in plan.changes if c.action in WRITES]
    outcomes: list[Outcome | None] = [None] * len(changes)
    limiter = anyio.Semaphore(concurrency)

    in_flight: set[anyio.CancelScope] = set()

    async def run(index: int, change: Change) -> None:
        async with limiter:
            if stop is not None and stop.is_set():
                outcome = _not_attempted(change, f"not attempted: {stop.reason}")
            else:
                outcome = Outcome(change.id, change.action, False, ABANDONED)
                with anyio.CancelScope() as scope:
                    in_flight.add(scope)
                    if stop is not None:
                        stop.in_flight += 1
                    outcome = await _attempt(change, client, update_method)
                in_flight.discard(scope)
                if stop is not None:
                    stop.in_flight -= 1
                    stop.landed += outcome.ok
        outcomes[index] = outcome
        if on_result is not None:
            on_result(outcome)

    async with anyio.create_task_group() as watcher:
        if stop is not None:
            watcher.start_soon(stop.cancel_after_grace, in_flight)
        async with anyio.create_task_group() as group:
            for index, change in enumerate(changes):
                group.start_soon(run, index, change)
        watcher.cancel_scope.cancel()
    return [o for o in outcomes if o is not None]


async def _attempt(change: Change, client: Registry, update_method: UpdateMethod) -> Outcome:
    try:
        await _write(change, client, update_method)
        return Outcome(change.id, change.action, True)
    except NotAttemptedError as exc:
        return _not_attempted(change, exc.reason)
    except RegistryError as exc:
        return Outcome(change.id, change.action, False, exc.message, exc.status)
    except Exception as exc:  # a bug or a surprise must not cost the other models
        return Outcome(change.id, change.action, False, _describe(exc))


def _not_attempted(change: Change, why: str) -> Outcome:
    return Outcome(change.id, change.action, False, why, attempted=False)


async def check_health(
    client: Registry, ids: Iterable[str], *, concurrency: int = defaults.HEALTH_CONCURRENCY
) -> dict[str, HealthResult | RegistryError]:
    """Ask the registry to probe each model, a few at a time; results in the order given."""
    unique = list(dict.fromkeys(ids))
    results: dict[str, HealthResult | RegistryError] = {}
    limiter = anyio.Semaphore(max(1, concurrency))

    async def probe(model_id: str) -> None:
        async with limiter:
            try:
                results[model_id] = await client.check_health(model_id)
            except RegistryError as exc:
                results[model_id] = exc
            except Exception as exc:
                results[model_id] = RegistryError(_describe(exc))

    async with anyio.create_task_group() as group:
        for model_id in unique:
            group.start_soon(probe, model_id)
    return {model_id: results[model_id] for model_id in unique}


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
