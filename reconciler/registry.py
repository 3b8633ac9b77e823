"""The registry API client (httpx, async): the one seam where the reconciler talks HTTP.

Tests fake at the transport (``httpx.MockTransport`` / ``httpx.ASGITransport`` over the local
registry app); time is faked through the injectable ``sleep`` and ``clock``.

Retries: 429, 500, 502, 503, 504 and every transport error (refused, reset, timeout, protocol)
are retried with the official SDK's backoff, honouring ``Retry-After``. Writes are retried too,
because every write here is safe to repeat: add over an existing entry replaces it or answers 409
(which :mod:`reconciler.apply` turns into a PATCH), PATCH sets the same fields again, and a DELETE
that answers 404 *on a retry* counts as done (the earlier attempt deleted it before its answer
was lost). A 404 on a DELETE's first attempt is still an error.
"""

from __future__ import annotations

import builtins
import email.utils
import errno
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from pydantic import ValidationError

from .spec import Entry, HealthResult

API_PREFIX = "/api/v1/llm/models/registry"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_MESSAGE = 300

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("reconciler")
    except Exception:  # not installed (a bare checkout): still send a recognisable agent
        return "0"


USER_AGENT = f"reconciler/{_version()}"


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
    jitter: float = 0.1  # each wait is stretched by up to this fraction, at random

    def backoff(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0 = the first retry), jitter included."""
        base = min(self.max_wait, self.first_wait * self.factor**attempt)
        return base * (1 + random.uniform(0, self.jitter)) if self.jitter else base


NO_RETRY = RetryPolicy(first_wait=0.0, total=0.0, jitter=0.0)


# --- error bodies -----------------------------------------------------------------------------


def _one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _issue_text(issue: Any) -> str:
    """One validation issue (FastAPI ``{loc, msg}`` or Zod ``{path, message}``) as text."""
    if not isinstance(issue, Mapping):
        return str(issue)
    loc = issue.get("loc", issue.get("path", issue.get("field")))
    msg = issue.get("msg", issue.get("message", ""))
    if isinstance(loc, list | tuple):
        # FastAPI prefixes "body"; the user wrote the rest.
        parts = [str(p) for p in loc if p != "body"]
        loc = ".".join(parts)
    return f"{loc}: {msg}" if loc else str(msg)


def _issues(value: Any) -> list[str]:
    if isinstance(value, list):
        return [_issue_text(i) for i in value]
    if isinstance(value, Mapping):
        # {"field": "message"} or {"field": ["message", ...]}
        return [
            f"{k}: {'; '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items()
        ]
    return []


def error_message(response: httpx.Response) -> str:
    """The server's message from an error answer, whatever shape the body has, on one line."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text) or response.reason_phrase
    message: Any = None
    issues: list[str] = []
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            message = error.get("message")
            for key in ("details", "errors", "issues", "fields"):
                issues += _issues(error.get(key))
        elif isinstance(error, str):
            message = error
        detail = body.get("detail")
        if isinstance(detail, str):
            message = message or detail
        else:
            issues += _issues(detail)
        message = message or body.get("message")
        for key in ("errors", "issues"):
            issues += _issues(body.get(key))
    if not message and not issues:
        return _one_line(response.text) or response.reason_phrase
    text = str(message or "invalid request")
    if issues:
        text += " (" + "; ".join(issues) + ")"
    return _one_line(text)


def _transport_cause(exc: httpx.TransportError, timeout: float) -> str:
    """A short human cause for a transport error: what went wrong, not a traceback."""
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.ConnectError):
        # anyio wraps the OSError ("All connection attempts failed"): look down the chain.
        refused = "refused" in lowered
        cause: BaseException | None = exc
        for _ in range(8):  # bounded: exception chains can loop
            if cause is None or refused:
                break
            refused = getattr(cause, "errno", None) == errno.ECONNREFUSED
            cause = cause.__cause__ or cause.__context__
        if refused:
            return "connection refused"
        if any(s in lowered for s in ("name or service", "nodename", "getaddrinfo", "resolve")):
            return "host name not found (DNS)"
        if "ssl" in lowered or "certificate" in lowered:
            return f"TLS error: {_one_line(text, 120)}"
        return f"cannot connect: {_one_line(text, 120)}" if text else "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed before a complete answer (protocol error)"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "connection dropped"
    return _one_line(f"{type(exc).__name__}: {text}", 160) if text else type(exc).__name__


def _retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
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


# --- rate limit -------------------------------------------------------------------------------


class _Spacer:
    """Client-side rate limit: requests start at least 1/rps apart, across all concurrent calls."""

    def __init__(self, rps: float | None, clock: Clock, sleep: Sleep) -> None:
        if rps is not None and rps <= 0:
            raise ValueError("rps must be positive (or None for no limit)")
        self._interval = 1.0 / rps if rps else 0.0
        self._next = -math.inf
        self._clock = clock
        self._sleep = sleep

    async def wait(self) -> None:
        if not self._interval:
            return
        # No await between reading and booking the slot, so concurrent callers queue up in order.
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)


# --- the client -------------------------------------------------------------------------------

_WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE", "PUT"})
_IMMUTABLE_WORDS = ("immutable", "read-only", "readonly", "yaml")


def _origin(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def check_base_url(base_url: str) -> httpx.URL:
    """Parse the registry base URL or raise a :class:`RegistryError` that says what is wrong."""
    shown = _one_line(str(base_url), 120)
    try:
        url = httpx.URL(str(base_url).strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise RegistryError(f"bad registry URL {shown!r}: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise RegistryError(f"bad registry URL {shown!r}: it must start with http:// or https://")
    if not url.host:
        raise RegistryError(f"bad registry URL {shown!r}: it names no host")
    if url.query or url.fragment:
        raise RegistryError(f"bad registry URL {shown!r}: it must not have a query or fragment")
    return url


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
        max_connections: int = 10,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
    ) -> None:
        url = check_base_url(base_url)
        self.base_url = str(url).rstrip("/")
        self._origin = _origin(url)
        # Accept a pydantic SecretStr too, so the secret is only unwrapped here.
        if api_key is not None and hasattr(api_key, "get_secret_value"):
            api_key = api_key.get_secret_value()
        self._api_key = api_key or None
        self._timeout = timeout
        self.retry = retry or RetryPolicy()
        self._sleep: Sleep = sleep or anyio.sleep
        self._clock: Clock = clock or time.monotonic
        self._spacer = _Spacer(rps, self._clock, self._sleep)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if on_behalf_of:
            headers["X-On-Behalf-Of"] = on_behalf_of
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=timeout,
            limits=limits,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"RegistryClient({self.base_url!r}, api_key={key})"

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # --- the six calls ------------------------------------------------------------------------

    async def list(self) -> builtins.list[Entry]:
        """Every registry entry."""
        body = await self._call("GET", "", what="list")
        data = body.get("data") if isinstance(body, Mapping) else body
        if not isinstance(data, builtins.list):
            raise RegistryError("unexpected answer to list: no data array", 200)
        return [self._entry(item, "list") for item in data]

    async def get(self, model_id: str) -> Entry | None:
        """One entry, or None when the registry has no such id."""
        try:
            body = await self._call("GET", self._path(model_id), what=f"get {model_id}")
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise
        return self._entry(body, "get")

    async def add(self, definition: Mapping[str, Any]) -> Entry:
        """POST a full definition (creates, or replaces an existing database entry)."""
        what = f"add {definition.get('id', '')}".rstrip()
        body = await self._call("POST", "", json_body=dict(definition), what=what)
        return self._entry(body, "add")

    async def update(self, model_id: str, patch: Mapping[str, Any]) -> Entry:
        """PATCH the fields in ``patch`` (None drops a field); the rest are kept."""
        body = await self._call(
            "PATCH", self._path(model_id), json_body=dict(patch), what=f"update {model_id}"
        )
        return self._entry(body, "update")

    async def remove(self, model_id: str) -> None:
        """DELETE an entry. A 404 on a retry counts as done (see the module docstring)."""
        body = await self._call(
            "DELETE", self._path(model_id), what=f"remove {model_id}", gone_ok_on_retry=True
        )
        if isinstance(body, Mapping) and body.get("deleted") is False:
            raise RegistryError(f"remove {model_id}: the registry answered deleted=false", 200)

    async def check_health(self, model_id: str) -> HealthResult:
        """Ask the registry to probe the model's provider now."""
        body = await self._call(
            "POST", self._path(model_id) + "/health", what=f"health {model_id}", write=False
        )
        try:
            return HealthResult.model_validate(body)
        except ValidationError:
            raise RegistryError("unexpected answer to health: not a health result", 200) from None

    # --- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def _path(model_id: str) -> str:
        # One path segment, whatever the id holds (colon, slash, ?, #, %, spaces).
        return "/" + quote(model_id, safe="")

    @staticmethod
    def _entry(body: Any, what: str) -> Entry:
        try:
            return Entry.model_validate(body)
        except ValidationError:
            raise RegistryError(f"unexpected answer to {what}: not a registry entry", 200) from None

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "(redacted)") if self._api_key else text

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json_body: Any = None,
        write: bool | None = None,
        gone_ok_on_retry: bool = False,
    ) -> Any:
        """Send one call with retries; the decoded JSON answer, or a mapped exception."""
        url = self.base_url + API_PREFIX + path
        write = method in _WRITE_METHODS if write is None else write
        policy = self.retry
        start = self._clock()
        slept = 0.0
        attempt = 0
        content = None
        headers = {}
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        while True:
            await self._spacer.wait()
            retry_after: float | None = None
            try:
                response = await self._http.request(method, url, content=content, headers=headers)
            except httpx.TransportError as exc:
                failure: RegistryError = UnreachableError(
                    self._redact(
                        f"cannot reach the registry at {self._origin}: "
                        f"{_transport_cause(exc, self._timeout)}"
                        + (f" (after {attempt + 1} attempts)" if attempt else "")
                    )
                )
            else:
                status = response.status_code
                if status == 404 and gone_ok_on_retry and attempt > 0:
                    return None
                if status < 400:
                    return self._decode(response, what)
                failure = self._status_error(response, what, write)
                if status not in RETRY_STATUSES:
                    raise failure
                retry_after = _retry_after(response.headers.get("retry-after"))
                if attempt:
                    failure.message += f" (after {attempt + 1} attempts)"
                    failure.args = (failure.message,)
            # Count waits we asked for even if the clock does not move (an injected sleep).
            elapsed = max(self._clock() - start, slept)
            remaining = policy.total - elapsed
            if remaining <= 0:
                raise failure
            # "Retry-After: 0" would make a busy loop: fall back to the backoff then.
            wait = retry_after if retry_after else policy.backoff(attempt)
            wait = min(wait, remaining)
            await self._sleep(wait)
            slept += wait
            attempt += 1

    def _decode(self, response: httpx.Response, what: str) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise RegistryError(
                f"unexpected answer to {what}: not JSON ({_one_line(response.text, 80)!r})",
                response.status_code,
            ) from None

    def _status_error(self, response: httpx.Response, what: str, write: bool) -> RegistryError:
        status = response.status_code
        server = self._redact(error_message(response))
        head = f"{what}: HTTP {status} {response.reason_phrase}".rstrip()
        if status == 401 or (
            status == 403 and not (write and any(w in server.lower() for w in _IMMUTABLE_WORDS))
        ):
            key = (
                "no API key was given (set MKA1_API_KEY)"
                if not self._api_key
                else "the API key is wrong or lacks admin rights"
            )
            return AuthError(f"{head}: the registry refused the call: {key} ({server})", status)
        if status == 409:
            return ConflictError(f"{head}: {server}", status)
        return RegistryError(f"{head}: {server}", status)
