"""`reconciler validate`, run as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def validate(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def broken_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "models.d"
    shutil.copytree(REPO / "models.d", directory)
    target = directory / "meetkai_team-vision.toml"
    target.write_text(target.read_text().replace("contextWindow", "contextWindw"))
    return directory


def test_shipped_models_are_valid() -> None:
    result = validate()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 valid" in result.stdout and "0 error(s)" in result.stdout


def test_text_output_names_file_line_field_and_hint(tmp_path: Path) -> None:
    result = validate("--dir", str(broken_copy(tmp_path)))
    assert result.returncode == 1
    assert "meetkai_team-vision.toml:" in result.stdout
    assert "contextWindw: unknown key; did you mean 'contextWindow'?" in result.stdout
    assert "5 valid" in result.stdout


def test_json_output(tmp_path: Path) -> None:
    result = validate("--dir", str(broken_copy(tmp_path)), "--output", "json")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["valid"] == 5 and document["files"] == 6
    fields = {(Path(e["file"]).name, e["field"]) for e in document["errors"]}
    assert fields == {
        ("meetkai_team-vision.toml", "contextWindw"),
        ("meetkai_team-vision.toml", "contextWindow"),
    }


def test_github_annotations(tmp_path: Path) -> None:
    result = validate("--dir", str(broken_copy(tmp_path)), "--output", "github")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("::error file=")
        and "meetkai_team-vision.toml,line=9,title=contextWindw::unknown key" in line
        for line in lines
    ), lines


def test_missing_directory_exits_1(tmp_path: Path) -> None:
    result = validate("--dir", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "no such directory" in result.stdout
