"""Carry out a plan against the registry: bounded concurrency, one result per model.

CONTRACT (filled in by the reconcile work, issue 4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, NamedTuple

from .plan import Action, Plan
from .registry import RegistryClient, RegistryError
from .spec import HealthResult

UpdateMethod = Literal["add", "patch"]


class Outcome(NamedTuple):
    """What became of one planned write."""

    id: str
    action: Action
    ok: bool
    error: str | None = None
    status: int | None = None  # HTTP status of the failure, if there was an answer


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
    fields) or PATCH directly with ``update_method="patch"``. delete: remove.
    """
    raise NotImplementedError


async def check_health(
    client: RegistryClient, ids: Iterable[str], *, concurrency: int = 4
) -> dict[str, HealthResult | RegistryError]:
    """Ask the registry to probe each model, a few at a time."""
    raise NotImplementedError
