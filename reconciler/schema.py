"""The JSON Schema of a model file, from the pydantic model: for editors (Taplo / Even Better TOML
through a ``#:schema`` directive, VS Code for JSON files) and for CI linting.

Pydantic gives the structure, the enums and the required keys; this module adds a description to
every field and drops what reads badly in an editor (``null`` branches TOML cannot write,
generated titles).
"""

from __future__ import annotations

from typing import Any

from .spec import Definition

# By the key's camelCase name; "Model.key" overrides where one name means two things.
DESCRIPTIONS = {
    "Definition": "One model of the MKA1 gateway's registry: the body of the registry's add "
    "call, one file per model.",
    "id": "The registry id, e.g. `meetkai:my-model`; the file is best named after it.",
    "provider": "The upstream provider, e.g. `openai-compatible`.",
    "modelId": "The model's name at the provider.",
    "apiFormat": "Which API the gateway speaks to the upstream for this model.",
    "created": "Creation time, unix seconds (not milliseconds).",
    "auth": "How the gateway authenticates to the upstream. Keep secrets out of the file: "
    "`envVar` (read by the gateway) or a `${VARIABLE}` placeholder.",
    "capabilities": "What the model can do.",
    "contextWindow": "Context window, in tokens.",
    "publicName": "The name clients use, when it differs from the id.",
    "aliases": "Other names clients may use for this model.",
    "displayName": "A human-readable name for UIs.",
    "baseUrl": "The upstream's base URL.",
    "rpm": "Requests per minute allowed to the upstream.",
    "defaultParams": "Sampling parameters applied when a request sets none.",
    "rerouteRules": "Send requests elsewhere when a trigger matches.",
    "hidden": "Leave the model out of model listings.",
    "embeddingLimits": "Limits of an embeddings model.",
    "healthCheck": "How the gateway checks the upstream: a `url`, or a `mode` of off, "
    "preflight or periodic.",
    "rateLimits": "Rate limits, each for a scope.",
    "apiProviderType": "The provider type the gateway uses for the upstream API.",
    "type": "Which kind this is.",
    "envVar": "Environment variable (on the gateway) holding the API key.",
    "value": "The API key itself: a secret; use a `${VARIABLE}` placeholder.",
    "headerName": "Header that carries the key (default: Authorization: Bearer).",
    "headers": "Headers sent to the upstream; values are secrets.",
    "envVars": "Header name -> environment variable (on the gateway) holding its value.",
    "strategies": "Authentication strategies, tried in order.",
    "modalities": "Input and output modalities.",
    "input": "Modalities the model accepts.",
    "output": "Modalities the model produces.",
    "reasoning": "Whether the model reasons before answering.",
    "supportsTemperature": "Whether requests may set temperature.",
    "supportsTopP": "Whether requests may set top_p.",
    "supportsCompletionVideoUrlMessage": "Whether completion messages may carry a video URL.",
    "supportedBase64Formats": "Media types accepted as base64 input.",
    "maxImageResolution": "Largest image accepted.",
    "minImageResolution": "Smallest image accepted.",
    "maxWidth": "Width, in pixels.",
    "maxHeight": "Height, in pixels.",
    "temperature": "Sampling temperature.",
    "topP": "Nucleus sampling probability.",
    "presencePenalty": "Presence penalty.",
    "frequencyPenalty": "Frequency penalty.",
    "trigger": "When the rule applies.",
    "modality": "The input modality that triggers the rule.",
    "targetModelId": "The registry id requests are sent to instead.",
    "preserveParams": "Keep the request's parameters when rerouting.",
    "log": "Log each reroute.",
    "maxBatchSize": "Most inputs per embeddings request.",
    "dimensions": "Output dimensions: a number, or a range with a default.",
    "min": "Smallest value.",
    "max": "Largest value.",
    "default": "Value used when the request sets none.",
    "url": "Full URL to probe.",
    "method": "HTTP method of the probe.",
    "mode": "off, preflight (before requests) or periodic.",
    "path": "Path probed on the base URL.",
    "timeoutMs": "Probe timeout, in milliseconds.",
    "cacheTtlSeconds": "How long a preflight result is reused, in seconds.",
    "intervalSeconds": "Seconds between periodic probes.",
    "scope": "Who the limit applies to.",
    "duration": "Window of the limit, in seconds.",
    "queue": "Queue requests over the limit instead of refusing them.",
    "maxDepth": "Most requests waiting.",
    "maxWaitMs": "Longest wait, in milliseconds.",
}


def model_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one model file."""
    schema = Definition.model_json_schema(by_alias=True, mode="validation")
    for name, sub in schema.get("$defs", {}).items():
        _tidy(sub, name)
    _tidy(schema, "Definition")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
    }


def _tidy(node: dict[str, Any], model: str) -> None:
    node.pop("title", None)
    if model in DESCRIPTIONS and "description" not in node:
        node["description"] = DESCRIPTIONS[model]
    for key, prop in node.get("properties", {}).items():
        prop.pop("title", None)
        branches = prop.get("anyOf")
        if branches and {"type": "null"} in branches:
            # TOML cannot write null; an optional key is simply left out.
            rest = [b for b in branches if b != {"type": "null"}]
            del prop["anyOf"]
            if len(rest) == 1:
                prop.update(rest[0])
            else:
                prop["anyOf"] = rest
            if prop.get("default", 0) is None:
                del prop["default"]
        text = DESCRIPTIONS.get(f"{model}.{key}") or DESCRIPTIONS.get(key)
        if text and "description" not in prop:
            prop["description"] = text
