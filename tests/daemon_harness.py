"""``reconciler watch`` in-process, on fake time.

The daemon is wired as ``watch`` wires it (:func:`reconciler.daemon.assemble` and
:func:`~reconciler.daemon.serve`) and runs in the test's event loop on a
:class:`~reconciler.clock.FakeClock`, against a real registry on loopback, over real files in a
temp dir watched by watchfiles; its endpoints are served through httpx's ASGITransport (the same
app, no port). Intervals are the real defaults (60 s resync, 5 s prune grace, a one-hour delete
window): the test moves the clock, so a timer fires when the test says and at no other time.

The registry client's waits between retries within one call run on a clock of their own that
costs no real time (:class:`InstantClock`): the client's retry policy is tested in
``test_registry_client``; here only its outcome matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import API_PREFIX, REPO
from prometheus_client.parser import text_string_to_metric_families

from reconciler import daemon as daemon_mod
from reconciler.clock import FakeClock
from reconciler.config import load_config
from reconciler.daemon.logs import LogFormat, setup
from reconciler.daemon.web import create_app
from reconciler.plan import PruneOptions
from reconciler.reconcile import Target, load_policy

DEADLINE = 15.0  # real seconds any condition may take: a guard against hangs, not a pace
RESYNC = 60.0
JITTER = 1.1  # timers are stretched by up to 10%: moving this much past one always fires it


class InstantClock:
    """A clock whose sleep returns at once, moving only this clock: waits cost no real time."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def time(self) -> float:
        return 1_800_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


class Harness:
    """One running daemon and ways to look at it and move its time."""

    def __init__(
        self, daemon: daemon_mod.Daemon, clock: FakeClock, registry: Any, log: io.StringIO
    ):
        self.daemon, self.clock, self.registry, self.log = daemon, clock, registry, log
        self.runs = 0  # reconciles finished
        self.run_at: list[float] = []  # when each began, on the daemon's clock
        self.busy = False
        self.web = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(daemon)), base_url="http://daemon"
        )
        self.api = httpx.AsyncClient(
            base_url=registry.url + API_PREFIX,
            headers={"Authorization": f"Bearer {registry.api_key}"},
            timeout=5,
            trust_env=False,
        )
        run_once = daemon.run_once

        async def counted() -> None:  # what the worker calls: counts runs, knows when one is on
            self.busy = True
            self.run_at.append(clock.monotonic())
            try:
                await run_once()
            finally:
                self.busy = False
                self.runs += 1

        daemon.run_once = counted  # type: ignore[method-assign]

    # --- looking ---------------------------------------------------------------------------

    def output(self) -> str:
        return self.log.getvalue()

    def logged(self, name: str) -> list[dict[str, Any]]:
        """The JSON log events called ``name`` so far."""
        return [
            r for line in self.output().splitlines() if (r := json.loads(line))["event"] == name
        ]

    async def status(self) -> dict[str, Any]:
        return (await self.web.get("/status")).json()

    async def model(self, model_id: str) -> dict[str, Any] | None:
        return next((m for m in (await self.status())["models"] if m["id"] == model_id), None)

    async def ready(self) -> int:
        return (await self.web.get("/readyz")).status_code

    async def entry(self, model_id: str) -> dict[str, Any] | None:
        response = await self.api.get("/" + quote(model_id, safe=""))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    async def rpm(self, model_id: str) -> int | None:
        entry = await self.entry(model_id)
        return None if entry is None else entry["definition"].get("rpm")

    async def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await self.web.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }

    async def metric(self, name: str, **labels: str) -> float | None:
        return (await self.samples()).get((name, tuple(sorted(labels.items()))))

    # --- waiting and moving time ------------------------------------------------------------

    async def until(self, what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
        """Poll ``check`` (plain or async) until truthy, in real time; fail naming ``what``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        last: Any = None
        while loop.time() < end:
            last = check()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
            await asyncio.sleep(0.01)
        pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{self.output()[-3000:]}")

    async def settle(self) -> None:
        """Wait until no reconcile runs or waits to run (the worker sleeps on its clock)."""
        d = self.daemon
        await self.until(
            "the daemon idle",
            lambda: not (self.busy or d._pending or d._full_reason or d._wake.is_set()),
        )
        for _ in range(5):  # the worker, done, gets to set its next timer
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move the daemon's clock ``seconds`` forward, one timer at a time: each timer due fires
        at its moment, and the reconcile it starts finishes before time moves on (so the next
        timer is set from that moment, as it would be on a real clock)."""
        target = self.clock.monotonic() + seconds
        await self.settle()
        while (moment := self.clock.next_deadline()) is not None and moment <= target:
            await self.clock.advance_to(moment)
            await self.settle()
        await self.clock.advance_to(target)

    async def step(self) -> float:
        """Move the clock to the next timer's moment and fire it (then settle); that moment."""
        await self.settle()
        moment = self.clock.next_deadline()
        assert moment is not None, "nothing is waiting on the clock"
        await self.clock.advance_to(moment)
        await self.settle()
        return moment

    async def advance_until(
        self, what: str, check: Callable[[], Any], step: float, deadline: float = DEADLINE
    ) -> Any:
        """Move the clock ``step`` seconds at a time (each once the daemon is idle) until
        ``check`` (plain or async) is truthy; fail naming ``what`` after ``deadline`` real s."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while loop.time() < end:
            last = check()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
            await self.advance(step)
        pytest.fail(f"timed out waiting for {what}\n{self.output()[-3000:]}")

    async def synced_after(self, moment: float) -> bool:
        """Whether a full sync finished after ``moment`` (the daemon's clock, unix seconds)."""
        return self.daemon.last_sync is not None and self.daemon.last_sync > moment

    async def next_run(self, after: int | None = None) -> None:
        """Wait for a reconcile to finish (one after the ``after``-th, default: the last)."""
        seen = self.runs if after is None else after
        await self.until("a reconcile", lambda: self.runs > seen)


@contextlib.asynccontextmanager
async def watching(
    registry: Any,
    directory: Path,
    *,
    owns: tuple[str, ...] | None = None,
    max_deletes: int = 5,
    config: Path | None = None,
    log_format: LogFormat = "json",
    api_key: str | None = None,
    **options: Any,
) -> AsyncIterator[Harness]:
    """Run ``reconciler watch --dir directory`` in-process; ``owns`` is ``--prune --owns``,
    ``options`` are :class:`reconciler.daemon.Options` fields (``dry_run``, ``notify``...)."""
    file_config = load_config(config, cwd=REPO)  # watch runs from the repository in the e2e tests
    opts = daemon_mod.Options(
        directory=directory,
        prune=PruneOptions(owns, max_deletes) if owns else None,
        ignore=file_config.ignore_rules(),
        load_policy=load_policy(file_config),
        **options,
    )
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    log = setup(log_format, stream)
    clock = FakeClock()
    target = Target(registry.url, api_key if api_key is not None else registry.api_key)
    d, notifier = daemon_mod.assemble(opts, target, log, clock=clock, registry_clock=InstantClock())
    h = Harness(d, clock, registry, stream)
    task = asyncio.create_task(daemon_mod.serve(d, notifier, None, signals=False))
    try:
        yield h
    finally:
        d.stop()
        try:
            async with asyncio.timeout(DEADLINE):
                code = await task
        finally:
            task.cancel()
            await h.web.aclose()
            await h.api.aclose()
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
    assert code == 0
