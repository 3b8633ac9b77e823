"""The ASGI layers every request passes before a handler: access log, bearer auth, body limit.

Order (outermost first): :class:`AccessLog` sees every answer, :class:`BearerAuth` refuses a
caller without the key before any body is read, :class:`BodyLimit` bounds what a caller with
the key may send.
"""

from __future__ import annotations

import logging
import secrets
import time

import anyio
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .answers import error, printable

DEFAULT_MAX_BODY = 1024 * 1024  # a definition is a few KB; 1 MiB leaves room for any real one
BODY_DEADLINE = 30.0  # seconds a body may take to arrive, so a trickling client frees its slot

log = logging.getLogger("reconciler.server")


class AccessLog:
    """One log line per request: method, path (escaped, cut), status, ms. Never headers, query
    or bodies, so neither a key nor URL user-info can reach the log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ms = (time.perf_counter() - started) * 1000
            method, path = printable(scope["method"], 16), printable(scope["path"])
            log.info("%s %s %s %.1fms", method, path, status or "-", ms)


class BearerAuth:
    """401 without a bearer token, 403 with a wrong one, on every route."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            response = error(
                401,
                "authentication_error",
                "missing bearer token: send Authorization: Bearer <api key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif not secrets.compare_digest(token.strip(), self.api_key):
            response = error(403, "permission_error", "the API key is not valid for this registry")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


class BodyLimit:
    """413 for a body over ``max_bytes``, counted while it arrives (a chunked body declares no
    length), 408 for one still arriving after ``deadline`` seconds. Nothing over the limit is
    kept: the handler reading the body gets the exception instead of the next chunk."""

    def __init__(
        self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY, deadline: float = BODY_DEADLINE
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.deadline = deadline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not (declared.isdigit() and len(declared) < 20):
            await error(400, "invalid_request_error", "invalid Content-Length")(
                scope, receive, send
            )
            return
        if declared is not None and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received, complete = 0, False
        ends = anyio.current_time() + self.deadline
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            with anyio.move_on_after(ends - anyio.current_time()) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise BodyTooSlow
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._too_large(scope, receive, send)
        except BodyTooSlow:
            if started:
                raise
            # "Connection: close": the rest of the body is not worth waiting for.
            await error(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.deadline:g} s",
                headers={"Connection": "close"},
            )(scope, receive, send)
        except ClientDisconnect:
            pass  # the caller left mid-body: nobody to answer, nothing to log but the line

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        # "Connection: close": the server stops reading, so the connection cannot be reused.
        await error(
            413,
            "request_too_large",
            f"the request body is over the limit of {self.max_bytes} bytes",
            headers={"Connection": "close"},
        )(scope, receive, send)
