"""The CI surface (issue 11): exit codes, saved plans, PR output, --select, the JSON contract,
progress and piped output; a real registry on loopback, real files in a temp dir."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningRegistry, clean_env, free_port
from test_cli_reconcile import live, model_toml, write_model
from typer.testing import CliRunner

from reconciler.cli import app

Run = Callable[..., subprocess.CompletedProcess[str]]
SECRET = "sk-plan-secret-7c1d2e"
SECRET_LATER = "sk-rotated-secret-0b9a8f"


@pytest.fixture
def team_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "models.d"
    directory.mkdir()
    for name in ("a", "b"):
        write_model(directory, f"meetkai:team-{name}")
    return directory


@pytest.fixture(autouse=True)
def _no_repo_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The repository's reconciler.toml (owns) is not this test's.
    monkeypatch.chdir(tmp_path)


def invoke(registry: RunningRegistry | None, *args: str, **env: str) -> Any:
    base = registry.env() if registry is not None else clean_env()
    return CliRunner().invoke(app, list(args), env={**base, **env})


def gone_env() -> dict[str, str]:
    return {**clean_env(), "MKA1_API_URL": f"http://127.0.0.1:{free_port()}", "MKA1_API_KEY": "k"}


# --- exit codes -------------------------------------------------------------------------------


def test_exit_codes_of_every_command(
    run_cli: Run, registry: RunningRegistry, team_dir: Path, tmp_path: Path
) -> None:
    env = registry.env()
    d = ("--dir", str(team_dir))
    codes = {
        "diff pending": run_cli("diff", *d, env=env).returncode,
        "sync": run_cli("sync", *d, env=env).returncode,
        "diff in sync": run_cli("diff", *d, env=env).returncode,
        "validate": run_cli("validate", *d).returncode,
        "schema": run_cli("schema").returncode,
        "version": run_cli("--version").returncode,
    }
    assert codes == dict.fromkeys(codes, 0) | {"diff pending": 2}
    usage = [
        ("diff", "--ouput", "json"),
        ("diff", "--output", "yaml"),
        ("sync", "--concurrency", "0"),
        ("validate", "--bogus"),
        ("export", "--bogus"),
        ("health", "--output", "yaml"),
        ("schema", "--bogus"),
        ("watch", "--bogus"),
        ("registry", "serve", "--port", "x"),
        ("nosuchcommand",),
    ]
    for args in usage:
        result = run_cli(*args, env=env)
        assert result.returncode == 1, (args, result.returncode, result.stderr)
    (team_dir / "broken.toml").write_text("x = = 1\n")
    assert run_cli("diff", *d, env=env).returncode == 1
    assert run_cli("validate", *d).returncode == 1
    gone = ("--timeout", "1")
    assert run_cli("diff", *d, *gone, env=gone_env()).returncode == 1
    assert run_cli("health", "--all", *gone, env=gone_env()).returncode == 1


def test_refused_prune_exits_1_in_diff_and_sync(registry: RunningRegistry, team_dir: Path) -> None:
    assert invoke(registry, "sync", "--dir", str(team_dir)).exit_code == 0
    for name in ("a", "b"):
        (team_dir / f"meetkai_team-{name}.toml").unlink()
    write_model(team_dir, "meetkai:team-c")
    prune = ("--prune", "--owns", "meetkai:team-*", "--max-deletes", "1")
    for command in ("diff", "sync"):
        result = invoke(registry, command, "--dir", str(team_dir), *prune)
        assert result.exit_code == 1, result.output
        assert "would delete 2 entries" in result.stdout
    assert {"meetkai:team-a", "meetkai:team-b"} <= set(live(registry))


# --- the JSON contract ------------------------------------------------------------------------


def test_json_has_a_format_version_warnings_and_consistent_counts(
    registry: RunningRegistry, team_dir: Path
) -> None:
    (team_dir / "misnamed.toml").write_text(model_toml("meetkai:team-z"))
    (team_dir / "broken.toml").write_text("x = = 1\n")
    result = invoke(registry, "diff", "--dir", str(team_dir), "-o", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["formatVersion"] == 1
    assert [w["field"] for w in doc["warnings"]] == ["id"]
    assert doc["summary"]["warnings"] == 1 and doc["summary"]["invalidFiles"] == 1
    for action in ("create", "update", "delete", "unchanged", "immutable", "invalid"):
        assert doc["summary"][action] == sum(1 for c in doc["changes"] if c["action"] == action)
    assert doc["errors"][0]["line"] == 1 and doc["errors"][0]["column"]


def test_json_error_object_on_stdout_when_the_registry_is_down(team_dir: Path) -> None:
    for command in ("diff", "sync"):
        result = CliRunner().invoke(
            app, [command, "--dir", str(team_dir), "-o", "json", "--timeout", "1"], env=gone_env()
        )
        assert result.exit_code == 1
        doc = json.loads(result.stdout)
        assert doc["formatVersion"] == 1 and doc["error"]
    missing = invoke(None, "diff", "--dir", str(team_dir), "-o", "json")
    assert missing.exit_code == 1 and "MKA1_API_URL" in json.loads(missing.stdout)["error"]


# --- saved plans ------------------------------------------------------------------------------


def secret_model(directory: Path) -> Path:
    return write_model(
        directory,
        "meetkai:team-secret",
        auth='type = "api-key"\nvalue = "${TEAM_SECRET}"',
    )


def test_saved_plan_is_applied_exactly_and_holds_no_secret(
    run_cli: Run, registry: RunningRegistry, team_dir: Path, tmp_path: Path
) -> None:
    secret_model(team_dir)
    env = {**registry.env(), "TEAM_SECRET": SECRET}
    plan = tmp_path / "plan.json"
    made = run_cli("diff", "--dir", str(team_dir), "--out", str(plan), env=env)
    assert made.returncode == 2, made.stderr
    text = plan.read_text()
    assert SECRET not in text and SECRET not in made.stdout + made.stderr
    assert stat.S_IMODE(os.stat(plan).st_mode) == 0o600
    assert {c["id"] for c in json.loads(text)["changes"]} == {
        "meetkai:team-a",
        "meetkai:team-b",
        "meetkai:team-secret",
    }
    # A file added after the plan is not part of it: the plan is applied, not a new one.
    write_model(team_dir, "meetkai:team-late")
    applied = run_cli("sync", "--dir", str(team_dir), "--plan", str(plan), env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    entries = live(registry)
    assert entries["meetkai:team-secret"]["definition"]["auth"]["value"] == SECRET
    assert "meetkai:team-late" not in entries
    assert SECRET not in applied.stdout + applied.stderr


def test_stale_plan_is_refused_and_writes_nothing(
    run_cli: Run, registry: RunningRegistry, team_dir: Path, tmp_path: Path
) -> None:
    env = registry.env()
    assert run_cli("sync", "--dir", str(team_dir), env=env).returncode == 0
    write_model(team_dir, "meetkai:team-a", extra="rpm = 10")
    plan = tmp_path / "plan.json"
    assert run_cli("diff", "--dir", str(team_dir), "--out", str(plan), env=env).returncode == 2
    # Someone else changes the entry between plan and apply.
    write_model(team_dir, "meetkai:team-a", extra="rpm = 99")
    assert run_cli("sync", "--dir", str(team_dir), env=env).returncode == 0
    before = registry.counts()
    stale = run_cli("sync", "--dir", str(team_dir), "--plan", str(plan), env=env)
    assert stale.returncode == 1
    assert "meetkai:team-a: the registry entry changed since the plan was made" in stale.stderr
    assert "the plan is stale, nothing was written" in stale.stderr
    after = registry.counts()
    assert (after.get("add"), after.get("update")) == (before.get("add"), before.get("update"))
    assert live(registry)["meetkai:team-a"]["definition"]["rpm"] == 99


def test_plan_refused_when_the_secret_changed(
    registry: RunningRegistry, team_dir: Path, tmp_path: Path
) -> None:
    secret_model(team_dir)
    plan = tmp_path / "plan.json"
    made = invoke(registry, "diff", "--dir", str(team_dir), "--out", str(plan), TEAM_SECRET=SECRET)
    assert made.exit_code == 2
    result = invoke(
        registry, "sync", "--dir", str(team_dir), "--plan", str(plan), TEAM_SECRET=SECRET_LATER
    )
    assert result.exit_code == 1
    assert "meetkai:team-secret: auth.value: the secret in the files is not the one planned" in (
        result.stderr
    )
    assert SECRET not in result.output and SECRET_LATER not in result.output
    assert live(registry) == {}


def test_plan_for_another_registry_or_not_a_plan_is_refused(
    registry: RunningRegistry, team_dir: Path, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    assert invoke(registry, "diff", "--dir", str(team_dir), "--out", str(plan)).exit_code == 2
    other = {"MKA1_API_URL": registry.url + "/"}
    result = invoke(registry, "sync", "--dir", str(team_dir), "--plan", str(plan), **other)
    assert result.exit_code == 1 and "the plan was made against" in result.stderr
    plan.write_text("{}")
    result = invoke(registry, "sync", "--dir", str(team_dir), "--plan", str(plan))
    assert result.exit_code == 1 and "not a saved plan" in result.stderr
    assert live(registry) == {}


def test_no_plan_is_saved_when_files_are_invalid(
    registry: RunningRegistry, team_dir: Path, tmp_path: Path
) -> None:
    (team_dir / "broken.toml").write_text("x = = 1\n")
    plan = tmp_path / "plan.json"
    result = invoke(registry, "diff", "--dir", str(team_dir), "--out", str(plan))
    assert result.exit_code == 1 and not plan.exists()
    assert "plan not written" in result.stderr


# --- pull-request output ----------------------------------------------------------------------


def test_markdown_for_a_pull_request_comment(registry: RunningRegistry, team_dir: Path) -> None:
    assert invoke(registry, "sync", "--dir", str(team_dir)).exit_code == 0
    write_model(team_dir, "meetkai:team-a", extra="rpm = 10")
    path = write_model(
        team_dir, "meetkai:team-b", auth='type = "api-key"\nvalue = "${TEAM_SECRET}"'
    )
    secret_model(team_dir)
    result = invoke(registry, "diff", "--dir", str(team_dir), "-o", "markdown", TEAM_SECRET=SECRET)
    assert result.exit_code == 2
    md = result.stdout
    assert md.startswith("<!-- reconciler-plan -->\n### reconciler diff\n")
    assert "**Plan: 1 to create, 2 to update, 0 to delete, 0 immutable skipped, 0 invalid.**" in md
    assert "| ~ | <code>meetkai:team-a</code> | update |" in md
    assert f"| {path} |" in md
    assert "<details><summary><code>meetkai:team-a</code>: update</summary>" in md
    assert "+ rpm: 10" in md
    assert SECRET not in md and "(redacted)" in md


def test_github_annotations_for_diff(registry: RunningRegistry, team_dir: Path) -> None:
    (team_dir / "misnamed.toml").write_text(model_toml("meetkai:team-z"))
    result = invoke(registry, "diff", "--dir", str(team_dir), "-o", "github")
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert any(
        line.startswith(f"::warning file={team_dir}/misnamed.toml,line=1,col=1,title=id::")
        for line in lines
    ), lines
    assert any(
        line.startswith(f"::notice file={team_dir}/meetkai_team-a.toml,line=1,")
        and "title=create meetkai%3Ateam-a::not in the registry" in line
        for line in lines
    ), lines


# --- select, progress, pipes ------------------------------------------------------------------


def test_select_plans_and_syncs_only_matching_ids(
    registry: RunningRegistry, team_dir: Path
) -> None:
    write_model(team_dir, "meetkai:other-x")
    result = invoke(registry, "sync", "--dir", str(team_dir), "--select", "meetkai:team-*")
    assert result.exit_code == 0
    assert set(live(registry)) == {"meetkai:team-a", "meetkai:team-b"}
    result = invoke(
        registry,
        "diff",
        "--dir",
        str(team_dir),
        "-s",
        "meetkai:other-x",
        "-s",
        "nothing",
        "-o",
        "json",
    )
    doc = json.loads(result.stdout)
    assert [(c["id"], c["action"]) for c in doc["changes"]] == [("meetkai:other-x", "create")]


def test_sync_prints_the_plan_first_then_a_line_per_write_in_a_pipe(
    run_cli: Run, registry: RunningRegistry, team_dir: Path
) -> None:
    long_id = "meetkai:" + "x" * 82
    assert len(long_id) == 90
    write_model(team_dir, long_id)
    result = run_cli("sync", "--dir", str(team_dir), env=registry.env())
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    plan_at = lines.index(next(line for line in lines if line.startswith("Plan: 3 to create")))
    writes = [i for i, line in enumerate(lines) if line.startswith("[")]
    assert len(writes) == 3 and plan_at < min(writes)
    assert f"create {long_id}: ok" in "\n".join(lines[i] for i in writes)
    assert lines[-1].startswith("Applied: 3 of 3 writes succeeded")
    assert any(line.startswith(f"+ {long_id} (") for line in lines)  # whole, not cut at 80
    quiet = run_cli("sync", "--dir", str(team_dir), "-q", env=registry.env())
    assert not any(line.startswith("[") for line in quiet.stdout.splitlines())


def test_help_shows_env_vars_and_defaults(run_cli: Run) -> None:
    result = run_cli("diff", "--help", env={**clean_env(), "COLUMNS": "200"})
    assert result.returncode == 0
    assert "env var: MKA1_API_URL" in result.stdout
    assert "env var: MKA1_ON_BEHALF_OF" in result.stdout
    assert "default: (./reconciler.toml if present)" in result.stdout
    assert "default: models.d" in result.stdout
    assert "--install-completion" in run_cli("--help", env={**clean_env(), "COLUMNS": "200"}).stdout


def test_saved_plans_refuse_environments(tmp_path: Path, team_dir: Path) -> None:
    # --select and --output markdown|github work with environments: see test_environments.
    config = tmp_path / "envs.toml"
    config.write_text(
        '[environments.prod]\nregistry_url = "http://127.0.0.1:1"\napi_key_env = "PROD_KEY"\n'
    )
    base = ["--dir", str(team_dir), "--config", str(config)]
    for extra in (
        ["diff", "--out", str(tmp_path / "p.json")],
        ["sync", "--plan", str(tmp_path / "p.json")],
    ):
        result = invoke(None, *extra, *base)
        assert result.exit_code == 1, extra
        assert "not available with environments yet" in result.stderr
    assert not (tmp_path / "p.json").exists()


def test_health_json_error_object_when_the_registry_is_down(team_dir: Path) -> None:
    args = ["health", "--dir", str(team_dir), "-o", "json", "--timeout", "1"]
    result = CliRunner().invoke(app, args, env=gone_env())
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]
