"""The registry API client (httpx, async): the one seam where the reconciler talks HTTP.

Tests fake at the transport (``httpx.MockTransport`` / ``httpx.ASGITransport`` over the local
registry app); time is faked through the injectable ``sleep`` and ``clock``.

Retries (policy in :mod:`reconciler.retry`): 429, 500, 502, 503, 504 and every transport error
(refused, reset, timeout, protocol) are retried with the official SDK's backoff, honouring
``Retry-After``, for 15 s per call. A connection refused or a name that does not resolve is
retried for 2.5 s only, and the first retry after an answer (or at start) calls ``on_retry`` once
with a one-line notice (the CLI prints it on stderr).

Giving up together: one :class:`~reconciler.registry.retry.Breaker` per client counts attempts
that got no answer at all. After 8 in a row, or once a call spent its whole budget while no call
got an answer for that long, it opens: calls not yet sent raise :class:`NotAttemptedError` at
once ("not attempted: the registry stopped answering"), calls in backoff stop retrying and raise
their last failure. Any answer closes it, as do :meth:`RegistryClient.reset` and 30 s passing.
So a registry killed in the middle of a sync ends the run within seconds (refused) or about two
timeouts (hung).

Writes are retried too, because every write here is safe to repeat: add over an existing entry
replaces it or answers 409 (which :mod:`reconciler.apply` turns into a PATCH), PATCH sets the
same fields again, and a DELETE that answers 404 *on a retry* counts as done (the earlier
attempt deleted it before its answer was lost). A 404 on a DELETE's first attempt is still an
error.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from inspect import iscoroutinefunction as is_async
from typing import Any, NoReturn
from urllib.parse import quote

import anyio
import httpx
import orjson
from pydantic import ValidationError

from .. import defaults
from ..ports import (
    AuthError,
    ConflictError,
    Listing,
    NotAttemptedError,
    RegistryError,
    UnreachableError,
)
from ..spec import Entry, HealthResult
from .errors import error_message, one_line, transport_cause
from .listed import Entries, ListDecoder, is_streamed
from .retry import NO_RETRY, Breaker, Clock, RetryPolicy, Sleep, Spacer
from .retry import retry_after as _retry_after

__all__ = [
    "NO_RETRY",
    "AuthError",
    "ConflictError",
    "Listing",
    "NotAttemptedError",
    "RegistryClient",
    "RegistryError",
    "RetryPolicy",
    "UnreachableError",
]

API_PREFIX = "/api/v1/llm/models/registry"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
OFF_LOOP_FROM = 256 * 1024  # bytes of a list answer decoded in a worker thread


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("reconciler")
    except Exception:  # not installed (a bare checkout): still send a recognisable agent
        return "0"


USER_AGENT = f"reconciler/{_version()}"


# --- the client -------------------------------------------------------------------------------

_WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE", "PUT"})
_IMMUTABLE_WORDS = ("immutable", "read-only", "readonly", "yaml")


def _origin(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def check_base_url(base_url: str) -> httpx.URL:
    """Parse the registry base URL or raise a :class:`RegistryError` that says what is wrong."""
    shown = one_line(str(base_url), 120)
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
    """Async client for the six registry calls; retries 429/5xx/connection errors. Implements
    :class:`reconciler.ports.Registry`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        on_behalf_of: str | None = None,
        timeout: float = defaults.TIMEOUT,
        retry: RetryPolicy | None = None,
        rps: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 10,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        on_retry: Callable[[str], None] | None = None,
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
        # Each model's body by id, once known (waiting for the files: the list is decoded after
        # them): a definition equal to its file's body takes that body's values (see listed).
        self.share: Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]] | None = None
        self._sleep: Sleep = sleep or anyio.sleep
        self._clock: Clock = clock or time.monotonic
        self._spacer = Spacer(rps, self._clock, self._sleep)
        self.breaker = Breaker(self._clock)
        self.on_retry = on_retry
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

    def reset(self) -> None:
        """Forget that the registry stopped answering: a new run tries it afresh."""
        self.breaker.reset()

    # --- the six calls ------------------------------------------------------------------------

    async def list(self) -> Listing:
        """Every registry entry (``has_more`` set when the answer says there are more)."""
        if self.share is not None:
            return await self._call("GET", "", what="list", consume=self._streamed)  # type: ignore[no-any-return]
        # Handed over in a box the decoder empties: the answer's bytes (8 MB at 10,000 entries)
        # are garbage as soon as they are decoded, not held until the entries are built.
        held: builtins.list[httpx.Response] = [await self._call("GET", "", what="list", raw=True)]
        if len(held[0].content) < OFF_LOOP_FROM:
            return self._listing(held)
        # Decoding 10,000 entries is a few hundred ms of CPU: in a thread, so the event loop
        # keeps serving what else runs on it (the daemon's /healthz) meanwhile.
        return await anyio.to_thread.run_sync(self._listing, held)

    def _listing(self, held: builtins.list[httpx.Response]) -> Listing:
        response = held.pop()
        # json, not orjson: as fast on a list this size, and orjson first builds a document of
        # its own, twice the answer's size, next to the objects it makes. And its error, as for
        # every call.
        body: Any = self._decode(response, "list", lean=True)
        del response
        data = body.get("data") if isinstance(body, Mapping) else body
        if not isinstance(data, builtins.list):
            raise RegistryError("unexpected answer to list: no data array", 200)
        built = Entries({}, Entry.model_validate, intern=False)
        for i, item in enumerate(data):
            # Each decoded item let go once its entry is built (the entry keeps its definition
            # as decoded): the list is never held twice over.
            data[i] = None
            built.add(item)
        return self._listed(body, built)

    async def _streamed(self, response: httpx.Response) -> Listing:
        """The list answer decoded as it arrives, after the files (see :mod:`.listed`): a
        chunk at a time, so an event loop serving more (the daemon's) answers in between."""
        # The files' bodies first: the answer waits in the socket meanwhile, not in memory. A
        # coroutine function (the daemon's: its files are read on this loop) is awaited.
        share: Any = self.share
        bodies = await share() if is_async(share) else await anyio.to_thread.run_sync(share)
        built = Entries(bodies, Entry.model_validate)
        decoder = ListDecoder(built.add, built.begin)
        try:
            async for chunk in response.aiter_bytes():
                decoder.feed(chunk)
            body = decoder.close()
        except (ValueError, RecursionError):
            shown = one_line(self._redact(decoder.prefix), 80)  # an echoed key: cut out
            raise RegistryError(
                f"unexpected answer to list: not JSON ({shown!r})", response.status_code
            ) from None
        data = body.get("data") if isinstance(body, Mapping) else body
        if not is_streamed(data):
            raise RegistryError("unexpected answer to list: no data array", 200)
        return self._listed(body, built)

    @staticmethod
    def _listed(body: Any, built: Entries) -> Listing:
        if isinstance(built.failed, ValidationError):
            raise RegistryError("unexpected answer to list: not a registry entry", 200) from None
        if built.failed is not None:
            raise built.failed
        listing = Listing(built.entries)
        listing.held = built.held
        if isinstance(body, Mapping):
            listing.has_more = any(body.get(k) is True for k in ("has_more", "hasMore"))
        return listing

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
        raw: bool = False,
        consume: Callable[[httpx.Response], Awaitable[Any]] | None = None,
    ) -> Any:
        """Send one call with retries; the decoded JSON answer (``raw``: the response;
        ``consume``: what it makes of a streamed successful response), or a mapped exception."""
        url = self.base_url + API_PREFIX + path
        write = method in _WRITE_METHODS if write is None else write
        policy, breaker = self.retry, self.breaker
        start = self._clock()
        slept = 0.0
        attempt = 0
        content = None
        headers = {}
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if breaker.is_open:
            self._not_attempted(what)
        while True:
            await self._spacer.wait()
            if attempt == 0 and breaker.is_open:  # it opened while this call waited its slot
                self._not_attempted(what)
            retry_after: float | None = None
            cannot_connect = False
            try:
                if consume is None:
                    response = await self._http.request(
                        method, url, content=content, headers=headers
                    )
                else:
                    request = self._http.build_request(
                        method, url, content=content, headers=headers
                    )
                    response = await self._http.send(request, stream=True)
                    try:
                        if response.status_code < 400:
                            breaker.answered()
                            # Inside the retries: a connection lost mid-answer is tried again.
                            return await consume(response)
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.TransportError as exc:
                cause = transport_cause(exc, self._timeout)
                cannot_connect = isinstance(exc, httpx.ConnectError)
                breaker.failed(cause)
                failure: RegistryError = UnreachableError(
                    self._redact(
                        f"cannot reach the registry at {self._origin}: {cause}"
                        + (f" (after {attempt + 1} attempts)" if attempt else "")
                    )
                )
            else:
                breaker.answered()
                status = response.status_code
                if status == 404 and gone_ok_on_retry and attempt > 0:
                    return None
                if status < 400:
                    return response if raw else self._decode(response, what)
                failure = self._status_error(response, what, write)
                if status not in RETRY_STATUSES:
                    raise failure
                retry_after = _retry_after(response.headers.get("retry-after"))
                if attempt:
                    failure.message += f" (after {attempt + 1} attempts)"
                    failure.args = (failure.message,)
            # Count waits we asked for even if the clock does not move (an injected sleep).
            elapsed = max(self._clock() - start, slept)
            budget = policy.budget(cannot_connect)
            remaining = budget - elapsed
            if remaining <= 0:
                if attempt and breaker.silent_for(budget):
                    # Silent for a whole budget: the other calls need not find out one by one.
                    breaker.trip(cause)
                raise failure
            if breaker.is_open:
                raise failure
            if failure.status is None and not breaker.warned and self.on_retry is not None:
                breaker.warned = True
                self.on_retry(f"retrying for up to {budget:g} s: {failure.message}")
            # "Retry-After: 0" would make a busy loop: fall back to the backoff then.
            wait = retry_after if retry_after else policy.backoff(attempt)
            wait = min(wait, remaining)
            await self._sleep(wait)
            if breaker.is_open:  # another call found the registry gone meanwhile
                raise failure
            slept += wait
            attempt += 1

    def _not_attempted(self, what: str) -> NoReturn:
        reason = self._redact(
            f"not attempted: the registry stopped answering ({self.breaker.cause or 'no answer'})"
        )
        raise NotAttemptedError(f"{what}: {reason}", reason)

    def _decode(self, response: httpx.Response, what: str, lean: bool = False) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        if not lean:
            try:
                return orjson.loads(response.content)  # in C, from the bytes
            except orjson.JSONDecodeError:
                pass  # what orjson refuses (NaN, an int beyond 64 bits, not UTF-8): json decides
        try:
            return response.json()
        except ValueError:
            shown = one_line(self._redact(response.text), 80)  # an echoed key: cut out
            raise RegistryError(
                f"unexpected answer to {what}: not JSON ({shown!r})", response.status_code
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
