"""The daemon as operators meet it: drift named and notified, --dry-run, readiness on a missing
directory, health while the registry is down, the delete fence. The daemon runs in-process on
fake time (:mod:`daemon_harness`) against the real local registry, with a real webhook receiver
on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import test_daemon as td
from conftest import API_PREFIX, Receiver, RunningRegistry, Upstream
from daemon_harness import JITTER, RESYNC, Harness, watching
from test_daemon import ready_is, rpm_is, state

from reconciler.daemon import Webhook

SECRET = td.SECRET


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    directory = tmp_path / "models.d"
    directory.mkdir()
    return directory


async def _health(w: Harness, model_id: str) -> str | None:
    row = await w.model(model_id)
    return row["health"]["state"] if row else None


async def _health_is(w: Harness, model_id: str, want: str) -> bool:
    return await _health(w, model_id) == want


@pytest.mark.anyio
async def test_drift_invalid_files_and_failed_writes_are_named_and_notified(
    models: Path,
    registry: RunningRegistry,
    receiver: Receiver,
):
    td.write_model(models, "team:a", rpm=5, secret=True)
    async with watching(registry, models, notify=(Webhook(receiver.url),)) as w:
        await w.until("ready", lambda: ready_is(w, 200))
        assert await w.metric("reconciler_drift_corrected_total", id="team:a") == 0

        # Someone edits the entry in the registry: the resync puts it back and says what drifted.
        patch = await w.api.patch("/" + quote("team:a", safe=""), json={"rpm": 999})
        patch.raise_for_status()
        await w.advance(RESYNC * JITTER)
        (drift,) = await w.until("the drift notified", lambda: receiver.events("drift-corrected"))
        assert drift["id"] == "team:a" and drift["fields"] == ["rpm"]
        assert drift["time"].endswith("Z") and "team:a" in drift["text"]
        assert await w.rpm("team:a") == 5
        writes = [r for r in w.logged("write") if r.get("changes") == ["rpm: 999 -> 5"]]
        assert writes and writes[-1]["action"] == "update"
        assert w.logged("drift corrected")[0]["fields"] == ["rpm"]
        assert await w.metric("reconciler_drift_corrected_total", id="team:a") == 1
        # Our own edit of the file is not drift.
        td.write_model(models, "team:a", rpm=6, secret=True)
        await w.until("the edit", lambda: rpm_is(w, "team:a", 6))

        # An invalid file.
        (models / "broken.toml").write_text('id = "team:broken"\nrpm = "many"\n')
        (bad,) = await w.until("the invalid file notified", lambda: receiver.events("invalid-file"))
        assert bad["file"] == "broken.toml" and "broken.toml" in bad["text"]

        # A write the registry refuses.
        registry.control(fail_writes=1.0)
        td.write_model(models, "team:a", rpm=7, secret=True)
        failed = await w.until("the failure notified", lambda: receiver.events("sync-failed"))
        assert failed[0]["id"] == "team:a" and "503" in failed[0]["text"]
        registry.control(fail_writes=0.0)

        samples = await w.samples()
        assert samples[("reconciler_notifications_total", (("outcome", "failed"),))] == 0
        calls = "reconciler_registry_request_duration_seconds_count"
        assert samples[(calls, (("method", "GET"), ("status", "200")))] >= 1
        assert samples[(calls, (("method", "POST"), ("status", "503")))] >= 1
        everything = json.dumps(receiver.events()) + w.output()
        assert SECRET not in everything and registry.api_key not in everything
        assert "T0-secret-path" not in w.output()


@pytest.mark.anyio
async def test_health_changes_are_notified(
    models: Path, registry: RunningRegistry, upstream: Upstream, receiver: Receiver
):
    td.write_model(models, "team:a", health=upstream.url + "/health")
    async with watching(registry, models, notify=(Webhook(receiver.url),)) as w:
        await w.until("checked up", lambda: _health_is(w, "team:a", "up"))
        upstream.healthy = False
        await w.advance(RESYNC * JITTER)  # the next health round
        (change,) = await w.until("health-changed", lambda: receiver.events("health-changed"))
        assert change["id"] == "team:a" and change["available"] is False
        assert "unavailable" in change["text"]


@pytest.mark.anyio
async def test_dry_run_reports_drift_and_writes_nothing(
    models: Path,
    registry: RunningRegistry,
    receiver: Receiver,
    tmp_path: Path,
):
    # The registry holds team:a with rpm 999; the file says 5; team:b is not there at all.
    td.write_model(tmp_path, "team:a", rpm=999)
    body = {"id": "team:a", **_definition(tmp_path / "team_a.toml")}
    headers = {"Authorization": f"Bearer {registry.api_key}"}
    with httpx.Client(base_url=registry.url, headers=headers, trust_env=False) as api:
        api.post(API_PREFIX, json=body).raise_for_status()
    td.write_model(models, "team:a", rpm=5)
    td.write_model(models, "team:b", rpm=5)
    registry.control(reset_counts=True)

    async with watching(registry, models, dry_run=True, notify=(Webhook(receiver.url),)) as w:

        def both_detected() -> list[dict[str, Any]] | None:
            detected = receiver.events("drift-detected")
            return detected if len(detected) == 2 else None

        detected = await w.until("drift-detected for both", both_detected)
        by_id = {e["id"]: e for e in detected}
        assert by_id["team:a"]["fields"] == ["rpm"] and "--dry-run" in by_id["team:a"]["text"]
        assert by_id["team:b"]["fields"] == []
        status = await w.status()
        assert status["dry_run"] is True
        assert {m["id"]: m["state"] for m in status["models"]} == {
            "team:a": "out-of-sync",
            "team:b": "out-of-sync",
        }
        assert await w.metric("reconciler_models_out_of_sync") == 2
        assert await w.metric("reconciler_dry_run") == 1
        # Resyncs keep reporting the same drift: no new notification, no write.
        for _ in range(2):
            moment = w.clock.time()
            await w.advance(RESYNC * JITTER)
            await w.until("a resync", lambda m=moment: w.synced_after(m))
        td.write_model(models, "team:a", rpm=6)  # an edit is planned, logged and not written
        await w.until(
            "the edit reported",
            lambda: any(r.get("changes") == ["rpm: 999 -> 6"] for r in w.logged("would write")),
        )
        counts = registry.counts()
        assert counts["add"] == counts["update"] == counts["remove"] == counts["writes"] == 0
        assert await w.rpm("team:a") == 999 and await w.entry("team:b") is None
        # The same fields differ as before: not news (events carry paths, never values).
        assert len(receiver.events("drift-detected")) == 2


def _definition(path: Path) -> dict[str, Any]:
    import tomllib

    data = tomllib.loads(path.read_text())
    data.pop("id")
    return data


@pytest.mark.anyio
async def test_never_ready_on_a_missing_directory(registry: RunningRegistry, tmp_path: Path):
    missing = tmp_path / "not-there"
    async with watching(registry, missing) as w:

        async def synced() -> dict[str, Any] | None:
            status = await w.status()
            return status if status["last_sync"] else None

        status = await w.until("a full sync", synced)
        assert await w.ready() == 503
        assert "no such directory" in status["reason"]
        missing.mkdir()
        td.write_model(missing, "team:a")
        # The watcher looks for the directory every 0.25 s of the daemon's clock.
        await w.advance_until("ready once it is there", lambda: ready_is(w, 200), step=0.25)


@pytest.mark.anyio
async def test_health_rounds_pause_while_the_registry_is_down(
    models: Path, registry: RunningRegistry
):
    td.write_model(models, "team:a")  # health mode off: the registry answers available
    td.write_model(models, "team:b")
    async with watching(registry, models) as w:
        await w.until("checked", lambda: _health_is(w, "team:a", "up"))
        registry.stop()
        # A round that starts before the outage is known asks the registry (and so learns it);
        # the rounds after it are skipped.
        await w.advance_until(
            "a skipped round", lambda: w.logged("health round skipped"), step=RESYNC * JITTER
        )
        skipped = await w.until(
            "rounds counted", lambda: w.metric("reconciler_health_rounds_skipped_total")
        )
        assert skipped >= 1
        for model in (await w.status())["models"]:  # last known, not "every model down"
            assert model["health"]["state"] == "up", model


@pytest.mark.anyio
async def test_a_model_never_checked_is_unknown(models: Path, registry: RunningRegistry):
    td.write_model(models, "team:a")
    async with watching(registry, models, health_interval=0) as w:
        await w.until("synced", lambda: state(w, "team:a", "synced"))
        await w.advance(RESYNC * JITTER)  # no round, however long it runs
        health = (await w.model("team:a"))["health"]  # type: ignore[index]
        assert health == {"state": "unknown", "available": None, "checked_at": None, "error": None}
        assert 'class="health unknown">unknown<' in (await w.web.get("/")).text


@pytest.mark.anyio
async def test_max_deletes_fences_files_deleted_one_by_one(models: Path, registry: RunningRegistry):
    for name in ("team:a", "team:b", "team:c"):
        td.write_model(models, name)
    async with watching(registry, models, owns=("team:*",), max_deletes=1) as w:
        await w.until("created", lambda: td.present(w, "team:a", "team:b", "team:c"))

        (models / "team_a.toml").unlink()
        await w.until("team:a waiting out its grace", lambda: state(w, "team:a", "orphan"))
        await w.advance(5)  # --prune-grace
        await w.until("the first delete", lambda: td.absent(w, "team:a"))
        (models / "team_b.toml").unlink()
        await w.until("team:b waiting out its grace", lambda: state(w, "team:b", "orphan"))
        await w.advance(5)
        await w.until(
            "the second fenced",
            lambda: any(
                "deleted in the last 60 min" in (r.get("prune_skipped") or "")
                for r in w.logged("full sync")
            ),
        )
        assert await w.entry("team:b") is not None
        assert registry.counts()["remove"] == 1
        fenced = await w.metric("reconciler_prune_skipped_total", reason="max-deletes")
        assert fenced is not None and fenced >= 1


@pytest.mark.anyio
async def test_a_placeholder_value_never_reaches_logs_or_notifications(
    registry: RunningRegistry,
    models: Path,
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
):
    # displayName comes from ${TEAM_LABEL} (allowed in reconciler.toml); someone edits it in the
    # registry. The drift is corrected and named, never quoted, in logs and notifications.
    label = "label-from-the-environment-do-not-show"
    text = td.model_toml("team:a").replace("rpm = 1\n", 'rpm = 1\ndisplayName = "${TEAM_LABEL}"\n')
    (models / "team_a.toml").write_text(text)
    config = tmp_path / "reconciler.toml"
    config.write_text('allow_env = ["TEAM_LABEL"]\n')
    monkeypatch.setenv("TEAM_LABEL", label)
    async with watching(
        registry, models, config=config, log_format="text", notify=(Webhook(receiver.url),)
    ) as w:

        async def created() -> Any:
            return ((await w.entry("team:a")) or {}).get("definition")

        await w.until("created", created)
        assert (await w.entry("team:a"))["definition"]["displayName"] == label  # type: ignore[index]
        await w.api.patch("/" + quote("team:a", safe=""), json={"displayName": "edited"})
        await w.advance(RESYNC * JITTER)
        (drift,) = await w.until("the drift", lambda: receiver.events("drift-corrected"))
        assert drift["fields"] == ["displayName"]
        log = w.output()
        # The write names the field; both values sit at a placeholder's path: redacted.
        assert "displayName: " in log and "(redacted)" in log
        status = (await w.web.get("/status")).text
        assert label not in log + json.dumps(receiver.events()) + status
