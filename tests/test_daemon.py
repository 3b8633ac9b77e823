"""``reconciler watch`` against the real local registry, on real files: in-process on fake time
(:mod:`daemon_harness`) for what it decides and when, and as a subprocess end to end (a user's
run, signals, its output).

Every wait is a condition polled until a deadline (the registry's answer, /status, /readyz),
never a fixed sleep. In-process, timers fire when the test moves the clock; the subprocess tests
make intervals short through flags.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import API_PREFIX, REPO, RunningRegistry, Upstream, clean_env, free_port
from daemon_harness import JITTER, RESYNC, Harness, watching
from watchfiles import Change

from reconciler.daemon.watcher import sort_out

DEADLINE = 15.0
SECRET = "sk-inline-do-not-show"


def model_toml(model_id: str, rpm: int = 1, health: str | None = None, secret: bool = False) -> str:
    """A small valid model file; ``health`` is a URL to probe (else health checks are off)."""
    auth = f'type = "api-key"\nvalue = "{SECRET}"' if secret else 'type = "none"'
    check = f'url = "{health}"' if health else 'mode = "off"'
    return f"""id = "{model_id}"
provider = "openai-compatible"
modelId = "{model_id.split(":")[-1]}"
apiFormat = "responses"
created = 1704067200
contextWindow = 8192
rpm = {rpm}

[auth]
{auth}

[capabilities]
reasoning = false

[capabilities.modalities]
input = ["text"]
output = ["text"]

[healthCheck]
{check}
"""


def write_model(directory: Path, model_id: str, **kwargs: Any) -> Path:
    """Save the way editors do: a temp file beside it, then an atomic rename."""
    path = directory / (model_id.replace(":", "_") + ".toml")
    tmp = directory / f".{path.name}.tmp"
    tmp.write_text(model_toml(model_id, **kwargs))
    os.replace(tmp, path)
    return path


def unix(iso: str) -> float:
    """Unix seconds from the ISO 8601 UTC times of /status (``2026-01-01T00:00:00Z``)."""
    assert iso.endswith("Z"), iso
    return datetime.fromisoformat(iso[:-1] + "+00:00").timestamp()


def wait_for(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


class DaemonProcess:
    """A ``reconciler watch`` subprocess on a free loopback port: its log, /healthz, /status."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=5, trust_env=False)

    def launch(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        """Start ``reconciler watch ARGS`` and wait until it answers /healthz."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "watch", *args],
                stdout=log,
                stderr=log,
                env=env,
                cwd=cwd,
            )
        wait_for("the daemon's /healthz", self._alive)

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"daemon exited with {self.process.returncode}:\n{self.output()}")
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def status(self) -> dict[str, Any]:
        return self.http.get("/status").json()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.http.close()


class Watcher(DaemonProcess):
    """A ``reconciler watch`` subprocess and ways to look at it."""

    def __init__(self, registry: RunningRegistry, directory: Path, log: Path, *args: str) -> None:
        super().__init__(log)
        self.registry = registry
        self.args = [
            "--dir",
            str(directory),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--resync-interval",
            "1",
            "--health-interval",
            "1",
            "--prune-grace",
            "1",
            *args,
        ]
        self.env = registry.env()
        self.api = httpx.Client(
            base_url=registry.url + API_PREFIX,
            headers={"Authorization": f"Bearer {registry.api_key}"},
            timeout=5,
            trust_env=False,
        )

    def start(self) -> Watcher:
        self.launch(self.args, self.env, REPO)
        return self

    def model(self, model_id: str) -> dict[str, Any] | None:
        return next((m for m in self.status()["models"] if m["id"] == model_id), None)

    def ready(self) -> int:
        try:
            return self.http.get("/readyz").status_code
        except httpx.TransportError:
            return 0

    def entry(self, model_id: str) -> dict[str, Any] | None:
        response = self.api.get("/" + quote(model_id, safe=""))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def rpm(self, model_id: str) -> int | None:
        entry = self.entry(model_id)
        return None if entry is None else entry["definition"].get("rpm")

    def synced_after(self, moment: float) -> bool:
        """Whether a full sync finished after ``moment`` (unix seconds); /status gives whole
        seconds, rounded down, so this may wait up to a second longer, never shorter."""
        last = self.status()["last_sync"]
        return last is not None and unix(last) > moment

    def signal(self, sig: int) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"daemon ignored {sig}:\n{self.output()}")

    def close(self) -> None:
        super().close()
        self.api.close()


@pytest.fixture
def models(tmp_path: Path) -> Path:
    directory = tmp_path / "models.d"
    directory.mkdir()
    return directory


@pytest.fixture
def watcher(
    registry: RunningRegistry, models: Path, tmp_path: Path
) -> Iterator[Callable[..., Watcher]]:
    started: list[Watcher] = []

    def start(
        *args: str, env: dict[str, str] | None = None, directory: Path | None = None
    ) -> Watcher:
        log = tmp_path / f"daemon-{len(started)}.log"
        w = Watcher(registry, directory or models, log, *args)
        if env is not None:
            w.env = env
        started.append(w)
        return w.start()

    yield start
    for w in started:
        w.close()


# --- in-process conditions (daemon_harness.watching): each reads the daemon or the registry -----


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def present(w: Harness, *ids: str) -> bool:
    return all([await w.entry(i) is not None for i in ids])


async def absent(w: Harness, model_id: str) -> bool:
    return await w.entry(model_id) is None


async def rpm_is(w: Harness, model_id: str, rpm: int) -> bool:
    return await w.rpm(model_id) == rpm


async def rpms(w: Harness, want: dict[str, int]) -> bool:
    return all([await w.rpm(i) == rpm for i, rpm in want.items()])


async def state(w: Harness, model_id: str, want: str) -> dict[str, Any] | None:
    """The model's /status row once it is in state ``want``."""
    row = await w.model(model_id)
    return row if row is not None and row["state"] == want else None


async def row_field(w: Harness, model_id: str, name: str) -> Any:
    return ((await w.model(model_id)) or {}).get(name)


async def no_row(w: Harness, model_id: str) -> bool:
    return await w.model(model_id) is None


async def health_is(w: Harness, model_id: str, *, available: bool) -> bool:
    row = await w.model(model_id)
    return row is not None and row["health"]["available"] is available


async def ready_is(w: Harness, code: int) -> bool:
    return await w.ready() == code


async def outage(w: Harness) -> dict[str, Any] | None:
    status = await w.status()
    return status if status["reason"] else None


async def dir_error(w: Harness) -> Any:
    return (await w.status())["directory_error"]


async def no_dir_error(w: Harness) -> bool:
    return (await w.status())["directory_error"] is None


async def sample_is(w: Harness, key: tuple[str, tuple[tuple[str, str], ...]], value: float) -> bool:
    return (await w.samples()).get(key) == value


# --- end to end: ``reconciler watch`` as a subprocess -------------------------------------------


def test_new_file_appears_and_an_edit_updates_it(watcher: Callable[..., Watcher], models: Path):
    write_model(models, "team:a", rpm=1)
    w = watcher()
    wait_for("team:a created by the first sync", lambda: w.rpm("team:a") == 1)
    wait_for("ready", lambda: w.ready() == 200)

    write_model(models, "team:b", rpm=7)
    wait_for("a new file's entry", lambda: w.rpm("team:b") == 7)
    write_model(models, "team:a", rpm=2)
    wait_for("the edit", lambda: w.rpm("team:a") == 2)
    # A plain overwrite in place (no rename) is noticed too.
    (models / "team_b.toml").write_text(model_toml("team:b", rpm=8))
    wait_for("the in-place overwrite", lambda: w.rpm("team:b") == 8)
    # Editor leftovers are not model files.
    (models / ".team_c.toml.swp").write_text("garbage")
    (models / "team_c.toml~").write_text("garbage")
    written = time.time()
    wait_for("a resync after the leftovers", lambda: w.synced_after(written))
    assert w.status()["invalid_files"] == []
    row = w.model("team:a")
    assert row is not None and row["state"] == "synced" and row["file"] == "team_a.toml"
    assert row["last_applied"] is not None


@pytest.mark.anyio
async def test_with_prune_a_deleted_file_is_removed_after_the_grace(
    registry: RunningRegistry, models: Path
):
    write_model(models, "team:a")
    write_model(models, "team:b")
    async with watching(registry, models, owns=("team:*",)) as w:
        await w.until("both created", lambda: present(w, "team:a", "team:b"))

        (models / "team_b.toml").unlink()
        await w.until("team:b waiting out its grace", lambda: state(w, "team:b", "orphan"))
        await w.advance(4.9)  # --prune-grace 5 s
        assert await w.entry("team:b") is not None
        await w.advance(0.1)
        await w.until("team:b removed", lambda: absent(w, "team:b"))
        assert await w.entry("team:a") is not None
        await w.until("team:b gone from /status", lambda: no_row(w, "team:b"))


@pytest.mark.anyio
async def test_a_delete_and_rename_save_never_deletes(registry: RunningRegistry, models: Path):
    write_model(models, "team:a")
    write_model(models, "team:b")
    async with watching(registry, models, owns=("team:*",)) as w:
        await w.until("both created", lambda: present(w, "team:a", "team:b"))

        path = models / "team_b.toml"
        path.unlink()  # some editors delete, then write the new content under the name again
        write_model(models, "team:b", rpm=3)
        saved = w.clock.time()
        await w.until("the new content", lambda: rpm_is(w, "team:b", 3))
        await w.advance(RESYNC * JITTER)  # past the grace, and a resync
        await w.until("a full sync after the grace", lambda: w.synced_after(saved + 5))
        assert registry.counts()["remove"] == 0
        assert await w.entry("team:b") is not None


@pytest.mark.anyio
async def test_entries_changed_in_the_registry_are_restored(
    registry: RunningRegistry, models: Path
):
    write_model(models, "team:a", rpm=5)
    write_model(models, "team:b", rpm=5)
    async with watching(registry, models) as w:
        await w.until("created", lambda: rpms(w, {"team:a": 5, "team:b": 5}))

        (await w.api.patch("/" + quote("team:a", safe=""), json={"rpm": 999})).raise_for_status()
        (await w.api.delete("/" + quote("team:b", safe=""))).raise_for_status()
        assert await w.rpm("team:a") == 999
        await w.advance(RESYNC * JITTER)  # the resync timer
        await w.until("the edit undone", lambda: rpm_is(w, "team:a", 5))
        await w.until("the deleted entry restored", lambda: rpm_is(w, "team:b", 5))


@pytest.mark.anyio
async def test_a_resync_lists_the_registry_after_the_files_sharing_their_values(
    registry: RunningRegistry, models: Path
):
    write_model(models, "team:a", rpm=5)
    async with watching(registry, models) as w:
        await w.until("created", lambda: rpms(w, {"team:a": 5}))
        runs = w.runs
        w.daemon.request_full("test")
        await w.next_run(runs)
        assert w.daemon.last_run.kind == "full" and w.daemon.live is not None
        listed, body = (
            w.daemon.live["team:a"].definition,
            w.daemon.model_files.models["team:a"].body,
        )
        assert listed["rpm"] == 5 and listed["capabilities"] == body["capabilities"]
        # Decoded once the files were read: the file's values, not a second copy of them.
        assert listed["capabilities"] is body["capabilities"]


# With a long resync interval, the health round is what notices the outage.
@pytest.mark.anyio
@pytest.mark.parametrize("resync", [RESYNC, 3600.0])
async def test_a_registry_outage_is_survived_and_readiness_follows_it(
    models: Path, registry: RunningRegistry, resync: float
):
    write_model(models, "team:a", rpm=1)
    async with watching(registry, models, resync_interval=resync) as w:
        await w.until("ready", lambda: ready_is(w, 200))

        registry.stop()
        await w.advance(RESYNC * JITTER)  # the resync timer, or the health round
        await w.until("not ready while the registry is down", lambda: ready_is(w, 503))
        write_model(models, "team:a", rpm=2)  # an edit while the registry is away
        status = await w.until("the outage reported", lambda: outage(w))
        assert not status["registry"]["up"]

        registry.start()
        await w.advance_until("ready again", lambda: ready_is(w, 200), step=5)
        await w.until("the edit made during the outage", lambda: rpm_is(w, "team:a", 2))


@pytest.mark.anyio
async def test_registry_5xx_is_retried_and_the_write_lands(models: Path, registry: RunningRegistry):
    write_model(models, "team:a", rpm=1)
    async with watching(registry, models) as w:
        await w.until("ready", lambda: ready_is(w, 200))
        registry.control(fail_writes=1.0)
        write_model(models, "team:a", rpm=2)
        await w.until("the failed write reported", lambda: row_field(w, "team:a", "last_error"))
        registry.control(fail_writes=0.0)
        await w.advance_until("the write retried", lambda: rpm_is(w, "team:a", 2), step=1)
        await w.until("the error cleared", lambda: state(w, "team:a", "synced"))


@pytest.mark.anyio
async def test_a_half_written_file_keeps_its_model(models: Path, registry: RunningRegistry):
    write_model(models, "team:a", rpm=4)
    write_model(models, "team:b", rpm=4)
    async with watching(registry, models, owns=("team:*",)) as w:
        await w.until("created", lambda: rpms(w, {"team:a": 4, "team:b": 4}))

        text = model_toml("team:a", rpm=5)
        (models / "team_a.toml").write_text(text[: len(text) // 3])  # cut off mid-save
        cut = w.clock.time()
        row = await w.until("team:a invalid", lambda: state(w, "team:a", "invalid"))
        assert "team_a.toml" in row["last_error"]
        assert [f["file"] for f in (await w.status())["invalid_files"]] == ["team_a.toml"]
        await w.advance(RESYNC * JITTER)  # past the grace, and a resync
        await w.until("a full sync after the grace", lambda: w.synced_after(cut + 5))
        assert await w.rpm("team:a") == 4  # the last good state, untouched
        assert registry.counts()["remove"] == 0

        (models / "team_a.toml").write_text(text)  # the save completes
        await w.until("the completed save applied", lambda: rpm_is(w, "team:a", 5))
        await w.until("valid again", lambda: state(w, "team:a", "synced"))


@pytest.mark.anyio
async def test_the_directory_deleted_and_recreated(models: Path, registry: RunningRegistry):
    write_model(models, "team:a", rpm=1)
    write_model(models, "team:b", rpm=1)
    async with watching(registry, models, owns=("team:*",)) as w:
        await w.until("created", lambda: rpms(w, {"team:a": 1, "team:b": 1}))

        shutil.rmtree(models)
        gone = w.clock.time()
        await w.until("the missing directory reported", lambda: dir_error(w))
        await w.advance(RESYNC * JITTER)  # past the grace, and a resync
        await w.until("a full sync after the grace", lambda: w.synced_after(gone + 5))
        assert registry.counts()["remove"] == 0

        models.mkdir()
        write_model(models, "team:a", rpm=2)
        write_model(models, "team:b", rpm=2)
        # The watcher looks for the directory every 0.25 s of the daemon's clock.
        await w.advance_until(
            "files in the new directory applied",
            lambda: rpms(w, {"team:a": 2, "team:b": 2}),
            step=0.25,
        )
        await w.until("the directory error cleared", lambda: no_dir_error(w))
        assert registry.counts()["remove"] == 0


def _swap_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically, as git-sync and the kubelet do."""
    tmp = link.with_name(link.name + "_tmp")
    tmp.symlink_to(target)
    os.replace(tmp, link)


@pytest.mark.anyio
async def test_a_directory_swapped_under_a_symlink_is_rescanned(
    models: Path, registry: RunningRegistry, tmp_path: Path
):
    # git-sync: --dir goes through a link that is swapped to a new checkout. The clock never
    # moves here, so no timer can fire: only the watcher can notice.
    (tmp_path / "v1").mkdir()
    write_model(tmp_path / "v1", "team:a", rpm=1)
    link = tmp_path / "current"
    link.symlink_to("v1")
    async with watching(registry, link) as w:
        await w.until("created", lambda: rpm_is(w, "team:a", 1))

        (tmp_path / "v2").mkdir()
        write_model(tmp_path / "v2", "team:a", rpm=2)
        _swap_link(link, "v2")
        await w.until("the swapped-in checkout applied", lambda: rpm_is(w, "team:a", 2))


@pytest.mark.anyio
async def test_a_configmap_update_is_noticed(models: Path, registry: RunningRegistry):
    # The kubelet's layout: files are links into ..data, which is swapped to a new timestamped
    # folder in one rename; the model file names themselves see no event. No timer fires here.
    (models / "..v1").mkdir()
    write_model(models / "..v1", "team:a", rpm=1)
    (models / "..data").symlink_to("..v1")
    (models / "team_a.toml").symlink_to("..data/team_a.toml")
    async with watching(registry, models) as w:
        await w.until("created", lambda: rpm_is(w, "team:a", 1))

        (models / "..v2").mkdir()
        write_model(models / "..v2", "team:a", rpm=2)
        _swap_link(models / "..data", "..v2")
        await w.until("the new ConfigMap content applied", lambda: rpm_is(w, "team:a", 2))


def test_a_save_by_delete_and_rename_is_one_change_not_a_configmap_swap() -> None:
    # Two changes of one path in a batch (some editors delete, then rename their temp file in):
    # the one model is planned again, with no full resync of every file.
    edit = {(Change.deleted, "/m/team_a.toml"), (Change.added, "/m/team_a.toml")}
    assert sort_out(edit, "/m", "/m") == ({"/m/team_a.toml"}, False)
    swap = {(Change.added, "/m/..data"), (Change.modified, "/m/team_a.toml")}
    assert sort_out(swap, "/m", "/m") == ({"/m/team_a.toml"}, True)
    # Under a link (git-sync), paths are named as the link names them.
    link = {(Change.modified, "/real/v2/team_a.toml")}
    assert sort_out(link, "/m", "/real/v2") == ({"/m/team_a.toml"}, False)


@pytest.mark.anyio
async def test_a_delete_and_rename_save_lists_nothing(models: Path, registry: RunningRegistry):
    path = write_model(models, "team:a", rpm=1)
    async with watching(registry, models) as w:
        await w.until("created", lambda: rpm_is(w, "team:a", 1))
        lists = registry.counts()["list"]

        tmp = models / ".team_a.toml.tmp"
        tmp.write_text(model_toml("team:a", rpm=2))
        path.unlink()
        os.rename(tmp, path)
        await w.until("the edit applied", lambda: rpm_is(w, "team:a", 2))
        assert registry.counts()["list"] == lists


def test_sigterm_finishes_the_write_in_flight_and_exits_0(
    watcher: Callable[..., Watcher], models: Path, registry: RunningRegistry
):
    write_model(models, "team:a", rpm=1)
    w = watcher()
    wait_for("ready", lambda: w.ready() == 200)
    registry.control(latency_ms=1500)
    write_model(models, "team:a", rpm=2)
    wait_for("the write in flight", lambda: (w.model("team:a") or {}).get("state") == "pending")
    assert w.signal(signal.SIGTERM) == 0
    registry.control(latency_ms=0)
    assert w.rpm("team:a") == 2
    assert "stopped" in w.output()


def test_sigint_exits_0_and_sighup_resyncs(
    watcher: Callable[..., Watcher], models: Path, registry: RunningRegistry
):
    write_model(models, "team:a", rpm=1)
    w = watcher("--resync-interval", "3600")
    wait_for("ready", lambda: w.ready() == 200)
    # A file change is planned against the entries already known: no list of the registry.
    lists = registry.counts()["list"]
    write_model(models, "team:a", rpm=3)
    wait_for("the edit", lambda: w.rpm("team:a") == 3)
    assert registry.counts()["list"] == lists

    w.api.patch("/" + quote("team:a", safe=""), json={"rpm": 50}).raise_for_status()
    assert w.process is not None
    w.process.send_signal(signal.SIGHUP)
    wait_for("SIGHUP's resync undoing the edit", lambda: w.rpm("team:a") == 3)
    assert registry.counts()["list"] == lists + 1
    assert w.signal(signal.SIGINT) == 0


@pytest.mark.anyio
async def test_metrics_parse_and_move(models: Path, registry: RunningRegistry):
    write_model(models, "team:a", rpm=1)
    async with watching(registry, models) as w:
        await w.until("ready", lambda: ready_is(w, 200))
        before = await w.samples()
        assert before[("reconciler_writes_total", (("action", "create"), ("outcome", "ok")))] == 1
        assert before[("reconciler_ready", ())] == 1
        assert before[("reconciler_last_successful_sync_timestamp_seconds", ())] > 0
        assert before[("reconciler_models", (("state", "synced"),))] == 1
        update = ("reconciler_writes_total", (("action", "update"), ("outcome", "ok")))
        assert before.get(update, 0) == 0

        write_model(models, "team:a", rpm=2)
        await w.until("the update counted", lambda: sample_is(w, update, 1))
        after = await w.samples()
        runs = ("reconciler_reconcile_runs_total", (("kind", "incremental"), ("result", "ok")))
        assert after[runs] >= 1
        count = ("reconciler_reconcile_duration_seconds_count", (("kind", "full"),))
        assert after[count] >= before[count]
        assert after[("reconciler_file_events_total", ())] >= 1
        available = ("reconciler_model_available", (("id", "team:a"),))
        assert after[available] == 1  # mode off: available


@pytest.mark.anyio
async def test_status_reports_health_from_a_live_and_a_dead_upstream(
    models: Path, registry: RunningRegistry, upstream: Upstream
):
    dead = f"http://127.0.0.1:{free_port()}/health"
    write_model(models, "team:live", health=upstream.url + "/health")
    write_model(models, "team:dead", health=dead)
    async with watching(registry, models) as w:

        async def checked() -> dict[str, Any] | None:
            rows = {m["id"]: m for m in (await w.status())["models"]}
            done = all(rows.get(i, {}).get("health", {}).get("checked_at") for i in rows)
            return rows if len(rows) == 2 and done else None

        rows = await w.until("both health checks", checked)
        assert rows["team:live"]["health"]["available"] is True
        assert rows["team:live"]["health"]["error"] is None
        assert rows["team:dead"]["health"]["available"] is False
        assert rows["team:dead"]["health"]["error"]

        upstream.healthy = False
        await w.advance(RESYNC * JITTER)  # --health-interval 60 s
        await w.until(
            "the live upstream seen down", lambda: health_is(w, "team:live", available=False)
        )


def test_a_bad_api_key_is_reported_and_nothing_leaks(
    watcher: Callable[..., Watcher], models: Path, registry: RunningRegistry
):
    write_model(models, "team:a", secret=True)
    env = {**registry.env(), "MKA1_API_KEY": "wrong-key-do-not-show"}
    w = watcher("--log-format", "json", env=env)
    status = wait_for(
        "the refusal reported", lambda: "API key" in ((s := w.status())["reason"] or "") and s
    )
    assert w.ready() == 503
    assert w.process is not None and w.process.poll() is None
    page = w.http.get("/").text
    assert w.signal(signal.SIGTERM) == 0
    for line in w.output().splitlines():
        record = json.loads(line)  # --log-format json: every line is one JSON event
        assert record["event"]
    assert any(json.loads(line)["event"] == "registry error" for line in w.output().splitlines())
    for text in (w.output(), json.dumps(status), page):
        assert "wrong-key-do-not-show" not in text


@pytest.mark.anyio
async def test_hostile_files_arriving_while_it_runs_fail_alone(
    models: Path, registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MKA1_API_KEY", registry.api_key)  # as watch has it
    write_model(models, "team:a")
    async with watching(registry, models) as w:
        await w.until("synced", lambda: state(w, "team:a", "synced"))
        os.mkfifo(models / "fifo.toml")
        (models / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
        (models / "leak.toml").write_text(
            model_toml("team:leak").replace('modelId = "leak"', 'modelId = "${MKA1_API_KEY}"')
        )
        (models / "sub").mkdir()
        os.symlink("..", models / "sub" / "up")
        os.symlink(".", models / "self")
        write_model(models, "team:b")
        await w.until("team:b synced", lambda: state(w, "team:b", "synced"))
        expected = {"fifo.toml", "deep.json", "leak.toml"}

        async def invalid() -> set[str]:
            return {os.path.basename(f["file"]) for f in (await w.status())["invalid_files"]}

        async def all_reported() -> bool:
            return await invalid() == expected

        await w.until("the hostile files reported", all_reported)
        moment = w.clock.time()
        await w.advance(RESYNC * JITTER)
        await w.until("a full resync", lambda: w.synced_after(moment))  # a rescan walks links
        status = await w.status()
        assert status["files"] == 5 and await invalid() == expected  # each real file once
        assert (await w.web.get("/healthz")).status_code == 200 and await w.ready() == 200
        assert await w.entry("team:leak") is None
        page = (await w.web.get("/")).text
        for text in (w.output(), json.dumps(status), page):
            assert registry.api_key not in text


@pytest.mark.anyio
async def test_nothing_secret_is_served(models: Path, registry: RunningRegistry):
    write_model(models, "team:a", secret=True)
    async with watching(registry, models) as w:
        await w.until("synced", lambda: state(w, "team:a", "synced"))
        served = [(await w.web.get(p)).text for p in ("/", "/status", "/metrics", "/readyz")]
        for text in [*served, w.output()]:
            assert SECRET not in text
            assert registry.api_key not in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
def test_the_status_page_renders_in_headless_chromium(
    watcher: Callable[..., Watcher], models: Path, tmp_path: Path
):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI")
        pytest.skip("chromium is not installed")
    write_model(models, "team:a")
    write_model(models, "team:b")
    w = watcher()
    wait_for("both synced", lambda: len(w.status()["models"]) == 2)
    with tempfile.TemporaryDirectory(dir=tmp_path) as profile:
        result = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                w.url + "/",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            # The viewer's zone: times are shown in it, named, the same before and after the
            # page's refreshes (the virtual time budget covers two).
            env={**clean_env(), "TZ": "Asia/Tokyo"},
        )
    dom = result.stdout
    assert "<title>reconciler status</title>" in dom, result.stderr[-2000:]
    for model_id in ("team:a", "team:b"):
        assert f'<tr class="model" data-id="{model_id}"><td>{model_id}</td>' in dom
    assert "synced" in dom
    assert "times in Asia/Tokyo" in dom
    times = re.findall(r'<time datetime="(\d[^"]+)">([^<]+)</time>', dom)
    assert times, dom
    for iso, shown in times:
        assert iso.endswith("Z")
        assert shown.endswith("GMT+9"), shown  # the viewer's zone, named; never bare UTC
        utc = datetime.fromisoformat(iso[:-1] + "+00:00")
        assert shown.startswith(f"{(utc.hour + 9) % 24:02d}:{utc.minute:02d}:{utc.second:02d}")
