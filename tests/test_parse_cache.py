"""The parse cache (reconciler.source.cache): each property it promises, on real files.

Files written by a test are seconds old, which the racy-file rule refuses to trust; the cache is
given a "now" some seconds later instead (the clock is its one injected seam).
"""

from __future__ import annotations

import marshal
import os
import stat
import time
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler import reconcile, source
from reconciler.cli import app
from reconciler.source import cache, cachefile
from reconciler.source.cache import KEEP_FILES, RACY_NS, STALE_NS, ParseCache, cache_dir
from reconciler.source.cachefile import chunks as _chunks

MODEL = """id = "{id}"
provider = "openai-compatible"
modelId = "m"
apiFormat = "responses"
created = 1704067200
contextWindow = {window}
auth = {{ type = "none" }}

[capabilities]
reasoning = false
modalities = {{ input = ["text"], output = ["text"] }}
"""
LATER = 10 * RACY_NS  # "now", as far as the cache knows, is this long after the files were written


def write(root: Path, name: str, model_id: str, window: int = 8192, extra: str = "") -> Path:
    path = root / name
    path.write_text(MODEL.format(id=model_id, window=window) + extra)
    return path


def _models(root: Path) -> Path:
    root.mkdir()
    for i in range(5):
        write(root, f"meetkai_m-{i}.toml", f"meetkai:m-{i}")
    write(root, "other-name.toml", "meetkai:named-otherwise")  # a naming warning
    return root


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return _models(tmp_path / "models.d")


class Parses:
    """Counts the files actually read and parsed (the loader's one per-file entry point)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = source.load_file

        def counting(path: str, *args: object, **kwargs: object) -> source.FileResult:
            self.paths.append(os.path.basename(path))
            return real(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(source, "load_file", counting)


def load(root: Path, folder: Path, now_ns: int | None = None) -> reconcile.DesiredState:
    now = time.time_ns() + LATER if now_ns is None else now_ns
    cache = ParseCache(root, source.DEFAULT_POLICY, folder, now_ns=now)
    return reconcile.load_desired(root, workers=1, cache=cache)


def test_a_repeated_load_parses_nothing_and_gives_the_same_answer(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    expected = reconcile.load_desired(models, workers=1)
    first = load(models, folder)
    parses = Parses(monkeypatch)
    second = load(models, folder)
    assert parses.paths == []
    assert first == second == expected
    assert [w.code for w in second.warnings] == ["file-name"]  # warnings come back too


def test_a_cache_of_several_batches_reads_back_whole(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bodies written in batches, one after the other (never the whole in memory at once).
    monkeypatch.setattr(cachefile, "BATCH", 4)
    folder = tmp_path / "cache"
    expected = load(models, folder)
    (written,) = folder.iterdir()
    index, *bodies = _chunks(memoryview(written.read_bytes().split(b"\n", 1)[1]))
    assert [len(b) for b in bodies] == [4, 2]  # the six files
    assert len(index[0]) == 6
    parses = Parses(monkeypatch)
    assert load(models, folder) == expected
    assert parses.paths == []


def test_files_as_the_last_run_found_them_are_taken_whole(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every file cached and unchanged, none added or gone: no per-file lookup at all.
    folder = tmp_path / "cache"
    expected = load(models, folder)
    looked_up: list[str] = []
    real = ParseCache.get

    def get(self: ParseCache, path: str, key: object) -> object:
        looked_up.append(path)
        return real(self, path, key)  # type: ignore[arg-type]

    monkeypatch.setattr(ParseCache, "get", get)
    assert load(models, folder) == expected
    assert looked_up == []
    (models / "meetkai_m-0.toml").unlink()  # one gone: the others one by one, none parsed
    expected = source.load_dir(models)
    parses = Parses(monkeypatch)
    assert load(models, folder) == expected
    assert len(looked_up) == 5 and parses.paths == []


class Walks:
    """Counts the walks of the directory (discovery with keys, the loader's one way to list)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = reconcile.discover_keys

        def counting(*args: object, **kwargs: object) -> object:
            self.count += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(reconcile, "discover_keys", counting)


def test_a_tree_no_directory_of_which_changed_is_not_walked_again(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (models / "sub").mkdir()
    write(models / "sub", "meetkai_s.toml", "meetkai:s")
    folder = tmp_path / "cache"
    walks = Walks(monkeypatch)
    expected = load(models, folder)
    assert walks.count == 1
    assert load(models, folder) == expected
    assert walks.count == 1  # the last run's paths, each stat-ed
    write(models / "sub", "meetkai_t.toml", "meetkai:t")  # a file added deeper down
    state = load(models, folder)
    assert walks.count == 2 and "meetkai:t" in state.models
    assert state == source.load_dir(models)
    (models / "sub" / "meetkai_t.toml").unlink()
    assert load(models, folder) == expected and walks.count == 3
    assert load(models, folder) == expected and walks.count == 3


def test_a_tree_with_a_symlink_or_a_file_not_cached_is_walked_each_time(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.symlink(models / "meetkai_m-0.toml", models / "notes.txt")  # its target may turn a folder
    folder = tmp_path / "cache"
    walks = Walks(monkeypatch)
    load(models, folder)
    load(models, folder)
    assert walks.count == 2
    (models / "notes.txt").unlink()
    (models / "broken.toml").write_text("= not toml")  # found by the walk only, never cached
    load(models, folder)
    load(models, folder)
    assert walks.count == 4


def test_a_directory_changed_too_recently_is_walked_until_it_is_old_enough(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory's stat trusted as the files' are: not when it changed within RACY_NS of the
    # run (an entry added in the same tick could leave it as it was). The next run stores it.
    now = time.time_ns() + LATER
    os.utime(models, ns=(now, now))
    folder = tmp_path / "cache"
    walks = Walks(monkeypatch)
    expected = load(models, folder, now_ns=now)
    assert load(models, folder, now_ns=now) == expected and walks.count == 2
    later = now + LATER
    assert load(models, folder, now_ns=later) == expected and walks.count == 3
    assert load(models, folder, now_ns=later) == expected and walks.count == 3


@pytest.mark.parametrize("change", ["added", "gone", "renamed", "duplicate"])
def test_a_directory_that_changed_gives_the_loaders_answer(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    folder = tmp_path / "cache"
    load(models, folder)
    if change == "added":
        write(models, "meetkai_m-9.toml", "meetkai:m-9")
    elif change == "gone":
        (models / "meetkai_m-2.toml").unlink()
    elif change == "renamed":  # the same inode, another path: a new entry, in its new place
        (models / "meetkai_m-3.toml").rename(models / "a-first.toml")
    else:  # a second file with an id that is cached already: both fail, naming each other
        write(models, "meetkai_m-1-copy.toml", "meetkai:m-1")
    expected = source.load_dir(models)
    parses = Parses(monkeypatch)
    state = load(models, folder)
    assert state == expected
    assert len(parses.paths) == (0 if change == "gone" else 1)  # a rename changes the ctime
    again = Parses(monkeypatch)
    assert load(models, folder) == state  # and the cache written in the new order serves again
    assert again.paths == []


def test_ids_shared_by_cached_files_fail_both(models: Path, tmp_path: Path) -> None:
    # Each file valid alone, so each is cached; taken whole, their shared id must still fail.
    write(models, "meetkai_m-1-copy.toml", "meetkai:m-1")
    folder = tmp_path / "cache"
    expected = source.load_dir(models)
    assert [e.field for e in expected.errors] == ["id", "id"]
    assert load(models, folder) == expected
    assert load(models, folder) == expected


def test_a_changed_file_is_parsed_again(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    load(models, folder)
    path = write(models, "meetkai_m-1.toml", "meetkai:m-1", window=4096)  # same size
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 5 * 10**9))  # even with an older mtime
    parses = Parses(monkeypatch)
    state = load(models, folder)
    assert parses.paths == ["meetkai_m-1.toml"]
    assert state.models["meetkai:m-1"].body["contextWindow"] == 4096


def test_a_file_replaced_by_rename_is_parsed_again(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    load(models, folder)
    fresh = write(models, ".swap", "meetkai:m-2", window=2048)
    os.replace(fresh, models / "meetkai_m-2.toml")  # an editor's save: a new inode
    parses = Parses(monkeypatch)
    assert load(models, folder).models["meetkai:m-2"].body["contextWindow"] == 2048
    assert parses.paths == ["meetkai_m-2.toml"]


def test_a_file_changed_within_the_racy_window_is_not_trusted(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cached "now": the files are younger than the timestamp granularity allows to trust, so an
    # edit in the same tick could keep the stat unchanged. Nothing is stored; all is read again.
    folder = tmp_path / "cache"
    load(models, folder, now_ns=time.time_ns())
    parses = Parses(monkeypatch)
    load(models, folder)
    assert len(parses.paths) == 6


def test_placeholders_and_inline_secrets_never_reach_the_cache(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_TOKEN", "s3cr3t-from-the-environment")
    for name, auth in [
        ("meetkai_env.toml", 'auth = { type = "api-key", value = "${UPSTREAM_TOKEN}" }'),
        ("meetkai_inline.toml", 'auth = { type = "api-key", value = "inline-s3cr3t-value" }'),
        (
            "meetkai_composite.toml",
            'auth = { type = "composite", strategies = [{ type = "none" }, '
            '{ type = "custom-headers", headers = { X-Key = "hdr-s3cr3t" } }] }',
        ),
    ]:
        text = MODEL.format(id=f"meetkai:{name[8:-5]}", window=1).replace(
            'auth = { type = "none" }', auth
        )
        (models / name).write_text(text)
    folder = tmp_path / "cache"
    first = load(models, folder)
    assert first.models["meetkai:env"].body["auth"]["value"] == "s3cr3t-from-the-environment"
    assert "meetkai:composite" in first.models  # valid: kept out for its header value alone
    blob = b"".join(p.read_bytes() for p in folder.iterdir())
    assert b"meetkai:m-0" in blob  # the others are cached
    assert b"s3cr3t" not in blob
    parses = Parses(monkeypatch)
    load(models, folder)
    assert sorted(parses.paths) == [
        "meetkai_composite.toml",
        "meetkai_env.toml",
        "meetkai_inline.toml",
    ]


def test_files_with_errors_are_not_cached(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (models / "broken.toml").write_text("= not toml")
    folder = tmp_path / "cache"
    load(models, folder)
    parses = Parses(monkeypatch)
    state = load(models, folder)
    assert parses.paths == ["broken.toml"]
    assert [e.path.endswith("broken.toml") for e in state.errors] == [True]


def test_the_cache_file_is_private(models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "reconciler"
    load(models, folder)
    (written,) = folder.iterdir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b"",  # empty
        lambda b: b"\x00\xff garbage" * 50,
        lambda b: b.replace(b"meetkai:m-3", b"meetkai:m-9"),  # edited: the checksum fails
        lambda b: b.split(b"\n", 1)[0].replace(b"cache 2", b"cache 999") + b"\n" + b"[]",
    ],
)
def test_a_corrupt_cache_file_costs_a_parse_and_nothing_else(
    models: Path, tmp_path: Path, damage: object
) -> None:
    folder = tmp_path / "cache"
    expected = load(models, folder)
    (written,) = folder.iterdir()
    written.write_bytes(damage(written.read_bytes()))  # type: ignore[operator]
    assert load(models, folder) == expected


def _evil_body(index: tuple, bodies: list) -> None:
    bodies[0] = {**bodies[0], "id": "meetkai:evil", "contextWindow": 1}


def _line_not_int(index: tuple, bodies: list) -> None:
    index[6][0] = "not a line"


def _short_key(index: tuple, bodies: list) -> None:
    index[1][2] = index[1][2][:4]


def _bool_in_key(index: tuple, bodies: list) -> None:
    index[1][2] = (*index[1][2][:4], True)


def _warning_of_no_file(index: tuple, bodies: list) -> None:
    index[3][0] = len(bodies)


def _warnings_out_of_order(index: tuple, bodies: list) -> None:
    for column in index[3:]:
        column.append(column[0])
    index[3][-1] = 0
    index[3][0] = 5


def _a_body_missing(index: tuple, bodies: list) -> None:
    bodies.pop()


def _a_list_for_a_body(index: tuple, bodies: list) -> None:
    bodies[1] = [bodies[1]]


@pytest.mark.parametrize(
    "edit",
    [
        _evil_body,
        _line_not_int,
        _short_key,
        _bool_in_key,
        _warning_of_no_file,
        _warnings_out_of_order,
        _a_body_missing,
        _a_list_for_a_body,
    ],
)
def test_a_well_formed_but_wrong_entry_is_ignored(
    models: Path, tmp_path: Path, edit: object
) -> None:
    # A valid checksum over columns of the wrong shape (or a body naming another id than its
    # file): the whole file is refused, every file parsed again.
    folder = tmp_path / "cache"
    expected = load(models, folder)
    (written,) = folder.iterdir()
    head, payload = written.read_bytes().split(b"\n", 1)
    index, bodies = _chunks(memoryview(payload))
    assert index[3] == [5]  # other-name.toml's naming warning
    edit(index, bodies)  # type: ignore[operator]
    payload = _batch(index) + _batch(bodies)
    _checksummed(written, head, payload)
    cached = ParseCache(models, source.DEFAULT_POLICY, folder)
    cached.load()
    assert cached._old is None
    assert load(models, folder) == expected


def _checksummed(written: Path, head: bytes, payload: bytes) -> None:
    """``written`` holding ``payload`` under ``head`` with the payload's own checksum."""
    digest = b"%08x" % zlib.crc32(payload)
    written.write_bytes(head.rsplit(b" ", 1)[0] + b" " + digest + b"\n" + payload)


def _batch(part: object) -> bytes:
    data = marshal.dumps(part)
    return len(data).to_bytes(8, "little") + data


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\xff not marshal",
        b"",
        b"{",
        _batch(["a", "list"]),
        _batch({}) + _batch(["a", "list"]),
        _batch({})[:-1],
        (10).to_bytes(8, "little") + b"\xdb\x05",
        marshal.dumps({}),  # the whole in one, without its length
    ],
)
def test_a_checksummed_payload_that_is_no_cache_is_ignored(
    models: Path, tmp_path: Path, payload: bytes
) -> None:
    # What marshal refuses, or reads as something else than the files' entries: a parse each.
    folder = tmp_path / "cache"
    expected = load(models, folder)
    (written,) = folder.iterdir()
    head = written.read_bytes().split(b"\n", 1)[0]
    _checksummed(written, head, payload)
    assert load(models, folder) == expected


def test_a_cache_file_others_may_write_is_ignored(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    load(models, folder)
    (written,) = folder.iterdir()
    written.chmod(0o666)
    parses = Parses(monkeypatch)
    load(models, folder)
    assert len(parses.paths) == 6


def test_another_policy_has_its_own_cache(models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    load(models, folder)
    quiet = source.LoadPolicy(lint_file_names=False)
    cache = ParseCache(models, quiet, folder, now_ns=time.time_ns() + LATER)
    state = reconcile.load_desired(models, workers=1, policy=quiet, cache=cache)
    assert state.warnings == ()


def test_another_validator_or_changed_code_has_its_own_cache(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pydantic

    folder = tmp_path / "cache"
    first = ParseCache(models, source.DEFAULT_POLICY, folder).key
    monkeypatch.setattr(pydantic, "VERSION", "0.0.0")
    assert ParseCache(models, source.DEFAULT_POLICY, folder).key != first
    monkeypatch.undo()
    real = cache.file_stat
    changed = {source.placeholders.__file__}  # an editable install's module, edited

    def stat(path: str) -> object:
        st = real(path)
        return (*st[:3], st[3] + 1, st[4]) if st and path in changed else st

    monkeypatch.setattr(cache, "file_stat", stat)
    assert ParseCache(models, source.DEFAULT_POLICY, folder).key != first


def test_nowhere_to_write_is_no_error(models: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    expected = reconcile.load_desired(models, workers=1)
    assert load(models, blocker / "reconciler") == expected  # mkdir fails: ENOTDIR
    assert blocker.read_text() == ""


def test_cache_dir_follows_xdg() -> None:
    assert cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == Path("/x/cache/reconciler")
    assert cache_dir({"HOME": "/h"}) == Path("/h/.cache/reconciler")
    assert cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/h"}) == Path("/h/.cache/reconciler")


# --- the CLI: on by default, off by flag, variable or config key ------------------------------


@pytest.fixture(scope="module")
def old_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The CLI's cache trusts only files whose stat is RACY_NS old (ctime too, which no test can
    # set back): wait that out once for the module; its tests only read these files.
    models = _models(tmp_path_factory.mktemp("old") / "models.d")
    time.sleep(RACY_NS / 1e9 + 0.1)
    return models


@pytest.mark.parametrize(
    ("args", "env", "config"),
    [
        ([], {}, ""),
        (["--no-cache"], {}, ""),
        ([], {"RECONCILER_NO_CACHE": "1"}, ""),
        ([], {}, "cache = false\n"),
    ],
    ids=["default", "flag", "variable", "config"],
)
def test_cli_cache_switches(
    old_models: Path,
    tmp_path: Path,
    registry: object,
    args: list[str],
    env: dict[str, str],
    config: str,
) -> None:
    xdg = tmp_path / "xdg"
    cfg = tmp_path / "reconciler.toml"
    cfg.write_text(config)
    environ = {**registry.env(), "XDG_CACHE_HOME": str(xdg), **env}  # type: ignore[attr-defined]
    command = ["diff", "--dir", str(old_models), "--config", str(cfg), *args]
    result = CliRunner().invoke(app, command, env=environ)
    assert result.exit_code == 2, result.output  # six models to create
    written = list((xdg / "reconciler").glob("loads-*")) if (xdg / "reconciler").exists() else []
    assert len(written) == (1 if not (args or env or config) else 0)


def test_cli_runs_on_a_read_only_cache(old_models: Path, tmp_path: Path, registry: object) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    environ = {**registry.env(), "XDG_CACHE_HOME": str(blocker)}  # type: ignore[attr-defined]
    result = CliRunner().invoke(app, ["diff", "--dir", str(old_models)], env=environ)
    assert result.exit_code == 2, result.output
    assert "cache" not in result.output


def test_cli_cache_with_environments(old_models: Path, tmp_path: Path, registry: object) -> None:
    # --env runs read the files once for every environment, through the same cache.
    xdg = tmp_path / "xdg"
    cfg = tmp_path / "reconciler.toml"
    url = registry.url  # type: ignore[attr-defined]
    cfg.write_text(f'[environments.dev]\nregistry_url = "{url}"\napi_key_env = "DEV_KEY"\n')
    environ = {
        "MKA1_API_URL": "",
        "MKA1_API_KEY": "",
        "DEV_KEY": registry.api_key,  # type: ignore[attr-defined]
        "XDG_CACHE_HOME": str(xdg),
    }
    command = ["diff", "--dir", str(old_models), "--config", str(cfg), "--env", "dev"]
    result = CliRunner().invoke(app, command, env=environ)
    assert result.exit_code == 2, result.output
    assert len(list((xdg / "reconciler").glob("loads-*"))) == 1
    off = CliRunner().invoke(app, [*command, "--no-cache"], env={**environ, "XDG_CACHE_HOME": ""})
    assert off.exit_code == 2, off.output


# --- housekeeping: the folder does not grow without end ---------------------------------------

DAY_NS = 86_400 * 1_000_000_000


def other_cache_files(folder: Path, count: int, used_ns: int) -> list[Path]:
    """``count`` cache files of other directories, each last used ``used_ns`` (oldest first)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"loads-{i:032x}.bin"
        path.write_bytes(b"another directory's cache")
        os.utime(path, ns=(used_ns + i, used_ns + i))
        out.append(path)
    return out


def test_writing_a_cache_file_removes_others_unused_for_a_month(
    models: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "cache"
    now = time.time_ns() + LATER
    stale = other_cache_files(folder, 2, now - STALE_NS - DAY_NS)
    recent = folder / "loads-recent.bin"
    recent.write_bytes(b"used last week")
    os.utime(recent, ns=(now - 7 * DAY_NS, now - 7 * DAY_NS))
    leftover = folder / ".loads-abc.tmp"  # a run killed while writing, yesterday
    leftover.write_bytes(b"half")
    os.utime(leftover, ns=(now - DAY_NS, now - DAY_NS))
    unrelated = folder / "notes.txt"
    unrelated.write_text("not ours")
    os.utime(unrelated, ns=(now - 365 * DAY_NS, now - 365 * DAY_NS))

    load(models, folder, now_ns=now)

    assert not any(p.exists() for p in stale)
    assert not leftover.exists()
    assert recent.exists() and unrelated.exists()
    assert len(list(folder.glob("loads-*.bin"))) == 2  # this directory's, and the recent one


def test_the_folder_keeps_the_most_recently_used_files_only(models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    now = time.time_ns() + LATER
    others = other_cache_files(folder, KEEP_FILES + 3, now - DAY_NS)
    load(models, folder, now_ns=now)
    kept = sorted(folder.glob("loads-*.bin"))
    assert len(kept) == KEEP_FILES
    assert not any(p.exists() for p in others[:4])  # the least recently used go
    assert all(p.exists() for p in others[4:])


def test_reading_a_cache_file_marks_it_used(models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    written = time.time_ns() + LATER
    load(models, folder, now_ns=written)
    (mine,) = folder.glob("loads-*.bin")
    os.utime(mine, ns=(written, written))
    later = written + 40 * DAY_NS  # unchanged files: nothing is written, yet the file is used
    state = load(models, folder, now_ns=later)
    assert state.models and mine.stat().st_mtime_ns == later
    # So another directory's run a month on keeps it.
    other = tmp_path / "other.d"
    _models(other)
    load(other, folder, now_ns=later + STALE_NS - DAY_NS)
    assert mine.exists()
