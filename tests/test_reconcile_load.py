"""The parallel loader gives exactly what the sequential loader gives (real files, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import reconcile, source

MODEL = """id = "{id}"
provider = "openai-compatible"
modelId = "m"
apiFormat = "responses"
created = 1704067200
contextWindow = 8192
auth = {{ type = "none" }}

[capabilities]
reasoning = false
modalities = {{ input = ["text"], output = ["text"] }}
"""


@pytest.fixture
def many(tmp_path: Path) -> Path:
    root = tmp_path / "many.d"
    (root / "sub").mkdir(parents=True)
    for i in range(60):
        folder = root / "sub" if i % 3 else root
        (folder / f"meetkai_m-{i:03d}.toml").write_text(MODEL.format(id=f"meetkai:m-{i:03d}"))
    (root / "dup.toml").write_text(MODEL.format(id="meetkai:m-001"))  # a duplicate id
    (root / "broken.toml").write_text("= not toml")
    (root / "bad.toml").write_text(MODEL.format(id="meetkai:bad").replace("8192", '"x"'))
    return root


def test_parallel_equals_sequential(many: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "PARALLEL_FROM", 1)
    expected = source.load_dir(many)
    parallel = reconcile.load_desired(many, workers=2)
    assert parallel == expected
    assert len(parallel.models) == 59
    assert set(parallel.invalid_ids) == {"meetkai:m-001", "meetkai:bad"}
    assert parallel.failed_files == 4  # broken, bad and both files of the duplicate
    assert sequential_small(many) == expected


def sequential_small(root: Path) -> source.DesiredState:
    return reconcile.load_desired(root, workers=1)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    state = reconcile.load_desired(tmp_path / "nope")
    assert state.models == {} and state.errors and "no such directory" in state.errors[0].message
