"""Unit tests for the pure part of export: rendering, ordering, names, placeholders, the writer."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import minimal

from reconciler import export, source
from reconciler.spec import Definition, Entry

REPO = Path(__file__).resolve().parent.parent


def shipped() -> dict[str, dict[str, Any]]:
    loaded = source.load_dir(REPO / "models.d")
    assert loaded.ok and loaded.models
    return {i: dict(m.body) for i, m in loaded.models.items()}


def entry(body: dict[str, Any], **extra: Any) -> Entry:
    definition = {**body, "source": extra.get("source", "database")}
    definition["immutable"] = extra.get("immutable", False)
    return Entry(id=body["id"], definition=definition, **extra)


def load_text(text: str, env: dict[str, str] | None = None, tmp: Path | None = None) -> Any:
    assert tmp is not None
    path = tmp / "m.toml"
    path.write_text(text)
    return source.load_file(path, env=env or {})


def test_every_shipped_model_renders_and_loads_back_unchanged(tmp_path: Path) -> None:
    bodies = shipped()
    rendering = export.render(entry(b) for b in bodies.values())
    assert rendering.skipped == ()
    assert [f.model_id for f in rendering.files] == sorted(bodies)
    for file in rendering.files:
        result = load_text(file.text, tmp=tmp_path)
        assert result.errors == (), file.text
        assert result.body == bodies[file.model_id]


def test_server_managed_keys_are_dropped_and_keys_ordered() -> None:
    bodies = shipped()
    body = bodies["meetkai:team-reasoner-32k"]
    (file,) = export.render([entry(body)]).files
    data = tomllib.loads(file.text)
    assert "source" not in data and "immutable" not in data
    top = list(data)
    assert top[:5] == ["id", "provider", "modelId", "publicName", "displayName"]
    # identity scalars, then the tables in their fixed order
    assert top.index("contextWindow") < top.index("auth") < top.index("capabilities")
    lines = file.text.splitlines()
    assert lines[0] == 'id = "meetkai:team-reasoner-32k"'
    assert lines.index("[auth]") < lines.index("[capabilities]")
    auth = lines.index("[auth]")
    assert lines[auth + 1] == 'type = "composite"'


def test_order_keys_ranks_identity_scalars_tables_and_arrays_of_tables() -> None:
    body = {
        "rerouteRules": [{"trigger": {"type": "base64-input"}, "targetModelId": "x"}],
        "healthCheck": {"mode": "off"},
        "zeta": 1,
        "auth": {"type": "none"},
        "alpha": "a",
        "rpm": 5,
        "id": "x",
        "rateLimits": [{"scope": "org", "rpm": 1}],
        "extra": {"k": 1},
    }
    assert list(export.order_keys(body)) == [
        "id",
        "rpm",
        "alpha",
        "zeta",
        "auth",
        "healthCheck",
        "extra",
        "rerouteRules",
        "rateLimits",
    ]


@pytest.mark.parametrize(
    "model_id",
    ["../x", "a/b", "..", ".", "/etc/passwd", "a\\b", "::", "-", "x" * 300, "con:..:..", " "],
)
def test_hostile_ids_get_plain_bounded_file_names(model_id: str) -> None:
    name = export.file_names([model_id])[model_id]
    assert name.endswith(".toml")
    assert "/" not in name and "\\" not in name and ":" not in name
    assert not name.startswith(".") and ".." not in name
    assert 5 < len(name) <= 105
    assert Path(name).name == name


def test_colliding_stems_get_numbered_suffixes_in_id_order() -> None:
    ids = ["a:b", "a_b", "A:B", "a/b", "a_b-2", "other"]
    names = export.file_names(ids)
    assert len(set(n.lower() for n in names.values())) == len(ids)
    # The first id (sorted) keeps the natural stem, the rest count up; a natural "-2" stays put.
    assert names["A:B"] == "A_B.toml"
    assert names["a_b-2"] == "a_b-2.toml"
    assert sorted(names[i] for i in ("a/b", "a:b", "a_b")) == [
        "a_b-3.toml",
        "a_b-4.toml",
        "a_b-5.toml",
    ]
    assert names == export.file_names(reversed(ids))


def test_long_ids_that_share_a_prefix_get_distinct_names() -> None:
    a, b = "p" * 200 + "a", "p" * 200 + "b"
    names = export.file_names([a, b])
    assert names[a] != names[b]


def test_inline_secrets_become_placeholders_and_load_back_with_the_variables(
    tmp_path: Path,
) -> None:
    body = minimal(
        "meetkai:team-x",
        auth={
            "type": "composite",
            "strategies": [
                {"type": "api-key", "value": "sk-live-123", "headerName": "api-key"},
                {
                    "type": "custom-headers",
                    "headers": {
                        "Authorization": "Bearer abc",
                        "X-Api-Key": "k-9",
                        "X-Session-Token": "t-1",
                        "X-Tenant": "platform",
                    },
                },
            ],
        },
    )
    (file,) = export.render([entry(body)]).files
    for secret in ("sk-live-123", "Bearer abc", "k-9", "t-1"):
        assert secret not in file.text
    assert "platform" in file.text
    names = {v.name: v.field for v in file.variables}
    assert names == {
        "MEETKAI_TEAM_X_API_KEY": "auth.strategies[0].value",
        "MEETKAI_TEAM_X_HEADER_AUTHORIZATION": "auth.strategies[1].headers.Authorization",
        "MEETKAI_TEAM_X_HEADER_X_API_KEY": "auth.strategies[1].headers.X-Api-Key",
        "MEETKAI_TEAM_X_HEADER_X_SESSION_TOKEN": "auth.strategies[1].headers.X-Session-Token",
    }
    env = {
        "MEETKAI_TEAM_X_API_KEY": "sk-live-123",
        "MEETKAI_TEAM_X_HEADER_AUTHORIZATION": "Bearer abc",
        "MEETKAI_TEAM_X_HEADER_X_API_KEY": "k-9",
        "MEETKAI_TEAM_X_HEADER_X_SESSION_TOKEN": "t-1",
    }
    loaded = load_text(file.text, env, tmp_path)
    assert loaded.errors == ()
    assert loaded.body == body
    unset = load_text(file.text, {k: v for k, v in env.items() if "TOKEN" not in k}, tmp_path)
    assert unset.body is None
    assert any("MEETKAI_TEAM_X_HEADER_X_SESSION_TOKEN" in p.message for p in unset.errors)


def test_with_secrets_writes_values_as_they_are(tmp_path: Path) -> None:
    body = minimal("m1", auth={"type": "api-key", "value": "sk-1"})
    (file,) = export.render([entry(body)], with_secrets=True).files
    assert file.variables == () and file.has_secrets
    assert load_text(file.text, {}, tmp_path).body == body


def test_existing_placeholders_are_kept_and_other_dollar_braces_escaped(tmp_path: Path) -> None:
    body = minimal(
        "m1",
        displayName="costs ${PRICE} and $${LITERAL}",
        auth={"type": "api-key", "value": "${ALREADY_SET}"},
    )
    (file,) = export.render([entry(body)]).files
    assert file.variables == ()
    data = tomllib.loads(file.text)
    assert data["auth"]["value"] == "${ALREADY_SET}"
    loaded = load_text(file.text, {"PRICE": "no", "LITERAL": "no", "ALREADY_SET": "v"}, tmp_path)
    assert loaded.body["displayName"] == "costs ${PRICE} and $${LITERAL}"


def test_variable_names_are_valid_unique_and_bounded() -> None:
    bodies = [
        minimal(i, auth={"type": "api-key", "value": "s"})
        for i in ("a:b", "a-b", "9lives", "x" * 250)
    ]
    files = export.render(entry(b) for b in bodies).files
    names = [v.name for f in files for v in f.variables]
    assert len(names) == len(set(names)) == 4
    for name in names:
        assert name[0].isalpha() and name.replace("_", "").isalnum() and len(name) < 80


def test_immutable_entries_only_when_asked() -> None:
    bodies = [minimal("db"), minimal("yaml")]
    entries = [entry(bodies[0]), entry(bodies[1], source="yaml", immutable=True)]
    plain = export.render(entries)
    assert [f.model_id for f in plain.files] == ["db"]
    assert [(s.model_id, s.rejected) for s in plain.skipped] == [("yaml", False)]
    assert "--include-immutable" in plain.skipped[0].reason
    every = export.render(entries, include_immutable=True)
    assert [f.model_id for f in every.files] == ["db", "yaml"]


def test_entries_the_schema_rejects_are_reported_not_altered() -> None:
    good = minimal("good")
    nested = minimal("nested-unknown")
    nested["capabilities"] = {**nested["capabilities"], "thinkingBudget": 5}
    broken = minimal("broken", auth={"type": "api-key", "value": 12345})
    rendering = export.render([entry(good), entry(nested), entry(broken)])
    assert [f.model_id for f in rendering.files] == ["good"]
    reasons = {s.model_id: s.reason for s in rendering.rejected}
    assert set(reasons) == {"nested-unknown", "broken"}
    assert "capabilities.thinkingBudget: unknown key" in reasons["nested-unknown"]
    assert "auth" in reasons["broken"] and "12345" not in reasons["broken"]


def test_top_level_keys_the_registry_added_are_left_out_and_reported() -> None:
    # A newer gateway's own bookkeeping: no file may declare it and the diff ignores it.
    rendering = export.render([entry({**minimal("versioned"), "version": 1})])
    [written] = rendering.files
    assert written.dropped == ("version",)
    assert "\nversion =" not in written.text and rendering.skipped == ()


def test_writer_writes_skips_existing_and_overwrites_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "new" / "models.d"
    files = export.render([entry(minimal("meetkai:a")), entry(minimal("meetkai:b"))]).files
    first = export.write_files(files, target)
    assert [o.status for o in first] == ["written", "written"]
    assert sorted(p.name for p in target.iterdir()) == ["meetkai_a.toml", "meetkai_b.toml"]
    (target / "meetkai_a.toml").write_text("# edited by hand\n" + files[0].text)
    again = export.write_files(files, target)
    assert [o.status for o in again] == ["exists", "exists"]
    assert (target / "meetkai_a.toml").read_text().startswith("# edited by hand")
    forced = export.write_files(files, target, overwrite=True)
    assert [o.status for o in forced] == ["overwritten", "overwritten"]
    assert (target / "meetkai_a.toml").read_text() == files[0].text
    assert not list(target.glob(".export-*"))


def test_writer_keeps_other_files_declaring_the_id_or_another_model(tmp_path: Path) -> None:
    (file_a,) = export.render([entry(minimal("meetkai:a"))]).files
    (tmp_path / "hand-named.toml").write_text(file_a.text)
    (tmp_path / "meetkai_b.toml").write_text(file_a.text.replace("meetkai:a", "meetkai:zzz"))
    (file_b,) = export.render([entry(minimal("meetkai:b"))]).files
    outcomes = export.write_files([file_a, file_b], tmp_path, overwrite=True)
    assert [o.status for o in outcomes] == ["declared", "exists"]
    assert "hand-named.toml" in outcomes[0].detail
    assert "meetkai:zzz" in outcomes[1].detail
    assert not (tmp_path / "meetkai_a.toml").exists()


def test_writer_refuses_symlinks_and_names_that_leave_the_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside.toml"
    outside.write_text("keep")
    inside = tmp_path / "d"
    inside.mkdir()
    (inside / "m1.toml").symlink_to(outside)
    (file,) = export.render([entry(minimal("m1"))]).files
    bad = export.RenderedFile("x", "../escape.toml", file.text)
    outcomes = export.write_files([file, bad], inside, overwrite=True)
    assert [o.status for o in outcomes] == ["unsafe", "unsafe"]
    assert outside.read_text() == "keep"
    assert not (tmp_path / "escape.toml").exists()


def test_files_with_secrets_are_private(tmp_path: Path) -> None:
    body = minimal("m1", auth={"type": "api-key", "value": "sk-1"})
    (file,) = export.render([entry(body)], with_secrets=True).files
    export.write_files([file], tmp_path)
    assert (tmp_path / "m1.toml").stat().st_mode & 0o077 == 0
    assert Definition.model_validate(tomllib.loads((tmp_path / "m1.toml").read_text()))
