"""The loader on hostile files: each fails alone with a clear problem, never raises, never hangs,
never quotes a credential or a value a placeholder put in. Real files in a temp dir."""

from __future__ import annotations

import json
import os
import socket
import string
import tempfile
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.secrets import REDACTED, hidden_values, redact_field, scrub
from reconciler.source import LoadPolicy, discover, load_dir, load_file
from reconciler.text import json_text, printable

KEY = "sk-admin-7f3a9c-never-print"  # stands for the reconciler's own MKA1_API_KEY
UPSTREAM = "tok-upstream-5b1e-never-print"
ENV = {"MKA1_API_KEY": KEY, "UPSTREAM_TOKEN": UPSTREAM, "TEAM_NAME": "Team Rocket 42"}

GOOD = textwrap.dedent(
    """\
    id = "meetkai:{name}"
    provider = "openai"
    modelId = "{name}"
    apiFormat = "responses"
    created = 1704067200
    contextWindow = 8192
    displayName = "{display}"

    [auth]
    type = "api-key"
    {auth}

    [capabilities]
    reasoning = false

    [capabilities.modalities]
    input = ["text"]
    output = ["text"]
    """
)


def good(name: str, display: str = "A model", auth: str = 'envVar = "KEY"') -> str:
    return GOOD.format(name=name, display=display, auth=auth)


def write(directory: Path, name: str, text: str | bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def messages(result) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(str(p) for p in (*result.errors, *result.warnings))


def only_error(result, name: str):  # type: ignore[no-untyped-def]
    found = [e for e in result.errors if os.path.basename(e.path) == name]
    assert len(found) == 1, (name, result.errors)
    return found[0]


# --- what one file may be ---------------------------------------------------------------------


def test_hostile_files_fail_alone_and_the_good_one_loads(tmp_path: Path) -> None:
    write(tmp_path, "good.toml", good("good"))
    write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    write(tmp_path, "deep.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    write(tmp_path, "deepobj.json", '{"a":' * 100_000 + "1" + "}" * 100_000)
    write(tmp_path, "big.toml", good("big") + "#" * (1 << 20) + "\n")
    write(tmp_path, "digits.json", '{"id": ' + "1" * 5000 + "}")
    os.mkfifo(tmp_path / "fifo.toml")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.toml"))
        os.symlink("/dev/zero", tmp_path / "zero.toml")
        os.symlink("loop-b.toml", tmp_path / "loop-a.toml")
        os.symlink("loop-a.toml", tmp_path / "loop-b.toml")
        result = load_dir(tmp_path, env=ENV)

    assert list(result.models) == ["meetkai:good"]
    assert result.files == 11
    assert "nested too deeply" in only_error(result, "deep.json").message
    assert "nested too deeply" in only_error(result, "deep.toml").message
    assert "nested too deeply" in only_error(result, "deepobj.json").message
    assert "over the 1048576-byte limit" in only_error(result, "big.toml").message
    assert only_error(result, "digits.json").message.startswith("invalid JSON")
    assert "not a regular file (a FIFO)" in only_error(result, "fifo.toml").message
    assert "not a regular file (a socket)" in only_error(result, "sock.toml").message
    assert "(a character device)" in only_error(result, "zero.toml").message
    assert "cannot read" in only_error(result, "loop-a.toml").message
    assert "cannot load" not in messages(result)  # no file needed the last-resort guard


def test_the_size_cap_is_configurable(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", good("a") + "#" * 2000 + "\n")
    [error] = load_dir(tmp_path, policy=LoadPolicy(max_file_bytes=2000)).errors
    assert "over the 2000-byte limit (max_file_bytes in reconciler.toml)" in error.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_and_directory_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "good.toml", good("good"))
    os.chmod(write(tmp_path, "secret.toml", good("secret")), 0)
    os.chmod(write(tmp_path, "locked/x.toml", good("x")).parent, 0)
    try:
        result = load_dir(tmp_path)
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert list(result.models) == ["meetkai:good"]
    assert "Permission denied" in only_error(result, "secret.toml").message
    assert "cannot list this directory" in only_error(result, "locked").message


def test_a_byte_order_mark_is_accepted_in_toml_and_json(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", b"\xef\xbb\xbf" + good("a").encode())
    body = {
        "id": "meetkai:b",
        "provider": "p",
        "modelId": "b",
        "apiFormat": "responses",
        "created": 1,
        "contextWindow": 1,
        "auth": {"type": "none"},
        "capabilities": {"modalities": {"input": ["text"], "output": ["text"]}, "reasoning": False},
    }
    write(tmp_path, "b.json", b"\xef\xbb\xbf" + json.dumps(body).encode())
    result = load_dir(tmp_path)
    assert result.ok and sorted(result.models) == ["meetkai:a", "meetkai:b"]


def test_directory_links_are_followed_once_per_real_directory(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write(root, "a/one.toml", good("one"))
    write(root, "two.toml", good("two"))
    outside = tmp_path / "shared"
    write(outside, "three.toml", good("three"))
    os.symlink("..", root / "a" / "up")  # back up the tree: a loop
    os.symlink(".", root / "self")  # the directory itself: every file again
    os.symlink(outside, root / "s1")
    os.symlink(outside, root / "s2")  # the same real directory twice

    found = list(discover(root))
    result = load_dir(root)

    assert result.ok, result.errors
    assert sorted(result.models) == ["meetkai:one", "meetkai:three", "meetkai:two"]
    assert result.files == 3 and len(found) == 3
    assert str(root / "s1" / "three.toml") in found  # the first link, in name order


def test_discover_keys_stats_what_each_path_names(tmp_path: Path) -> None:
    # The parse cache's keys, taken while walking: as a stat of the path would give them (links
    # followed), None for what is no regular file.
    from reconciler.source.cache import file_stat
    from reconciler.source.files import discover_keys

    root = tmp_path / "m"
    write(root, "a/one.toml", good("one"))
    write(root, "two.json", "{}")
    write(tmp_path, "outside.toml", good("three"))
    os.symlink(tmp_path / "outside.toml", root / "link.toml")
    os.symlink(tmp_path / "nowhere.toml", root / "broken.toml")
    (root / "dir.toml").mkdir()
    os.mkfifo(root / "fifo.toml")
    os.symlink(".", root / "self")

    paths, keys, walked = discover_keys(root)

    assert walked is None  # symlinks: their targets may change where no directory listed does
    assert paths == list(discover(root))
    assert keys == [file_stat(p) for p in paths]
    named = dict(zip((os.path.basename(p) for p in paths), keys, strict=True))
    assert named["link.toml"] == file_stat(str(tmp_path / "outside.toml")) is not None
    assert named["broken.toml"] is named["dir.toml"] is named["fifo.toml"] is None
    assert named["one.toml"] is not None


def test_discover_keys_names_the_directories_it_listed(tmp_path: Path) -> None:
    from reconciler.source.files import discover_keys, unchanged

    root = tmp_path / "m"
    write(root, "a/one.toml", good("one"))
    write(root, "two.toml", good("two"))
    (root / ".git").mkdir()
    os.symlink("..", root / ".git" / "up")  # in a hidden folder: never walked, changes nothing
    os.symlink("two.toml", root / ".hidden.toml")

    paths, _, walked = discover_keys(root)

    assert walked is not None and [w[0] for w in walked] == [str(root), str(root / "a")]
    assert paths == list(discover(root)) and unchanged(walked)
    write(root, "a/three.toml", good("three"))  # a file added deeper down
    assert not unchanged(walked)


def test_git_sync_and_configmap_layouts_still_load(tmp_path: Path) -> None:
    # git-sync: the root is a symlink to the current checkout.
    write(tmp_path, "rev1/a.toml", good("a"))
    os.symlink("rev1", tmp_path / "current")
    assert list(load_dir(tmp_path / "current").models) == ["meetkai:a"]
    # ConfigMap: files link into the hidden ..data, itself a link to a timestamped directory.
    cm = tmp_path / "cm"
    write(cm, "..2024_01_01/b.toml", good("b"))
    os.symlink("..2024_01_01", cm / "..data")
    os.symlink("..data/b.toml", cm / "b.toml")
    result = load_dir(cm)
    assert result.ok and list(result.models) == ["meetkai:b"] and result.files == 1


def test_escaped_names_and_problems_are_printable(tmp_path: Path) -> None:
    name = os.fsdecode(b"evil\x1b[2J\xff\x9b.toml")
    write(tmp_path, name, "garbage = = =")
    [error] = load_dir(tmp_path).errors
    assert str(error).isprintable() and "\\x1b[2J" in str(error)


# --- placeholders -----------------------------------------------------------------------------


def load_text(tmp_path: Path, text: str, policy: LoadPolicy | None = None, name: str = "x.toml"):  # type: ignore[no-untyped-def]
    path = write(tmp_path, name, text)
    return load_file(path, tmp_path, env=ENV, policy=policy or LoadPolicy())


@pytest.mark.parametrize(
    ("where", "variable"),
    [
        ('displayName = "${MKA1_API_KEY}"', "MKA1_API_KEY"),
        ('displayName = "prefix ${TEAM_NAME}"', "TEAM_NAME"),
        ('baseUrl = "https://h/${UPSTREAM_TOKEN}"', "UPSTREAM_TOKEN"),
    ],
)
def test_a_non_secret_field_reaches_only_allowed_variables(
    tmp_path: Path, where: str, variable: str
) -> None:
    result = load_text(tmp_path, good("x").replace('displayName = "A model"', where))
    assert result.body is None and result.declared_id == "meetkai:x"
    [error] = result.errors
    assert f"${{{variable}}}" in error.message and error.line == 7
    assert KEY not in str(error) and UPSTREAM not in str(error)


def test_allow_env_grants_names_and_patterns_and_the_field_is_sensitive(tmp_path: Path) -> None:
    text = good("x", display="${TEAM_NAME}")
    result = load_text(tmp_path, text, LoadPolicy(allow_env=("TEAM_*",)))
    assert result.body is not None and result.body["displayName"] == "Team Rocket 42"
    assert ("displayName",) in result.sensitive


def test_the_own_credential_is_refused_everywhere_even_when_allowed(tmp_path: Path) -> None:
    everything = LoadPolicy(allow_env=("*",))
    for text in (
        good("x", display="${MKA1_API_KEY}"),
        good("x", auth='value = "${MKA1_API_KEY}"'),
        good("x").replace(
            "[auth]", '[healthCheck]\nurl = "https://h/?k=${MKA1_API_KEY}"\n\n[auth]'
        ),
    ):
        result = load_text(tmp_path, text, everything)
        [error] = result.errors
        assert "${MKA1_API_KEY} is the reconciler's own credential" in error.message
        assert KEY not in messages(result)
    # The deny-list is the configuration's: any key variable it names is refused the same way.
    custom = LoadPolicy(deny_env=("MKA1_API_KEY", "PROD_KEY"))
    result = load_text(tmp_path, good("x", auth='value = "${PROD_KEY}"'), custom)
    assert "${PROD_KEY} is the reconciler's own credential" in result.errors[0].message


def test_a_secret_field_may_name_another_variable(tmp_path: Path) -> None:
    result = load_text(tmp_path, good("x", auth='value = "${UPSTREAM_TOKEN}"'))
    assert result.body is not None and result.body["auth"]["value"] == UPSTREAM
    assert ("auth", "value") in result.sensitive and result.warnings == ()


def test_placeholders_are_refused_in_the_id(tmp_path: Path) -> None:
    text = good("x").replace('id = "meetkai:x"', 'id = "meetkai:${TEAM_NAME}"')
    result = load_text(tmp_path, text, LoadPolicy(allow_env=("*",)))
    assert "not allowed in id" in result.errors[0].message


def test_errors_never_quote_a_substituted_value(tmp_path: Path) -> None:
    allowed = LoadPolicy(allow_env=("UPSTREAM_TOKEN",))
    for text in (
        good("x").replace("created = 1704067200", 'created = "${UPSTREAM_TOKEN}"'),
        good("x").replace('apiFormat = "responses"', 'apiFormat = "${UPSTREAM_TOKEN}"'),
        good("x").replace('type = "api-key"', 'type = "${UPSTREAM_TOKEN}"'),
        good("x", display="${UPSTREAM_TOKEN}").replace(
            "contextWindow = 8192", "contextWindow = 'x'"
        ),
        good("x").replace("[auth]", 'aliases = ["${UPSTREAM_TOKEN}", 3]\n\n[auth]'),
    ):
        result = load_text(tmp_path, text, allowed)
        assert result.errors, text
        assert UPSTREAM not in messages(result)


def test_one_mistake_repeated_is_a_bounded_list(tmp_path: Path) -> None:
    text = good("x").replace("[auth]", f"aliases = [{', '.join(['1'] * 5000)}]\n\n[auth]")
    result = load_text(tmp_path, text)
    assert len(result.errors) == 21 and "4980 more error(s)" in result.errors[-1].message


def test_many_files_sharing_an_id_name_a_few_of_the_others(tmp_path: Path) -> None:
    for i in range(50):
        write(tmp_path, f"f{i:02}.toml", good("same"))
    result = load_dir(tmp_path)
    assert len(result.errors) == 50
    assert all("(+46 more)" in e.message for e in result.errors)


# --- redaction and escaping -------------------------------------------------------------------


def test_redact_field_hides_secret_and_substituted_paths() -> None:
    from reconciler.plan import FieldChange, FieldOp

    sensitive = frozenset({("displayName",), ("aliases", 1)})
    changed = FieldChange(("displayName",), FieldOp.CHANGE, "old", UPSTREAM)
    assert redact_field(changed, sensitive) == FieldChange(
        ("displayName",), FieldOp.CHANGE, REDACTED, REDACTED
    )
    whole = FieldChange(("aliases",), FieldOp.ADD, None, ["a", UPSTREAM])
    assert redact_field(whole, sensitive).new == ["a", REDACTED]
    secret = FieldChange(("auth",), FieldOp.ADD, None, {"type": "api-key", "value": UPSTREAM})
    assert redact_field(secret).new == {"type": "api-key", "value": REDACTED}
    plain = FieldChange(("rpm",), FieldOp.CHANGE, 1, 2)
    assert redact_field(plain, sensitive) is plain


def test_scrub_removes_every_hidden_value_from_a_message() -> None:
    body = {"displayName": UPSTREAM, "auth": {"type": "api-key", "value": "inline-secret-1"}}
    values = hidden_values(body, frozenset({("displayName",)}))
    assert values == {UPSTREAM, "inline-secret-1"}
    text = f"upstream said: bad name {UPSTREAM!r} for key inline-secret-1"
    assert scrub(text, values) == "upstream said: bad name '(redacted)' for key (redacted)"


def test_printable_and_json_text() -> None:
    assert printable("meetkai:a b") == "meetkai:a b"
    assert printable("a\nb\x1b[0m\x9b\u202e") == "a\\nb\\x1b[0m\\x9b\\u202e"
    doc = json.dumps({"id": "a\x1b\x9b\u2028\U000e0001"}, ensure_ascii=False, indent=1)
    safe = json_text(doc)
    assert json.loads(safe) == json.loads(doc) and "\x9b" not in safe and "\n" in safe
    assert safe.replace("\n", "").isprintable()


# --- property: any bytes, any name ------------------------------------------------------------

_NAME_CHARS = st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",))
_TOKENS = st.sampled_from(
    [
        "${MKA1_API_KEY}",
        "${UPSTREAM_TOKEN}",
        "${TEAM_NAME}",
        "$${X}",
        "${",
        "[[",
        "]",
        "{",
        '"',
        "\ufeff",
        "\x1b",
        "\n",
        "= ",
        "[" * 3000,
        "id",
        "auth",
        "..",
    ]
)


def _mutated(base: str) -> st.SearchStrategy[bytes]:
    return st.lists(st.tuples(st.integers(0, len(base)), _TOKENS), max_size=6).map(
        lambda edits: _apply(base, edits).encode("utf-8", "surrogatepass")
    )


def _apply(base: str, edits: list[tuple[int, str]]) -> str:
    for at, token in sorted(edits, reverse=True):
        base = base[:at] + token + base[at:]
    return base


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | _TOKENS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
_CONTENT = st.one_of(
    st.binary(max_size=3000),
    _mutated(good("p", display="${TEAM_NAME}", auth='value = "${UPSTREAM_TOKEN}"')),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.text(alphabet=string.printable, max_size=500).map(str.encode),
)
_NAMES = st.one_of(
    st.text(_NAME_CHARS, min_size=1, max_size=40).map(lambda s: s + ".toml"),
    st.text(_NAME_CHARS, min_size=1, max_size=40).map(lambda s: s + ".json"),
    st.binary(min_size=1, max_size=40)
    .filter(lambda b: b"/" not in b and b"\x00" not in b)
    .map(lambda b: os.fsdecode(b + b".toml")),
).filter(lambda n: n not in (".", "..") and len(os.fsencode(n)) < 250)


@settings(
    max_examples=300,
    deadline=timedelta(seconds=10),  # a hang guard, not a speed target
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(content=_CONTENT, name=_NAMES, allow=st.sampled_from([(), ("*",), ("TEAM_*",)]))
def test_any_bytes_under_any_name_give_a_model_or_a_problem(
    content: bytes, name: str, allow: tuple[str, ...]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(content)
        result = load_file(
            path, tmp, env=ENV, policy=LoadPolicy(allow_env=allow, max_file_bytes=4000)
        )
    assert (result.body is None) == bool(result.errors)
    text = messages(result)
    assert "cannot load (" not in text  # the last-resort guard never had to catch anything
    assert KEY not in text and UPSTREAM not in text and "Team Rocket" not in text
    assert text.replace("\n", "").isprintable()


def test_health_errors_are_scrubbed_of_hidden_values() -> None:
    from reconciler import report
    from reconciler.spec import Entry, HealthResult

    entry = Entry(id="meetkai:a")
    probe = HealthResult(is_available=False, error=f"GET https://h/{UPSTREAM}: refused")
    [row] = report.health_rows([entry], None, {"meetkai:a": probe}, {UPSTREAM})
    assert row.error == "GET https://h/(redacted): refused"


def test_a_plan_never_shows_a_substituted_value_even_in_a_registry_error() -> None:
    from rich.console import Console

    from reconciler import report
    from reconciler.apply import Outcome
    from reconciler.plan import Action, Desired, make_plan

    body = {"id": "meetkai:a\x1b[2J", "displayName": UPSTREAM, "rpm": 1}
    desired = {"meetkai:a\x1b[2J": Desired(body, "m/a.toml", frozenset({("displayName",)}))}
    plan = make_plan(desired, [])
    failed = [Outcome("meetkai:a\x1b[2J", Action.CREATE, False, f"400: bad name {UPSTREAM!r}")]
    console = Console(record=True, width=200, color_system=None)
    report.render_plan(console, plan, outcomes=failed)
    text = console.export_text()
    doc = json_text(json.dumps(report.plan_json(plan, outcomes=failed), ensure_ascii=False))
    for out in (text, doc):
        assert UPSTREAM not in out and "\x1b" not in out
    assert "+ displayName: (redacted)" in text and "failed: 400: bad name '(redacted)'" in text
    assert "+ meetkai:a\\x1b[2J (m/a.toml): create" in text
