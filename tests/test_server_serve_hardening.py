"""``registry serve`` hardened, as users run it: a real server on loopback for what only a socket
shows (request head and chunked body limits, the access log), and the CLI for the key file."""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import RunningRegistry, free_port
from helpers import API, item, minimal
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.server import Store, create_app
from reconciler.server.run import MAX_HEAD, BoundedHttpTools, bind, url_of

runner = CliRunner()


@pytest.fixture
def registry_factory(
    process_registry_factory: Callable[..., RunningRegistry],
) -> Callable[..., RunningRegistry]:
    """``registry serve`` as the process it is: these tests are about the process."""
    return process_registry_factory


def exchange(registry: RunningRegistry, data: bytes, deadline: float = 15.0) -> bytes:
    """Send ``data`` on a fresh connection, then read until the server closes it."""
    port = int(registry.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def still_serves(registry: RunningRegistry) -> bool:
    headers = {"Authorization": f"Bearer {registry.api_key}"}
    with httpx.Client(base_url=registry.url, headers=headers, trust_env=False) as client:
        return client.get(API).status_code == 200


def wait_for(condition: Callable[[], bool], what: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_chunked_body_over_the_limit_answers_413_before_it_ends(
    registry_factory: Callable[..., RunningRegistry],
) -> None:
    registry = registry_factory(extra_args=["--max-body-bytes", "1000"])
    head = (
        f"POST {API} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {registry.api_key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    # Two 512-byte chunks and no end: the server must answer on the byte past the limit,
    # not wait for a body that never ends. (Nothing sent after it, so the close is clean.)
    body = b"200\r\n" + b" " * 512 + b"\r\n" + b"200\r\n" + b" " * 512
    answer = exchange(registry, head + body)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in answer.lower() and b"1000 bytes" in answer
    assert still_serves(registry)


def test_a_request_head_over_the_limit_answers_431_without_a_key(
    registry: RunningRegistry,
) -> None:
    line = b"GET /" + b"a" * MAX_HEAD  # never finished: no memory is promised to it
    answer = exchange(registry, line[: MAX_HEAD + 1])
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert still_serves(registry)
    assert f"refused a request: the request line and headers are over {MAX_HEAD} bytes (431)" in (
        registry.stderr()
    )


class QuickHead(BoundedHttpTools):
    head_deadline = 0.3


@pytest.fixture
def quick_head_url() -> Iterator[str]:
    """The registry app under uvicorn in a thread, with a 0.3 s deadline for request heads."""
    store = Store(":memory:")
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(create_app(store, "k"), http=QuickHead, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the server to start")
    yield url_of(sock)
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
    store.close()


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("sent", [b"", b"GET /_control HTTP/1.1\r\nHost: x\r\n"])
def test_a_request_head_that_stalls_answers_408(quick_head_url: str, sent: bytes) -> None:
    port = int(quick_head_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(sent)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"did not arrive within 0.3 s" in answer


def test_the_head_deadline_spares_a_kept_alive_connection(quick_head_url: str) -> None:
    port = int(quick_head_url.rsplit(":", 1)[1])
    request = b"GET /_control HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(request)
            assert reader.readline().startswith(b"HTTP/1.1 200 ")
            length = 0
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            assert b'"faults"' in reader.read(length)
            time.sleep(0.6)  # twice the head deadline: a timer left running closes it meanwhile


def test_deep_and_broken_json_answer_400_and_the_server_lives(registry: RunningRegistry) -> None:
    headers = {"Authorization": f"Bearer {registry.api_key}"}
    with httpx.Client(base_url=registry.url, headers=headers, timeout=15, trust_env=False) as c:
        for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a": ', b'{"x": "\\udc00"}'):
            assert c.post(API, content=body).status_code == 400
        assert c.post(API, json=minimal()).status_code == 200
    assert "Traceback" not in registry.stderr()


def test_the_access_log_cannot_be_forged_and_never_shows_user_info(
    registry: RunningRegistry,
) -> None:
    port = registry.url.rsplit(":", 1)[1]
    target = f"http://probe-user:pw-SECRET@127.0.0.1:{port}{API}/x%0aFORGED%1b[2J"
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {registry.api_key}\r\nConnection: close\r\n\r\n"
    )
    assert exchange(registry, request.encode()).startswith(b"HTTP/1.1 404 ")
    wait_for(lambda: "FORGED" in registry.stderr(), "the access log line")
    log = registry.stderr()
    assert "SECRET" not in log and "probe-user" not in log and "\x1b" not in log
    assert not any(line.startswith("FORGED") for line in log.splitlines())
    assert f"GET {API}/x\\nFORGED\\x1b[2J 404" in log


def test_the_database_is_private_on_a_real_server(
    registry_factory: Callable[..., RunningRegistry], tmp_path: Path
) -> None:
    db = tmp_path / "state" / "reconciler" / "registry.db"
    registry = registry_factory(extra_args=["--db", str(db)])
    with httpx.Client(
        base_url=registry.url,
        headers={"Authorization": f"Bearer {registry.api_key}"},
        trust_env=False,
    ) as client:
        assert client.post(API, json=minimal()).status_code == 200
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.parent.parent.stat().st_mode) == 0o700


# --- the store on its own -----------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    original = os.umask(0o022)
    os.umask(original)
    yield lambda mask: os.umask(mask) and None
    os.umask(original)


@pytest.mark.parametrize("mask", [0o000, 0o277], ids=["umask-000", "umask-277"])
def test_the_store_creates_its_files_0600_and_dirs_0700_whatever_the_umask(
    tmp_path: Path, umask: Callable[[int], None], mask: int
) -> None:
    before = stat.S_IMODE(tmp_path.stat().st_mode)
    db = tmp_path / "new" / "dir" / "registry.db"
    umask(mask)
    store = Store(db)
    try:
        store.put({"id": "a", "immutable": False, "definition": {}})
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        for directory in (db.parent, db.parent.parent):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        assert stat.S_IMODE(tmp_path.stat().st_mode) == before  # not made here: left alone
    finally:
        store.close()
    assert Store(db).count() == 1


def test_an_existing_database_readable_by_others_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "shared.db"
    Store(db).close()
    db.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="reconciler.server"):
        Store(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o644
    assert "readable by others (mode 644)" in caplog.text and "chmod 600" in caplog.text


def test_a_database_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    for db, says in (
        (tmp_path / "file" / "r.db", "Not a directory"),
        (tmp_path, "unable to open database file"),
    ):
        (tmp_path / "file").touch()
        result = runner.invoke(app, ["registry", "serve", "--port", "0", "--db", str(db)])
        assert result.exit_code == 1, result.output
        assert f"error: cannot open the database {db}: {says}" in result.output


# --- the key: from a file, from the environment, never shown ------------------------------------


def test_the_key_file_keeps_the_key_out_of_ps_and_wins_over_the_environment(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "registry.key"
    key_file.write_text("file-key-0123456789\n")
    port = free_port()
    registry = RunningRegistry(
        f"http://127.0.0.1:{port}",
        "file-key-0123456789",
        tmp_path / "r.db",
        ["--port", str(port), "--db", ":memory:", "--api-key-file", str(key_file)],
        log=tmp_path / "registry.log",
        extra_env={"MKA1_API_KEY": "env-key-9876543210"},
    )
    try:
        registry.start()  # waits until the file's key is accepted
        assert registry.process is not None
        cmdline = Path(f"/proc/{registry.process.pid}/cmdline").read_bytes()
        assert b"file-key" not in cmdline
        with httpx.Client(base_url=registry.url, trust_env=False) as client:
            bearer = {"Authorization": "Bearer env-key-9876543210"}
            assert client.get(API, headers=bearer).status_code == 403
            bearer = {"Authorization": "Bearer file-key-0123456789"}
            assert client.get(item("x"), headers=bearer).status_code == 404
    finally:
        registry.stop()
        registry.kill()
    assert registry.returncode == 0
    log = registry.stderr()
    assert "file-key" not in log and "env-key" not in log and "generated" not in log


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read the API key file"),
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"first-SECRET\nsecond-SECRET\n", "alone on one line"),
        (b"with space-SECRET", "alone on one line"),
        (b"\xff\xfe-SECRET", "not UTF-8"),
        (b"x-SECRET" * 1000, "over 4096 bytes"),
    ],
    ids=["missing", "empty", "only-newline", "two-lines", "space", "binary", "huge"],
)
def test_an_unusable_key_file_is_a_clear_error_naming_the_file(
    tmp_path: Path, content: bytes | None, says: str
) -> None:
    key_file = tmp_path / "the.key"
    if content is not None:
        key_file.write_bytes(content)
    result = runner.invoke(
        app,
        ["registry", "serve", "--port", "0", "--db", ":memory:", "--api-key-file", str(key_file)],
        env={"MKA1_API_KEY": ""},
    )
    assert result.exit_code == 1, result.output
    assert says in result.output and str(key_file) in result.output
    assert "SECRET" not in result.output


def test_a_directory_as_key_file_is_an_error_too(tmp_path: Path) -> None:
    result = runner.invoke(app, ["registry", "serve", "--api-key-file", str(tmp_path)])
    assert result.exit_code == 1
    assert f"cannot read the API key file {tmp_path}: Is a directory" in result.output


def test_the_key_on_the_command_line_and_in_a_file_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("file-key\n")
    args = ["registry", "serve", "--api-key", "cli-key", "--api-key-file", str(key_file)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "give --api-key or --api-key-file, not both" in result.output
    assert "cli-key" not in result.output and "file-key" not in result.output


def test_help_names_the_environment_variable_but_never_its_value() -> None:
    result = runner.invoke(
        app, ["registry", "serve", "--help"], env={"MKA1_API_KEY": "env-SECRET-value"}
    )
    assert result.exit_code == 0
    assert "MKA1_API_KEY" in result.output and "--api-key-file" in result.output
    assert "SECRET" not in result.output
