"""The shipped CI examples (docs/ci) and the pre-commit hook: every ``reconciler`` command they
run, run in their order against a real registry, as their shell runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RunningRegistry

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = [REPO / "docs" / "ci" / "github-actions.yml", REPO / "docs" / "ci" / "gitlab-ci.yml"]


def commands(path: Path) -> list[str]:
    """The shell lines of a workflow that run reconciler, in file order."""
    found = []
    for line in path.read_text().splitlines():
        text = re.sub(r"^\s*(-\s+)?(run:\s+)?", "", line)
        if text.startswith("reconciler "):
            found.append(text)
    return found


def shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_command_of_the_example_works(
    example: Path, registry: RunningRegistry, tmp_path: Path
) -> None:
    found = commands(example)
    assert any("--out plan.json" in c for c in found)
    assert "reconciler sync --plan plan.json" in found
    shutil.copytree(REPO / "models.d", tmp_path / "models.d")
    bin_dir = str(Path(sys.executable).parent)
    env = {**registry.env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env["GITHUB_STEP_SUMMARY"] = str(tmp_path / "summary.md")
    for command in found:
        result = shell(command, tmp_path, env)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    assert json.loads((tmp_path / "plan.json").read_text())["kind"] == "reconciler-plan"
    assert (tmp_path / "plan.md").read_text().startswith("<!-- reconciler-plan -->")
    # The saved plan was applied: nothing is pending any more.
    after = shell("reconciler diff", tmp_path, env)
    assert after.returncode == 0, after.stdout + after.stderr


def test_pre_commit_hook_runs_on_file_names(tmp_path: Path) -> None:
    text = (REPO / ".pre-commit-hooks.yaml").read_text()
    entry = re.search(r"^\s*entry:\s*(.+)$", text, re.M)
    files = re.search(r"^\s*files:\s*(.+)$", text, re.M)
    assert entry and files and "pass_filenames: true" in text
    shutil.copytree(REPO / "models.d", tmp_path / "models.d")
    names = sorted(
        str(p.relative_to(tmp_path))
        for p in (tmp_path / "models.d").iterdir()
        if re.search(files.group(1).strip(), str(p.relative_to(tmp_path)))
    )
    assert len(names) == 6
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    ok = shell(" ".join([entry.group(1).strip(), *names]), tmp_path, env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / names[0]
    bad.write_text(bad.read_text().replace("contextWindow", "contextWindw"))
    failed = shell(" ".join([entry.group(1).strip(), names[0]]), tmp_path, env)
    assert failed.returncode == 1 and f"{names[0]}:" in failed.stderr
