"""The parallel loader gives exactly what the sequential loader gives (real files, no network)."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

import pytest

from reconciler import reconcile, source
from reconciler.source.wire import share_values

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


def test_workers_bodies_share_equal_strings(many: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Thousands of bodies naming the same provider hold it once a worker's chunk, not each.
    monkeypatch.setattr(reconcile, "PARALLEL_FROM", 1)
    models = reconcile.load_desired(many, workers=2).models.values()
    providers = {id(m.body["provider"]) for m in models}
    inputs = {id(m.body["capabilities"]["modalities"]["input"][0]) for m in models}
    assert len(providers) < len(models) / 3 and len(inputs) < len(models) / 3
    assert {m.body["provider"] for m in models} == {"openai-compatible"}


def test_workers_bodies_share_equal_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Equal tables (auth, capabilities, defaultParams) are held once a chunk, not once a file.
    monkeypatch.setattr(reconcile, "PARALLEL_FROM", 1)
    monkeypatch.setattr(reconcile, "CHUNKS_PER_WORKER", 1)  # two chunks of three files
    root = tmp_path / "m"
    root.mkdir()
    for i, value in enumerate(["0.5", "0.5", "0.7", "0.5", "0.5", "0.5"]):
        text = MODEL.format(id=f"meetkai:m-{i}") + f"\n[defaultParams]\ntemperature = {value}\n"
        (root / f"meetkai_m-{i}.toml").write_text(text)
    state = reconcile.load_desired(root, workers=2)
    assert state == source.load_dir(root)
    bodies = [state.models[f"meetkai:m-{i}"].body for i in range(6)]
    assert len({id(b["capabilities"]) for b in bodies}) == 2
    params = [b["defaultParams"] for b in bodies]
    assert params[0] is params[1] and params[3] is params[4] is params[5]
    assert params[2] is not params[0] and params[2]["temperature"] == 0.7


def test_only_values_of_the_same_types_are_shared() -> None:
    # 1, 1.0 and True are equal in Python, and none may stand for another.
    bodies = [{"p": {"t": v}, "l": [v], "s": "x"} for v in (1, 1.0, True, 1, -0.0, 0.0)]
    seen: dict[bytes, object] = {}
    for body in bodies:
        share_values(body, seen)
    assert bodies[0]["p"] is bodies[3]["p"] and bodies[0]["l"] is bodies[3]["l"]
    kinds = [type(b["p"]["t"]) for b in bodies] + [type(b["l"][0]) for b in bodies]
    assert kinds == [int, float, bool, int, float, float] * 2
    assert len({id(b["p"]) for b in bodies}) == 5  # -0.0 is no 0.0 either
    assert str(bodies[4]["p"]["t"]) == "-0.0"


def sequential_small(root: Path) -> source.DesiredState:
    return reconcile.load_desired(root, workers=1)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    state = reconcile.load_desired(tmp_path / "nope")
    assert state.models == {} and state.errors and "no such directory" in state.errors[0].message


def test_a_worker_s_answer_comes_back_whole(many: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Errors, warnings (model-N files are not named after their ids) and filled placeholders.
    (many / "model-x.toml").write_text(MODEL.format(id="meetkai:x").replace('"m"', '"${ID}"'))
    paths = [str(p) for p in source.discover(many)]
    policy = source.LoadPolicy(allow_env=("ID",))
    monkeypatch.setenv("ID", "from-env")
    loaded = reconcile._load_chunk(paths, str(many), policy)
    assert any(r.errors for r in loaded) and any(r.warnings for r in loaded)
    assert any(r.sensitive for r in loaded)
    assert reconcile._unwire(reconcile._load_chunk_wire(paths, str(many), policy)) == loaded
    # What marshal cannot write (no validated body holds it) travels by pickle.
    odd = [loaded[0]._replace(body={"id": "meetkai:odd", "price": Decimal("0.5")})]
    monkeypatch.setattr(reconcile, "_load_chunk", lambda *args: odd)
    wire = reconcile._load_chunk_wire(paths, str(many), policy)
    assert wire[:1] == b"p"
    assert reconcile._unwire(wire) == odd


def test_a_loading_thread_waits_for_start_or_result(many: Path) -> None:
    # Created before the event loop and the client, it starts as the registry is asked: sooner,
    # it would only slow the steps that lead there (the interpreter's lock).
    loading = reconcile.Loading(many, workers=1)
    assert "load" not in {t.name for t in threading.enumerate()}  # not started
    loading.start()
    loading.start()  # once
    assert loading.result() == source.load_dir(many)
    lazy = reconcile.Loading(many, workers=1)
    assert lazy.result() == source.load_dir(many)  # result() alone starts it
