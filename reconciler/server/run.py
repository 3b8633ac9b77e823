"""Serve the registry app with uvicorn on a socket bound up front, so ``--port 0`` can be reported.

SIGINT and SIGTERM stop the server gracefully and the process exits 0 (uvicorn alone would
re-raise the signal after shutting down, which ends the process with a signal status).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Generator

import uvicorn
from starlette.types import ASGIApp

HANDLED = (signal.SIGINT, signal.SIGTERM)


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
        log_config=None,
        access_log=False,  # the app logs its own line per request, with the time taken
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    on_listening(url_of(sock))
    server.run(sockets=[sock])
