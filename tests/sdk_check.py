"""Bodies and answers checked against the official SDK's models (``meetkai-mka1`` 0.6.0).

The SDK's pydantic models ignore unknown keys; these checks do not: a key the SDK does not model
is a problem, and so is a null in a request where the SDK would never send one. The only
allowances are the published page's documented differences (README, "The model file format"):
its ``healthCheck = {url, method}`` shape, its optional ``apiProviderType`` (removable with null
through update), and its ``publicName`` and ``aliases`` fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meetkai_mka1 import models as sdk
from pydantic import BaseModel, TypeAdapter, ValidationError

from reconciler.spec import LegacyHealthCheck, format_path

RECONCILER_AGENT = "reconciler/"
# Fields of the published page that the SDK's request models lack.
PAGE_ONLY = {"publicName": TypeAdapter(str), "aliases": TypeAdapter(list[str])}
ANSWERS: dict[str, type[BaseModel]] = {
    "list": sdk.RegistryModelListResponse,
    "get": sdk.RegistryModelResponse,
    "add": sdk.RegistryModelResponse,
    "update": sdk.RegistryModelResponse,
    "remove": sdk.DeleteRegistryModelResponse,
    "health": sdk.HealthCheckResponse,
}


def _errors(errors: list[Any], prefix: tuple[str | int, ...] = ()) -> list[str]:
    return [f"{format_path((*prefix, *e['loc'])) or '(body)'}: {e['msg']}" for e in errors]


def _nullable(field: Any) -> bool:
    # Speakeasy marks the fields a client may send as null with (Optional)Nullable[...].
    return "Nullable[" in repr(field.annotation)


def _unmodelled(
    raw: Any, parsed: Any, path: tuple[str | int, ...], request: bool, out: list[str]
) -> None:
    """Keys of ``raw`` the parsed SDK model dropped, and nulls it would never send."""
    if isinstance(parsed, BaseModel) and isinstance(raw, Mapping):
        fields = {(f.alias or name): (name, f) for name, f in type(parsed).model_fields.items()}
        for key, value in raw.items():
            here = (*path, key)
            if key not in fields:
                out.append(f"{format_path(here)}: not a field of the SDK's {type(parsed).__name__}")
            elif value is None:
                if request and not _nullable(fields[key][1]):
                    out.append(f"{format_path(here)}: null, which the SDK never sends here")
            else:
                _unmodelled(value, getattr(parsed, fields[key][0]), here, request, out)
    elif isinstance(parsed, list) and isinstance(raw, list):
        for i, (r, p) in enumerate(zip(raw, parsed, strict=False)):
            _unmodelled(r, p, (*path, i), request, out)


def request_problems(body: Mapping[str, Any], *, update: bool = False) -> list[str]:
    """What the SDK's add (or update) request model finds wrong with a body; [] when none."""
    model = sdk.UpdateRegistryModelRequest if update else sdk.AddRegistryModelRequest
    if not isinstance(body, Mapping):
        return ["(body): not a JSON object"]
    body = dict(body)
    problems: list[str] = []
    for key, adapter in PAGE_ONLY.items():
        if key in body and not (update and body[key] is None):
            try:
                adapter.validate_python(body[key], strict=True)
            except ValidationError as exc:
                problems += _errors(exc.errors(), (key,))
        body.pop(key, None)
    check = body.get("healthCheck")
    if isinstance(check, Mapping) and "mode" not in check:
        try:
            LegacyHealthCheck.model_validate(body.pop("healthCheck"))
        except ValidationError as exc:
            problems += _errors(exc.errors(), ("healthCheck",))
    page_null = update and "apiProviderType" in body and body["apiProviderType"] is None
    if page_null:
        del body["apiProviderType"]
    try:
        parsed = model.model_validate(body, strict=True)
    except ValidationError as exc:
        errors = [
            e for e in exc.errors() if (e["loc"], e["type"]) != (("apiProviderType",), "missing")
        ]
        if errors:
            return problems + _errors(errors)
        # Only the page's optional apiProviderType is missing: check the rest with a stand-in.
        parsed = model.model_validate({**body, "apiProviderType": "openai"}, strict=True)
    _unmodelled(body, parsed, (), True, problems)
    return problems


def answer_problems(call: str, answer: Any) -> list[str]:
    """What the SDK's response model for ``call`` finds wrong with a 2xx answer; [] when none."""
    try:
        parsed = ANSWERS[call].model_validate(answer, strict=True)
    except ValidationError as exc:
        return _errors(exc.errors())
    problems: list[str] = []
    _unmodelled(answer, parsed, (), False, problems)
    return problems


def recorded_problems(path: Path) -> list[str]:
    """Every problem in a ``RECONCILER_RECORD_CALLS`` file: the add/update bodies the reconciler
    sent (by its User-Agent) and every 2xx answer, each against the SDK's models."""
    if not path.exists():
        return []
    problems: list[str] = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = json.loads(text)
        call, where = line["call"], f"call {n} ({line['call']}, status {line['status']})"
        if "request" in line and str(line["agent"]).startswith(RECONCILER_AGENT):
            found = request_problems(line["request"], update=call == "update")
            problems += [f"{where}: request {p}" for p in found]
        if "answer" in line and 200 <= line["status"] < 300:
            problems += [f"{where}: answer {p}" for p in answer_problems(call, line["answer"])]
    return problems
