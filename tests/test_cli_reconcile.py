"""``reconciler diff`` and ``sync`` against a real local registry on a loopback port, over real
files in a temp dir: in-process (``run_cli``: the same parsing, output and exit status), and a few
as a user runs them, a subprocess (``run_cli_process``)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from conftest import API_PREFIX, RunningRegistry

Run = Callable[..., subprocess.CompletedProcess[str]]

SECRET_OLD = "sk-old-secret-9f8e7d"
SECRET_NEW = "sk-new-secret-1a2b3c"
HEADER_OLD = "tenant-old-5544"
HEADER_NEW = "tenant-new-6655"


def model_toml(model_id: str, *, extra: str = "", auth: str = 'type = "none"') -> str:
    return f"""id = "{model_id}"
provider = "openai-compatible"
modelId = "{model_id.split(":")[-1]}"
apiFormat = "responses"
created = 1704067200
contextWindow = 8192
{extra}

[auth]
{auth}

[capabilities]
reasoning = false

[capabilities.modalities]
input = ["text"]
output = ["text"]
"""


def write_model(directory: Path, model_id: str, **kwargs: Any) -> Path:
    path = directory / f"{model_id.replace(':', '_')}.toml"
    path.write_text(model_toml(model_id, **kwargs))
    return path


def live(registry: RunningRegistry) -> dict[str, dict[str, Any]]:
    """The registry's entries by id, read directly over HTTP."""
    with httpx.Client(
        base_url=registry.url,
        headers={"Authorization": f"Bearer {registry.api_key}"},
        trust_env=False,
    ) as client:
        response = client.get(API_PREFIX)
    response.raise_for_status()
    return {e["id"]: e for e in response.json()["data"]}


def diff_json(run_cli: Run, registry: RunningRegistry, directory: Path, *args: str) -> Any:
    result = run_cli("diff", "--dir", str(directory), "-o", "json", *args, env=registry.env())
    assert result.returncode in (0, 2), result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def run_cli(run_cli: Run, tmp_path: Path) -> Run:
    """The shared ``run_cli``, run from a temp dir so the repository's reconciler.toml (which
    sets ``owns``) is not picked up unless a test asks for it."""

    def run(*args: str, cwd: Path | str | None = None, **kwargs: Any) -> Any:
        return run_cli(*args, cwd=cwd or tmp_path, **kwargs)

    return run


@pytest.fixture
def team_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "team.d"
    directory.mkdir()
    for name in ("a", "b", "c"):
        write_model(directory, f"meetkai:team-{name}")
    return directory


# --- create, update, unchanged ----------------------------------------------------------------


def test_diff_sync_diff_round_trip(
    run_cli_process: Run, registry: RunningRegistry, models_dir: Path
) -> None:
    before = run_cli_process("diff", "--dir", str(models_dir), env=registry.env())
    assert before.returncode == 2, before.stderr
    assert "Plan: 6 to create, 0 to update, 0 to delete, 0 immutable skipped, 0 invalid." in (
        before.stdout
    )
    assert registry.counts()["writes"] == 0  # diff changes nothing

    synced = run_cli_process("sync", "--dir", str(models_dir), env=registry.env())
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "6 of 6 writes succeeded" in synced.stdout
    assert set(live(registry)) == {p.stem.replace("_", ":", 1) for p in models_dir.glob("*.toml")}

    after = run_cli_process("diff", "--dir", str(models_dir), env=registry.env())
    assert after.returncode == 0, after.stdout
    assert "0 to create, 0 to update, 0 to delete" in after.stdout


def test_update_shows_old_and_new_and_is_applied(
    run_cli: Run, registry: RunningRegistry, team_dir: Path
) -> None:
    assert run_cli("sync", "--dir", str(team_dir), env=registry.env()).returncode == 0
    path = team_dir / "meetkai_team-a.toml"
    path.write_text(path.read_text().replace("contextWindow = 8192", "contextWindow = 16384"))

    result = run_cli("diff", "--dir", str(team_dir), env=registry.env())
    assert result.returncode == 2
    assert "~ meetkai:team-a" in result.stdout
    assert "~ contextWindow: 8192 -> 16384" in result.stdout
    assert "meetkai:team-b" not in result.stdout  # unchanged models are not listed in text

    doc = diff_json(run_cli, registry, team_dir)
    assert doc["summary"] == {
        "create": 0,
        "update": 1,
        "delete": 0,
        "unchanged": 2,
        "immutable": 0,
        "invalid": 0,
        "applied": 0,
        "failed": 0,
        "notAttempted": 0,
        "invalidFiles": 0,
        "warnings": 0,
    }
    (change,) = [c for c in doc["changes"] if c["action"] == "update"]
    assert change["id"] == "meetkai:team-a"
    assert change["file"].endswith("meetkai_team-a.toml")
    assert change["fields"] == [
        {"path": "contextWindow", "op": "change", "old": 8192, "new": 16384}
    ]

    assert run_cli("sync", "--dir", str(team_dir), env=registry.env()).returncode == 0
    assert live(registry)["meetkai:team-a"]["definition"]["contextWindow"] == 16384


def test_second_sync_writes_nothing(
    run_cli: Run, registry: RunningRegistry, models_dir: Path
) -> None:
    assert run_cli("sync", "--dir", str(models_dir), env=registry.env()).returncode == 0
    registry.control(reset_counts=True)
    second = run_cli("sync", "--dir", str(models_dir), env=registry.env())
    assert second.returncode == 0
    counts = registry.counts()
    assert counts["writes"] == 0
    assert counts["list"] == 1
    assert "Nothing to write." in second.stdout


def test_dropped_field_is_removed(run_cli: Run, registry: RunningRegistry, team_dir: Path) -> None:
    path = write_model(team_dir, "meetkai:team-a", extra='displayName = "Team A"\nrpm = 60')
    assert run_cli("sync", "--dir", str(team_dir), env=registry.env()).returncode == 0
    assert live(registry)["meetkai:team-a"]["definition"]["displayName"] == "Team A"

    path.write_text(model_toml("meetkai:team-a", extra="rpm = 60"))
    result = run_cli("diff", "--dir", str(team_dir), env=registry.env())
    assert result.returncode == 2
    assert '- displayName: "Team A"' in result.stdout

    assert run_cli("sync", "--dir", str(team_dir), env=registry.env()).returncode == 0
    assert "displayName" not in live(registry)["meetkai:team-a"]["definition"]
    assert run_cli("diff", "--dir", str(team_dir), env=registry.env()).returncode == 0


def test_conflict_on_add_falls_back_to_patch_and_drops_fields(
    run_cli: Run, registry_factory: Callable[..., RunningRegistry], team_dir: Path
) -> None:
    registry = registry_factory(strict_add=True)
    path = write_model(team_dir, "meetkai:team-a", extra='displayName = "Team A"')
    assert run_cli("sync", "--dir", str(team_dir), env=registry.env()).returncode == 0

    path.write_text(model_toml("meetkai:team-a", extra="rpm = 99"))
    registry.control(reset_counts=True)
    result = run_cli("sync", "--dir", str(team_dir), env=registry.env())
    assert result.returncode == 0, result.stdout + result.stderr
    counts = registry.counts()
    assert (counts["add"], counts["update"]) == (1, 1)  # the add answered 409, then a PATCH
    definition = live(registry)["meetkai:team-a"]["definition"]
    assert definition["rpm"] == 99
    assert "displayName" not in definition
    assert run_cli("diff", "--dir", str(team_dir), env=registry.env()).returncode == 0


def test_update_method_patch(run_cli: Run, registry: RunningRegistry, team_dir: Path) -> None:
    path = write_model(team_dir, "meetkai:team-a", extra="hidden = true")
    assert run_cli("sync", "--dir", str(team_dir), env=registry.env()).returncode == 0
    path.write_text(model_toml("meetkai:team-a", extra="rpm = 7"))
    registry.control(reset_counts=True)
    args = ("sync", "--dir", str(team_dir), "--update-method", "patch")
    assert run_cli(*args, env=registry.env()).returncode == 0
    counts = registry.counts()
    assert (counts["add"], counts["update"]) == (0, 1)
    definition = live(registry)["meetkai:team-a"]["definition"]
    assert definition["rpm"] == 7 and "hidden" not in definition


def test_server_added_defaults_give_no_diff(
    run_cli: Run, registry_factory: Callable[..., RunningRegistry], models_dir: Path
) -> None:
    registry = registry_factory(add_defaults=True)
    assert run_cli("sync", "--dir", str(models_dir), env=registry.env()).returncode == 0
    stored = live(registry)["meetkai:team-vision"]["definition"]
    assert stored["version"] == 1 and stored["aliases"] == []  # the server did add things
    result = run_cli("diff", "--dir", str(models_dir), env=registry.env())
    assert result.returncode == 0, result.stdout
    assert "0 to create, 0 to update" in result.stdout


# --- immutable --------------------------------------------------------------------------------


@pytest.fixture
def yaml_registry(
    registry_factory: Callable[..., RunningRegistry], tmp_path: Path
) -> RunningRegistry:
    gateway = tmp_path / "gateway.d"
    gateway.mkdir()
    write_model(gateway, "meetkai:team-yaml", extra="rpm = 1")
    return registry_factory(immutable_from=gateway)


def test_immutable_ids_are_never_written(
    run_cli: Run, yaml_registry: RunningRegistry, team_dir: Path
) -> None:
    write_model(team_dir, "meetkai:team-yaml", extra="rpm = 500")
    diff = run_cli("diff", "--dir", str(team_dir), env=yaml_registry.env())
    assert diff.returncode == 2  # the three creates
    assert "! meetkai:team-yaml" in diff.stdout and "immutable" in diff.stdout
    assert "1 immutable skipped" in diff.stdout

    result = run_cli("sync", "--dir", str(team_dir), env=yaml_registry.env())
    assert result.returncode == 0, result.stdout
    assert yaml_registry.counts()["add"] == 3
    assert live(yaml_registry)["meetkai:team-yaml"]["definition"]["rpm"] == 1

    # Alone, an immutable conflict is not a pending change nor an error, unless --strict.
    again = run_cli("diff", "--dir", str(team_dir), env=yaml_registry.env())
    assert again.returncode == 0, again.stdout
    strict_diff = run_cli("diff", "--dir", str(team_dir), "--strict", env=yaml_registry.env())
    assert strict_diff.returncode == 1
    assert run_cli("sync", "--dir", str(team_dir), env=yaml_registry.env()).returncode == 0
    strict_sync = run_cli("sync", "--dir", str(team_dir), "--strict", env=yaml_registry.env())
    assert strict_sync.returncode == 1
    assert yaml_registry.counts()["writes"] == 3


# --- prune ------------------------------------------------------------------------------------


@pytest.fixture
def pruneable(run_cli: Run, registry: RunningRegistry, team_dir: Path) -> RunningRegistry:
    """The team's three models plus one of another team's, all synced."""
    other = team_dir.parent / "other.d"
    other.mkdir()
    write_model(other, "meetkai:other-x")
    assert run_cli("sync", "--dir", str(team_dir), env=registry.env()).returncode == 0
    assert run_cli("sync", "--dir", str(other), env=registry.env()).returncode == 0
    (team_dir / "meetkai_team-c.toml").unlink()
    return registry


def test_prune_without_owns_is_refused(
    run_cli: Run, pruneable: RunningRegistry, team_dir: Path
) -> None:
    result = run_cli("sync", "--dir", str(team_dir), "--prune", env=pruneable.env())
    assert result.returncode == 1
    assert "--owns" in result.stderr
    assert "meetkai:team-c" in live(pruneable)


def test_prune_deletes_only_owned_entries(
    run_cli: Run, pruneable: RunningRegistry, team_dir: Path
) -> None:
    without = run_cli("diff", "--dir", str(team_dir), env=pruneable.env())
    assert without.returncode == 0  # not pruning: an undeclared entry is not a change

    args = ("--dir", str(team_dir), "--prune", "--owns", "meetkai:team-*")
    diff = run_cli("diff", *args, env=pruneable.env())
    assert diff.returncode == 2
    assert "- meetkai:team-c" in diff.stdout and "other-x" not in diff.stdout

    result = run_cli("sync", *args, env=pruneable.env())
    assert result.returncode == 0, result.stdout
    assert set(live(pruneable)) == {"meetkai:team-a", "meetkai:team-b", "meetkai:other-x"}
    assert run_cli("diff", *args, env=pruneable.env()).returncode == 0


def test_prune_owns_from_config_file(
    run_cli: Run, pruneable: RunningRegistry, team_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "reconciler.toml"
    config.write_text('owns = ["meetkai:team-*"]\n')
    result = run_cli(
        "sync", "--dir", str(team_dir), "--prune", "--config", str(config), env=pruneable.env()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "meetkai:team-c" not in live(pruneable)
    # Found as ./reconciler.toml too.
    write_model(team_dir.parent / "other.d", "meetkai:team-z")
    run_cli("sync", "--dir", str(team_dir.parent / "other.d"), env=pruneable.env())
    found = run_cli("diff", "--dir", str(team_dir), "--prune", cwd=tmp_path, env=pruneable.env())
    assert found.returncode == 2 and "- meetkai:team-z" in found.stdout


def test_config_file_unknown_key_is_an_error(
    run_cli: Run, registry: RunningRegistry, team_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('own = ["meetkai:*"]\n')
    result = run_cli("diff", "--dir", str(team_dir), "--config", str(config), env=registry.env())
    assert result.returncode == 1
    assert "own: unknown key; did you mean 'owns'?" in result.stderr


def test_ignore_rules_from_config_file(
    run_cli: Run, registry: RunningRegistry, team_dir: Path, tmp_path: Path
) -> None:
    path = write_model(team_dir, "meetkai:team-a", extra="rpm = 10")
    assert run_cli("sync", "--dir", str(team_dir), env=registry.env()).returncode == 0
    path.write_text(model_toml("meetkai:team-a", extra="rpm = 20"))
    config = tmp_path / "ignore.toml"
    config.write_text('[[ignore]]\npaths = ["rpm"]\nids = ["meetkai:team-*"]\n')
    args = ("diff", "--dir", str(team_dir), "--config", str(config))
    assert run_cli(*args, env=registry.env()).returncode == 0
    assert run_cli("diff", "--dir", str(team_dir), env=registry.env()).returncode == 2


def test_prune_skipped_when_a_file_is_invalid(
    run_cli: Run, pruneable: RunningRegistry, team_dir: Path
) -> None:
    (team_dir / "broken.toml").write_text("this is = = not toml\n")
    write_model(team_dir, "meetkai:team-new")
    args = ("--dir", str(team_dir), "--prune", "--owns", "meetkai:team-*")
    result = run_cli("sync", *args, env=pruneable.env())
    assert result.returncode == 1  # an invalid file is an error...
    assert "prune skipped" in result.stdout and "failed validation" in result.stdout
    assert "1 invalid" in result.stdout
    entries = live(pruneable)
    assert "meetkai:team-c" in entries  # ...nothing is deleted...
    assert "meetkai:team-new" in entries  # ...and the valid models are still applied


def test_prune_skipped_for_an_empty_directory(
    run_cli: Run, pruneable: RunningRegistry, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.d"
    empty.mkdir()
    args = ("--dir", str(empty), "--prune", "--owns", "meetkai:*")
    result = run_cli("sync", *args, "-o", "json", env=pruneable.env())
    assert result.returncode == 1  # an empty directory is an error, not "in sync"
    doc = json.loads(result.stdout)
    assert doc["summary"]["delete"] == 0
    assert "no valid model" in doc["prune_skipped"]
    assert "no model files" in doc["errors"][0]["message"]
    assert "prune skipped" in result.stderr
    assert len(live(pruneable)) == 4
    assert pruneable.counts()["remove"] == 0


def test_prune_over_max_deletes_needs_force(
    run_cli: Run, pruneable: RunningRegistry, team_dir: Path
) -> None:
    (team_dir / "meetkai_team-b.toml").unlink()
    args = ("--dir", str(team_dir), "--prune", "--owns", "meetkai:team-*", "--max-deletes", "1")
    refused = run_cli("sync", *args, env=pruneable.env())
    assert refused.returncode == 1  # a refused prune is an error, as in CI it must be seen
    assert "would delete 2 entries" in refused.stdout and "--force" in refused.stdout
    assert {"meetkai:team-b", "meetkai:team-c"} <= set(live(pruneable))

    forced = run_cli("sync", *args, "--force", env=pruneable.env())
    assert forced.returncode == 0, forced.stdout
    assert set(live(pruneable)) == {"meetkai:team-a", "meetkai:other-x"}


def test_prune_never_deletes_immutable_entries(
    run_cli: Run, yaml_registry: RunningRegistry, team_dir: Path
) -> None:
    args = ("--dir", str(team_dir), "--prune", "--owns", "meetkai:*")
    result = run_cli("sync", *args, env=yaml_registry.env())
    assert result.returncode == 0
    assert "meetkai:team-yaml" in live(yaml_registry)
    assert yaml_registry.counts()["remove"] == 0


# --- faults -----------------------------------------------------------------------------------


def test_rate_limit_with_retry_after_is_recovered(
    run_cli: Run, registry: RunningRegistry, team_dir: Path
) -> None:
    registry.control(rate_limit_next=2, retry_after=1)
    result = run_cli("sync", "--dir", str(team_dir), env=registry.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(live(registry)) == 3


def test_bursts_of_503_are_recovered(
    run_cli: Run, registry: RunningRegistry, models_dir: Path
) -> None:
    registry.control(fail_next_writes=4)
    result = run_cli("sync", "--dir", str(models_dir), env=registry.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert registry.counts()["add"] == 6 + 4
    assert run_cli("diff", "--dir", str(models_dir), env=registry.env()).returncode == 0


class RefusingProxy:
    """A loopback proxy in front of the registry that answers 422 to every write for one id:
    a model the registry keeps refusing, while every other call passes through."""

    def __init__(self, target: str, refused_id: str) -> None:
        client = httpx.Client(base_url=target, trust_env=False, timeout=10)
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                names = unquote(self.path) + body.decode(errors="replace")
                if (self.command != "GET" and f'"{refused_id}"' in names) or (
                    self.command in ("PATCH", "DELETE") and unquote(self.path).endswith(refused_id)
                ):
                    proxy.refused += 1
                    self._send(422, b'{"error": {"message": "refused by the test proxy"}}')
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                answer = client.request(self.command, self.path, content=body, headers=headers)
                self._send(answer.status_code, answer.content)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._client = client
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


@pytest.fixture
def refusing(registry: RunningRegistry) -> Iterator[RefusingProxy]:
    proxy = RefusingProxy(registry.url, "meetkai:team-b")
    yield proxy
    proxy.stop()


def test_a_failing_model_gives_exit_1_while_the_others_are_applied(
    run_cli: Run, registry: RunningRegistry, refusing: RefusingProxy, team_dir: Path
) -> None:
    env = {**registry.env(), "MKA1_API_URL": refusing.url}
    result = run_cli("sync", "--dir", str(team_dir), env=env)
    assert result.returncode == 1
    assert refusing.refused >= 1
    assert set(live(registry)) == {"meetkai:team-a", "meetkai:team-c"}
    assert "failed: add meetkai:team-b: HTTP 422" in result.stdout
    assert "2 of 3 writes succeeded" in result.stdout

    doc = json.loads(run_cli("sync", "--dir", str(team_dir), "-o", "json", env=env).stdout)
    assert doc["summary"]["failed"] == 1 and doc["summary"]["create"] == 1
    (failed,) = [c for c in doc["changes"] if c["error"]]
    assert failed["id"] == "meetkai:team-b" and "refused by the test proxy" in failed["error"]


# --- secrets ----------------------------------------------------------------------------------


def secret_models(directory: Path, value: str, header: str) -> None:
    write_model(directory, "meetkai:team-a", auth=f'type = "api-key"\nvalue = "{value}"')
    write_model(
        directory,
        "meetkai:team-b",
        auth=f'type = "custom-headers"\nheaders = {{ "X-Tenant" = "{header}" }}',
    )
    write_model(
        directory,
        "meetkai:team-c",
        auth=(
            'type = "composite"\n'
            f'strategies = [{{ type = "api-key", value = "{value}" }}, '
            f'{{ type = "custom-headers", headers = {{ "X-Tenant" = "{header}" }} }}]'
        ),
    )


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def test_secrets_never_print_but_changes_show(
    run_cli_process: Run, registry: RunningRegistry, tmp_path: Path
) -> None:
    directory = tmp_path / "secret.d"
    directory.mkdir()
    secret_models(directory, SECRET_OLD, HEADER_OLD)
    created = run_cli_process("sync", "--dir", str(directory), env=registry.env())
    assert created.returncode == 0
    assert_no_secret(created.stdout + created.stderr, SECRET_OLD, HEADER_OLD, registry.api_key)
    assert "(redacted)" in created.stdout

    secret_models(directory, SECRET_NEW, HEADER_NEW)
    every = (SECRET_OLD, SECRET_NEW, HEADER_OLD, HEADER_NEW, registry.api_key)
    text = run_cli_process("diff", "--dir", str(directory), env=registry.env())
    assert text.returncode == 2
    assert_no_secret(text.stdout + text.stderr, *every)
    assert "~ auth.value: (redacted) -> (redacted)" in text.stdout
    assert "~ auth.headers.X-Tenant: (redacted) -> (redacted)" in text.stdout
    assert "~ auth.strategies[0].value: (redacted) -> (redacted)" in text.stdout
    assert "~ auth.strategies[1].headers.X-Tenant: (redacted) -> (redacted)" in text.stdout

    raw = run_cli_process("diff", "--dir", str(directory), "-o", "json", env=registry.env())
    assert_no_secret(raw.stdout + raw.stderr, *every)
    doc = json.loads(raw.stdout)
    assert doc["summary"]["update"] == 3
    fields = {f["path"]: f for c in doc["changes"] for f in c["fields"]}
    assert fields["auth.value"] == {
        "path": "auth.value",
        "op": "change",
        "old": "(redacted)",
        "new": "(redacted)",
    }

    synced = run_cli_process("sync", "--dir", str(directory), env=registry.env())
    assert synced.returncode == 0
    assert_no_secret(synced.stdout + synced.stderr, *every)
    assert live(registry)["meetkai:team-a"]["definition"]["auth"]["value"] == SECRET_NEW


def test_secret_inside_a_replaced_block_is_redacted(
    run_cli: Run, registry: RunningRegistry, tmp_path: Path
) -> None:
    directory = tmp_path / "secret.d"
    directory.mkdir()
    write_model(directory, "meetkai:team-a", auth=f'type = "api-key"\nvalue = "{SECRET_OLD}"')
    assert run_cli("sync", "--dir", str(directory), env=registry.env()).returncode == 0
    # One strategy -> two: the list is compared whole, values inside are still redacted.
    write_model(
        directory,
        "meetkai:team-a",
        auth=(
            'type = "composite"\n'
            f'strategies = [{{ type = "api-key", value = "{SECRET_NEW}" }}, {{ type = "none" }}]'
        ),
    )
    for output in ("text", "json"):
        result = run_cli("diff", "--dir", str(directory), "-o", output, env=registry.env())
        assert result.returncode == 2
        assert_no_secret(result.stdout, SECRET_OLD, SECRET_NEW)
        assert "(redacted)" in result.stdout


# --- errors and exit codes --------------------------------------------------------------------


def test_invalid_file_diff_exit_1_and_sync_applies_the_rest(
    run_cli: Run, registry: RunningRegistry, team_dir: Path
) -> None:
    (team_dir / "meetkai_team-bad.toml").write_text('id = "meetkai:team-bad"\nprovider = 1\n')
    diff = run_cli("diff", "--dir", str(team_dir), env=registry.env())
    assert diff.returncode == 1
    assert "x meetkai:team-bad" in diff.stdout and "invalid" in diff.stdout
    assert "provider" in diff.stdout
    doc = json.loads(
        run_cli("diff", "--dir", str(team_dir), "-o", "json", env=registry.env()).stdout
    )
    assert doc["summary"]["invalid"] == 1 and doc["summary"]["create"] == 3
    assert doc["errors"] and doc["errors"][0]["file"].endswith("meetkai_team-bad.toml")

    sync = run_cli("sync", "--dir", str(team_dir), env=registry.env())
    assert sync.returncode == 1
    assert set(live(registry)) == {"meetkai:team-a", "meetkai:team-b", "meetkai:team-c"}


def test_bad_key_is_one_clear_line(
    run_cli_process: Run, registry: RunningRegistry, team_dir: Path
) -> None:
    env = {**registry.env(), "MKA1_API_KEY": "wrong-key-123"}
    for command in ("diff", "sync"):
        result = run_cli_process(command, "--dir", str(team_dir), env=env)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert "API key" in result.stderr and "403" in result.stderr
        assert "wrong-key-123" not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr


def test_missing_key_is_named(run_cli: Run, registry: RunningRegistry, team_dir: Path) -> None:
    env = {k: v for k, v in registry.env().items() if k != "MKA1_API_KEY"}
    result = run_cli("diff", "--dir", str(team_dir), env=env)
    assert result.returncode == 1
    assert "MKA1_API_KEY" in result.stderr


def test_unreachable_registry_is_one_clear_line(
    run_cli: Run, registry: RunningRegistry, team_dir: Path
) -> None:
    env = registry.env()
    registry.stop()  # the port is now closed: connections are refused
    started = time.monotonic()
    result = run_cli("diff", "--dir", str(team_dir), env=env, timeout=60)
    assert result.returncode == 1
    # One notice that it retries (not one per attempt), then the error; not the 15 s budget.
    notice, error = result.stderr.splitlines()
    assert notice.startswith("retrying for up to 2.5 s: cannot reach the registry at "), notice
    assert error.startswith("error: cannot reach the registry") and "refused" in error
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("url", ["ftp://example.com", "not a url", "http://"])
def test_bad_url_is_one_clear_line(run_cli: Run, team_dir: Path, url: str) -> None:
    result = run_cli("diff", "--dir", str(team_dir), "--registry-url", url)
    assert result.returncode == 1
    assert result.stderr.startswith("error: bad registry URL"), result.stderr
    assert result.stderr.count("\n") == 1


def test_missing_url_names_the_flag_and_variable(run_cli: Run, team_dir: Path) -> None:
    result = run_cli("sync", "--dir", str(team_dir))
    assert result.returncode == 1
    assert "--registry-url" in result.stderr and "MKA1_API_URL" in result.stderr


def test_registry_url_flag_and_on_behalf_of(
    run_cli: Run, registry: RunningRegistry, team_dir: Path
) -> None:
    env = {k: v for k, v in registry.env().items() if k != "MKA1_API_URL"}
    args = ("--dir", str(team_dir), "--registry-url", registry.url, "--on-behalf-of", "user-7")
    assert run_cli("sync", *args, env=env).returncode == 0
    assert run_cli("diff", *args, env=env).returncode == 0


def test_dry_run_writes_nothing(run_cli: Run, registry: RunningRegistry, team_dir: Path) -> None:
    result = run_cli("sync", "--dir", str(team_dir), "--dry-run", env=registry.env())
    assert result.returncode == 0
    assert "Dry run" in result.stdout and "3 to create" in result.stdout
    assert registry.counts()["writes"] == 0


def test_json_output_is_one_object_with_right_counts(
    run_cli: Run, registry: RunningRegistry, models_dir: Path
) -> None:
    result = run_cli("sync", "--dir", str(models_dir), "-o", "json", env=registry.env())
    assert result.returncode == 0
    doc = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert set(doc) >= {"summary", "changes"}
    assert doc["summary"]["create"] == 6 and doc["summary"]["failed"] == 0
    assert [c["id"] for c in doc["changes"]] == sorted(c["id"] for c in doc["changes"])
    assert {c["action"] for c in doc["changes"]} == {"create"}
    for change in doc["changes"]:
        assert set(change) >= {"id", "action", "file", "fields", "error"}


def test_no_progress_bar_when_piped(
    run_cli_process: Run, registry: RunningRegistry, tmp_path: Path
) -> None:
    many = tmp_path / "many.d"
    many.mkdir()
    for i in range(12):
        write_model(many, f"meetkai:team-{i:02d}")
    result = run_cli_process("sync", "--dir", str(many), env=registry.env())
    assert result.returncode == 0
    assert "syncing" not in result.stdout and "\x1b[" not in result.stdout


def test_diff_shows_load_warnings_but_never_the_secret(
    run_cli: Run, registry: RunningRegistry, models_dir: Path
) -> None:
    path = models_dir / "meetkai_team-vision.toml"
    text = path.read_text().replace('type = "none"', 'type = "api-key"\nvalue = "sk-live-123"')
    path.write_text(text)
    result = run_cli("diff", "--dir", str(models_dir), env=registry.env())
    assert result.returncode == 2, result.stderr
    assert "warning: auth.value: inline secret" in result.stderr  # warnings on stderr
    assert "sk-live-123" not in result.stdout + result.stderr
