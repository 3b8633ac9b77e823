"""The loader, on real files in a temporary directory: every bad file reported, the rest loaded."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

from reconciler.source import ModelFileFilter, load_dir, load_file

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models.d"

GOOD = textwrap.dedent(
    """\
    id = "meetkai:{name}"
    provider = "openai"
    modelId = "{name}"
    apiFormat = "responses"
    created = 1704067200
    contextWindow = 8192

    [auth]
    type = "api-key"
    envVar = "KEY"

    [capabilities]
    reasoning = false

    [capabilities.modalities]
    input = ["text"]
    output = ["text"]
    """
)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def good(name: str) -> str:
    return GOOD.format(name=name)


def only_error(result, path_part: str):  # type: ignore[no-untyped-def]
    found = [e for e in result.errors if path_part in e.path]
    assert len(found) == 1, found
    return found[0]


def test_every_shipped_file_validates() -> None:
    result = load_dir(SHIPPED)
    assert result.errors == () and result.warnings == ()
    assert len(result.models) >= 6
    kinds = {m.body["auth"]["type"] for m in result.models.values()}
    assert {"api-key", "custom-headers", "composite", "none"} <= kinds


def test_shipped_files_round_trip_through_the_schema() -> None:
    import tomllib

    for model in load_dir(SHIPPED).models.values():
        raw = tomllib.loads(Path(model.file).read_text())
        assert model.body == raw, model.file


def test_bad_files_are_reported_and_the_others_still_load(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", good("a"))
    write(tmp_path, "sub/b.toml", good("b"))
    write(tmp_path, "typo.toml", good("typo").replace("contextWindow", "contextWindw"))
    write(tmp_path, "broken.toml", 'id = "meetkai:broken"\nprovider = \n')
    write(tmp_path, "empty.toml", "")
    write(tmp_path, "c.json", json.dumps({"id": "meetkai:c", "provider": 3}))
    (tmp_path / "dir.toml").mkdir()
    os.symlink(tmp_path / "missing.toml", tmp_path / "dangling.toml")

    result = load_dir(tmp_path)

    assert sorted(result.models) == ["meetkai:a", "meetkai:b"]
    assert result.files == 8
    typo = [e for e in result.errors if e.path.endswith("typo.toml")]
    assert {e.field for e in typo} == {"contextWindw", "contextWindow"}
    unknown = next(e for e in typo if e.field == "contextWindw")
    assert "did you mean 'contextWindow'" in unknown.message
    assert unknown.line == 6
    broken = only_error(result, "broken.toml")
    assert broken.message.startswith("invalid TOML") and broken.line == 2
    assert "empty file" in only_error(result, "empty.toml").message
    assert "is a directory" in only_error(result, "dir.toml").message
    assert "broken symlink" in only_error(result, "dangling.toml").message
    c_errors = [e for e in result.errors if e.path.endswith("c.json")]
    assert ("provider", "Input should be a valid string (got 3)") in {
        (e.field, e.message) for e in c_errors
    }
    # Ids that a failed file names are known, so nothing is written or pruned for them.
    assert set(result.invalid_ids) == {"meetkai:typo", "meetkai:c"}


def test_error_paths_name_the_nested_field_and_its_line(tmp_path: Path) -> None:
    text = good("x").replace('input = ["text"]', 'input = ["text", "smell"]')
    path = write(tmp_path, "x.toml", text)
    [error] = load_file(path, tmp_path).errors
    assert error.field == "capabilities.modalities.input[1]"
    assert error.line == 16
    assert str(error).startswith(f"{path}:16:18: error: capabilities.modalities.input[1]:")


def test_duplicate_ids_fail_both_files(tmp_path: Path) -> None:
    write(tmp_path, "one.toml", good("same"))
    write(tmp_path, "two.toml", good("same"))
    write(tmp_path, "other.toml", good("other"))
    result = load_dir(tmp_path)
    assert list(result.models) == ["meetkai:other"]
    assert len(result.errors) == 2
    for error in result.errors:
        other = "two.toml" if error.path.endswith("one.toml") else "one.toml"
        assert error.field == "id" and other in error.message
    assert "meetkai:same" in result.invalid_ids


def test_hidden_files_and_editor_leftovers_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", good("a"))
    for name in [".#a.toml", "a.toml~", ".a.toml.swp", ".hidden.toml", "notes.md", "#a.toml#"]:
        write(tmp_path, name, "garbage = = =")
    write(tmp_path, ".git/x.toml", "garbage = = =")
    result = load_dir(tmp_path)
    assert result.ok and result.files == 1


def test_filter_works_as_a_watchfiles_filter() -> None:
    f = ModelFileFilter()
    assert f(None, "/x/models.d/a.toml")
    assert not f(None, "/x/models.d/.a.toml.swp")
    assert not f(None, "/x/models.d/.git/a.toml")
    assert not f(None, "/x/models.d/a.toml~")


def test_missing_directory_is_one_clear_error(tmp_path: Path) -> None:
    result = load_dir(tmp_path / "nope")
    assert not result.ok and result.errors[0].message == "no such directory"


def test_warnings_do_not_fail_validation(tmp_path: Path) -> None:
    text = good("w").replace('envVar = "KEY"', 'value = "sk-very-secret"')
    text = text.replace("created = 1704067200", "created = 1704067200000")
    write(tmp_path, "wrong-name.toml", text)
    result = load_dir(tmp_path)
    assert result.ok and list(result.models) == ["meetkai:w"]
    messages = {w.field: w.message for w in result.warnings}
    assert "inline secret" in messages["auth.value"]
    assert "milliseconds" in messages["created"]
    assert "does not match the id" in messages["id"]
    assert all("sk-very-secret" not in str(w) for w in result.warnings)


def test_created_in_the_future_warns(tmp_path: Path) -> None:
    path = write(tmp_path, "w.toml", good("w").replace("1704067200", "4000000000"))
    [warning] = load_file(path, tmp_path, now=1_800_000_000).warnings
    assert warning.field == "created" and "future" in warning.message


def test_variables_are_substituted_from_the_environment(tmp_path: Path) -> None:
    text = good("v").replace('envVar = "KEY"', 'value = "${TEAM_KEY}"')
    text = text.replace('modelId = "v"', 'modelId = "$${literal}"')
    path = write(tmp_path, "v.toml", text)
    ok = load_file(path, tmp_path, env={"TEAM_KEY": "s3cret"})
    assert ok.body is not None and ok.warnings == ()
    assert ok.body["auth"]["value"] == "s3cret"
    assert ok.body["modelId"] == "${literal}"
    missing = load_file(path, tmp_path, env={})
    assert missing.body is None and missing.declared_id == "meetkai:v"
    [error] = missing.errors
    assert error.field == "auth.value" and "TEAM_KEY is not set" in error.message


def test_secrets_are_not_echoed_in_type_errors(tmp_path: Path) -> None:
    text = good("s").replace('envVar = "KEY"', "value = 12345678")
    path = write(tmp_path, "s.toml", text)
    [error] = load_file(path, tmp_path).errors
    assert error.field == "auth.value" and "12345678" not in str(error)


def test_non_utf8_and_non_table_json(tmp_path: Path) -> None:
    (tmp_path / "bin.toml").write_bytes(b"id = '\xff'\n")
    write(tmp_path, "list.json", "[1, 2]")
    write(tmp_path, "bad.json", '{"id": ')
    result = load_dir(tmp_path)
    messages = {Path(e.path).name: e.message for e in result.errors}
    assert messages["bin.toml"].startswith("not UTF-8")
    assert "top level" in messages["list.json"]
    assert messages["bad.json"].startswith("invalid JSON")


def test_a_thousand_generated_files_load(tmp_path: Path) -> None:
    for i in range(1000):
        write(tmp_path, f"g/{i % 10}/model-{i}.toml", good(f"model-{i}"))
    result = load_dir(tmp_path)
    assert result.ok and len(result.models) == 1000 and result.warnings == ()


def test_shipped_copy_with_one_bad_file_keeps_the_rest(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path / "m")
    target = next((tmp_path / "m").glob("*.toml"))
    target.write_text(target.read_text().replace("apiFormat", "apiFormatt"))
    result = load_dir(tmp_path / "m")
    assert len(result.models) == len(list(SHIPPED.glob("*.toml"))) - 1
    assert any("did you mean 'apiFormat'" in e.message for e in result.errors)
