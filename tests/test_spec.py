"""The schema: every field of the add call, exact round trip, clear errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.spec import (
    Definition,
    describe_loc,
    format_path,
    is_secret_path,
    safe_file_stem,
    suggest,
    suggest_value,
)

SEED_ENTRY = json.loads((Path(__file__).parent / "data" / "seed_entry.json").read_text())
REQUIRED = ["id", "provider", "modelId", "apiFormat", "created", "auth", "capabilities"]
REQUIRED += ["contextWindow"]


def seed_body() -> dict[str, Any]:
    body = copy.deepcopy(SEED_ENTRY["definition"])
    del body["source"], body["immutable"]
    return body


def errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(user-facing path, error type) for every error pydantic reports."""
    with pytest.raises(ValidationError) as info:
        Definition.model_validate(body)
    return [(describe_loc(tuple(e["loc"]))[0], e["type"]) for e in info.value.errors()]


def test_seed_example_validates_and_round_trips_unchanged() -> None:
    body = seed_body()
    assert Definition.model_validate(body).to_api() == body


@pytest.mark.parametrize("field", REQUIRED)
def test_each_required_field_removed_is_named(field: str) -> None:
    body = seed_body()
    del body[field]
    assert errors(body) == [(field, "missing")]


def test_required_reasoning_and_modalities_are_named_with_their_path() -> None:
    body = seed_body()
    del body["capabilities"]["reasoning"]
    del body["capabilities"]["modalities"]["output"]
    assert sorted(errors(body)) == [
        ("capabilities.modalities.output", "missing"),
        ("capabilities.reasoning", "missing"),
    ]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"contextWindow": "131072"}, ("contextWindow", "int_type")),
        ({"created": 1.5}, ("created", "int_type")),
        ({"created": -1}, ("created", "greater_than_equal")),
        ({"created": 9007199254740992}, ("created", "less_than_equal")),
        ({"hidden": "yes"}, ("hidden", "bool_type")),
        ({"hidden": 1}, ("hidden", "bool_type")),
        ({"apiFormat": "chat"}, ("apiFormat", "enum")),
        ({"baseUrl": "not a url"}, ("baseUrl", "url_parsing")),
        ({"aliases": "x"}, ("aliases", "list_type")),
        ({"auth": {"type": "oauth"}}, ("auth", "union_tag_invalid")),
        ({"healthCheck": {"mode": "sometimes"}}, ("healthCheck", "invalid_health_check")),
        ({"apiProviderType": "azure-openai"}, ("apiProviderType", "enum")),
        ({"rateLimits": [{"scope": "team", "rpm": 1}]}, ("rateLimits[0].scope", "enum")),
    ],
)
def test_wrong_types_and_bad_enums(patch: dict[str, Any], expected: tuple[str, str]) -> None:
    body = seed_body() | patch
    assert errors(body) == [expected]


def test_bad_modality_names_its_index() -> None:
    body = seed_body()
    body["capabilities"]["modalities"]["input"] = ["text", "smell"]
    assert errors(body) == [("capabilities.modalities.input[1]", "enum")]


def test_unknown_keys_are_errors_at_every_depth() -> None:
    body = seed_body()
    body["contextWindw"] = 1
    body["auth"]["envVr"] = "X"
    body["capabilities"]["reasning"] = True
    found = errors(body)
    assert ("contextWindw", "extra_forbidden") in found
    assert ("auth.envVr", "extra_forbidden") in found
    assert ("capabilities.reasning", "extra_forbidden") in found


@pytest.mark.parametrize(
    ("loc", "key", "hint"),
    [
        (("contextWindw",), "contextWindw", "contextWindow"),
        (("auth", "api-key", "envVr"), "envVr", "envVar"),
        (("capabilities", "supportsTopp"), "supportsTopp", "supportsTopP"),
        (("healthCheck", "preflight", "pth"), "pth", "path"),
        (("rerouteRules", 0, "targetModel"), "targetModel", "targetModelId"),
    ],
)
def test_did_you_mean(loc: tuple[str | int, ...], key: str, hint: str) -> None:
    _, known = describe_loc(loc)
    assert suggest(key, known or []) == hint


def test_no_suggestion_for_a_key_unlike_any() -> None:
    _, known = describe_loc(("zzzzzz",))
    assert suggest("zzzzzz", known or []) is None


def test_union_tags_are_dropped_from_paths() -> None:
    assert describe_loc(("auth", "composite", "strategies", 0, "api-key", "value"))[0] == (
        "auth.strategies[0].value"
    )
    assert describe_loc(("embeddingLimits", "dimensions", "DimensionRange", "max"))[0] == (
        "embeddingLimits.dimensions.max"
    )


def full_body() -> dict[str, Any]:
    """Every optional field of the API, later versions included."""
    return seed_body() | {
        "publicName": "chat",
        "aliases": ["a", "b"],
        "apiFormat": "transcriptions",
        "rerouteRules": [
            {"trigger": {"type": "input-modality", "modality": "image"}, "targetModelId": "x"},
            {"trigger": {"type": "base64-input"}, "targetModelId": "x", "log": True},
            {"trigger": {"type": "context-exceeded"}, "targetModelId": "y"},
            {"trigger": {"type": "error-fallback"}, "targetModelId": "z", "preserveParams": False},
        ],
        "embeddingLimits": {"maxBatchSize": 16, "dimensions": {"min": 1, "max": 8, "default": 4}},
        "healthCheck": {
            "mode": "periodic",
            "intervalSeconds": 30,
            "path": "/h",
            "cacheTtlSeconds": 5,
        },
        "rateLimits": [
            {"scope": "apiKey", "rpm": 5, "duration": 60, "queue": {"maxDepth": 1, "maxWaitMs": 9}}
        ],
        "apiProviderType": "openai",
        "auth": {
            "type": "composite",
            "strategies": [
                {"type": "api-key", "envVar": "K", "headerName": "x-key"},
                {"type": "custom-headers", "headers": {"A": "b"}, "envVars": {"B": "ENV"}},
                {"type": "none"},
            ],
        },
    }


def test_every_optional_field_round_trips() -> None:
    body = full_body()
    assert Definition.model_validate(body).to_api() == body


@pytest.mark.parametrize(
    "check",
    [
        {"url": "https://h.example/health", "method": "HEAD"},
        {"mode": "off"},
        {"mode": "preflight", "path": "/health", "method": "GET", "timeoutMs": 500},
        {"mode": "periodic", "intervalSeconds": 10, "path": "/health"},
    ],
)
def test_both_health_check_shapes(check: dict[str, Any]) -> None:
    body = seed_body() | {"healthCheck": check}
    assert Definition.model_validate(body).to_api()["healthCheck"] == check


def test_base_url_keeps_its_spelling() -> None:
    body = seed_body() | {"baseUrl": "https://models.example.com"}
    assert Definition.model_validate(body).to_api()["baseUrl"] == "https://models.example.com"


def test_secret_paths() -> None:
    assert is_secret_path(("auth", "value"))
    assert is_secret_path(("auth", "headers", "Authorization"))
    assert is_secret_path(("auth", "strategies", 1, "value"))
    assert is_secret_path(("auth", "strategies", 0, "headers", "X-Key"))
    assert not is_secret_path(("auth", "envVar"))
    assert not is_secret_path(("auth", "headers"))
    assert not is_secret_path(("displayName",))


@pytest.mark.parametrize(
    ("model_id", "stem"),
    [
        ("meetkai:my-custom-chat-v1", "meetkai_my-custom-chat-v1"),
        ("../x", "x"),
        ("a/b", "a_b"),
        ("..", "model"),
        ("", "model"),
    ],
)
def test_safe_file_stem(model_id: str, stem: str) -> None:
    assert safe_file_stem(model_id) == stem


def test_safe_file_stem_bounds_long_ids_and_keeps_them_distinct() -> None:
    a, b = safe_file_stem("x" * 300 + "a"), safe_file_stem("x" * 300 + "b")
    assert len(a) <= 100 and len(b) <= 100 and a != b


def test_format_path() -> None:
    assert format_path(["capabilities", "modalities", "input", 0]) == (
        "capabilities.modalities.input[0]"
    )


PROVIDER_TYPES = ["groq", "azure", "meetkai", "meetkaiGateway", "fal", "openai"]


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("azure-openai", "azure"),  # extends an allowed value
        ("openai-compatible", "openai"),
        ("meetkai-gateway", "meetkaiGateway"),  # case and dashes
        ("AZURE", "azure"),
        ("opneai", "openai"),  # a close spelling
        ("anthropic", None),
        ("", None),
    ],
)
def test_suggest_value(value: str, hint: str | None) -> None:
    assert suggest_value(value, PROVIDER_TYPES) == hint


@pytest.mark.parametrize(
    "model_id",
    ["meetkai:team-reasoner-32k", "a b", "gpt-4o@2024-08-06", "x" * 256, "é:模型", "a.b", "..."],
)
def test_ids_the_registry_can_address_are_accepted(model_id: str) -> None:
    Definition.model_validate({**seed_body(), "id": model_id})


@pytest.mark.parametrize(
    ("model_id", "rule"),
    [
        ("org/x", "'/' is not allowed"),
        ("a/../b", "'/' is not allowed"),
        ("..", "'.' and '..'"),
        (".", "'.' and '..'"),
        ("a\\b", "'\\' is not allowed"),
        ("a?b", "'?' is not allowed"),
        ("a#b", "'#' is not allowed"),
        ("a%2Fb", "'%' is not allowed"),
        ("line\nbreak", "U+000A"),
        ("esc\x1b[31m", "U+001B"),
        ("del\x7f", "U+007F"),
        ("c1\x9b", "U+009B"),
        ("bidi\u202e", "U+202E"),
        (" lead", "leading or trailing whitespace"),
        ("trail ", "leading or trailing whitespace"),
        ("x" * 257, "257 characters, at most 256"),
        ("x" * 100_000, "100000 characters"),
    ],
)
def test_ids_outside_the_grammar_fail_naming_the_rule(model_id: str, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        Definition.model_validate({**seed_body(), "id": model_id})
    [error] = info.value.errors()
    assert error["loc"] == ("id",) and error["type"] == "model_id"
    assert error["msg"].startswith("invalid id: ") and rule in error["msg"]
