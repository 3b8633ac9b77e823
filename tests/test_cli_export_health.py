"""``reconciler export`` and ``reconciler health`` against a real local registry on loopback, with
real files in a temp dir: in-process (``run_cli``), one of each as a subprocess."""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import API, minimal

from reconciler import source
from reconciler.server.app import make_entry
from reconciler.server.store import Store

REPO = Path(__file__).resolve().parent.parent
SECRET_KEY = "sk-live-export-test-0001"
SECRET_BEARER = "Bearer proxy-export-test-0002"
SECRET_VARS = {
    "MEETKAI_TEAM_SECRET_API_KEY": SECRET_KEY,
    "MEETKAI_TEAM_PROXY_HEADER_AUTHORIZATION": SECRET_BEARER,
}


def shipped() -> dict[str, dict[str, Any]]:
    loaded = source.load_dir(REPO / "models.d")
    assert loaded.ok and len(loaded.models) >= 6
    return {i: dict(m.body) for i, m in loaded.models.items()}


def secret_models() -> list[dict[str, Any]]:
    return [
        minimal("meetkai:team-secret", auth={"type": "api-key", "value": SECRET_KEY}),
        minimal(
            "meetkai:team-proxy",
            auth={
                "type": "custom-headers",
                "headers": {"Authorization": SECRET_BEARER, "X-Tenant": "platform"},
            },
        ),
    ]


def add(registry: Any, *bodies: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {registry.api_key}"}
    with httpx.Client(base_url=registry.url, headers=headers, trust_env=False) as client:
        for body in bodies:
            response = client.post(API, json=body)
            assert response.status_code in (200, 201), response.text


def get(registry: Any, model_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {registry.api_key}"}
    with httpx.Client(base_url=registry.url, headers=headers, trust_env=False) as client:
        response = client.get(f"{API}/{model_id}")
    response.raise_for_status()
    return response.json()


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- export -----------------------------------------------------------------------------------


def test_export_round_trip_with_placeholders(registry, run_cli_process, tmp_path: Path) -> None:
    models = shipped()
    add(registry, *models.values(), *secret_models())
    out_dir = tmp_path / "adopted" / "models.d"  # does not exist yet: export creates it

    result = run_cli_process("export", "--dir", str(out_dir), env=registry.env())
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(
        [f"{i.replace(':', '_')}.toml" for i in models]
        + ["meetkai_team-proxy.toml", "meetkai_team-secret.toml"]
    )
    for model_id, body in models.items():
        data = tomllib.loads((out_dir / f"{model_id.replace(':', '_')}.toml").read_text())
        assert data == body  # no source/immutable, nothing added or lost
    # Not one secret in any file or any output; the variables to set are listed.
    everything = result.stdout + result.stderr
    everything += "".join(p.read_text() for p in out_dir.iterdir())
    assert SECRET_KEY not in everything and SECRET_BEARER not in everything
    for name in SECRET_VARS:
        assert f"export {name}=" in result.stdout
    assert "X-Tenant" in (out_dir / "meetkai_team-proxy.toml").read_text()

    # Without the variables the secret-bearing files fail, and diff changes nothing for them.
    missing = run_cli_process("validate", "--dir", str(out_dir), env=registry.env())
    assert missing.returncode == 1
    assert "MEETKAI_TEAM_SECRET_API_KEY is not set" in missing.stderr
    diff_missing = run_cli_process("diff", "--dir", str(out_dir), env=registry.env())
    assert diff_missing.returncode == 1
    assert "to delete" in diff_missing.stdout and "0 to delete" in diff_missing.stdout
    sync_missing = run_cli_process("sync", "--dir", str(out_dir), env=registry.env())
    assert sync_missing.returncode == 1
    assert get(registry, "meetkai:team-secret")["definition"]["auth"]["value"] == SECRET_KEY
    proxy = get(registry, "meetkai:team-proxy")["definition"]["auth"]["headers"]
    assert proxy["Authorization"] == SECRET_BEARER

    # With the variables set: valid, and zero changes.
    env = {**registry.env(), **SECRET_VARS}
    valid = run_cli_process("validate", "--dir", str(out_dir), env=env)
    assert valid.returncode == 0, valid.stdout
    diff = run_cli_process("diff", "--dir", str(out_dir), "--output", "json", env=env)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    summary = json.loads(diff.stdout)["summary"]
    assert summary["create"] == summary["update"] == summary["delete"] == 0
    assert summary["unchanged"] == len(models) + 2


def test_export_with_secrets_round_trips_without_variables(
    registry, run_cli, tmp_path: Path
) -> None:
    add(registry, *secret_models())
    out_dir = tmp_path / "out"
    result = run_cli("export", "--dir", str(out_dir), "--with-secrets", env=registry.env())
    assert result.returncode == 0, result.stderr
    assert "export MEETKAI" not in result.stdout
    assert "--with-secrets" in result.stderr  # the warning, which names no secret
    assert SECRET_KEY not in result.stdout + result.stderr
    assert SECRET_KEY in (out_dir / "meetkai_team-secret.toml").read_text()
    assert (out_dir / "meetkai_team-secret.toml").stat().st_mode & 0o077 == 0
    diff = run_cli("diff", "--dir", str(out_dir), env=registry.env())
    assert diff.returncode == 0, diff.stdout + diff.stderr


def test_export_does_not_overwrite_without_the_flag(registry, run_cli, tmp_path: Path) -> None:
    add(registry, minimal("meetkai:a"), minimal("meetkai:b"))
    out_dir = tmp_path / "out"
    assert run_cli("export", "--dir", str(out_dir), env=registry.env()).returncode == 0
    edited = out_dir / "meetkai_a.toml"
    original = edited.read_text()
    edited.write_text("# hand edit\n" + original)

    again = run_cli("export", "--dir", str(out_dir), env=registry.env())
    assert again.returncode == 0
    assert edited.read_text().startswith("# hand edit")
    assert "skipped" in again.stdout and "meetkai_a.toml" in again.stdout
    assert "0 written" in again.stdout

    forced = run_cli("export", "--dir", str(out_dir), "--overwrite", env=registry.env())
    assert forced.returncode == 0
    assert edited.read_text() == original
    assert "overwrote" in forced.stdout


def test_hostile_ids_stay_inside_the_directory(registry, run_cli, tmp_path: Path) -> None:
    # The local registry refuses ids outside the grammar; another registry may hold them.
    hostile = ["../x", "a/b", "..", "meetkai:" + "x" * 300, "evil\x1b[2J\nid", "c1\x9bid"]
    fine = ["a:b", "A:B"]
    add(registry, *(minimal(i) for i in fine))
    store = Store(registry.db)
    for model_id in hostile:
        store.put(make_entry(minimal(model_id)))
    store.close()
    out_dir = tmp_path / "deep" / "out"
    before = files_under(tmp_path)
    result = run_cli("export", "--dir", str(out_dir), env=registry.env())
    assert result.returncode == 1
    new = files_under(tmp_path) - before
    new = {p for p in new if not p.name.startswith("registry-")}  # the server's own db/log
    assert {p.parent for p in new} == {out_dir}
    declared = {tomllib.loads(p.read_text())["id"] for p in new}
    assert declared == set(fine)
    # Each hostile id is named as rejected, escaped: no terminal control reaches the output.
    assert result.stderr.count("invalid id") == len(hostile)
    assert "evil\\x1b[2J\\nid" in result.stderr and "c1\\x9bid" in result.stderr, result.stderr
    for text in (result.stdout, result.stderr):
        assert "\x1b" not in text and "\x9b" not in text
    assert run_cli("validate", "--dir", str(out_dir), env=registry.env()).returncode == 0
    # The hostile entries are orphans of this directory: diff and health print them escaped.
    diff = run_cli(
        "diff",
        "--dir",
        str(out_dir),
        "--prune",
        "--owns",
        "*",
        "--max-deletes",
        "9",
        env=registry.env(),
    )
    assert diff.returncode == 2, diff.stdout + diff.stderr
    assert "- evil\\x1b[2J\\nid: delete" in diff.stdout
    health = run_cli("health", "--all", env=registry.env())
    as_json = run_cli(
        "diff",
        "--dir",
        str(out_dir),
        "--prune",
        "--owns",
        "*",
        "--max-deletes",
        "9",
        "-o",
        "json",
        env=registry.env(),
    )
    for text in (diff.stdout, diff.stderr, health.stdout, health.stderr, as_json.stdout):
        assert "\x1b" not in text and "\x9b" not in text and "\nid" not in text
    ids = {c["id"] for c in json.loads(as_json.stdout)["changes"]}
    assert set(hostile) <= ids  # escaped in JSON, the same ids once decoded


def test_immutable_entries_only_when_asked(registry_factory, run_cli, models_dir, tmp_path) -> None:
    registry = registry_factory(immutable_from=models_dir)
    add(registry, minimal("meetkai:mine"))
    out_dir = tmp_path / "out"
    plain = run_cli("export", "--dir", str(out_dir), env=registry.env())
    assert plain.returncode == 0, plain.stderr
    assert [p.name for p in out_dir.iterdir()] == ["meetkai_mine.toml"]
    assert "--include-immutable" in plain.stdout
    every = run_cli("export", "--dir", str(out_dir), "--include-immutable", env=registry.env())
    assert every.returncode == 0, every.stderr
    assert len(list(out_dir.iterdir())) == 1 + len(list(models_dir.glob("*.toml")))


def test_entries_the_schema_rejects_are_written_nowhere(
    registry_factory, run_cli, tmp_path: Path
) -> None:
    # --add-defaults stores defaults and a key of its own ("version"): those are left out with a
    # note; an entry whose declared fields the schema rejects is written nowhere.
    registry = registry_factory(add_defaults=True)
    add(registry, minimal("meetkai:a"))
    bad = minimal("meetkai:bad")
    bad["capabilities"] = {**bad["capabilities"], "reasoning": "maybe"}
    store = Store(registry.db)
    store.put({**get(registry, "meetkai:a"), "id": "meetkai:bad", "definition": bad})
    store.close()
    out_dir = tmp_path / "out"
    result = run_cli("export", "--dir", str(out_dir), env=registry.env())
    assert result.returncode == 1
    assert "meetkai:bad" in result.stderr and "capabilities.reasoning" in result.stderr
    assert "note: meetkai:a: left out keys the registry added" in result.stdout
    assert [p.name for p in out_dir.iterdir()] == ["meetkai_a.toml"]
    diff = run_cli("diff", "--dir", str(out_dir), "--output", "json", env=registry.env())
    summary = json.loads(diff.stdout)["summary"]
    assert (summary["create"], summary["update"], summary["unchanged"]) == (0, 0, 1)


def test_export_registry_errors_are_one_line(registry, run_cli, tmp_path: Path) -> None:
    env = {**registry.env(), "MKA1_API_KEY": "wrong-key-do-not-print"}
    result = run_cli("export", "--dir", str(tmp_path / "out"), env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "wrong-key-do-not-print" not in result.stdout + result.stderr
    gone = {**registry.env(), "MKA1_API_URL": closed_port_url()}
    result = run_cli("export", "--dir", str(tmp_path / "out"), "--timeout", "1", env=gone)
    assert result.returncode == 1 and "cannot reach" in result.stderr


# --- health -----------------------------------------------------------------------------------


@pytest.fixture
def health_setup(registry, upstream, run_cli, tmp_path: Path) -> dict[str, Any]:
    """A live model (probes the upstream), a dead one (a closed port), exported into a dir."""
    live = minimal("meetkai:live", healthCheck={"url": upstream.url + "/health"})
    dead = minimal("meetkai:dead", baseUrl=closed_port_url() + "/v1")
    add(registry, live, dead)
    models = tmp_path / "models.d"
    assert run_cli("export", "--dir", str(models), env=registry.env()).returncode == 0
    return {"registry": registry, "upstream": upstream, "dir": models}


def health_json(run_cli, env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("health", *args, "--output", "json", env=env)
    assert result.stdout, result.stderr
    doc = json.loads(result.stdout)
    return result.returncode, {m["id"]: m for m in doc["models"]} | {"summary": doc["summary"]}


def test_health_without_check_shows_the_registry_state(health_setup, run_cli) -> None:
    registry, models = health_setup["registry"], health_setup["dir"]
    result = run_cli("health", "--dir", str(models), env=registry.env())
    # Never probed: the registry's default state, shown as never checked.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "meetkai:live" in result.stdout and "meetkai:dead" in result.stdout
    assert "never" in result.stdout
    assert "\x1b[" not in result.stdout  # no colour codes when piped
    assert len(health_setup["upstream"].requests) == 0


def test_health_check_probes_and_fails_on_a_dead_model(health_setup, run_cli_process) -> None:
    registry, models, upstream = (health_setup[k] for k in ("registry", "dir", "upstream"))
    code, doc = health_json(run_cli_process, registry.env(), "--dir", str(models), "--check")
    assert code == 1
    assert doc["meetkai:live"]["available"] is True and doc["meetkai:live"]["error"] is None
    assert doc["meetkai:dead"]["available"] is False and doc["meetkai:dead"]["error"]
    assert doc["meetkai:dead"]["last_check"].endswith("Z")
    assert doc["summary"] == {"available": 1, "unavailable": 1, "unknown": 0}
    assert ("GET", "/health") in upstream.requests

    # Without --check, the stored result of that probe is shown, and still fails CI.
    code, doc = health_json(run_cli_process, registry.env(), "--dir", str(models))
    assert code == 1 and doc["meetkai:dead"]["available"] is False

    text = run_cli_process("health", "--dir", str(models), env=registry.env())
    assert text.returncode == 1
    row = next(line for line in text.stdout.splitlines() if "meetkai:dead" in line)
    assert " no " in row


def test_health_exit_zero_when_every_listed_model_is_up(health_setup, run_cli) -> None:
    registry, models, upstream = (health_setup[k] for k in ("registry", "dir", "upstream"))
    (models / "meetkai_dead.toml").unlink()
    code, doc = health_json(run_cli, registry.env(), "--dir", str(models), "--check")
    assert code == 0 and set(doc) == {"meetkai:live", "summary"}
    upstream.healthy = False
    code, doc = health_json(run_cli, registry.env(), "--dir", str(models), "--check")
    assert code == 1 and doc["meetkai:live"]["available"] is False
    assert "503" in doc["meetkai:live"]["error"]
    upstream.healthy = True
    code, _ = health_json(run_cli, registry.env(), "--dir", str(models), "--check")
    assert code == 0


def test_health_all_and_models_missing_from_the_registry(health_setup, run_cli) -> None:
    registry, models = health_setup["registry"], health_setup["dir"]
    (models / "meetkai_dead.toml").unlink()
    (models / "ghost.toml").write_text(
        (models / "meetkai_live.toml").read_text().replace("meetkai:live", "meetkai:ghost")
    )
    code, doc = health_json(run_cli, registry.env(), "--dir", str(models))
    assert code == 1
    assert doc["meetkai:ghost"] == {
        "id": "meetkai:ghost",
        "available": False,
        "last_check": None,
        "error": "not in registry",
    }
    code, doc = health_json(run_cli, registry.env(), "--all", "--check")
    assert set(doc) == {"meetkai:live", "meetkai:dead", "summary"}
    assert code == 1


def test_health_registry_errors_are_one_line(health_setup, run_cli) -> None:
    registry, models = health_setup["registry"], health_setup["dir"]
    env = {**registry.env(), "MKA1_API_KEY": "wrong-key-do-not-print"}
    result = run_cli("health", "--dir", str(models), env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "wrong-key-do-not-print" not in result.stderr
    missing_dir = run_cli("health", "--dir", str(models / "nope"), env=registry.env())
    assert missing_dir.returncode == 1 and "no such directory" in missing_dir.stderr
