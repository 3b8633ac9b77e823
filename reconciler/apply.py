"""Carry out a plan against the registry: bounded concurrency, one result per model.

Only create, update and delete changes are written; unchanged, immutable and invalid changes
get no call and no :class:`Outcome` (the plan already says what they are).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, NamedTuple

import anyio

from .plan import Action, Change, FieldOp, Plan
from .registry import ConflictError, RegistryClient, RegistryError
from .spec import HealthResult

UpdateMethod = Literal["add", "patch"]
WRITES = frozenset({Action.CREATE, Action.UPDATE, Action.DELETE})


class Outcome(NamedTuple):
    """What became of one planned write."""

    id: str
    action: Action
    ok: bool
    error: str | None = None
    status: int | None = None  # HTTP status of the failure, if there was an answer


def patch_body(change: Change) -> dict[str, Any]:
    """The PATCH for a change: its full body without ``id``, plus null for every top-level field
    the plan says was removed (PATCH keeps omitted fields, so a drop must be said)."""
    patch = {k: v for k, v in (change.body or {}).items() if k != "id"}
    for field in change.fields:
        if field.op == FieldOp.REMOVE and len(field.path) == 1:
            patch.setdefault(str(field.path[0]), None)
    return patch


async def _write(change: Change, client: RegistryClient, update_method: UpdateMethod) -> None:
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
    client: RegistryClient,
    *,
    concurrency: int = 4,
    update_method: UpdateMethod = "add",
    on_result: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Write every create/update/delete of ``plan``; one model's failure does not stop the rest.

    create: add. update: add (on 409, PATCH with the full body and null for dropped top-level
    fields) or PATCH directly with ``update_method="patch"``. delete: remove. Outcomes come back
    in plan order; ``on_result`` sees each as it finishes.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if update_method not in ("add", "patch"):
        raise ValueError(f"update_method must be 'add' or 'patch', not {update_method!r}")
    changes = [c for c in plan.changes if c.action in WRITES]
    outcomes: list[Outcome | None] = [None] * len(changes)
    limiter = anyio.Semaphore(concurrency)

    async def run(index: int, change: Change) -> None:
        async with limiter:
            try:
                await _write(change, client, update_method)
                outcome = Outcome(change.id, change.action, True)
            except RegistryError as exc:
                outcome = Outcome(change.id, change.action, False, exc.message, exc.status)
            except Exception as exc:  # a bug or a surprise must not cost the other models
                outcome = Outcome(change.id, change.action, False, _describe(exc))
        outcomes[index] = outcome
        if on_result is not None:
            on_result(outcome)

    async with anyio.create_task_group() as group:
        for index, change in enumerate(changes):
            group.start_soon(run, index, change)
    return [o for o in outcomes if o is not None]


async def check_health(
    client: RegistryClient, ids: Iterable[str], *, concurrency: int = 4
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
