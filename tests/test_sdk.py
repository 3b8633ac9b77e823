"""Faithful to the official SDK (meetkai-mka1 0.6.0): its enums and shapes, the shipped models,
the bodies the reconciler sends and the answers the local registry gives.

The per-test check of every recorded call lives in conftest.py (``registry_calls``); this module
checks the schema against the SDK's models directly, and that the recording has teeth.
"""

from __future__ import annotations

import asyncio
import copy
import json
import typing
from pathlib import Path
from typing import Any, Literal, get_args

import httpx
import pytest
from conftest import REPO, RunningRegistry
from helpers import API, item, minimal
from meetkai_mka1 import models as sdk
from pydantic import BaseModel
from sdk_check import answer_problems, recorded_problems, request_problems

from reconciler import blocks, spec
from reconciler.registry import RegistryClient, RegistryError
from reconciler.server import Store, create_app
from reconciler.source import load_file

SEED = json.loads((Path(__file__).parent / "data" / "seed_entry.json").read_text())
SHIPPED = sorted((REPO / "models.d").glob("*.toml"))
KEY = "test-key"


def seed_body() -> dict[str, Any]:
    body = copy.deepcopy(SEED["definition"])
    del body["source"], body["immutable"]
    return body


def literals(tp: Any) -> set[str]:
    """Every string a (possibly nested) Literal/Union/Annotated type allows."""
    if typing.get_origin(tp) is Literal:
        return {str(v) for v in get_args(tp)}
    return set().union(*(literals(a) for a in get_args(tp))) if get_args(tp) else set()


def tags(union: Any, key: str) -> set[str]:
    """The discriminator values of a union of models."""
    found: set[str] = set()
    for member in get_args(get_args(union)[0]) if typing.get_origin(union) else [union]:
        model = typing.get_args(member)[0] if typing.get_origin(member) else member
        if isinstance(model, type) and issubclass(model, BaseModel) and key in model.model_fields:
            found |= literals(model.model_fields[key].annotation)
    return found


def aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


# --- the schema's enums and shapes are the SDK's -----------------------------------------------


@pytest.mark.parametrize("prefix", ["AddRegistryModelRequest", "UpdateRegistryModelRequest"])
def test_every_enum_matches_the_sdk(prefix: str) -> None:
    def sdk_type(name: str) -> Any:
        return getattr(sdk, prefix + name)

    assert literals(sdk_type("APIProviderType")) == set(spec.ApiProviderType)
    assert literals(sdk_type("Scope")) == set(spec.RateLimitScope)
    for name in ("Input", "Output", "Modality"):
        assert literals(sdk_type(name)) == set(spec.Modality)
    for name in ("Method1", "Method2"):
        assert literals(sdk_type(name)) == set(spec.HttpProbeMethod)
    assert literals(sdk.AutoEndpoint) == set(spec.ApiFormat)
    assert tags(sdk_type("AuthUnion"), "type") == tags(blocks.Auth, "type")
    assert tags(sdk_type("TriggerUnion"), "type") == tags(blocks.Trigger, "type")
    # The page's {url, method} shape is the one addition (documented in the README).
    ours = tags(blocks.HealthCheck, "mode")
    assert tags(sdk_type("HealthCheckUnion"), "mode") == ours == set(blocks.HEALTH_CHECK_MODES)
    # A composite strategy may itself be composite in the SDK's generated model; the page lists
    # only the three simple kinds, and so does the schema (README).
    nested = tags(sdk_type("StrategyUnion2"), "type") - tags(blocks.SimpleAuth, "type")
    assert nested == {"composite"}


SHAPES = [
    (blocks.ApiKeyAuth, sdk.AddRegistryModelRequestAuth1),
    (blocks.CustomHeadersAuth, sdk.AddRegistryModelRequestAuth2),
    (blocks.NoAuth, sdk.AddRegistryModelRequestAuth3),
    (blocks.CompositeAuth, sdk.AddRegistryModelRequestAuth4),
    (blocks.Capabilities, sdk.AddRegistryModelRequestCapabilities),
    (blocks.Modalities, sdk.AddRegistryModelRequestModalities),
    (blocks.Resolution, sdk.AddRegistryModelRequestMaxImageResolution),
    (blocks.Resolution, sdk.AddRegistryModelRequestMinImageResolution),
    (blocks.DefaultParams, sdk.AddRegistryModelRequestDefaultParams),
    (blocks.InputModalityTrigger, sdk.AddRegistryModelRequestTrigger1),
    (blocks.RerouteRule, sdk.RerouteRule),
    (blocks.DimensionRange, sdk.AddRegistryModelRequestDimensions),
    (blocks.EmbeddingLimits, sdk.AddRegistryModelRequestEmbeddingLimits),
    (blocks.HealthCheckOff, sdk.AddRegistryModelRequestHealthCheck1),
    (blocks.PreflightHealthCheck, sdk.AddRegistryModelRequestHealthCheck2),
    (blocks.PeriodicHealthCheck, sdk.AddRegistryModelRequestHealthCheck3),
    (blocks.RateLimit, sdk.RateLimit),
    (blocks.RateLimitQueue, sdk.AddRegistryModelRequestQueue),
]


@pytest.mark.parametrize(("ours", "theirs"), SHAPES, ids=lambda m: m.__name__)
def test_every_block_has_the_sdk_fields(ours: type[BaseModel], theirs: type[BaseModel]) -> None:
    assert aliases(ours) == aliases(theirs)


def test_the_definition_has_the_sdk_fields_plus_the_pages() -> None:
    ours = aliases(spec.Definition)
    assert ours - aliases(sdk.AddRegistryModelRequest) == {"publicName", "aliases"}
    assert aliases(sdk.AddRegistryModelRequest) <= ours
    assert aliases(sdk.UpdateRegistryModelRequest) == ours - {"id", "publicName", "aliases"}


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (spec.Entry, sdk.RegistryModelResponse),
        (spec.EntryHealth, sdk.Health),
        (spec.HealthResult, sdk.HealthCheckResponse),
    ],
    ids=lambda m: m.__name__,
)
def test_the_client_reads_the_sdk_answer_fields(
    ours: type[BaseModel], theirs: type[BaseModel]
) -> None:
    assert aliases(ours) == aliases(theirs)


# --- bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_model_is_an_sdk_request(path: Path) -> None:
    loaded = load_file(path, REPO / "models.d", env={})
    assert loaded.body is not None, loaded.errors
    body = loaded.body
    assert request_problems(body) == []
    assert request_problems({k: v for k, v in body.items() if k != "id"}, update=True) == []


def test_the_seed_body_passes_only_through_the_documented_differences() -> None:
    body = seed_body()
    assert request_problems(body) == []
    assert "apiProviderType" not in body and "mode" not in body["healthCheck"]


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        ({"apiProviderType": "azure-openai"}, "apiProviderType: Input should be"),
        ({"healthCheck": {"url": "not a url"}}, "healthCheck.url"),
        ({"version": 1}, "version: not a field of the SDK's AddRegistryModelRequest"),
        ({"capabilities": {"modalities": {"input": [], "output": []}}}, "capabilities.reasoning"),
        ({"rateLimits": [{"scope": "team", "rpm": 1}]}, "rateLimits.0.scope"),
        ({"displayName": None}, "displayName: null, which the SDK never sends here"),
        ({"aliases": "x"}, "aliases: Input should be a valid list"),
    ],
)
def test_the_check_catches_what_the_sdk_refuses(patch: dict[str, Any], problem: str) -> None:
    found = request_problems(seed_body() | patch)
    assert any(p.startswith(problem.replace(".0.", "[0].")) for p in found), found


def test_update_bodies_may_null_only_what_the_sdk_lets_a_client_null() -> None:
    assert request_problems({"displayName": None, "healthCheck": None}, update=True) == []
    assert request_problems({"apiProviderType": None, "aliases": None}, update=True) == []
    assert request_problems({"provider": None}, update=True) == [
        "provider: null, which the SDK never sends here"
    ]
    assert request_problems({"id": "x"}, update=True) == [
        "id: not a field of the SDK's UpdateRegistryModelRequest"
    ]


def test_answers_are_checked_for_unknown_keys_and_shape() -> None:
    assert answer_problems("remove", {"deleted": True}) == []
    assert answer_problems("remove", {"deleted": True, "extra": 1}) == [
        "extra: not a field of the SDK's DeleteRegistryModelResponse"
    ]
    assert answer_problems("health", {"is_available": True})[0].startswith("checked_at")


# --- the schema refuses what the SDK refuses, and says what was meant ---------------------------


@pytest.mark.parametrize(
    ("patch", "field", "hint"),
    [
        ({"apiProviderType": "azure-openai"}, "apiProviderType", "azure"),
        ({"apiProviderType": "meetkai-gateway"}, "apiProviderType", "meetkaiGateway"),
        ({"apiFormat": "completion"}, "apiFormat", "completions"),
        ({"rateLimits": [{"scope": "apikey", "rpm": 1}]}, "rateLimits[0].scope", "apiKey"),
        ({"healthCheck": {"mode": "periodical"}}, "healthCheck", "periodic"),
        (
            {"healthCheck": {"url": "https://h.example", "method": "get"}},
            "healthCheck.method",
            "GET",
        ),
        ({"auth": {"type": "api_key"}}, "auth", "api-key"),
        (
            {"rerouteRules": [{"trigger": {"type": "context_exceeded"}, "targetModelId": "x"}]},
            "rerouteRules[0].trigger",
            "context-exceeded",
        ),
    ],
)
def test_enum_misses_are_errors_with_did_you_mean(
    tmp_path: Path, patch: dict[str, Any], field: str, hint: str
) -> None:
    path = tmp_path / "meetkai_x.json"
    path.write_text(json.dumps(minimal("meetkai:x", **patch)))
    loaded = load_file(path, tmp_path)
    assert loaded.body is None
    problems = [p for p in loaded.errors if p.field == field]
    assert problems, loaded.errors
    assert problems[0].message.endswith(f"did you mean {hint!r}?"), problems[0].message


async def _send(app: Any, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://registry",
        headers={"Authorization": f"Bearer {KEY}"},
    ) as client:
        return await client.request(method, path, json=body)


def test_the_local_registry_answers_422_naming_the_field_and_the_likely_value() -> None:
    app = create_app(Store(), KEY)
    body = minimal("meetkai:x", apiProviderType="azure-openai")
    response = asyncio.run(_send(app, "POST", API, body))
    assert response.status_code == 422
    error = response.json()["error"]
    assert [d["loc"] for d in error["details"]] == ["apiProviderType"]
    assert error["details"][0]["msg"].endswith("did you mean 'azure'?")
    assert "apiProviderType" in error["message"] and "did you mean 'azure'?" in error["message"]
    assert "azure-openai" not in response.text  # the input is never echoed back


def test_an_unknown_key_answers_422_with_did_you_mean() -> None:
    app = create_app(Store(), KEY)
    body = minimal("meetkai:x", rateLimits=[{"scope": "org", "rpm": 1, "qeue": {}}])
    response = asyncio.run(_send(app, "POST", API, body))
    assert response.status_code == 422
    [detail] = response.json()["error"]["details"]
    assert detail["loc"] == "rateLimits[0].qeue"
    assert detail["msg"].endswith("did you mean 'queue'?")


def test_an_update_with_an_enum_miss_answers_422_with_the_path() -> None:
    app = create_app(Store(), KEY)
    assert asyncio.run(_send(app, "POST", API, minimal("meetkai:x"))).status_code == 200
    patch = {"rateLimits": [{"scope": "apikey", "rpm": 1}]}
    response = asyncio.run(_send(app, "PATCH", item("meetkai:x"), patch))
    assert response.status_code == 422
    [detail] = response.json()["error"]["details"]
    assert detail["loc"] == "rateLimits[0].scope"
    assert detail["msg"].endswith("did you mean 'apiKey'?")


# --- the recording: every call, and it has teeth --------------------------------------------------


def test_all_six_calls_are_recorded_redacted_and_parse_with_the_sdk(
    registry_calls: Path, upstream: Any
) -> None:
    app = create_app(Store(), KEY)
    body = minimal(
        "meetkai:rec",
        auth={"type": "api-key", "value": "sk-do-not-record"},
        healthCheck={"url": upstream.url + "/health"},
    )

    async def calls() -> None:
        transport = httpx.ASGITransport(app=app)
        async with RegistryClient("http://registry", KEY, transport=transport) as client:
            await client.add(body)
            await client.list()
            await client.get("meetkai:rec")
            await client.update("meetkai:rec", {"rpm": 60, "displayName": None})
            assert (await client.check_health("meetkai:rec")).is_available
            await client.remove("meetkai:rec")

    asyncio.run(calls())
    text = registry_calls.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["call"] for line in lines] == ["add", "list", "get", "update", "health", "remove"]
    assert all(line["agent"].startswith("reconciler/") and line["status"] == 200 for line in lines)
    assert "sk-do-not-record" not in text and '"value": "(redacted)"' in text
    assert recorded_problems(registry_calls) == []
    for line in lines:
        assert answer_problems(line["call"], line["answer"]) == []


def test_a_body_the_sdk_refuses_is_caught(registry_calls: Path) -> None:
    app = create_app(Store(), KEY)
    body = minimal("meetkai:bad", rateLimits=[{"scope": "team", "rpm": 1}])

    async def send() -> None:
        async with RegistryClient(
            "http://registry", KEY, transport=httpx.ASGITransport(app=app)
        ) as client:
            with pytest.raises(RegistryError) as info:
                await client.add(body)
            assert info.value.status == 422

    asyncio.run(send())
    assert any("rateLimits[0].scope" in p for p in recorded_problems(registry_calls))
    registry_calls.unlink()  # caught on purpose: the teardown check would fail this test


def test_a_registry_subprocess_records_what_a_cli_sync_sends(
    registry: RunningRegistry, registry_calls: Path, models_dir: Path, run_cli: Any
) -> None:
    result = run_cli("sync", "--dir", str(models_dir), env=registry.env())
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in registry_calls.read_text().splitlines()]
    adds = [line for line in lines if line["call"] == "add"]
    assert len(adds) == len(SHIPPED)
    assert all(line["agent"].startswith("reconciler/") for line in adds)
    assert recorded_problems(registry_calls) == []
