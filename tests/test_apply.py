"""apply_plan and check_health: against the local registry (in-process over ASGI, or the real
server subprocess for faults that need a socket) and MockTransport where a handler must count.

Retry waits go through a recording fake sleep, so no test waits for real. No timed tests here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import httpx
import pytest
from helpers import minimal

from reconciler.apply import Outcome, apply_plan, check_health, patch_body
from reconciler.plan import Action, Change, FieldChange, FieldOp, Plan
from reconciler.registry import API_PREFIX, RegistryClient, RegistryError, RetryPolicy
from reconciler.server.app import create_app
from reconciler.server.faults import Faults
from reconciler.server.store import Store

KEY = "test-key-apply"
NO_JITTER = RetryPolicy(jitter=0.0)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class RecordedSleep:
    """An injectable sleep that records the waits asked for and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def body(model_id: str, **extra: Any) -> dict[str, Any]:
    return minimal(model_id, **{"healthCheck": {"mode": "off"}, **extra})


def create(model_id: str, **extra: Any) -> Change:
    return Change(model_id, Action.CREATE, f"{model_id}.toml", body=body(model_id, **extra))


def update(model_id: str, *fields: FieldChange, **extra: Any) -> Change:
    return Change(
        model_id, Action.UPDATE, f"{model_id}.toml", fields=fields, body=body(model_id, **extra)
    )


def delete(model_id: str) -> Change:
    return Change(model_id, Action.DELETE)


class Local:
    """The registry app in-process: a client over ASGITransport plus the app's state."""

    def __init__(self, *, strict_add: bool = False, faults: Faults | None = None, **kw: Any):
        self.store = Store()
        self.app = create_app(self.store, KEY, strict_add=strict_add, faults=faults, **kw)
        self.sleep = RecordedSleep()

    def client(self) -> RegistryClient:
        return RegistryClient(
            "http://registry.local",
            KEY,
            transport=httpx.ASGITransport(app=self.app),
            retry=NO_JITTER,
            sleep=self.sleep,
        )

    @property
    def counts(self) -> dict[str, int]:
        return self.app.state.control.counts

    def definition(self, model_id: str) -> dict[str, Any] | None:
        entry = self.store.get(model_id)
        return None if entry is None else entry["definition"]

    async def apply(self, *changes: Change, **kwargs: Any) -> list[Outcome]:
        async with self.client() as client:
            return await apply_plan(Plan(changes), client, **kwargs)

    async def seed(self, *bodies: dict[str, Any]) -> None:
        async with self.client() as client:
            for b in bodies:
                await client.add(b)
        self.app.state.control.reset_counts()


# --- plain data -------------------------------------------------------------------------------


def test_patch_body_drops_id_and_nulls_removed_top_level_fields_only() -> None:
    change = update(
        "meetkai:a",
        FieldChange(("hidden",), FieldOp.REMOVE, old=True),
        FieldChange(("capabilities", "supportsTopP"), FieldOp.REMOVE, old=True),
        FieldChange(("contextWindow",), FieldOp.CHANGE, old=1, new=8192),
    )
    patch = patch_body(change)
    assert "id" not in patch
    assert patch["hidden"] is None
    assert patch["contextWindow"] == 8192
    assert "supportsTopP" not in patch["capabilities"]  # sent whole, so it is dropped anyway
    assert set(patch) == (set(change.body or {}) - {"id"}) | {"hidden"}


# --- against the local registry app -----------------------------------------------------------


def test_only_writes_are_applied_one_outcome_each_in_plan_order() -> None:
    local = Local()

    async def scenario() -> list[Outcome]:
        await local.seed(body("meetkai:old"), body("meetkai:upd"), body("meetkai:same"))
        return await local.apply(
            create("meetkai:new"),
            Change("meetkai:same", Action.UNCHANGED),
            update("meetkai:upd", contextWindow=4096),
            Change("meetkai:yaml", Action.IMMUTABLE, "yaml.toml", reason="immutable"),
            Change("meetkai:bad", Action.INVALID, "bad.toml", reason="invalid"),
            delete("meetkai:old"),
        )

    local_outcomes = run(scenario())
    assert [(o.id, o.action, o.ok) for o in local_outcomes] == [
        ("meetkai:new", Action.CREATE, True),
        ("meetkai:upd", Action.UPDATE, True),
        ("meetkai:old", Action.DELETE, True),
    ]
    assert local.definition("meetkai:new") is not None
    assert (local.definition("meetkai:upd") or {})["contextWindow"] == 4096
    assert local.definition("meetkai:old") is None
    assert local.counts["writes"] == 3


def test_on_result_is_called_once_per_attempted_change() -> None:
    local = Local()
    seen: list[Outcome] = []
    outcomes = run(
        local.apply(
            create("meetkai:a"),
            create("meetkai:b"),
            Change("meetkai:c", Action.UNCHANGED),
            on_result=seen.append,
        )
    )
    assert sorted(seen) == sorted(outcomes) and len(seen) == 2


def test_update_by_add_on_a_strict_registry_falls_back_to_patch_with_nulls() -> None:
    local = Local(strict_add=True)
    change = update(
        "meetkai:a",
        FieldChange(("hidden",), FieldOp.REMOVE, old=True),
        FieldChange(("displayName",), FieldOp.CHANGE, old="Old", new="New"),
        displayName="New",
    )

    async def scenario() -> list[Outcome]:
        await local.seed(body("meetkai:a", hidden=True, displayName="Old"))
        return await local.apply(change)

    assert run(scenario()) == [Outcome("meetkai:a", Action.UPDATE, True)]
    stored = local.definition("meetkai:a") or {}
    assert "hidden" not in stored and stored["displayName"] == "New"
    assert local.counts["add"] == 1 and local.counts["update"] == 1


def test_create_answered_409_falls_back_to_patch() -> None:
    local = Local(strict_add=True)

    async def scenario() -> list[Outcome]:
        # Someone created it between the plan and the apply.
        await local.seed(body("meetkai:a", contextWindow=1))
        return await local.apply(create("meetkai:a"))

    assert run(scenario()) == [Outcome("meetkai:a", Action.CREATE, True)]
    assert (local.definition("meetkai:a") or {})["contextWindow"] == 8192
    assert local.counts["update"] == 1


def test_update_method_patch_never_adds() -> None:
    local = Local()
    change = update("meetkai:a", FieldChange(("rpm",), FieldOp.REMOVE, old=60))

    async def scenario() -> list[Outcome]:
        await local.seed(body("meetkai:a", rpm=60))
        return await local.apply(change, update_method="patch")

    assert run(scenario())[0].ok
    assert "rpm" not in (local.definition("meetkai:a") or {})
    assert local.counts["add"] == 0 and local.counts["update"] == 1


def test_transient_503s_are_retried_and_recovered() -> None:
    local = Local(faults=Faults(fail_next_writes=2))
    outcomes = run(local.apply(create("meetkai:a")))
    assert outcomes == [Outcome("meetkai:a", Action.CREATE, True)]
    assert local.sleep.waits == pytest.approx([0.5, 0.75])
    assert local.counts["add"] == 3


def test_immutable_entry_write_fails_with_403_and_the_server_message() -> None:
    local = Local(immutable=[body("meetkai:yaml")])
    outcomes = run(local.apply(delete("meetkai:yaml"), create("meetkai:b")))
    failed, ok = outcomes
    assert not failed.ok and failed.status == 403
    assert failed.error is not None and "immutable" in failed.error
    assert ok.ok and local.definition("meetkai:b") is not None


def test_validation_failure_is_a_message_with_field_details() -> None:
    local = Local()
    bad = Change("meetkai:a", Action.CREATE, "a.toml", body={**body("meetkai:a"), "created": -1})
    (outcome,) = run(local.apply(bad))
    assert not outcome.ok and outcome.status == 422
    assert outcome.error is not None and "created" in outcome.error
    assert "Traceback" not in outcome.error and KEY not in outcome.error


def test_check_health_answers_per_id_in_order() -> None:
    local = Local()

    async def scenario() -> dict[str, Any]:
        await local.seed(body("meetkai:a"), body("meetkai:b"))
        async with local.client() as client:
            return await check_health(client, ["meetkai:b", "meetkai:gone", "meetkai:a"])

    results = run(scenario())
    assert list(results) == ["meetkai:b", "meetkai:gone", "meetkai:a"]
    assert results["meetkai:a"].is_available is True
    gone = results["meetkai:gone"]
    assert isinstance(gone, RegistryError) and gone.status == 404


# --- MockTransport: counting and a model that never succeeds --------------------------------


def test_concurrency_bound_is_respected_and_reached() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        # Yield many times: unbounded, every task would be inside here before any left.
        for _ in range(20):
            await asyncio.sleep(0)
        in_flight -= 1
        if request.method == "DELETE":
            return httpx.Response(200, json={"deleted": True})
        return httpx.Response(200, json={"id": "x"})

    changes = [create(f"meetkai:c{i}") for i in range(6)] + [
        delete(f"meetkai:d{i}") for i in range(6)
    ]

    async def scenario(concurrency: int) -> list[Outcome]:
        async with RegistryClient(
            "http://registry.test", KEY, transport=httpx.MockTransport(handler)
        ) as client:
            return await apply_plan(Plan(tuple(changes)), client, concurrency=concurrency)

    for limit in (1, 3, 5):
        peak = 0
        outcomes = run(scenario(limit))
        assert len(outcomes) == 12 and all(o.ok for o in outcomes)
        assert peak == limit


def test_a_model_that_keeps_failing_does_not_stop_the_others() -> None:
    sleep = RecordedSleep()
    bad_path = f"{API_PREFIX}/meetkai%3Abad"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.raw_path.decode() == bad_path:
            return httpx.Response(503, json={"error": {"message": "backend down"}})
        if request.method == "DELETE":
            return httpx.Response(200, json={"deleted": True})
        return httpx.Response(200, json={"id": "x"})

    changes = (create("meetkai:a"), delete("meetkai:bad"), create("meetkai:b"))
    seen: list[Outcome] = []

    async def scenario() -> list[Outcome]:
        async with RegistryClient(
            "http://registry.test",
            KEY,
            transport=httpx.MockTransport(handler),
            retry=NO_JITTER,
            sleep=sleep,
        ) as client:
            return await apply_plan(Plan(changes), client, on_result=seen.append)

    outcomes = run(scenario())
    assert [(o.id, o.ok) for o in outcomes] == [
        ("meetkai:a", True),
        ("meetkai:bad", False),
        ("meetkai:b", True),
    ]
    bad = outcomes[1]
    assert bad.status == 503 and bad.error is not None and "backend down" in bad.error
    assert sum(sleep.waits) == pytest.approx(15.0)  # it used the whole retry budget
    assert sorted(seen) == sorted(outcomes)


def test_unexpected_exception_becomes_a_failed_outcome() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("boom")

    async def scenario() -> list[Outcome]:
        async with RegistryClient(
            "http://registry.test", KEY, transport=httpx.MockTransport(handler)
        ) as client:
            return await apply_plan(Plan((create("meetkai:a"),)), client)

    (outcome,) = run(scenario())
    assert not outcome.ok and outcome.error == "RuntimeError: boom"


# --- the real server subprocess: faults that need a socket ------------------------------------


def real_client(registry: Any, sleep: RecordedSleep) -> RegistryClient:
    return RegistryClient(registry.url, registry.api_key, retry=NO_JITTER, sleep=sleep)


def test_dropped_connection_after_a_stored_write_is_recovered(registry: Any) -> None:
    registry.control(drop_next_writes=3)
    sleep = RecordedSleep()
    changes = (create("meetkai:a"), create("meetkai:b"), create("meetkai:c"))

    async def scenario() -> tuple[list[Outcome], list[str]]:
        async with real_client(registry, sleep) as client:
            outcomes = await apply_plan(Plan(changes), client, concurrency=2)
            # Now the delete: its first answer is lost after the row is gone; the retry's 404
            # counts as done.
            registry.control(drop_next_writes=1)
            outcomes += await apply_plan(Plan((delete("meetkai:c"),)), client)
            return outcomes, [e.id for e in await client.list()]

    outcomes, ids = run(scenario())
    assert all(o.ok for o in outcomes), outcomes
    assert sorted(ids) == ["meetkai:a", "meetkai:b"]
    assert len(sleep.waits) == 4  # one retry per dropped write
    assert registry.counts()["writes"] == 8


def test_dropped_write_on_a_strict_registry_recovers_through_patch(registry: Any) -> None:
    registry.control(drop_next_writes=1, strict_add=True)
    sleep = RecordedSleep()

    async def scenario() -> list[Outcome]:
        async with real_client(registry, sleep) as client:
            return await apply_plan(Plan((create("meetkai:a"),)), client)

    assert run(scenario()) == [Outcome("meetkai:a", Action.CREATE, True)]
    counts = registry.counts()
    assert counts["add"] == 2 and counts["update"] == 1  # dropped add, 409 add, PATCH


def test_429_retry_after_is_honoured_against_the_real_server(registry: Any) -> None:
    registry.control(rate_limit_next=2, retry_after=7)
    sleep = RecordedSleep()

    async def scenario() -> list[Outcome]:
        async with real_client(registry, sleep) as client:
            return await apply_plan(Plan((create("meetkai:a"),)), client)

    assert run(scenario()) == [Outcome("meetkai:a", Action.CREATE, True)]
    assert sleep.waits == [7.0, 7.0]
    assert registry.counts()["add"] == 3
