"""`reconciler validate`: a few runs as a user runs it (subprocess), the rest in-process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import minimal
from typer.testing import CliRunner

from reconciler.cli import app

REPO = Path(__file__).resolve().parent.parent


def validate(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["validate", *args])


def broken_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "models.d"
    shutil.copytree(REPO / "models.d", directory)
    target = directory / "meetkai_team-vision.toml"
    target.write_text(target.read_text().replace("contextWindow", "contextWindw"))
    return directory


def toml_model(model_id: str) -> str:
    import tomli_w

    return tomli_w.dumps(minimal(model_id))


def test_shipped_models_are_valid() -> None:
    result = validate()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 valid" in result.stdout and "0 error(s)" in result.stdout


def test_problems_go_to_stderr_as_path_line_col(tmp_path: Path) -> None:
    result = validate("--dir", str(broken_copy(tmp_path)))
    assert result.returncode == 1
    path = tmp_path / "models.d" / "meetkai_team-vision.toml"
    assert (
        f"{path}:9:1: error: contextWindw: unknown key; did you mean 'contextWindow'?"
        in result.stderr.splitlines()
    )
    assert "5 valid" in result.stdout and "contextWindw" not in result.stdout


def test_usage_errors_exit_1_not_2() -> None:
    for args in (["--ouput", "json"], ["--output", "yaml"]):
        result = validate(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Usage:" in result.stderr


def test_json_output(tmp_path: Path) -> None:
    result = invoke("--dir", str(broken_copy(tmp_path)), "--output", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["formatVersion"] == 1
    assert document["valid"] == 5 and document["files"] == 6
    fields = {(Path(e["file"]).name, e["field"]) for e in document["errors"]}
    assert fields == {
        ("meetkai_team-vision.toml", "contextWindw"),
        ("meetkai_team-vision.toml", "contextWindow"),
    }
    [typo] = [e for e in document["errors"] if e["field"] == "contextWindw"]
    assert (typo["line"], typo["column"], typo["severity"]) == (9, 1, "error")


def test_github_annotations(tmp_path: Path) -> None:
    result = invoke("--dir", str(broken_copy(tmp_path)), "--output", "github")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("::error file=")
        and "meetkai_team-vision.toml,line=9,col=1,title=contextWindw::unknown key" in line
        for line in lines
    ), lines


def test_missing_directory_exits_1(tmp_path: Path) -> None:
    result = invoke("--dir", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "no such directory" in result.stderr


def test_empty_directory_and_yaml_only_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("--dir", str(empty))
    assert result.exit_code == 1
    assert f"{empty}: error: no model files (*.toml, *.json)" in result.stderr
    yaml_only = tmp_path / "yaml"
    yaml_only.mkdir()
    (yaml_only / "x.yaml").write_text("id: meetkai:x\n")
    result = invoke("--dir", str(yaml_only))
    assert result.exit_code == 1
    assert "x.yaml not read: model files end in .toml or .json" in result.stderr


def test_file_paths_as_arguments(tmp_path: Path) -> None:
    good = tmp_path / "meetkai_a.toml"
    good.write_text(toml_model("meetkai:a"))
    bad = tmp_path / "meetkai_b.toml"
    bad.write_text(toml_model("meetkai:b").replace("contextWindow", "contextWindw"))
    assert invoke(str(good)).exit_code == 0
    result = invoke(str(good), str(bad))
    assert result.exit_code == 1
    assert f"{bad}:" in result.stderr and "contextWindw" in result.stderr
    assert "1 valid" in result.stdout
    missing = invoke(str(tmp_path / "gone.toml"))
    assert missing.exit_code == 1 and "gone.toml: error: no such file" in missing.stderr


def test_exact_lines_for_array_elements(tmp_path: Path) -> None:
    body = minimal("meetkai:arr")
    body["rerouteRules"] = [
        {"targetModelId": "x", "trigger": {"type": "context-exceeded"}},
        {"targetModelId": "y", "trigger": {"type": "nope"}},
    ]
    body["capabilities"]["modalities"]["input"] = ["text", "smell"]
    text = json.dumps(body, indent=2)
    path = tmp_path / "meetkai_arr.json"
    path.write_text(text)
    result = invoke("--dir", str(tmp_path), "-o", "json")
    lines = text.splitlines()
    errors = {e["field"]: e for e in json.loads(result.stdout)["errors"]}
    smell = errors["capabilities.modalities.input[1]"]
    assert lines[smell["line"] - 1].strip() == '"smell"'
    assert smell["column"] == lines[smell["line"] - 1].index('"smell"') + 1
    trigger = errors["rerouteRules[1].trigger"]
    assert '"trigger"' in lines[trigger["line"] - 1]
    # The second rule's trigger, not the first one's.
    assert trigger["line"] > text[: text.index('"y"')].count("\n")


def test_array_of_tables_lines_in_toml(tmp_path: Path) -> None:
    text = toml_model("meetkai:t") + (
        '\n[[rerouteRules]]\ntargetModelId = "x"\ntrigger = { type = "context-exceeded" }\n'
        '\n[[rerouteRules]]\ntargetModelId = "y"\ntrigger = { type = "nope" }\n'
    )
    (tmp_path / "meetkai_t.toml").write_text(text)
    result = invoke("--dir", str(tmp_path), "-o", "json")
    [error] = json.loads(result.stdout)["errors"]
    assert error["field"] == "rerouteRules[1].trigger"
    assert text.splitlines()[error["line"] - 1] == 'trigger = { type = "nope" }'


def misnamed(tmp_path: Path, n: int) -> Path:
    directory = tmp_path / "misnamed"
    directory.mkdir()
    for i in range(n):
        (directory / f"file{i}.toml").write_text(toml_model(f"meetkai:model-{i}"))
    return directory


def test_repeated_warnings_are_summarised_unless_verbose(tmp_path: Path) -> None:
    directory = misnamed(tmp_path, 12)
    result = invoke("--dir", str(directory))
    assert result.exit_code == 0
    [line] = result.stderr.splitlines()
    assert line.startswith("warning: 12 files not named after their id (--verbose lists each)")
    assert "first: " in line and "file0.toml:" in line
    assert "warning" not in result.stdout.split("\n")[0]
    verbose = invoke("--dir", str(directory), "--verbose")
    assert len(verbose.stderr.splitlines()) == 12
    quiet = invoke("--dir", str(directory), "--quiet")
    assert quiet.stderr == "" and quiet.exit_code == 0


def test_naming_lint_can_be_switched_off(tmp_path: Path) -> None:
    directory = misnamed(tmp_path, 2)
    config = tmp_path / "reconciler.toml"
    config.write_text("lint_file_names = false\n")
    result = invoke("--dir", str(directory), "--config", str(config))
    assert result.exit_code == 0 and result.stderr == ""
    config.write_text("lint-file-names = false\n")
    result = invoke("--dir", str(directory), "--config", str(config))
    assert result.exit_code == 1 and "unknown key" in result.stderr


def test_long_ids_are_not_cut_in_a_pipe(tmp_path: Path) -> None:
    model_id = "meetkai:" + "a-very-long-model-name-" * 3 + "x" * (90 - 8 - 69)
    assert len(model_id) == 90
    directory = tmp_path / "long"
    directory.mkdir()
    (directory / "long.toml").write_text(toml_model(model_id))
    result = validate("--dir", str(directory))  # a pipe, as in CI
    assert result.returncode == 0
    assert model_id in result.stdout
    assert any(model_id in line for line in result.stderr.splitlines())
