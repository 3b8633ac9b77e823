"""The local registry as users run it: ``reconciler registry serve`` in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, RunningRegistry, Upstream, clean_env
from helpers import API, item, minimal


@pytest.fixture
def registry_factory(
    process_registry_factory: Callable[..., RunningRegistry],
) -> Callable[..., RunningRegistry]:
    """``registry serve`` as the process it is: these tests are about the process."""
    return process_registry_factory


def client_for(registry: RunningRegistry) -> httpx.Client:
    return httpx.Client(
        base_url=registry.url,
        headers={"Authorization": f"Bearer {registry.api_key}"},
        timeout=10,
        trust_env=False,
    )


def wait_for(condition: Any, what: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_entries_survive_a_restart(registry: RunningRegistry) -> None:
    odd = "team:x y+z"
    with client_for(registry) as client:
        added = client.post(API, json=minimal(odd, displayName="Kept")).json()
        client.post(API, json=minimal("meetkai:gone"))
        assert client.delete(item("meetkai:gone")).json() == {"deleted": True}
    registry.stop()
    assert registry.returncode == 0
    registry.start()
    with client_for(registry) as client:
        assert client.get(item(odd)).json() == added
        assert [e["id"] for e in client.get(API).json()["data"]] == [odd]


def test_fifty_concurrent_adds_lose_nothing(registry: RunningRegistry) -> None:
    async def add_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=registry.url,
            headers={"Authorization": f"Bearer {registry.api_key}"},
            timeout=30,
            trust_env=False,
            limits=httpx.Limits(max_connections=50),
        ) as client:
            calls = [client.post(API, json=minimal(f"meetkai:m{i:02d}")) for i in range(50)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(add_all())
    assert [r.status_code for r in responses] == [200] * 50
    registry.stop()
    registry.start()
    with client_for(registry) as client:
        ids = [e["id"] for e in client.get(API).json()["data"]]
    assert ids == [f"meetkai:m{i:02d}" for i in range(50)]


def test_health_against_live_and_dead_upstream(
    registry: RunningRegistry, upstream: Upstream
) -> None:
    with client_for(registry) as client:
        client.post(API, json=minimal("meetkai:legacy", healthCheck={"url": upstream.url + "/hc"}))
        client.post(
            API,
            json=minimal(
                "meetkai:pre",
                baseUrl=upstream.url + "/v1",
                healthCheck={"mode": "preflight", "path": "/ready", "method": "HEAD"},
            ),
        )
        client.post(API, json=minimal("meetkai:base", baseUrl=upstream.url + "/v1"))

        live = client.post(item("meetkai:legacy") + "/health").json()
        assert live["is_available"] is True and live["error"] is None
        assert set(live) == {"is_available", "checked_at", "error"}
        assert client.post(item("meetkai:pre") + "/health").json()["is_available"] is True
        assert client.post(item("meetkai:base") + "/health").json()["is_available"] is True
        assert upstream.requests == [("GET", "/hc"), ("HEAD", "/v1/ready"), ("GET", "/v1")]
        stored = client.get(item("meetkai:legacy")).json()["health"]
        assert stored == {"is_available": True, "last_health_check": live["checked_at"],
                          "error": None}  # fmt: skip

        upstream.healthy = False
        sick = client.post(item("meetkai:legacy") + "/health").json()
        assert sick["is_available"] is False and "503" in sick["error"]

        upstream.stop()
        dead = client.post(item("meetkai:legacy") + "/health").json()
        assert dead["is_available"] is False and "connection refused" in dead["error"]
        stored = client.get(item("meetkai:legacy")).json()["health"]
        assert stored == {"is_available": False, "last_health_check": dead["checked_at"],
                          "error": dead["error"]}  # fmt: skip
        assert dead["checked_at"] >= sick["checked_at"] >= live["checked_at"]


def test_latency_fault(registry: RunningRegistry) -> None:
    registry.control(latency_ms=400)
    with client_for(registry) as client:
        started = time.perf_counter()
        assert client.get(API).status_code == 200
        slow = time.perf_counter() - started
    assert slow >= 0.4
    assert registry.control(latency_ms=0)["faults"]["latency_ms"] == 0


def test_fail_writes_faults(registry: RunningRegistry) -> None:
    registry.control(fail_writes=1.0)
    with client_for(registry) as client:
        for response in (
            client.post(API, json=minimal()),
            client.patch(item("meetkai:min"), json={"rpm": 1}),
            client.delete(item("meetkai:min")),
        ):
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "service_unavailable"
        assert client.get(API).status_code == 200
        registry.control(fail_writes=0, fail_next_writes=2)
        codes = [client.post(API, json=minimal()).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert registry.counts()["writes"] == 6


def test_rate_limit_fault(registry: RunningRegistry) -> None:
    registry.control(rate_limit_next=2, retry_after=7)
    with client_for(registry) as client:
        first, second = client.get(API), client.post(API, json=minimal())
        third = client.get(API)
    for response in (first, second):
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
    assert third.status_code == 200 and third.json()["data"] == []


def test_dropped_connection_after_the_write_was_stored(registry: RunningRegistry) -> None:
    registry.control(drop_next_writes=1)
    with client_for(registry) as client, pytest.raises(httpx.RemoteProtocolError):
        client.post(API, json=minimal(displayName="Stored anyway"))
    with client_for(registry) as client:
        got = client.get(item("meetkai:min"))
    assert got.status_code == 200 and got.json()["definition"]["displayName"] == "Stored anyway"
    assert registry.control()["faults"]["drop_next_writes"] == 0


def test_counts_and_reset(registry: RunningRegistry) -> None:
    registry.control(reset_counts=True)
    with client_for(registry) as client:
        client.get(API)
        client.post(API, json=minimal())
        client.get(item("meetkai:min"))
    assert registry.counts() == {
        "list": 1, "get": 1, "add": 1, "update": 0, "remove": 0, "health": 0, "writes": 1,
    }  # fmt: skip


def test_immutable_from_directory(registry_factory: Any, models_dir: Path) -> None:
    registry = registry_factory(immutable_from=models_dir)
    with client_for(registry) as client:
        entries = client.get(API).json()["data"]
        assert len(entries) == 6
        assert {(e["source"], e["immutable"]) for e in entries} == {("yaml", True)}
        target = item(entries[0]["id"])
        assert client.delete(target).status_code == 403
        assert client.patch(target, json={"rpm": 1}).status_code == 403
        assert client.post(API, json={**entries[0]["definition"]}).status_code == 403


def test_sigterm_and_sigint_stop_cleanly_and_log_lines(registry: RunningRegistry) -> None:
    with client_for(registry) as client:
        client.get(API)
    registry.stop()
    assert registry.returncode == 0
    log = registry.stderr()
    assert f"registry listening on {registry.url}" in log
    assert "GET /api/v1/llm/models/registry 200 " in log
    assert registry.api_key not in log
    registry.start()
    assert registry.process is not None
    registry.process.send_signal(signal.SIGINT)
    assert registry.process.wait(timeout=10) == 0
    assert registry.stderr().count("registry stopped") == 2


def test_port_zero_and_generated_key_printed_once(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "registry",
                "serve",
                "--port",
                "0",
                "--db",
                ":memory:",
            ],
            stdout=out,
            stderr=out,
            env=clean_env(),
            cwd=REPO,
        )
    try:
        wait_for(lambda: "registry listening on" in log.read_text(), "the start line")
        text = log.read_text()
        url = text.split("registry listening on ")[1].split()[0]
        key = text.split("shown only now): ")[1].split()[0]
        assert not url.endswith(":0")
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
            assert client.get(API, headers={"Authorization": f"Bearer {key}"}).status_code == 200
            assert client.get(API).status_code == 401
        assert log.read_text().count(key) == 1
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_key_from_environment(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = {**clean_env(), "MKA1_API_KEY": "from-env-key"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "registry",
                "serve",
                "--port",
                "0",
                "--db",
                str(tmp_path / "r.db"),
            ],
            stdout=out,
            stderr=out,
            env=env,
            cwd=REPO,
        )
    try:
        wait_for(lambda: "registry listening on" in log.read_text(), "the start line")
        url = log.read_text().split("registry listening on ")[1].split()[0]
        headers = {"Authorization": "Bearer from-env-key"}
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
            assert client.get(API, headers=headers).status_code == 200
        assert "from-env-key" not in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert os.path.exists(tmp_path / "r.db")
