"""``reconciler watch``: the long-running reconciler, beside the API.

:func:`run` wires the pieces: :class:`core.Daemon` (watcher, one reconcile at a time, health),
:mod:`web` (the endpoints on ``--listen``), :mod:`metrics`, :mod:`logs`; the decisions live
in :mod:`state` as pure functions. :func:`assemble` and :func:`serve` are the two halves of
:func:`run`, so a test can run the daemon in-process on a :class:`~reconciler.clock.FakeClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Generator

import uvicorn

from .. import defaults
from ..clock import SYSTEM, Clock
from ..events import Fanout
from ..reconcile import Target, make_client
from ..registry import RegistryError, RetryPolicy
from . import collect, health, watcher
from .core import Daemon, Options
from .logs import LogFormat, LogSink, event, setup
from .metrics import Metrics
from .notify import Notifier, Webhook
from .web import create_app

__all__ = ["Daemon", "Options", "Webhook", "assemble", "run", "serve"]

# The daemon retries on its own schedule (the next resync), so one call gives up sooner than
# the SDK's 15 s: readiness then follows a registry outage within seconds.
DAEMON_RETRY = RetryPolicy(first_wait=0.2, factor=2.0, max_wait=1.0, total=2.0)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The daemon owns SIGTERM/SIGINT: it stops the server itself, after the writes in flight.
        yield


def run(
    options: Options,
    target: Target,
    *,
    listen: socket.socket | None,
    log_format: LogFormat = "text",
    timeout: float = defaults.TIMEOUT,
    rps: float | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; the exit status (0 after a clean stop)."""
    log = setup(log_format)
    # Files are read, the list decoded and plans made in threads beside the event loop; with
    # the default 5 ms GIL switch interval each of a request's turns on the loop could wait
    # that long behind them, and /healthz took 150+ ms during a resync of 20,000 files.
    sys.setswitchinterval(0.001)
    collect.configure()
    try:
        return asyncio.run(_main(options, target, listen, log, timeout, rps))
    except RegistryError as exc:  # a malformed URL: nothing to retry
        event(log, "cannot start", logging.ERROR, error=exc.message)
        return 1


async def _main(
    options: Options,
    target: Target,
    listen: socket.socket | None,
    log: logging.Logger,
    timeout: float,
    rps: float | None,
) -> int:
    daemon, notifier = assemble(options, target, log, timeout=timeout, rps=rps)
    return await serve(daemon, notifier, listen)


def assemble(
    options: Options,
    target: Target,
    log: logging.Logger,
    *,
    timeout: float = defaults.TIMEOUT,
    rps: float | None = None,
    clock: Clock = SYSTEM,
    registry_clock: Clock | None = None,
) -> tuple[Daemon, Notifier]:
    """The daemon and its notifier, wired to one registry and one clock (nothing started);
    ``registry_clock`` times the client's retries within one call (default: the real clock)."""
    metrics = Metrics(dry_run=options.dry_run)
    client = make_client(
        target,
        timeout=timeout,
        rps=rps,
        concurrency=options.concurrency,
        wrap=metrics.transport,
        clock=registry_clock,
    )
    client.retry = DAEMON_RETRY
    notifier = Notifier(options.notify, count=metrics.count_notification, log=log, clock=clock)
    sinks = Fanout([LogSink(log), metrics, notifier], log)
    return Daemon(options, client, log, metrics, sinks, clock), notifier


async def serve(
    daemon: Daemon, notifier: Notifier, listen: socket.socket | None, *, signals: bool = True
) -> int:
    """Run until :meth:`Daemon.stop` (SIGTERM/SIGINT with ``signals``); 0 after a clean stop."""
    options, client, log = daemon.options, daemon.client, daemon.log
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        daemon.stop()
        halt = daemon.halt  # writes since start: landed, and in flight (finishing, none new)
        event(log, "stopping", signal=sig.name, writes_landed=halt.landed, in_flight=halt.in_flight)

    if signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        loop.add_signal_handler(signal.SIGHUP, daemon.request_full, "SIGHUP")

    server: _Server | None = None
    tasks: list[asyncio.Task[None]] = []
    if listen is not None:
        config = uvicorn.Config(
            create_app(daemon), log_config=None, access_log=False, lifespan="off"
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(sockets=[listen]), name="web"))
    host, port = listen.getsockname()[:2] if listen is not None else ("", 0)
    event(
        log,
        "started",
        dir=str(daemon.root),
        registry=client.base_url,
        listen=f"{host}:{port}" if listen is not None else None,
        resync_interval=options.resync_interval,
        health_interval=options.health_interval,
        prune=",".join(options.prune.owns) if options.prune else None,
        dry_run=options.dry_run or None,
        notify=len(options.notify) or None,
    )
    worker = asyncio.create_task(daemon.worker(), name="worker")
    helpers = [
        asyncio.create_task(watcher.watch(daemon), name="watch"),
        asyncio.create_task(health.loop(daemon), name="health"),
    ]
    notifying = asyncio.create_task(notifier.run(), name="notify")
    await daemon.stopped()

    # The run in flight starts no new write and finishes (or abandons, at shutdown_timeout) those
    # in flight, logging each; the margin lets it log them before this backstop cancels it.
    done, _ = await asyncio.wait({worker}, timeout=options.shutdown_timeout + 2.0)
    if not done:
        event(log, "shutdown deadline passed: abandoning the run in flight", logging.WARNING)
    for task in (worker, *helpers):
        task.cancel()
    await asyncio.gather(worker, *helpers, return_exceptions=True)
    # The last events (the outcome of the writes that just finished) get a moment to go out.
    await notifier.flush(min(2.0, options.shutdown_timeout))
    notifying.cancel()
    await asyncio.gather(notifying, return_exceptions=True)
    if server is not None:
        server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    await client.aclose()
    event(log, "stopped")
    return 0
