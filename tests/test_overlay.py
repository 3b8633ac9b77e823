"""Overlays and the environments of reconciler.toml, on plain data and real files in a temp dir
(the end-to-end runs against local registries are in test_environments)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import minimal

from reconciler import environments, overlay
from reconciler.config import ConfigError, load_config
from reconciler.plan import Desired
from reconciler.reconcile import SetupError
from reconciler.source import DesiredState, LoadPolicy

# RFC 7386, appendix A: (target, patch, result).
RFC_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_EXAMPLES)
def test_merge_patch_follows_rfc_7386(target, patch, result):
    before = json.dumps(target)
    assert overlay.merge_patch(target, patch) == result
    assert json.dumps(target) == before  # the base is shared by every environment: untouched


def base_state(*bodies: dict, invalid: dict[str, str] | None = None) -> DesiredState:
    models = {b["id"]: Desired(b, f"models.d/{b['id']}.toml") for b in bodies}
    return DesiredState(models, invalid_ids=invalid or {})


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory / name


def test_overlay_changes_merges_removes_and_excludes(tmp_path: Path):
    d = tmp_path / "prod"
    a = minimal("meetkai:a", rpm=60, defaultParams={"temperature": 0.2, "topP": 0.9})
    b, c = minimal("meetkai:b"), minimal("meetkai:c")
    write(
        d,
        "a.toml",
        'id = "meetkai:a"\nremove = ["rpm", "defaultParams.topP"]\n'
        "contextWindow = 32768\n[defaultParams]\ntemperature = 0.5\n",
    )
    write(d, "c.json", json.dumps({"id": "meetkai:c", "exclude": True}))
    state, excluded = environments.desired_for(base_state(a, b, c), overlay.load_overlays(d))
    assert state.errors == () and excluded == ("meetkai:c",)
    assert set(state.models) == {"meetkai:a", "meetkai:b"}
    merged = state.models["meetkai:a"].body
    assert merged["contextWindow"] == 32768 and "rpm" not in merged
    assert merged["defaultParams"] == {"temperature": 0.5}
    assert state.models["meetkai:b"].body == b
    assert a["rpm"] == 60 and a["defaultParams"]["topP"] == 0.9  # base untouched


def test_overlay_errors_name_the_overlay_file_field_and_line(tmp_path: Path):
    d = tmp_path / "prod"
    write(d, "a.toml", 'id = "meetkai:a"\n\ncontextWindw = 1\n')
    write(d, "b.toml", 'id = "meetkai:b"\napiFormat = "nope"\n')
    write(d, "ghost.toml", 'id = "meetkai:ghost"\nrpm = 1\n')
    write(d, "c1.toml", 'id = "meetkai:c"\nrpm = 1\n')
    write(d, "c2.toml", 'id = "meetkai:c"\nrpm = 2\n')
    write(d, "x.toml", 'id = "meetkai:x"\nexclude = true\nrpm = 1\n')
    write(d, "broken.toml", "id = \n")
    write(d, "noid.toml", "rpm = 1\n")
    write(d, "gone.toml", 'id = "meetkai:gone"\nrpm = 1\n')
    base = base_state(
        *(minimal(f"meetkai:{n}") for n in "abcx"), invalid={"meetkai:gone": "models.d/gone.toml"}
    )
    state, _ = environments.desired_for(base, overlay.load_overlays(d))
    text = {f"{Path(p.path).name}:{p.line}: {p.field}: {p.message}" for p in state.errors}
    assert "a.toml:3: contextWindw: unknown key; did you mean 'contextWindow'?" in text
    assert any(t.startswith("b.toml:2: apiFormat: ") for t in text)
    assert "ghost.toml:1: id: no model file declares id 'meetkai:ghost'" in text
    assert any(t.startswith("c1.toml") and "also declared in" in t for t in text)
    assert "x.toml:2: exclude: an excluded model takes no other keys" in text
    assert any(t.startswith("broken.toml:1: None: invalid TOML") for t in text)
    assert any(t.startswith("noid.toml") and "id: required" in t for t in text)
    assert not any("gone.toml" in t for t in text)  # its base file failed: that file says so
    # Every failed overlay keeps its model out (nothing written, prune fenced), the rest stay.
    assert set(state.models) == set()
    for model_id in ("meetkai:a", "meetkai:b", "meetkai:c", "meetkai:x", "meetkai:ghost"):
        assert model_id in state.invalid_ids


def test_overlay_directory_missing_is_an_error(tmp_path: Path):
    state, _ = environments.desired_for(
        base_state(minimal("meetkai:a")), overlay.load_overlays(tmp_path / "nope")
    )
    assert [p.message for p in state.errors] == ["no such overlay directory"]


def test_overlay_placeholders_follow_the_policy_and_stay_secret(tmp_path: Path):
    d = tmp_path / "prod"
    write(d, "a.toml", 'id = "meetkai:a"\nbaseUrl = "${PROD_BASE}"\n')
    write(d, "k.toml", 'id = "meetkai:k"\ndisplayName = "${PROD_REGISTRY_KEY}"\n')
    env = {"PROD_BASE": "https://prod.internal/v1", "PROD_REGISTRY_KEY": "sk-the-registry-key"}
    policy = LoadPolicy(("PROD_BASE",), ("MKA1_API_KEY", "PROD_REGISTRY_KEY"), 1 << 20)
    base = base_state(minimal("meetkai:a"), minimal("meetkai:k"))
    state, _ = environments.desired_for(base, overlay.load_overlays(d, env, policy))
    a = state.models["meetkai:a"]
    assert a.body["baseUrl"] == "https://prod.internal/v1" and ("baseUrl",) in a.sensitive
    assert "meetkai:k" not in state.models
    assert [Path(p.path).name for p in state.errors] == ["k.toml"]
    assert "sk-the-registry-key" not in str(state.errors)


CONFIG = """
owns = ["meetkai:*"]
[[ignore]]
paths = ["rpm"]

[environments.dev]
registry_url = "http://dev"
api_key_env = "DEV_KEY"

[environments.prod]
registry_url = "http://prod"
api_key_env = "PROD_KEY"
on_behalf_of = "ops"
overlay = "overlays/prod"
owns = ["meetkai:team-*"]
max_deletes = 1
[[environments.prod.ignore]]
paths = ["hidden"]
"""


def test_config_environments_resolve_with_their_own_key_and_limits(tmp_path: Path):
    path = write(tmp_path, "reconciler.toml", CONFIG)
    config = load_config(path)
    assert config.credential_env() == ("MKA1_API_KEY", "DEV_KEY", "PROD_KEY")
    environ = {"DEV_KEY": "dev-secret", "PROD_KEY": "prod-secret", "MKA1_API_KEY": "admin"}
    assert environments.selected(config, [], True) == ["dev", "prod"]
    prod = environments.resolve(config, "prod", environ, prune=True)
    assert prod.target.url == "http://prod" and prod.target.api_key == "prod-secret"
    assert prod.target.on_behalf_of == "ops"
    assert prod.prune is not None and prod.prune.owns == ("meetkai:team-*",)
    assert prod.prune.max_deletes == 1
    assert [r.paths for r in prod.ignore] == [("rpm",), ("hidden",)]
    assert prod.overlay == tmp_path / "overlays/prod"
    assert "prod-secret" not in repr(prod)
    dev = environments.resolve(config, "dev", environ, prune=True, max_deletes=3)
    assert dev.target.api_key == "dev-secret" and dev.prune.owns == ("meetkai:*",)
    assert dev.prune.max_deletes == 3 and dev.overlay is None
    with pytest.raises(SetupError, match="PROD_KEY is not set"):
        environments.resolve(config, "prod", {"MKA1_API_KEY": "admin"})
    with pytest.raises(SetupError, match=r"configures environments \(dev, prod\)"):
        environments.selected(config, [], False)
    with pytest.raises(SetupError, match=r"unknown environment 'qa'.*dev, prod"):
        environments.selected(config, ["dev", "qa"], False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[environments.dev]\nregistry_url = 'x'\napi_key_env = 'K'\nownz = []\n",
            "environments.dev.ownz: unknown key; did you mean 'owns'?",
        ),
        (
            "[environments.dev]\nregistry_url = 'x'\n",
            "environments.dev.api_key_env: Field required",
        ),
        (
            "[environments.'a b']\nregistry_url = 'x'\napi_key_env = 'K'\n",
            "environments.a b: an environment name is",
        ),
        (
            "[environments.dev]\nregistry_url = 'x'\napi_key_env = 'not a var'\n",
            "environments.dev.api_key_env: the name of an environment variable",
        ),
        (
            "registry_url = 'x'\n[environments.dev]\nregistry_url = 'x'\napi_key_env = 'K'\n",
            "with [environments], each environment names its registry_url",
        ),
        (
            "[environments.dev]\nregistry_url = 'x'\napi_key_env = 'K'\nmax_deletes = -1\n",
            "environments.dev.max_deletes",
        ),
    ],
)
def test_config_environment_errors_name_the_key(tmp_path: Path, text: str, message: str):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "reconciler.toml", text))
    assert message in str(info.value)


def test_without_environments_nothing_is_selected(tmp_path: Path):
    config = load_config(write(tmp_path, "reconciler.toml", 'owns = ["x"]\n'))
    assert environments.selected(config, [], False) == []
    with pytest.raises(SetupError, match=r"--env: no \[environments\.NAME\] table"):
        environments.selected(config, ["dev"], False)
