"""When the daemon acts, on fake time: the resync timer, the retry backoff after registry
failures, the prune grace, the --max-deletes window, the health interval and the notification
pacing. Each runs the daemon in-process (:mod:`daemon_harness`) against the real local registry
and moves its clock to just before and just after each moment."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import test_daemon as td
from conftest import Receiver, RunningRegistry
from daemon_harness import DEADLINE, JITTER, RESYNC, watching
from test_daemon import absent, ready_is, state

from reconciler.clock import FakeClock
from reconciler.daemon.notify import Notifier, Policy, Webhook
from reconciler.events import Event, Kind

EARLY = 0.9  # timers are spread over 90%..110% of their interval


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    directory = tmp_path / "models.d"
    directory.mkdir()
    td.write_model(directory, "team:a")
    return directory


@pytest.mark.anyio
async def test_the_resync_timer_lists_the_registry_once_per_interval(
    models: Path, registry: RunningRegistry
):
    async with watching(registry, models, health_interval=0) as w:
        await w.until("ready", lambda: ready_is(w, 200))
        await w.settle()
        last, lists = w.run_at[-1], registry.counts()["list"]
        for _ in range(5):
            moment = await w.step()  # the only timer: the next resync
            assert RESYNC * EARLY <= moment - last <= RESYNC * JITTER
            assert registry.counts()["list"] == lists + 1  # one full list per resync
            assert w.logged("full sync")[-1]["reason"] == "resync"
            last, lists = moment, lists + 1


@pytest.mark.anyio
async def test_a_registry_that_is_down_is_retried_with_doubling_waits(
    models: Path, registry: RunningRegistry
):
    async with watching(registry, models, health_interval=0) as w:
        await w.until("ready", lambda: ready_is(w, 200))
        registry.stop()
        await w.step()  # the resync finds it down
        assert await w.ready() == 503
        runs = len(w.run_at)
        # 0.5 s, then doubling, then 30 s at most (and never slower than the resync interval).
        waits = (0.5, 1, 2, 4, 8, 16, 30, 30)
        for _ in waits:
            await w.step()
        gaps = [b - a for a, b in zip(w.run_at[runs - 1 :], w.run_at[runs:], strict=False)]
        assert gaps == pytest.approx(waits)
        assert [r["retry_in"] for r in w.logged("registry error")][-3:] == [30, 30, 30]
        registry.start()
        await w.step()
        assert await w.ready() == 200
        moment = await w.step()  # once it answers, the resync interval again
        assert RESYNC * EARLY <= moment - w.run_at[-2] <= RESYNC * JITTER


@pytest.mark.anyio
async def test_a_refused_key_is_retried_slowly(models: Path, registry: RunningRegistry):
    async with watching(registry, models, api_key="not-the-key", health_interval=0) as w:
        await w.until("the refusal", lambda: w.logged("registry error"))
        for _ in range(6):
            await w.step()
        gaps = [b - a for a, b in zip(w.run_at, w.run_at[1:], strict=False)]
        assert gaps == pytest.approx([5, 10, 20, 40, 60, 60])  # a key will not fix itself soon
        assert await w.ready() == 503


@pytest.mark.anyio
async def test_the_prune_grace_counts_from_when_the_file_went(
    models: Path, registry: RunningRegistry
):
    td.write_model(models, "team:b")
    async with watching(registry, models, owns=("team:*",), prune_grace=30) as w:
        await w.until("both created", lambda: td.present(w, "team:a", "team:b"))
        await w.advance(20)  # time passing before the delete does not count
        (models / "team_b.toml").unlink()
        await w.until("team:b waiting out its grace", lambda: state(w, "team:b", "orphan"))
        await w.advance(29.9)
        assert await w.entry("team:b") is not None
        assert registry.counts()["remove"] == 0
        await w.advance(0.1)
        await w.until("team:b removed", lambda: absent(w, "team:b"))
        assert registry.counts()["remove"] == 1
        assert w.logged("full sync")[-1]["reason"] == "prune grace over"


@pytest.mark.anyio
async def test_the_max_deletes_window_slides(models: Path, registry: RunningRegistry):
    for name in ("team:b", "team:c"):
        td.write_model(models, name)
    resync = 600.0  # ten minutes: six resyncs in the hour
    options = {"owns": ("team:*",), "max_deletes": 1, "resync_interval": resync}
    async with watching(registry, models, **options) as w:
        await w.until("created", lambda: td.present(w, "team:a", "team:b", "team:c"))
        (models / "team_a.toml").unlink()
        await w.until("team:a orphaned", lambda: state(w, "team:a", "orphan"))
        await w.advance(5)
        await w.until("the first delete", lambda: absent(w, "team:a"))
        deleted_at = w.run_at[-1]

        (models / "team_b.toml").unlink()
        await w.until("team:b orphaned", lambda: state(w, "team:b", "orphan"))
        # The resyncs of the next hour keep fencing it: one delete an hour is the limit...
        await w.advance(3600 - 1 - (w.clock.monotonic() - deleted_at))
        # Every resync of that hour ran and fenced it; nothing more (no loop of lists).
        lists = registry.counts()["list"]
        assert 3600 / (resync * JITTER) - 2 < lists < 3600 / (resync * EARLY) + 3
        assert await w.entry("team:b") is not None
        assert registry.counts()["remove"] == 1
        # ...and at the first resync after the hour, the window has room again.
        await w.advance(resync * JITTER)
        await w.until("team:b deleted", lambda: absent(w, "team:b"))
        assert registry.counts()["remove"] == 2
        assert w.run_at[-1] - deleted_at >= 3600


@pytest.mark.anyio
async def test_health_rounds_follow_the_health_interval(models: Path, registry: RunningRegistry):
    async with watching(registry, models, resync_interval=3600, health_interval=120) as w:
        await w.until("the first round", lambda: len(w.logged("health checked")) == 1)
        last = w.clock.monotonic()
        for n in (2, 3, 4):
            moment = await w.step()  # the earliest timer: the next health round
            assert 120 * EARLY <= moment - last <= 120 * JITTER
            await w.until(f"round {n}", lambda n=n: len(w.logged("health checked")) == n)
            assert registry.counts()["health"] == n
            last = moment


def _event(i: int) -> Event:
    return Event(Kind.INVALID_FILE, 0, f"f{i}.toml is invalid", file=f"f{i}.toml", error="bad")


@pytest.mark.anyio
async def test_notifications_burst_then_keep_to_the_rate(receiver: Receiver):
    # The default policy: 10 at once, then 20 a minute (one every 3 s), on the daemon's clock.
    clock = FakeClock()
    sent: list[str] = []
    n = Notifier(
        [Webhook(receiver.url)], count=sent.append, log=logging.getLogger("t"), clock=clock
    )
    task = asyncio.create_task(n.run())
    try:
        for i in range(13):
            n.emit(_event(i))
        await _until(lambda: len(sent) == 10 and clock.next_deadline() is not None)
        assert clock.next_deadline() == pytest.approx(clock.monotonic() + 3)
        await clock.advance(2.9)
        assert len(sent) == 10
        await clock.advance(0.1)
        await _until(lambda: len(sent) == 11 and clock.next_deadline() is not None)
        await clock.advance(3)
        await _until(lambda: len(sent) == 12 and clock.next_deadline() is not None)
        await clock.advance(3)
        await _until(lambda: len(sent) == 13)
        assert [b["file"] for b in receiver.events()] == [f"f{i}.toml" for i in range(13)]
        assert sent == ["sent"] * 13
    finally:
        task.cancel()


@pytest.mark.anyio
async def test_a_failing_webhook_is_retried_after_1_2_4_s(receiver: Receiver):
    clock = FakeClock()
    sent: list[str] = []
    n = Notifier(
        [Webhook(receiver.url)],
        count=sent.append,
        log=logging.getLogger("t"),
        clock=clock,
        policy=Policy(attempts=4),
    )
    task = asyncio.create_task(n.run())
    try:
        receiver.fail_next(3)
        n.emit(_event(0))
        await _until(lambda: receiver.attempts == 1)
        for attempts, wait in ((2, 1.0), (3, 2.0), (4, 4.0)):
            await _until(lambda: clock.next_deadline() is not None)  # the backoff has begun
            await clock.advance(wait - 0.01)
            assert receiver.attempts == attempts - 1
            await clock.advance(0.01)
            await _until(lambda a=attempts: receiver.attempts == a)
        await _until(lambda: sent == ["sent"])
        assert len(receiver.events()) == 1
    finally:
        task.cancel()


async def _until(check, deadline: float = DEADLINE) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        if loop.time() > end:
            pytest.fail("timed out")
        await asyncio.sleep(0.005)
