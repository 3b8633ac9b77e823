"""The daemon as operators meet it: drift named and notified, --dry-run, readiness on a missing
directory, health while the registry is down, the delete fence. ``reconciler watch`` runs as a
subprocess against the real local registry, with a real webhook receiver on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import test_daemon as td
from conftest import Receiver, RunningRegistry, Upstream

SECRET = td.SECRET


@pytest.fixture
def models(tmp_path: Path) -> Path:
    directory = tmp_path / "models.d"
    directory.mkdir()
    return directory


@pytest.fixture
def watcher(
    registry: RunningRegistry, models: Path, tmp_path: Path
) -> Iterator[Callable[..., td.Watcher]]:
    started: list[td.Watcher] = []

    def start(*args: str, directory: Path | None = None) -> td.Watcher:
        w = td.Watcher(registry, directory or models, tmp_path / f"d{len(started)}.log", *args)
        started.append(w)
        return w.start()

    yield start
    for w in started:
        w.close()


def _metric(w: td.Watcher, name: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    return td._samples(w).get((name, want))


def _health(w: td.Watcher, model_id: str) -> str | None:
    row = w.model(model_id)
    return row["health"]["state"] if row else None


def _logged(w: td.Watcher, name: str) -> list[dict[str, Any]]:
    return [r for line in w.output().splitlines() if (r := json.loads(line))["event"] == name]


def test_drift_invalid_files_and_failed_writes_are_named_and_notified(
    watcher: Callable[..., td.Watcher],
    models: Path,
    registry: RunningRegistry,
    receiver: Receiver,
):
    td.write_model(models, "team:a", rpm=5, secret=True)
    w = watcher("--notify", receiver.url, "--log-format", "json")
    td.wait_for("ready", lambda: w.ready() == 200)
    assert _metric(w, "reconciler_drift_corrected_total", id="team:a") == 0

    # Someone edits the entry in the registry: the resync puts it back and says what drifted.
    w.api.patch("/" + quote("team:a", safe=""), json={"rpm": 999}).raise_for_status()
    (drift,) = td.wait_for("the drift notified", lambda: receiver.events("drift-corrected"))
    assert drift["id"] == "team:a" and drift["fields"] == ["rpm"]
    assert drift["time"].endswith("Z") and "team:a" in drift["text"]
    assert w.rpm("team:a") == 5
    writes = [r for r in _logged(w, "write") if r.get("changes") == ["rpm: 999 -> 5"]]
    assert writes and writes[-1]["action"] == "update"
    assert _logged(w, "drift corrected")[0]["fields"] == ["rpm"]
    assert _metric(w, "reconciler_drift_corrected_total", id="team:a") == 1
    # Our own edit of the file is not drift.
    td.write_model(models, "team:a", rpm=6, secret=True)
    td.wait_for("the edit", lambda: w.rpm("team:a") == 6)

    # An invalid file.
    (models / "broken.toml").write_text('id = "team:broken"\nrpm = "many"\n')
    (bad,) = td.wait_for("the invalid file notified", lambda: receiver.events("invalid-file"))
    assert bad["file"] == "broken.toml" and "broken.toml" in bad["text"]

    # A write the registry refuses.
    registry.control(fail_writes=1.0)
    td.write_model(models, "team:a", rpm=7, secret=True)
    failed = td.wait_for("the failure notified", lambda: receiver.events("sync-failed"))
    assert failed[0]["id"] == "team:a" and "503" in failed[0]["text"]
    registry.control(fail_writes=0.0)

    samples = td._samples(w)
    assert samples[("reconciler_notifications_total", (("outcome", "failed"),))] == 0
    calls = "reconciler_registry_request_duration_seconds_count"
    assert samples[(calls, (("method", "GET"), ("status", "200")))] >= 1
    assert samples[(calls, (("method", "POST"), ("status", "503")))] >= 1
    everything = json.dumps(receiver.events()) + w.output()
    assert SECRET not in everything and registry.api_key not in everything
    assert "T0-secret-path" not in w.output()


def test_health_changes_are_notified(
    watcher: Callable[..., td.Watcher], models: Path, upstream: Upstream, receiver: Receiver
):
    td.write_model(models, "team:a", health=upstream.url + "/health")
    w = watcher("--notify", receiver.url)
    td.wait_for("checked up", lambda: _health(w, "team:a") == "up")
    upstream.healthy = False
    (change,) = td.wait_for("health-changed", lambda: receiver.events("health-changed"))
    assert change["id"] == "team:a" and change["available"] is False
    assert "unavailable" in change["text"]


def test_dry_run_reports_drift_and_writes_nothing(
    watcher: Callable[..., td.Watcher],
    models: Path,
    registry: RunningRegistry,
    receiver: Receiver,
    tmp_path: Path,
):
    # The registry holds team:a with rpm 999; the file says 5; team:b is not there at all.
    td.write_model(tmp_path, "team:a", rpm=999)
    seed = td.Watcher(registry, tmp_path, tmp_path / "seed.log")
    body = {"id": "team:a", **_definition(tmp_path / "team_a.toml")}
    seed.api.post("", json=body).raise_for_status()
    seed.close()
    td.write_model(models, "team:a", rpm=5)
    td.write_model(models, "team:b", rpm=5)
    registry.control(reset_counts=True)

    w = watcher("--dry-run", "--notify", receiver.url, "--log-format", "json")
    detected = td.wait_for(
        "drift-detected for both", lambda: len(e := receiver.events("drift-detected")) == 2 and e
    )
    by_id = {e["id"]: e for e in detected}
    assert by_id["team:a"]["fields"] == ["rpm"] and "--dry-run" in by_id["team:a"]["text"]
    assert by_id["team:b"]["fields"] == []
    status = w.status()
    assert status["dry_run"] is True
    assert {m["id"]: m["state"] for m in status["models"]} == {
        "team:a": "out-of-sync",
        "team:b": "out-of-sync",
    }
    assert _metric(w, "reconciler_models_out_of_sync") == 2
    assert _metric(w, "reconciler_dry_run") == 1
    # Resyncs keep reporting the same drift: no new notification, no write.
    before = w.status()["last_sync"]
    td.wait_for("two more resyncs", lambda: w.status()["last_sync"] != before)
    td.write_model(models, "team:a", rpm=6)  # an edit is planned, logged and not written
    td.wait_for(
        "the edit reported",
        lambda: any(r.get("changes") == ["rpm: 999 -> 6"] for r in _logged(w, "would write")),
    )
    counts = registry.counts()
    assert counts["add"] == counts["update"] == counts["remove"] == counts["writes"] == 0
    assert w.rpm("team:a") == 999 and w.entry("team:b") is None
    # The same fields differ as before: not news (events carry paths, never values).
    assert len(receiver.events("drift-detected")) == 2


def _definition(path: Path) -> dict[str, Any]:
    import tomllib

    data = tomllib.loads(path.read_text())
    data.pop("id")
    return data


def test_never_ready_on_a_missing_directory(watcher: Callable[..., td.Watcher], tmp_path: Path):
    missing = tmp_path / "not-there"
    w = watcher(directory=missing)
    status = td.wait_for("a full sync", lambda: (s := w.status())["last_sync"] and s)
    assert w.ready() == 503
    assert "no such directory" in status["reason"]
    missing.mkdir()
    td.write_model(missing, "team:a")
    td.wait_for("ready once it is there", lambda: w.ready() == 200, 20)


def test_health_rounds_pause_while_the_registry_is_down(
    watcher: Callable[..., td.Watcher], models: Path, registry: RunningRegistry
):
    td.write_model(models, "team:a")  # health mode off: the registry answers available
    td.write_model(models, "team:b")
    w = watcher("--log-format", "json")
    td.wait_for("checked", lambda: _health(w, "team:a") == "up")
    registry.stop()
    td.wait_for("a skipped round", lambda: _logged(w, "health round skipped"))
    skipped = td.wait_for(
        "rounds counted", lambda: _metric(w, "reconciler_health_rounds_skipped_total")
    )
    assert skipped >= 1
    for model in w.status()["models"]:  # last known, not "every model down"
        assert model["health"]["state"] == "up", model


def test_a_model_never_checked_is_unknown(watcher: Callable[..., td.Watcher], models: Path):
    td.write_model(models, "team:a")
    w = watcher("--health-interval", "0")
    td.wait_for("synced", lambda: (w.model("team:a") or {}).get("state") == "synced")
    health = w.model("team:a")["health"]  # type: ignore[index]
    assert health == {"state": "unknown", "available": None, "checked_at": None, "error": None}
    assert 'class="health unknown">unknown<' in w.http.get("/").text


def test_max_deletes_fences_files_deleted_one_by_one(
    watcher: Callable[..., td.Watcher], models: Path, registry: RunningRegistry
):
    for name in ("team:a", "team:b", "team:c"):
        td.write_model(models, name)
    w = watcher("--prune", "--owns", "team:*", "--max-deletes", "1", "--log-format", "json")
    td.wait_for("created", lambda: all(w.entry(i) for i in ("team:a", "team:b", "team:c")))

    (models / "team_a.toml").unlink()
    td.wait_for("the first delete", lambda: w.entry("team:a") is None)
    (models / "team_b.toml").unlink()
    td.wait_for(
        "the second fenced",
        lambda: any(
            "deleted in the last 60 min" in (r.get("prune_skipped") or "")
            for r in _logged(w, "full sync")
        ),
        20,
    )
    assert w.entry("team:b") is not None
    assert registry.counts()["remove"] == 1
    assert _metric(w, "reconciler_prune_skipped_total", reason="max-deletes") >= 1


def test_a_placeholder_value_never_reaches_logs_or_notifications(
    registry: RunningRegistry, models: Path, tmp_path: Path, receiver: Receiver
):
    # displayName comes from ${TEAM_LABEL} (allowed in reconciler.toml); someone edits it in the
    # registry. The drift is corrected and named, never quoted, in logs and notifications.
    label = "label-from-the-environment-do-not-show"
    text = td.model_toml("team:a").replace("rpm = 1\n", 'rpm = 1\ndisplayName = "${TEAM_LABEL}"\n')
    (models / "team_a.toml").write_text(text)
    config = tmp_path / "reconciler.toml"
    config.write_text('allow_env = ["TEAM_LABEL"]\n')
    w = td.Watcher(
        registry, models, tmp_path / "d.log", "--config", str(config), "--notify", receiver.url
    )
    w.env = {**w.env, "TEAM_LABEL": label}
    try:
        w.start()
        td.wait_for("created", lambda: (w.entry("team:a") or {}).get("definition"))
        assert w.entry("team:a")["definition"]["displayName"] == label  # type: ignore[index]
        w.api.patch("/" + quote("team:a", safe=""), json={"displayName": "edited"})
        (drift,) = td.wait_for("the drift", lambda: receiver.events("drift-corrected"))
        assert drift["fields"] == ["displayName"]
        log = w.output()
        # The write names the field; both values sit at a placeholder's path: redacted.
        assert "displayName: " in log and "(redacted)" in log
        assert label not in log + json.dumps(receiver.events()) + w.http.get("/status").text
    finally:
        w.close()
