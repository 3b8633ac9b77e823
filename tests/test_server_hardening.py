"""The local registry read as an attacker would, in-process (httpx ASGITransport): body limits,
hostile JSON, what reaches the log and the error messages, the key on every route, the probe."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from helpers import API, item, minimal

from reconciler.server import Store, create_app
from reconciler.server.app import make_entry
from reconciler.server.probe import probe

pytestmark = pytest.mark.anyio

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(**app_kwargs: Any) -> httpx.AsyncClient:
        app = create_app(Store(":memory:"), KEY, **app_kwargs)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://registry", headers=AUTH
        )
        client.app = app  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
        client.app.state.store.close()  # type: ignore[attr-defined]


@pytest.fixture
async def client(make_client: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return make_client()


def error_of(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["type"] == kind
    return body["error"]["message"]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- request body limit -------------------------------------------------------------------------


async def test_a_body_over_the_limit_answers_413_and_stores_nothing(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    client = make_client(max_body_bytes=1000)
    body = json.dumps(minimal(displayName="x" * 2000)).encode()
    response = await client.post(API, content=body)
    assert "1000 bytes" in error_of(response, 413, "request_too_large")
    assert response.headers["connection"] == "close"
    fits = json.dumps(minimal(displayName="x" * 500)).encode()
    assert len(fits) <= 1000
    assert (await client.post(API, content=fits)).status_code == 200
    ids = [e["id"] for e in (await client.get(API)).json()["data"]]
    assert ids == ["meetkai:min"]


async def test_a_chunked_body_is_cut_off_at_the_limit_not_buffered(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    client = make_client(max_body_bytes=64 * 1024)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"displayName": "'
        while True:  # ends only because the server stops reading
            sent += 4096
            yield b"x" * 4096

    response = await client.post(API, content=endless())
    assert "content-length" not in response.request.headers
    error_of(response, 413, "request_too_large")
    assert sent <= 64 * 1024 + 4096


async def test_a_body_that_never_finishes_arriving_answers_408(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    client = make_client(body_deadline=0.2)
    never = anyio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"id": '
        await never.wait()
        yield b"}"

    with anyio.fail_after(10):
        response = await client.post(API, content=stalled())
    assert "0.2 s" in error_of(response, 408, "request_timeout")


async def test_the_body_limit_guards_control_and_update_too(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    client = make_client(max_body_bytes=100)
    big = {"latency_ms": 0, "pad": "x" * 200}
    error_of(await client.post("/_control", json=big), 413, "request_too_large")
    error_of(await client.patch(item("meetkai:a"), json=big), 413, "request_too_large")


async def test_an_invalid_content_length_answers_400(client: httpx.AsyncClient) -> None:
    response = await client.post(API, content=b"{}", headers={"Content-Length": "-1"})
    assert "Content-Length" in error_of(response, 400, "invalid_request_error")


# --- hostile JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"created": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (nested(100_000), "nested more than 32"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested more than 32"),
        (b'{"a": ' + nested(40) + b"}", "nested more than 32"),
        (b'{"displayName": "\\ud800"}', "lone surrogate"),
        (b'{"\\udfff": 1}', "lone surrogate"),
    ],
    ids=[
        "empty",
        "cut",
        "not-utf8",
        "array",
        "huge-int",
        "deep-array",
        "deep-object",
        "deep-field",
        "surrogate",
        "surrogate-key",
    ],
)
async def test_malformed_or_hostile_json_answers_400(
    client: httpx.AsyncClient, body: bytes, says: str
) -> None:
    for response in (
        await client.post(API, content=body),
        await client.patch(item("meetkai:min"), content=body),
        await client.post("/_control", content=body),
    ):
        assert says in error_of(response, 400, "invalid_request_error")
    assert (await client.get(API)).json()["data"] == []


async def test_paired_surrogates_and_real_nesting_are_fine(client: httpx.AsyncClient) -> None:
    body = minimal(
        displayName="\U0001f600 ok",
        auth={"type": "composite", "strategies": [{"type": "custom-headers", "headers": {}}]},
    )
    response = await client.post(API, content=json.dumps(body).encode())  # ensure_ascii pairs
    assert response.status_code == 200, response.text
    assert response.json()["definition"]["displayName"] == "\U0001f600 ok"


# --- what the log and the messages repeat -------------------------------------------------------


async def test_the_access_log_escapes_the_path_and_cuts_it(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    forged = "x%0a2026-01-01 00:00:00 reconciler.server DELETE /everything 200%1b[2J%e2%80%ae"
    with caplog.at_level(logging.INFO, logger="reconciler.server"):
        await client.get(f"{API}/{forged}")
        await client.get(f"{API}/{'a' * 60_000}", headers=AUTH)
    lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.server"]
    assert len(lines) == 2
    assert all("\n" not in line and "\x1b" not in line and "\u202e" not in line for line in lines)
    assert "x\\n2026-01-01" in lines[0] and "\\x1b[2J\\u202e" in lines[0]
    assert len(lines[1]) < 400 and "(+" in lines[1]


async def test_error_messages_escape_and_cut_ids(client: httpx.AsyncClient) -> None:
    message = error_of(await client.get(item("a\nb\x1bc")), 404, "not_found_error")
    assert "a\\nb\\x1bc" in message and "\n" not in message
    message = error_of(await client.get(item("a" * 60_000)), 404, "not_found_error")
    assert len(message) < 400
    message = error_of(await client.get("/nothing/%1b"), 404, "not_found_error")
    assert message == "no route for /nothing/\\x1b"
    details = (await client.post(API, json=minimal(**{"\x1b[31m": 1}))).json()["error"]["details"]
    assert [d["loc"] for d in details] == ["\\x1b[31m"]


@pytest.mark.parametrize(
    "bad_id", ["a" * 100_000, "a\nb", "a\x1b[2Jb", "a\u202eb"], ids=["100k", "LF", "ESC", "bidi"]
)
async def test_ids_outside_the_grammar_answer_422_naming_id_and_are_not_echoed(
    client: httpx.AsyncClient, bad_id: str
) -> None:
    response = await client.post(API, json=minimal(bad_id))
    message = error_of(response, 422, "validation_error")
    assert [d["loc"] for d in response.json()["error"]["details"]] == ["id"]
    assert "invalid id" in message and bad_id not in response.text and len(response.text) < 1000
    assert (await client.get(API)).json()["data"] == []


async def test_an_entry_with_a_newline_in_its_id_can_still_be_read_and_removed(
    client: httpx.AsyncClient,
) -> None:
    # Stored before ids had a grammar (an old database): it must not be stuck there for good.
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    store.put(make_entry(minimal("old\nid")))
    assert (await client.get(item("old\nid"))).json()["id"] == "old\nid"
    assert (await client.delete(item("old\nid"))).json() == {"deleted": True}
    assert store.count() == 0


# --- the key on every route ---------------------------------------------------------------------


async def test_control_needs_the_key_to_read_or_to_change(client: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        status = 401 if headers["Authorization"] == "" else 403
        assert (await client.get("/_control", headers=headers)).status_code == status
        response = await client.post("/_control", json={"fail_next_writes": 5}, headers=headers)
        assert response.status_code == status
    assert (await client.get("/_control")).json()["faults"]["fail_next_writes"] == 0


async def test_an_unauthenticated_oversized_body_gets_401_not_413(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    client = make_client(max_body_bytes=10)
    response = await client.post(API, content=b"x" * 100, headers={"Authorization": ""})
    error_of(response, 401, "authentication_error")


# --- the health probe ---------------------------------------------------------------------------


class RawUpstream:
    """A loopback server answering every connection with ``script`` (bytes, or a callable
    writing to the socket), for probes that must not trust what they are told."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.script = script
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    self.script(conn)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def raw_upstream() -> Iterator[Callable[[Callable[[socket.socket], None]], RawUpstream]]:
    started: list[RawUpstream] = []

    def start(script: Callable[[socket.socket], None]) -> RawUpstream:
        started.append(RawUpstream(script))
        return started[-1]

    yield start
    for upstream in started:
        upstream.close()


async def test_the_probe_reads_the_status_not_an_endless_body(
    client: httpx.AsyncClient, raw_upstream: Callable[..., RawUpstream]
) -> None:
    def endless(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        for _ in range(100_000):  # 6.5 GB if anybody read it; the probe hangs up first
            conn.sendall(chunk)

    upstream = raw_upstream(endless)
    await client.post(API, json=minimal(healthCheck={"url": upstream.url + "/hc"}))
    with anyio.fail_after(20):
        result = (await client.post(item("meetkai:min") + "/health")).json()
    assert result["is_available"] is True, result


async def test_the_probe_has_one_deadline_for_a_dripping_endpoint(
    client: httpx.AsyncClient, raw_upstream: Callable[..., RawUpstream]
) -> None:
    release = threading.Event()

    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not release.wait(0.05):  # a header byte at a time, each well within the timeout
            conn.sendall(b"X")

    upstream = raw_upstream(drip)
    check = {"mode": "preflight", "path": "/hc", "timeoutMs": 300}
    await client.post(API, json=minimal(baseUrl=upstream.url, healthCheck=check))
    try:
        with anyio.fail_after(20):
            result = (await client.post(item("meetkai:min") + "/health")).json()
    finally:
        release.set()
    assert result == {**result, "is_available": False, "error": "timed out after 0.3 s"}


async def test_the_probe_never_repeats_url_user_info(
    client: httpx.AsyncClient, raw_upstream: Callable[..., RawUpstream]
) -> None:
    closed = raw_upstream(lambda conn: None)
    closed.close()  # a port nobody listens on any more: connection refused
    url = closed.url.replace("//", "//probe-user:pw-SECRET@")
    assert (await client.post(API, json=minimal(healthCheck={"url": url}))).status_code == 200
    result = (await client.post(item("meetkai:min") + "/health")).json()
    assert result["is_available"] is False and "connection refused" in result["error"]
    assert "SECRET" not in json.dumps(result), result
    entry = (await client.get(item("meetkai:min"))).json()
    assert "SECRET" not in json.dumps(entry["health"])


async def test_a_url_httpx_cannot_build_is_a_failed_probe_not_a_crash() -> None:
    # The schema keeps such hosts out of the store; the probe does not rely on it.
    outcome = await probe({"healthCheck": {"url": "http://u:pw-SECRET@xn--zz.com/hc"}})
    assert outcome.is_available is False and outcome.error
    assert "SECRET" not in outcome.error
