"""The registry as the engine sees it: a small :class:`Registry` Protocol, the list it answers
and the errors it raises. :class:`reconciler.registry.RegistryClient` (HTTP) is one
implementation; a second registry target, or an in-memory fake in a test, is another.

The plan and apply steps depend on this module only, never on the HTTP client.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from .spec import Entry, HealthResult

__all__ = [
    "AuthError",
    "ConflictError",
    "Listing",
    "NotAttemptedError",
    "Registry",
    "RegistryError",
    "UnreachableError",
]


class RegistryError(Exception):
    """A call failed; ``status`` is the HTTP status (None when no answer came)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AuthError(RegistryError):
    """401/403 on a call that is not a write to an immutable entry: wrong or missing key."""


class ConflictError(RegistryError):
    """409: add over an existing entry on a registry that refuses it."""


class UnreachableError(RegistryError):
    """No HTTP answer: connection refused, DNS, TLS, timeout, after retries."""


class NotAttemptedError(UnreachableError):
    """The call was never sent: the registry had stopped answering the client's other calls."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # the message without the call's name


class Listing(builtins.list[Entry]):
    """The entries of a list answer; ``has_more`` is true when the registry says it paged, so
    the list is not the whole registry (prune must not trust it). ``held``: the ids whose
    definition the decoder found to hold a file's body, by that body (see
    :func:`reconciler.plan.make_plan`)."""

    has_more: bool = False
    held: Mapping[str, Mapping[str, Any]] = MappingProxyType({})


class Registry(Protocol):
    """What the engine needs of a registry. Failures raise :class:`RegistryError` (or a
    subclass: :class:`ConflictError` makes apply fall back to ``update``,
    :class:`NotAttemptedError` marks a write as never sent)."""

    async def list(self) -> Listing:
        """Every entry (``has_more`` set when the answer is not the whole registry)."""
        ...

    async def add(self, definition: Mapping[str, Any]) -> Entry:
        """Create (or replace) an entry from a full definition."""
        ...

    async def update(self, model_id: str, patch: Mapping[str, Any]) -> Entry:
        """Set the fields in ``patch`` (None drops a field); the rest are kept."""
        ...

    async def remove(self, model_id: str) -> None:
        """Delete an entry."""
        ...

    async def check_health(self, model_id: str) -> HealthResult:
        """Probe the model's provider now."""
        ...
