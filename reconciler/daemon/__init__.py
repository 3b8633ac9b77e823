"""``reconciler watch``: the long-running reconciler, beside the API.

:func:`run` wires the pieces: :class:`core.Daemon` (watcher, one reconcile at a time, health),
:mod:`web` (the endpoints on ``--listen``), :mod:`metrics`, :mod:`logs`; the decisions live
in :mod:`state` as pure functions. :func:`assemble` (one registry) or :func:`assemble_envs`
(one daemon per environment, see :mod:`fleet`) and :func:`serve` are the two halves of
:func:`run`, so a test can run the daemon in-process on a :class:`~reconciler.clock.FakeClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from .. import defaults
from ..clock import SYSTEM, Clock
from ..events import Fanout, Sink
from ..reconcile import Target, make_client
from ..registry import RegistryClient, RegistryError, RetryPolicy
from . import collect, health, watcher
from .core import Daemon, Options
from .files import ModelFiles
from .fleet import Fleet, Member, SharedFiles, watch_overlay
from .logs import EnvironmentLog, Log, LogFormat, LogSink, event, setup
from .metrics import Metrics
from .notify import Notifier, Webhook
from .overlays import NO_OVERLAY, EnvOverlay
from .web import create_app, public_url

if TYPE_CHECKING:
    from ..environments import Environment

__all__ = ["Daemon", "Fleet", "Options", "Webhook", "assemble", "assemble_envs", "run", "serve"]

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
    target: Target | None,
    *,
    listen: socket.socket | None,
    log_format: LogFormat = "text",
    timeout: float = defaults.TIMEOUT,
    rps: float | None = None,
    envs: Sequence[Environment] = (),
) -> int:
    """Run until SIGTERM/SIGINT, for ``target`` or for each of ``envs``; the exit status (0
    after a clean stop)."""
    log = setup(log_format)
    # Files are read, the list decoded and plans made in threads beside the event loop; with
    # the default 5 ms GIL switch interval each of a request's turns on the loop could wait
    # that long behind them, and /healthz took 150+ ms during a resync of 20,000 files.
    sys.setswitchinterval(0.001)
    collect.configure()
    try:
        return asyncio.run(_main(options, target, envs, listen, log, timeout, rps))
    except RegistryError as exc:  # a malformed URL: nothing to retry
        event(log, "cannot start", logging.ERROR, error=exc.message)
        return 1


async def _main(
    options: Options,
    target: Target | None,
    envs: Sequence[Environment],
    listen: socket.socket | None,
    log: logging.Logger,
    timeout: float,
    rps: float | None,
) -> int:
    if envs:
        return await serve(
            assemble_envs(options, envs, log, timeout=timeout, rps=rps), None, listen
        )
    assert target is not None
    daemon, notifier = assemble(options, target, log, timeout=timeout, rps=rps)
    return await serve(daemon, notifier, listen)


def _client(
    target: Target,
    metrics: Metrics,
    options: Options,
    timeout: float,
    rps: float | None,
    clock: Clock | None,
) -> RegistryClient:
    client = make_client(
        target,
        timeout=timeout,
        rps=rps,
        concurrency=options.concurrency,
        wrap=metrics.transport,
        clock=clock,
    )
    client.retry = DAEMON_RETRY
    return client


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
    client = _client(target, metrics, options, timeout, rps, registry_clock)
    notifier = Notifier(options.notify, count=metrics.count_notification, log=log, clock=clock)
    sinks = Fanout([LogSink(log), metrics, notifier], log)
    return Daemon(options, client, log, metrics, sinks, clock), notifier


def assemble_envs(
    options: Options,
    envs: Sequence[Environment],
    log: logging.Logger,
    *,
    timeout: float = defaults.TIMEOUT,
    rps: float | None = None,
    clock: Clock = SYSTEM,
    registry_clock: Clock | None = None,
) -> Fleet:
    """One daemon per environment over one read of the files: each with its own client and
    key, limits (``owns``, ``ignore``, ``max_deletes``), overlay, metrics and notifier."""
    base = Metrics(dry_run=options.dry_run, common={"environment": envs[0].name})
    # An invalid model file is news in every environment (each holds its model back).
    sinks: list[Sink] = []
    everyone = Fanout(sinks, log)
    root = Path(os.path.abspath(options.directory))
    files = ModelFiles(root, lambda: everyone, options.load_policy, clock)
    shared = SharedFiles(files)
    members: list[Member] = []
    for env in envs:
        metrics = base if env is envs[0] else base.view(environment=env.name)
        env_log = EnvironmentLog(log, env.name)
        try:
            client = _client(env.target, metrics, options, timeout, rps, registry_clock)
        except RegistryError as exc:
            raise RegistryError(f"environment {env.name}: {exc.message}") from None
        notifier = Notifier(
            options.notify,
            count=metrics.count_notification,
            log=env_log,  # type: ignore[arg-type]
            environment=env.name,
            clock=clock,
        )
        sink = Fanout([LogSink(env_log), metrics, notifier], log)
        sinks.append(sink)
        view = shared.view()
        daemon = Daemon(
            dataclasses.replace(options, prune=env.prune, ignore=env.ignore),
            client,
            env_log,
            metrics,
            sink,
            clock,
            files=view,  # type: ignore[arg-type]
            overlay=EnvOverlay(env.overlay, options.load_policy) if env.overlay else NO_OVERLAY,
        )
        shared.attach(view, daemon)
        members.append(Member(env.name, daemon, notifier, env.overlay))
    return Fleet(members, shared, log)


async def serve(
    daemon: Daemon | Fleet,
    notifier: Notifier | None,
    listen: socket.socket | None,
    *,
    signals: bool = True,
) -> int:
    """Run until :meth:`Fleet.stop` (SIGTERM/SIGINT with ``signals``); 0 after a clean stop."""
    fleet = Fleet.of(daemon, notifier) if isinstance(daemon, Daemon) else daemon
    notifiers = [m.notifier for m in fleet.members if m.notifier is not None]
    options, log = fleet.options, fleet.log
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        fleet.stop()
        # Writes since start: landed, and in flight (finishing, none new).
        landed = sum(d.halt.landed for d in fleet.daemons)
        in_flight = sum(d.halt.in_flight for d in fleet.daemons)
        event(log, "stopping", signal=sig.name, writes_landed=landed, in_flight=in_flight)

    if signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        loop.add_signal_handler(signal.SIGHUP, fleet.request_full, "SIGHUP")

    server: _Server | None = None
    tasks: list[asyncio.Task[None]] = []
    if listen is not None:
        config = uvicorn.Config(
            create_app(fleet), log_config=None, access_log=False, lifespan="off"
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(sockets=[listen]), name="web"))
    host, port = listen.getsockname()[:2] if listen is not None else ("", 0)
    for m in fleet.members:
        _started(m.daemon.log, m.daemon, f"{host}:{port}" if listen is not None else None)
    workers = [asyncio.create_task(d.worker(), name="worker") for d in fleet.daemons]
    helpers = [asyncio.create_task(watcher.watch(fleet), name="watch")]
    helpers += [asyncio.create_task(health.loop(d), name="health") for d in fleet.daemons]
    helpers += [
        asyncio.create_task(watch_overlay(m.daemon, m.overlay), name="overlay")
        for m in fleet.members
        if m.overlay is not None
    ]
    if fleet.shared is not None:  # the files, read once for every environment
        helpers.append(asyncio.create_task(fleet.shared.reader(), name="read"))
    notifying = [asyncio.create_task(n.run(), name="notify") for n in notifiers]
    await fleet.stopped()

    # The run in flight starts no new write and finishes (or abandons, at shutdown_timeout) those
    # in flight, logging each; the margin lets it log them before this backstop cancels it.
    _, late = await asyncio.wait(workers, timeout=options.shutdown_timeout + 2.0)
    if late:
        event(log, "shutdown deadline passed: abandoning the run in flight", logging.WARNING)
    for task in (*workers, *helpers):
        task.cancel()
    await asyncio.gather(*workers, *helpers, return_exceptions=True)
    # The last events (the outcome of the writes that just finished) get a moment to go out.
    await asyncio.gather(*(n.flush(min(2.0, options.shutdown_timeout)) for n in notifiers))
    for task in notifying:
        task.cancel()
    await asyncio.gather(*notifying, return_exceptions=True)
    if server is not None:
        server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    for d in fleet.daemons:
        await d.client.aclose()
    event(log, "stopped")
    return 0


def _started(log: Log, daemon: Daemon, listen: str | None) -> None:
    options = daemon.options
    event(
        log,
        "started",
        dir=str(daemon.root),
        registry=public_url(daemon.client.base_url),
        listen=listen,
        resync_interval=options.resync_interval,
        health_interval=options.health_interval,
        prune=",".join(options.prune.owns) if options.prune else None,
        dry_run=options.dry_run or None,
        notify=len(options.notify) or None,
    )
