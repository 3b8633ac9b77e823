"""Serve the registry app with uvicorn on a socket bound up front, so ``--port 0`` can be reported.

SIGINT and SIGTERM stop the server gracefully and the process exits 0 (uvicorn alone would
re-raise the signal after shutting down, which ends the process with a signal status).

A request's head (request line and headers) is bounded before any route or key check runs:
uvicorn's httptools protocol keeps a URL or header of any length in memory, so anyone who can
reach the port could exhaust it without a key. Over ``MAX_HEAD`` bytes the server answers 431
and closes the connection.
"""

from __future__ import annotations

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

log = logging.getLogger("reconciler.server")


def _head_too_large() -> bytes:
    body = json.dumps(
        {
            "error": {
                "message": f"the request line and headers are over {MAX_HEAD} bytes",
                "type": "request_too_large",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over ``MAX_HEAD`` bytes."""

    _reading_head = True
    _head_bytes = 0
    _heads = 0  # heads completed on this connection

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._heads += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head, self._head_bytes = True, 0
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        was_reading_head, heads = self._reading_head, self._heads
        super().data_received(data)
        # Only a chunk that is all head counts: one that ended a head, or a body, may be mostly
        # body bytes. (A pipelined head that starts mid-chunk is counted from its next chunk.)
        if not (was_reading_head and self._reading_head and heads == self._heads):
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD and not self.transport.is_closing():
            log.warning("refused a request head over %d bytes (431)", MAX_HEAD)
            self.transport.write(_head_too_large())
            self.transport.close()


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
