"""The registry API client (httpx, async): the one seam where the reconciler talks HTTP.

CONTRACT (filled in by the reconcile work, issue 4). Tests fake at the transport
(``httpx.MockTransport`` / ``httpx.ASGITransport`` over the local registry app).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .spec import Entry, HealthResult

API_PREFIX = "/api/v1/llm/models/registry"


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


@dataclass(frozen=True)
class RetryPolicy:
    """The official SDK's backoff: 0.5 s first wait, x1.5, 5 s cap, 15 s in all, plus jitter."""

    first_wait: float = 0.5
    factor: float = 1.5
    max_wait: float = 5.0
    total: float = 15.0
    jitter: float = 0.1


class RegistryClient:
    """Async client for the six registry calls; retries 429/5xx/connection errors."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        on_behalf_of: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        rps: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> RegistryClient: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def aclose(self) -> None: ...

    async def list(self) -> list[Entry]: ...
    async def get(self, model_id: str) -> Entry | None: ...
    async def add(self, definition: Mapping[str, Any]) -> Entry: ...
    async def update(self, model_id: str, patch: Mapping[str, Any]) -> Entry: ...
    async def remove(self, model_id: str) -> None: ...
    async def check_health(self, model_id: str) -> HealthResult: ...
