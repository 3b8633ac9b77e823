"""The daemon's file state, updated one file at a time, always equals loading the directory
afresh (the loader's own combine), shared ids included; and a change costs the ids it touches.
(One difference by design: a file that stops naming an id keeps the last one it named.)"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from test_daemon import model_toml

from reconciler.daemon import files as files_mod
from reconciler.daemon.files import ModelFiles
from reconciler.events import Event
from reconciler.source import load_dir


class Events:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    def emit(self, event: Event) -> None:
        self.seen.append(event)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def same_as_a_fresh_load(state: ModelFiles, root: Path) -> None:
    fresh = load_dir(root)
    mine = state.desired()
    assert mine.models == fresh.models
    assert mine.invalid_ids.keys() == fresh.invalid_ids.keys()
    assert {(p.path, p.message) for p in mine.errors} == {(p.path, p.message) for p in fresh.errors}
    assert set(state.failed) == {p.path for p in fresh.errors}


@pytest.mark.anyio
async def test_a_shared_id_fails_both_files_and_clears_when_one_goes(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(model_toml("team:x"))
    (tmp_path / "b.toml").write_text(model_toml("team:y"))
    events = Events()
    state = ModelFiles(tmp_path, lambda: events)
    assert await state.rescan() == {str(tmp_path / "a.toml"), str(tmp_path / "b.toml")}
    assert set(state.models) == {"team:x", "team:y"}

    c = tmp_path / "c.toml"
    c.write_text(model_toml("team:x", rpm=5))
    assert await state.refresh([str(c)]) == {"team:x"}  # only the id it touches
    assert set(state.models) == {"team:y"}
    assert "team:x" in state.invalid_ids
    assert set(state.failed) == {str(tmp_path / "a.toml"), str(c)}
    assert "is also declared in" in state.first_error(str(tmp_path / "a.toml"))
    same_as_a_fresh_load(state, tmp_path)

    c.unlink()
    assert await state.refresh([str(c)]) == {"team:x"}
    assert set(state.models) == {"team:x", "team:y"} and not state.failed
    same_as_a_fresh_load(state, tmp_path)


@pytest.mark.anyio
async def test_a_half_written_file_keeps_its_id_invalid(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    a.write_text(model_toml("team:a"))
    events = Events()
    state = ModelFiles(tmp_path, lambda: events)
    await state.rescan()
    a.write_text('id = "team:a\n')  # the editor's save cut short
    assert await state.refresh([str(a)]) == {"team:a"}
    assert state.invalid_ids == {"team:a": str(a)} and not state.models
    assert [e.file for e in events.seen] == ["a.toml"]  # an invalid-file event


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(6))
async def test_any_sequence_of_edits_equals_a_fresh_load(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_mod, "PARALLEL_FROM", 4)  # the worker processes too, now and then
    rng = random.Random(seed)
    names = [f"f{i}.toml" for i in range(8)]
    ids = ["team:a", "team:b", "team:c", "team:d"]
    for name in names[:5]:
        (tmp_path / name).write_text(model_toml(rng.choice(ids)))
    state = ModelFiles(tmp_path, lambda: Events(), workers=2)
    await state.rescan()
    same_as_a_fresh_load(state, tmp_path)
    for _ in range(25):
        touched = rng.sample(names, rng.randint(1, 5))
        for name in touched:
            path = tmp_path / name
            what = rng.random()
            if what < 0.25:
                if path.exists():
                    path.unlink()
            elif what < 0.45:  # invalid, naming its id (one that names none keeps its last: above)
                path.write_text(model_toml(rng.choice(ids)).replace("contextWindow", "ctx"))
            else:
                path.write_text(model_toml(rng.choice(ids), rpm=rng.randint(1, 9)))
        if rng.random() < 0.3:
            await state.rescan()  # what the resync timer does: by stamp
        else:
            await state.refresh(str(tmp_path / n) for n in touched)
        same_as_a_fresh_load(state, tmp_path)
        assert len(state) == len([n for n in names if os.path.exists(tmp_path / n)])


def test_the_workers_records_cross_as_they_were_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_A_KEY", "sk-from-the-environment")
    text = model_toml("team:a", secret=True).replace('value = "', 'value = "${TEAM_A_KEY}', 1)
    (tmp_path / "team_a.toml").write_text(text)  # a field filled from a variable
    (tmp_path / "other.toml").write_text(model_toml("team:b"))  # misnamed: a warning
    (tmp_path / "bad.toml").write_text(model_toml("team:c").replace("contextWindow", "ctx"))
    paths = sorted(str(p) for p in tmp_path.iterdir())
    policy = files_mod.LoadPolicy(lint_file_names=True)
    read = files_mod.read_files(paths, str(tmp_path), policy)
    assert any(r.errors for r in read) and any(r.warnings for r in read)
    assert any(r.sensitive for r in read) and all(r.stamp for r in read)
    wire = files_mod.read_files_wire(paths, str(tmp_path), policy)
    assert wire[:1] == b"m" and files_mod.unwire(wire) == read


@pytest.mark.anyio
async def test_the_first_read_in_workers_stamps_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_mod, "PARALLEL_FROM", 4)
    for i in range(12):
        (tmp_path / f"f{i}.toml").write_text(model_toml(f"team:m{i}"))
    state = ModelFiles(tmp_path, lambda: Events(), workers=2)
    assert len(await state.rescan() or ()) == 12
    assert all(r.stamp == files_mod._stamp(p) for p, r in state.records.items())
    assert await state.rescan() == set()  # nothing changed: nothing read again
    same_as_a_fresh_load(state, tmp_path)
