"""Serve the registry app with uvicorn on a socket bound up front, so ``--port 0`` can be reported.

SIGINT and SIGTERM stop the server gracefully and the process exits 0 (uvicorn alone would
re-raise the signal after shutting down, which ends the process with a signal status).

A request's head (request line and headers) is bounded before any route or key check runs:
uvicorn's httptools protocol keeps a URL or header of any length in memory and waits for the
rest of a head forever, so anyone who can reach the port could exhaust memory or connections
without a key. Over ``MAX_HEAD`` bytes the server answers 431, after ``HEAD_DEADLINE`` seconds
408, and closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import threading
from collections.abc import Callable, Generator

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HANDLED = (signal.SIGINT, signal.SIGTERM)
MAX_HEAD = 64 * 1024  # as h11 counts it (its default is 16 KiB); a real request head is < 1 KiB
HEAD_DEADLINE = 30.0  # seconds from a head's first byte to its last

log = logging.getLogger("reconciler.server")


def _refusal(status: str, kind: str, message: str) -> bytes:
    """A whole HTTP answer refusing a request whose head never made it to the app."""
    body = json.dumps({"error": {"message": message, "type": kind}}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over ``MAX_HEAD`` bytes or still
    arriving ``head_deadline`` seconds after its first byte."""

    head_deadline = HEAD_DEADLINE
    _reading_head = True
    _head_bytes = 0
    _heads = 0  # heads completed on this connection
    _head_timer: asyncio.TimerHandle | None = None

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._heads += 1
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head, self._head_bytes = True, 0
        super().on_message_complete()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms no timer before the first byte: a silent connection would stay for good.
        self._head_timer = self.loop.call_later(self.head_deadline, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        was_reading_head, heads = self._reading_head, self._heads
        if was_reading_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_deadline, self._head_too_slow)
        super().data_received(data)
        # Only a chunk that is all head counts: one that ended a head, or a body, may be mostly
        # body bytes. (A pipelined head that starts mid-chunk is counted from its next chunk.)
        if not (was_reading_head and self._reading_head and heads == self._heads):
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD:
            self._refuse(
                "431 Request Header Fields Too Large",
                f"the request line and headers are over {MAX_HEAD} bytes",
            )

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._reading_head:
            self._refuse(
                "408 Request Timeout",
                f"the request line and headers did not arrive within {self.head_deadline:g} s",
            )

    def _refuse(self, status: str, message: str) -> None:
        if self.transport.is_closing():
            return
        log.warning("refused a request: %s (%s)", message, status.split()[0])
        kind = "request_timeout" if status.startswith("408") else "request_too_large"
        self.transport.write(_refusal(status, kind, message))
        self.transport.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app: ASGIApp, sock: socket.socket, on_listening: Callable[[str], None]) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM; ``on_listening`` gets the base URL first."""
    config = uvicorn.Config(
        app,
        http=BoundedHttpTools,
        log_config=None,
        access_log=False,  # the app logs its own line per request, with the time taken
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    on_listening(url_of(sock))
    server.run(sockets=[sock])
