"""Hostile model files next to good ones, through ``validate``, ``diff``, ``sync`` and the daemon's
loader, against a real local registry: each bad file fails alone and is named, the good models are
written, and no credential or substituted value reaches any output or the registry."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningRegistry
from typer.testing import CliRunner

from reconciler import reconcile
from reconciler.cli import app
from reconciler.config import load_config
from reconciler.daemon.core import Daemon, Options
from reconciler.daemon.logs import setup
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.web import status_document
from reconciler.server.store import Store

UPSTREAM = "tok-upstream-5b1e-never-print"  # a secret field may name it: sent, never shown
TEAM = "Team-Rocket-display-42"  # granted by allow_env: sent, never shown

MODEL = """\
id = "{id}"
provider = "openai"
modelId = "m"
apiFormat = "responses"
created = {created}
contextWindow = 8192
displayName = "{display}"

[auth]
type = "api-key"
{auth}

[capabilities]
reasoning = false

[capabilities.modalities]
input = ["text"]
output = ["text"]
{extra}"""


def model(model_id: str, **fields: str) -> str:
    values = {"created": "1704067200", "display": "A model", "auth": 'envVar = "K"', "extra": ""}
    return MODEL.format(id=model_id, **{**values, **fields})


# File name -> what must be said about it.
HOSTILE = {
    "leak-display.toml": "${MKA1_API_KEY} is the reconciler's own credential",
    "leak-created.toml": "${MKA1_API_KEY} is the reconciler's own credential",
    "leak-id.toml": "${MKA1_API_KEY} is the reconciler's own credential",
    "leak-health.toml": "${MKA1_API_KEY} is the reconciler's own credential",
    "leak-auth.toml": "${MKA1_API_KEY} is the reconciler's own credential",
    "not-granted.toml": "${UPSTREAM_TOKEN} is not allowed in a non-secret field",
    "deep.json": "nested too deeply",
    "fifo.toml": "not a regular file (a FIFO)",
    "zero.toml": "not a regular file (a character device)",
    "dotdot.toml": "invalid id: '.' and '..' name no URL path segment",
}
GOOD_IDS = ["meetkai:good", "meetkai:shown"]


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "models.d"
    (d / "sub").mkdir(parents=True)
    (d / "good.toml").write_text(model("meetkai:good", auth='value = "${UPSTREAM_TOKEN}"'))
    (d / "sub" / "shown.toml").write_text(model("meetkai:shown", display="${TEAM_NAME}"))
    (d / "leak-display.toml").write_text(model("meetkai:l1", display="${MKA1_API_KEY}"))
    (d / "leak-created.toml").write_text(model("meetkai:l2", created='"${MKA1_API_KEY}"'))
    (d / "leak-id.toml").write_text(model("${MKA1_API_KEY}"))
    health = '\n[healthCheck]\nurl = "http://127.0.0.1:9/?k=${MKA1_API_KEY}"\n'
    (d / "leak-health.toml").write_text(model("meetkai:l4", extra=health))
    (d / "leak-auth.toml").write_text(model("meetkai:l5", auth='value = "${MKA1_API_KEY}"'))
    (d / "not-granted.toml").write_text(model("meetkai:l6", display="${UPSTREAM_TOKEN}"))
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "dotdot.toml").write_text(model(".."))
    os.mkfifo(d / "fifo.toml")
    os.symlink("/dev/zero", d / "zero.toml")
    os.symlink("..", d / "sub" / "up")
    os.symlink(".", d / "self")
    config = tmp_path / "reconciler.toml"
    config.write_text('allow_env = ["TEAM_*"]\n')
    return d, config


def env_for(registry: RunningRegistry) -> dict[str, str]:
    return {**registry.env(), "UPSTREAM_TOKEN": UPSTREAM, "TEAM_NAME": TEAM}


def assert_clean(registry: RunningRegistry, *texts: str) -> None:
    for text in texts:
        assert registry.api_key not in text
        assert UPSTREAM not in text and TEAM not in text


def assert_each_file_named(text: str) -> None:
    for name, message in HOSTILE.items():
        assert any(name in line and message in line for line in text.splitlines()), name


def test_validate_names_each_hostile_file_and_shows_no_secret(
    hostile: tuple[Path, Path], registry: RunningRegistry, run_cli: Any
) -> None:
    directory, config = hostile
    env = env_for(registry)
    text = run_cli("validate", "--dir", str(directory), "--config", str(config), env=env)
    assert text.returncode == 1
    assert_each_file_named(text.stderr)  # problems go to stderr
    assert "2 valid" in text.stdout and "10 error(s)" in text.stdout
    runner = CliRunner()
    args = ["validate", "--dir", str(directory), "--config", str(config)]
    as_json = runner.invoke(app, [*args, "-o", "json"], env=env)
    github = runner.invoke(app, [*args, "-o", "github"], env=env)
    assert as_json.exit_code == github.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert sorted(doc["models"]) == GOOD_IDS and doc["files"] == 12
    assert {os.path.basename(e["file"]) for e in doc["errors"]} == set(HOSTILE)
    assert github.stdout.count("::error file=") == len(HOSTILE)
    assert_clean(registry, text.stdout, text.stderr, as_json.stdout, github.stdout)


def test_diff_and_sync_write_the_good_models_only(
    hostile: tuple[Path, Path], registry: RunningRegistry, run_cli: Any
) -> None:
    directory, config = hostile
    env = env_for(registry)
    args = ["--dir", str(directory), "--config", str(config)]
    diff = run_cli("diff", *args, env=env)
    assert diff.returncode == 1, diff.stderr
    assert_each_file_named(diff.stderr)
    assert "+ meetkai:good" in diff.stdout and "+ meetkai:shown" in diff.stdout
    assert "displayName: (redacted)" in diff.stdout and "auth.value: (redacted)" in diff.stdout
    as_json = CliRunner().invoke(app, ["diff", *args, "-o", "json"], env=env)
    assert as_json.exit_code == 1
    shown = next(c for c in json.loads(as_json.stdout)["changes"] if c["id"] == "meetkai:shown")
    assert {"path": "displayName", "op": "add", "old": None, "new": "(redacted)"} in shown["fields"]

    sync = run_cli("sync", *args, env=env)
    assert sync.returncode == 1  # invalid files fail the run; the good models are written
    assert "Applied: 2 of 2 writes succeeded" in sync.stdout
    again = CliRunner().invoke(app, ["sync", *args, "-o", "json"], env=env)
    assert json.loads(again.stdout)["summary"]["unchanged"] == 2

    store = Store(registry.db)
    stored = store.list_json()
    store.close()
    entries = {e["id"]: e for e in json.loads(stored)}
    assert sorted(entries) == GOOD_IDS
    assert entries["meetkai:good"]["definition"]["auth"]["value"] == UPSTREAM
    assert entries["meetkai:shown"]["definition"]["displayName"] == TEAM
    assert registry.api_key not in stored  # the admin key reached no request body
    assert_clean(registry, diff.stdout, diff.stderr, as_json.stdout, sync.stdout, sync.stderr)
    assert_clean(registry, again.stdout)


def test_the_daemon_loads_past_hostile_files(
    hostile: tuple[Path, Path], registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, config = hostile
    for name, value in env_for(registry).items():
        monkeypatch.setenv(name, value)
    stream = io.StringIO()
    log = setup("json", stream)
    policy = reconcile.load_policy(load_config(config))

    async def run() -> dict[str, Any]:
        target = reconcile.Target(registry.url, registry.api_key)
        async with reconcile.make_client(target) as client:
            options = Options(directory=directory, load_policy=policy, health_interval=0)
            daemon = Daemon(options, client, log, Metrics())
            await asyncio.wait_for(daemon.run_once(), 60)
            assert daemon.last_run.ok and daemon.synced.is_set()
            return status_document(daemon)

    try:
        status = asyncio.run(run())
    finally:
        logging.getLogger().handlers.clear()
    states = {m["id"]: m["state"] for m in status["models"]}
    assert states["meetkai:good"] == states["meetkai:shown"] == "synced"
    invalid = {os.path.basename(f["file"]) for f in status["invalid_files"]}
    assert invalid == set(HOSTILE)
    assert status["files"] == 12
    assert_clean(registry, json.dumps(status), stream.getvalue())
