"""Environments end to end: one models.d, two or three local registries on loopback, each
accepting only its own key; diff and sync per environment and for all, overlays landing only
where they belong, one registry down while the others converge."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import API_PREFIX, RunningRegistry, clean_env
from test_interrupt import DEADLINE, connected, wait_for

Run = Callable[..., subprocess.CompletedProcess[str]]
KEYS = {"dev": "DEV_REGISTRY_KEY", "staging": "STAGING_REGISTRY_KEY", "prod": "PROD_REGISTRY_KEY"}


def model_toml(model_id: str, extra: str = "") -> str:
    return f"""id = "{model_id}"
provider = "openai-compatible"
modelId = "{model_id.split(":")[-1]}"
apiFormat = "responses"
created = 1704067200
contextWindow = 8192
baseUrl = "https://models.example.com/v1"
{extra}

[auth]
type = "none"

[capabilities]
reasoning = false

[capabilities.modalities]
input = ["text"]
output = ["text"]
"""


def live(registry: RunningRegistry) -> dict[str, dict[str, Any]]:
    """The registry's entries by id, read directly over HTTP with its own key."""
    with httpx.Client(
        base_url=registry.url,
        headers={"Authorization": f"Bearer {registry.api_key}"},
        trust_env=False,
    ) as client:
        response = client.get(API_PREFIX)
    response.raise_for_status()
    return {e["id"]: e["definition"] for e in response.json()["data"]}


def statuses(registry: RunningRegistry) -> list[int]:
    """The status of every request the registry logged (its access log)."""
    return [
        int(m)
        for m in re.findall(
            r"^.*? (?:GET|POST|PATCH|PUT|DELETE) \S+ (\d{3}) ", registry.stderr(), re.M
        )
    ]


class Setup:
    """A project directory: models.d, overlays, reconciler.toml naming the registries."""

    def __init__(self, root: Path, registries: dict[str, RunningRegistry]) -> None:
        self.root = root
        self.registries = registries
        self.models = root / "models.d"
        self.models.mkdir()
        for name in ("meetkai:env-a", "meetkai:env-b", "meetkai:env-c"):
            (self.models / f"{name.replace(':', '_')}.toml").write_text(model_toml(name))
        self.overlays = root / "overlays"

    def config(self, extra: dict[str, str] | None = None, top: str = "") -> Path:
        tables = [top]
        for name, registry in self.registries.items():
            tables.append(
                f'[environments.{name}]\nregistry_url = "{registry.url}"\n'
                f'api_key_env = "{KEYS[name]}"\n' + (extra or {}).get(name, "")
            )
        path = self.root / "reconciler.toml"
        path.write_text("\n".join(tables))
        return path

    def overlay(self, env: str, file: str, text: str) -> None:
        (self.overlays / env).mkdir(parents=True, exist_ok=True)
        (self.overlays / env / file).write_text(text)

    def env(self, **override: str) -> dict[str, str]:
        keys = {KEYS[n]: r.api_key for n, r in self.registries.items()}
        # A key in MKA1_API_KEY that no registry accepts: environments must never send it.
        return {**clean_env(), "MKA1_API_KEY": "the-wrong-key", **keys, **override}


@pytest.fixture
def setup(tmp_path: Path, registry_factory: Callable[..., RunningRegistry]) -> Setup:
    return Setup(tmp_path, {"dev": registry_factory(), "prod": registry_factory()})


def cli(run_cli: Run, s: Setup, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--dir", str(s.models), env=s.env(**env), cwd=s.root)


def test_sync_all_envs_converges_each_registry_with_its_own_key(run_cli: Run, setup: Setup):
    setup.config({"prod": 'overlay = "overlays/prod"\n'})
    setup.overlay("prod", "env-a.toml", 'id = "meetkai:env-a"\ncontextWindow = 32768\n')
    setup.overlay("prod", "env-c.toml", 'id = "meetkai:env-c"\nexclude = true\n')

    diff = cli(run_cli, setup, "diff", "--all-envs")
    assert diff.returncode == 2, diff.stderr
    assert "== dev (" in diff.stdout and "== prod (" in diff.stdout

    result = cli(run_cli, setup, "sync", "--all-envs")
    assert result.returncode == 0, result.stdout + result.stderr
    dev, prod = live(setup.registries["dev"]), live(setup.registries["prod"])
    assert set(dev) == {"meetkai:env-a", "meetkai:env-b", "meetkai:env-c"}
    assert set(prod) == {"meetkai:env-a", "meetkai:env-b"}  # env-c excluded in prod
    assert dev["meetkai:env-a"]["contextWindow"] == 8192  # the overlay lands only in prod
    assert prod["meetkai:env-a"]["contextWindow"] == 32768
    assert prod["meetkai:env-b"]["contextWindow"] == 8192

    again = cli(run_cli, setup, "diff", "--all-envs")
    assert again.returncode == 0, again.stdout + again.stderr
    # Each registry accepts only its own key: one wrong key would have been logged as 401/403.
    for registry in setup.registries.values():
        seen = statuses(registry)
        assert seen and all(s < 400 for s in seen), registry.stderr()


def test_one_environment_only_touches_its_registry(run_cli: Run, setup: Setup):
    setup.config()
    before = len(statuses(setup.registries["prod"]))
    result = cli(run_cli, setup, "sync", "--env", "dev")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(statuses(setup.registries["prod"])) == before  # not even listed
    assert len(live(setup.registries["dev"])) == 3
    assert live(setup.registries["prod"]) == {}
    # prod has changes pending, dev none: diff of both exits 2
    assert cli(run_cli, setup, "diff", "--env", "dev").returncode == 0
    assert cli(run_cli, setup, "diff", "-e", "dev", "-e", "prod").returncode == 2


def test_environments_configured_but_none_chosen_or_unknown(run_cli: Run, setup: Setup):
    setup.config()
    before = {n: len(statuses(r)) for n, r in setup.registries.items()}
    for command in ("diff", "sync"):
        result = cli(run_cli, setup, command)
        assert result.returncode == 1
        assert "dev, prod" in result.stderr and "--all-envs" in result.stderr
    as_json = cli(run_cli, setup, "diff", "-o", "json")
    assert as_json.returncode == 1 and "dev, prod" in json.loads(as_json.stdout)["error"]
    unknown = cli(run_cli, setup, "diff", "--env", "qa")
    assert unknown.returncode == 1
    assert "unknown environment 'qa'" in unknown.stderr and "dev, prod" in unknown.stderr
    assert {n: len(statuses(r)) for n, r in setup.registries.items()} == before


def test_missing_key_variable_names_it_and_sends_nothing(run_cli: Run, setup: Setup):
    setup.config()
    before = len(statuses(setup.registries["dev"]))
    env = setup.env()
    del env[KEYS["prod"]]
    result = run_cli("diff", "--all-envs", "--dir", str(setup.models), env=env, cwd=setup.root)
    assert result.returncode == 1
    assert "PROD_REGISTRY_KEY is not set" in result.stderr
    assert len(statuses(setup.registries["dev"])) == before


def test_one_registry_down_the_other_converges(run_cli: Run, setup: Setup):
    setup.config()
    setup.registries["prod"].stop()
    result = cli(run_cli, setup, "sync", "--all-envs", "--timeout", "2")
    assert result.returncode == 1
    assert "error: prod:" in result.stderr
    assert "prod: failed" in result.stdout and "dev: applied" in result.stdout
    assert len(live(setup.registries["dev"])) == 3


def test_json_groups_changes_by_environment(run_cli: Run, setup: Setup):
    setup.config({"prod": 'overlay = "overlays/prod"\n'})
    setup.overlay("prod", "a.json", json.dumps({"id": "meetkai:env-a", "baseUrl": None}))
    result = cli(run_cli, setup, "diff", "--all-envs", "-o", "json")
    assert result.returncode == 2, result.stderr
    doc = json.loads(result.stdout)
    assert doc["formatVersion"] == 1
    assert [e["environment"] for e in doc["environments"]] == ["dev", "prod"]
    assert all(e["error"] is None and not e["failed"] for e in doc["environments"])
    by_env: dict[str, dict[str, Any]] = {}
    for change in doc["changes"]:
        by_env.setdefault(change["environment"], {})[change["id"]] = change
    assert set(by_env) == {"dev", "prod"}
    prod_a = {f["path"] for f in by_env["prod"]["meetkai:env-a"]["fields"]}
    dev_a = {f["path"] for f in by_env["dev"]["meetkai:env-a"]["fields"]}
    assert "baseUrl" in dev_a and "baseUrl" not in prod_a  # removed by the JSON null


def test_overlay_errors_fail_that_environment_only(run_cli: Run, setup: Setup):
    setup.config({"prod": 'overlay = "overlays/prod"\n'})
    setup.overlay("prod", "typo.toml", 'id = "meetkai:env-a"\ncontextWindw = 1\n')
    setup.overlay("prod", "ghost.toml", 'id = "meetkai:ghost"\nrpm = 5\n')
    setup.overlay("prod", "bad.toml", 'id = "meetkai:env-b"\ncontextWindow = "big"\n')
    result = cli(run_cli, setup, "sync", "--all-envs")
    assert result.returncode == 1
    out = result.stderr  # problems go to stderr, as path:line:col
    assert "contextWindw: unknown key; did you mean 'contextWindow'?" in out
    assert "typo.toml:2:1" in out
    assert "no model file declares id 'meetkai:ghost'" in out
    assert "bad.toml" in out and "contextWindow" in out
    # dev converged; prod wrote only what no failed overlay touches
    assert len(live(setup.registries["dev"])) == 3
    assert set(live(setup.registries["prod"])) == {"meetkai:env-c"}


def test_health_and_export_per_environment(run_cli: Run, setup: Setup, tmp_path: Path):
    setup.config({"prod": 'overlay = "overlays/prod"\n'})
    setup.overlay("prod", "c.toml", 'id = "meetkai:env-c"\nexclude = true\n')
    assert cli(run_cli, setup, "sync", "--all-envs").returncode == 0
    health = cli(run_cli, setup, "health", "--all-envs", "-o", "json")
    assert health.returncode in (0, 1), health.stderr
    docs = json.loads(health.stdout)["environments"]
    assert [d["environment"] for d in docs] == ["dev", "prod"]
    ids = {d["environment"]: {m["id"] for m in d["models"]} for d in docs}
    assert ids["dev"] == {"meetkai:env-a", "meetkai:env-b", "meetkai:env-c"}
    assert ids["prod"] == {"meetkai:env-a", "meetkai:env-b"}  # excluded there
    assert cli(run_cli, setup, "health").returncode == 1  # environments, none chosen

    out = tmp_path / "exported"
    one = run_cli("export", "--env", "prod", "--dir", str(out), env=setup.env(), cwd=setup.root)
    assert one.returncode == 0, one.stderr
    assert len(list(out.glob("*.toml"))) == 2
    both = tmp_path / "both"
    run = run_cli("export", "--all-envs", "--dir", str(both), env=setup.env(), cwd=setup.root)
    assert run.returncode == 0, run.stderr
    assert len(list((both / "dev").glob("*.toml"))) == 3
    assert len(list((both / "prod").glob("*.toml"))) == 2


def test_a_model_file_cannot_read_an_environments_key(run_cli: Run, setup: Setup):
    setup.config(top='allow_env = ["PROD_REGISTRY_KEY"]\n')
    path = setup.models / "meetkai_env-a.toml"
    path.write_text(
        model_toml("meetkai:env-a").replace(
            "contextWindow", 'displayName = "${PROD_REGISTRY_KEY}"\ncontextWindow'
        )
    )
    result = cli(run_cli, setup, "sync", "--all-envs", "-o", "json")
    assert result.returncode == 1
    key = setup.registries["prod"].api_key
    assert key not in result.stdout + result.stderr
    assert "meetkai_env-a.toml" in result.stdout
    for registry in setup.registries.values():
        assert "meetkai:env-a" not in live(registry)
        assert len(live(registry)) == 2


@pytest.mark.parametrize(
    ("args", "sig", "code"),
    [
        (("diff", "--all-envs"), signal.SIGTERM, 143),
        (("health", "--all-envs", "--all"), signal.SIGINT, 130),
        (("export", "--all-envs", "--dir", "out.d"), signal.SIGTERM, 143),
    ],
    ids=["diff", "health", "export"],
)
def test_a_signal_while_listing_the_environments_ends_the_command(
    setup: Setup, args: tuple[str, ...], sig: signal.Signals, code: int
):
    setup.config()
    slow = setup.registries["prod"]
    slow.control(latency_ms=5000)
    port = int(slow.url.rsplit(":", 1)[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args]
        + ([] if "--dir" in args else ["--dir", str(setup.models)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=setup.env(),
        cwd=setup.root,
    )
    try:
        wait_for("the list call", lambda: connected(port))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err


def test_validate_checks_every_environments_overlays_offline(run_cli: Run, tmp_path: Path):
    models = tmp_path / "models.d"
    models.mkdir()
    (models / "meetkai_env-a.toml").write_text(model_toml("meetkai:env-a"))
    (tmp_path / "reconciler.toml").write_text(
        '[environments.dev]\nregistry_url = "http://127.0.0.1:9"\napi_key_env = "DEV_KEY"\n'
        '[environments.prod]\nregistry_url = "http://127.0.0.1:9"\napi_key_env = "PROD_KEY"\n'
        'overlay = "overlays/prod"\n'
    )
    prod = tmp_path / "overlays" / "prod"
    prod.mkdir(parents=True)
    (prod / "a.toml").write_text('id = "meetkai:env-a"\ncontextWindow = 65536\n')
    ok = run_cli("validate", "--dir", "models.d", cwd=tmp_path)  # no key needed
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (prod / "ghost.toml").write_text('id = "meetkai:ghost"\nrpm = 1\n')
    bad = run_cli("validate", "--dir", "models.d", "-o", "json", cwd=tmp_path)
    assert bad.returncode == 1
    errors = json.loads(bad.stdout)["errors"]
    assert [(Path(e["file"]).name, e["message"]) for e in errors] == [
        ("ghost.toml", "no model file declares id 'meetkai:ghost'")
    ]


def test_select_markdown_and_saved_plans_with_environments(run_cli: Run, setup: Setup):
    setup.config()
    selected = cli(run_cli, setup, "sync", "--all-envs", "--select", "meetkai:env-a")
    assert selected.returncode == 0, selected.stdout + selected.stderr
    for registry in setup.registries.values():
        assert set(live(registry)) == {"meetkai:env-a"}
    md = cli(run_cli, setup, "diff", "--all-envs", "-o", "markdown")
    assert md.returncode == 2, md.stderr
    assert "reconciler diff: dev" in md.stdout and "reconciler diff: prod" in md.stdout
    assert "meetkai:env-b" in md.stdout
    for args in (("diff", "--out", "plan.json"), ("sync", "--plan", "plan.json")):
        refused = cli(run_cli, setup, *args, "--all-envs")
        assert refused.returncode == 1
        assert "not available with environments yet" in refused.stderr
