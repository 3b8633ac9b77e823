"""The local registry app in-process (httpx ASGITransport): answer shapes, auth, errors, rules."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import API, item, minimal
from starlette.applications import Starlette

from reconciler.server import Faults, Store, create_app

pytestmark = pytest.mark.anyio

SEED = json.loads((Path(__file__).parent / "data" / "seed_entry.json").read_text())
KEY = "test-key"


def seed_body() -> dict[str, Any]:
    body = copy.deepcopy(SEED["definition"])
    del body["source"], body["immutable"]
    return body


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []
    stores: list[Store] = []

    def make(key: str | None = KEY, **app_kwargs: Any) -> httpx.AsyncClient:
        store = app_kwargs.pop("store", None) or Store(":memory:")
        stores.append(store)
        app: Starlette = create_app(store, KEY, **app_kwargs)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://registry", headers=headers
        )
        client.app = app  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for store in stores:
        store.close()


@pytest.fixture
async def client(make_client: Callable[..., httpx.AsyncClient]) -> httpx.AsyncClient:
    return make_client()


def assert_error(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# --- answer shapes ----------------------------------------------------------------------------


async def test_add_answers_the_seed_entry_field_for_field(client: httpx.AsyncClient) -> None:
    response = await client.post(API, json=seed_body())
    assert response.status_code == 200
    entry = response.json()
    assert set(entry) == set(SEED)
    for key in ("id", "provider", "model_id", "source", "immutable", "definition"):
        assert entry[key] == SEED[key], key
    assert set(entry["health"]) == set(SEED["health"])
    assert entry["health"] == {"is_available": True, "last_health_check": None, "error": None}
    assert isinstance(entry["created_at"], int) and entry["created_at"] > 1_700_000_000_000
    assert entry["updated_at"] == entry["created_at"]


async def test_get_and_list_answer_the_stored_entry(client: httpx.AsyncClient) -> None:
    added = (await client.post(API, json=seed_body())).json()
    await client.post(API, json=minimal("meetkai:a-first"))
    got = await client.get(item(SEED["id"]))
    assert got.status_code == 200 and got.json() == added
    listed = (await client.get(API)).json()
    assert set(listed) == {"object", "data"} and listed["object"] == "list"
    assert [e["id"] for e in listed["data"]] == ["meetkai:a-first", SEED["id"]]
    assert listed["data"][1] == added


async def test_ids_with_reserved_characters_round_trip(client: httpx.AsyncClient) -> None:
    odd = "team:a b+&é@x=y;z"
    assert (await client.post(API, json=minimal(odd))).status_code == 200
    # Outside the id grammar (one URL path segment, printable): refused, naming the rule.
    for bad in ("team/a", "..", "a?b", "a#b", "a%2Fb", "a\x1bb"):
        refused = await client.post(API, json=minimal(bad))
        assert refused.status_code == 422 and "invalid id" in refused.text, bad
    got = await client.get(item(odd))
    assert got.status_code == 200 and got.json()["id"] == odd
    health = await client.post(item(odd) + "/health")
    assert health.status_code == 200
    assert (await client.delete(item(odd))).json() == {"deleted": True}
    assert_error(await client.get(item(odd)), 404, "not_found_error")


async def test_remove_answers_deleted_and_then_404(client: httpx.AsyncClient) -> None:
    await client.post(API, json=minimal())
    response = await client.delete(item("meetkai:min"))
    assert response.status_code == 200 and response.json() == {"deleted": True}
    assert_error(await client.get(item("meetkai:min")), 404, "not_found_error")
    assert_error(await client.delete(item("meetkai:min")), 404, "not_found_error")
    assert (await client.get(API)).json() == {"object": "list", "data": []}


async def test_health_without_anything_to_probe_says_why(client: httpx.AsyncClient) -> None:
    await client.post(API, json=minimal())
    response = await client.post(item("meetkai:min") + "/health")
    assert response.status_code == 200
    result = response.json()
    assert set(result) == {"is_available", "checked_at", "error"}
    assert result["is_available"] is False and "baseUrl" in result["error"]
    entry = (await client.get(item("meetkai:min"))).json()
    assert entry["health"] == {
        "is_available": False,
        "last_health_check": result["checked_at"],
        "error": result["error"],
    }


async def test_health_mode_off_is_available_without_probing(client: httpx.AsyncClient) -> None:
    await client.post(API, json=minimal(healthCheck={"mode": "off"}))
    result = (await client.post(item("meetkai:min") + "/health")).json()
    assert result["is_available"] is True and result["error"] is None
    assert_error(await client.post(item("meetkai:nope") + "/health"), 404, "not_found_error")


# --- auth and protocol errors -----------------------------------------------------------------


async def test_auth(make_client: Callable[..., httpx.AsyncClient]) -> None:
    anonymous = make_client(key=None)
    for method, path in [("GET", API), ("POST", API), ("GET", "/_control"), ("GET", "/nope")]:
        assert_error(await anonymous.request(method, path), 401, "authentication_error")
    assert_error(await anonymous.get(API, headers={"Authorization": "Basic x"}), 401,
                 "authentication_error")  # fmt: skip
    wrong = make_client(key="not-the-key")
    assert_error(await wrong.get(API), 403, "permission_error")
    assert_error(await wrong.post(API, json=minimal()), 403, "permission_error")
    right = make_client()
    response = await right.get(API, headers={"X-On-Behalf-Of": "user-42"})
    assert response.status_code == 200


async def test_unknown_routes_wrong_methods_bad_json(client: httpx.AsyncClient) -> None:
    for path in ("/nope", "/api/v1/llm/models/registryx", f"{API}/a/b", f"{API}/a/health/x"):
        assert_error(await client.get(path), 404, "not_found_error")
    response = await client.put(API, json=minimal())
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert_error(await client.post(item("x")), 405, "method_not_allowed")
    assert_error(await client.get(item("x") + "/health"), 405, "method_not_allowed")
    assert_error(await client.delete("/_control"), 405, "method_not_allowed")
    bad = await client.post(API, content=b"{not json", headers={"content-type": "application/json"})
    assert_error(bad, 400, "invalid_request_error")
    assert_error(await client.post(API, json=[minimal()]), 400, "invalid_request_error")
    await client.post(API, json=minimal())
    assert_error(await client.patch(item("meetkai:min"), content=b"nope"), 400,
                 "invalid_request_error")  # fmt: skip


async def test_add_422_lists_every_field_error_and_no_secret(client: httpx.AsyncClient) -> None:
    body = minimal()
    del body["capabilities"]["reasoning"]
    body["contextWindow"] = "big"
    body["contextWindw"] = 1
    body["auth"] = {"type": "api-key", "value": "sk-very-secret", "envVr": "X"}
    response = await client.post(API, json=body)
    err = assert_error(response, 422, "validation_error")
    locs = {d["loc"] for d in err["details"]}
    assert locs == {"capabilities.reasoning", "contextWindow", "contextWindw", "auth.envVr"}
    assert all(isinstance(d["msg"], str) and d["msg"] for d in err["details"])
    assert "sk-very-secret" not in response.text
    assert (await client.get(API)).json()["data"] == []


async def test_add_ignores_echoed_server_keys(client: httpx.AsyncClient) -> None:
    body = {**minimal(), "source": "yaml", "immutable": True}
    entry = (await client.post(API, json=body)).json()
    assert entry["source"] == "database" and entry["immutable"] is False


# --- add over an entry ------------------------------------------------------------------------


async def test_add_over_database_entry_replaces_it(client: httpx.AsyncClient) -> None:
    first = (await client.post(API, json=minimal(displayName="One", rpm=5))).json()
    second = (await client.post(API, json=minimal(displayName="Two"))).json()
    assert second["definition"]["displayName"] == "Two"
    assert "rpm" not in second["definition"]
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"]
    assert len((await client.get(API)).json()["data"]) == 1


async def test_strict_add_answers_409(make_client: Callable[..., httpx.AsyncClient]) -> None:
    client = make_client(strict_add=True)
    assert (await client.post(API, json=minimal(displayName="One"))).status_code == 200
    assert_error(await client.post(API, json=minimal(displayName="Two")), 409, "conflict_error")
    assert (await client.get(item("meetkai:min"))).json()["definition"]["displayName"] == "One"


# --- update -----------------------------------------------------------------------------------


async def test_update_is_partial_and_null_removes(client: httpx.AsyncClient) -> None:
    added = (await client.post(API, json=seed_body())).json()
    response = await client.patch(
        item(SEED["id"]), json={"displayName": "Renamed", "rpm": None, "id": SEED["id"]}
    )
    assert response.status_code == 200, response.text
    entry = response.json()
    expected = {**added["definition"], "displayName": "Renamed"}
    del expected["rpm"]
    assert entry["definition"] == expected
    assert entry["created_at"] == added["created_at"]
    assert entry["updated_at"] >= added["updated_at"]
    assert (await client.get(item(SEED["id"]))).json() == entry


async def test_update_refusals(client: httpx.AsyncClient) -> None:
    await client.post(API, json=minimal())
    target = item("meetkai:min")
    err = assert_error(await client.patch(target, json={"provider": None}), 422, "validation_error")
    assert [d["loc"] for d in err["details"]] == ["provider"]
    err = assert_error(await client.patch(target, json={"rpmm": 3}), 422, "validation_error")
    assert [d["loc"] for d in err["details"]] == ["rpmm"]
    assert_error(await client.patch(target, json={"id": "other"}), 422, "validation_error")
    assert_error(await client.patch(item("meetkai:nope"), json={"rpm": 1}), 404, "not_found_error")
    assert (await client.get(target)).json()["definition"] == {
        **minimal(),
        "source": "database",
        "immutable": False,
    }


# --- immutable entries ------------------------------------------------------------------------


async def test_immutable_entries_refuse_writes(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    client = make_client(immutable=[minimal("meetkai:fixed", baseUrl="http://127.0.0.1:9/v1")])
    entry = (await client.get(item("meetkai:fixed"))).json()
    assert entry["source"] == "yaml" and entry["immutable"] is True
    assert entry["definition"]["source"] == "yaml" and entry["definition"]["immutable"] is True
    assert entry["created_at"] is None and entry["updated_at"] is None
    for response in (
        await client.post(API, json=minimal("meetkai:fixed")),
        await client.patch(item("meetkai:fixed"), json={"rpm": 3}),
        await client.delete(item("meetkai:fixed")),
    ):
        err = assert_error(response, 403, "permission_error")
        assert "immutable" in err["message"]
    assert (await client.get(item("meetkai:fixed"))).json() == entry


async def test_immutable_set_is_replaced_at_start(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    store = Store(":memory:")
    make_client(store=store, immutable=[minimal("meetkai:old")])
    client = make_client(store=store, immutable=[minimal("meetkai:new")])
    ids = [e["id"] for e in (await client.get(API)).json()["data"]]
    assert ids == ["meetkai:new"]


# --- add-defaults -----------------------------------------------------------------------------


async def test_add_defaults_stores_keys_never_sent(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    client = make_client(add_defaults=True)
    body = minimal(aliases=["mine"])
    definition = (await client.post(API, json=body)).json()["definition"]
    assert definition["hidden"] is False and definition["rerouteRules"] == []
    assert definition["aliases"] == ["mine"]
    assert definition["version"] == 1
    assert definition["capabilities"]["supportsTemperature"] is False
    for key, value in body.items():
        if key != "capabilities":
            assert definition[key] == value
    updated = await client.patch(item("meetkai:min"), json={"rpm": 7})
    assert updated.status_code == 200, updated.text
    assert updated.json()["definition"]["version"] == 1
    assert updated.json()["definition"]["rpm"] == 7


# --- control and faults in-process ------------------------------------------------------------


async def test_control_reads_changes_and_validates(client: httpx.AsyncClient) -> None:
    state = (await client.get("/_control")).json()
    assert set(state) == {"faults", "options", "counts"}
    assert state["faults"] == Faults().model_dump()
    assert state["options"] == {"strict_add": False, "add_defaults": False}
    await client.get(API)
    await client.post(API, json=minimal())
    counts = (await client.get("/_control")).json()["counts"]
    assert counts == {
        "list": 1, "get": 0, "add": 1, "update": 0, "remove": 0, "health": 0, "writes": 1,
    }  # fmt: skip
    new = (await client.post("/_control", json={"strict_add": True, "reset_counts": True})).json()
    assert new["options"]["strict_add"] is True and set(new["counts"].values()) == {0}
    assert_error(await client.post(API, json=minimal()), 409, "conflict_error")
    err = assert_error(await client.post("/_control", json={"latncy_ms": 1}), 400,
                       "invalid_request_error")  # fmt: skip
    assert "latency_ms" in err["message"]
    assert_error(await client.post("/_control", json={"fail_writes": 2}), 422, "validation_error")


async def test_rate_limit_and_failed_writes(client: httpx.AsyncClient) -> None:
    await client.post("/_control", json={"rate_limit_next": 1, "retry_after": 4})
    limited = await client.get(API)
    assert_error(limited, 429, "rate_limit_error")
    assert limited.headers["retry-after"] == "4"
    assert (await client.get(API)).status_code == 200
    await client.post("/_control", json={"fail_next_writes": 1})
    assert_error(await client.post(API, json=minimal()), 503, "service_unavailable")
    assert (await client.get(API)).json()["data"] == []
    assert (await client.post(API, json=minimal())).status_code == 200


async def test_drop_is_kept_for_a_write_that_stored_nothing(client: httpx.AsyncClient) -> None:
    await client.post("/_control", json={"drop_next_writes": 1})
    assert_error(await client.post(API, json={"id": "x"}), 422, "validation_error")
    assert_error(await client.delete(item("absent")), 404, "not_found_error")
    state = (await client.get("/_control")).json()
    assert state["faults"]["drop_next_writes"] == 1
    assert state["counts"]["writes"] == 2


async def test_head_on_readable_routes(client: httpx.AsyncClient) -> None:
    assert (await client.head(API)).status_code == 200
    assert (await client.head(item("absent"))).status_code == 404
