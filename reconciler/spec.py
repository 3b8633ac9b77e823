"""The model definition schema: one registry add-call body, exactly as the API spells it.

Python attributes are snake_case; every field has its camelCase API name as alias, and the
models are dumped with ``by_alias=True, exclude_unset=True`` so that a file read and written
back says what the file said. Unknown keys are errors (a silently ignored typo is how a GitOps
tool lies), and :func:`describe_loc` turns pydantic's error locations into the path a user
wrote plus the keys that were allowed there, for "did you mean" hints.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
)
from pydantic.alias_generators import to_camel

MAX_SAFE_INTEGER = 9007199254740991
SERVER_MANAGED_KEYS = frozenset({"source", "immutable"})
REDACTED = "(redacted)"


class Spec(BaseModel):
    """Base of every schema model: camelCase aliases, unknown keys forbidden, no type coercion."""

    # strict: "131072" is not an int and 1 is not true; a config file should say what it means.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The API's camelCase JSON, with only the fields that were set."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


_URL = TypeAdapter(AnyUrl)


def _check_uri(value: str) -> str:
    # Validate as a URL but keep the user's spelling: AnyUrl would add a trailing slash.
    _URL.validate_python(value)
    return value


Uri = Annotated[str, AfterValidator(_check_uri)]
SafeInt = Annotated[int, Field(gt=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]


class ApiFormat(StrEnum):
    RESPONSES = "responses"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    IMAGES = "images"
    TRANSCRIPTIONS = "transcriptions"
    TTS = "tts"


class Modality(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


# Enums arrive as plain strings from TOML/JSON; strict mode would demand enum instances.
ApiFormatField = Annotated[ApiFormat, Field(strict=False)]
ModalityField = Annotated[Modality, Field(strict=False)]
HttpProbeMethod = Literal["GET", "HEAD"]


# --- auth -------------------------------------------------------------------------------------


class ApiKeyAuth(Spec):
    type: Literal["api-key"]
    env_var: str | None = None
    value: str | None = None
    header_name: str | None = None


class CustomHeadersAuth(Spec):
    type: Literal["custom-headers"]
    headers: dict[str, str]
    env_vars: dict[str, str] | None = None


class NoAuth(Spec):
    type: Literal["none"]


SimpleAuth = Annotated[ApiKeyAuth | CustomHeadersAuth | NoAuth, Field(discriminator="type")]


class CompositeAuth(Spec):
    type: Literal["composite"]
    strategies: list[SimpleAuth] = Field(min_length=1)


Auth = Annotated[
    ApiKeyAuth | CustomHeadersAuth | NoAuth | CompositeAuth, Field(discriminator="type")
]


# --- capabilities -----------------------------------------------------------------------------


class Modalities(Spec):
    input: list[ModalityField]
    output: list[ModalityField]


class Resolution(Spec):
    max_width: int
    max_height: int


class Capabilities(Spec):
    modalities: Modalities
    reasoning: bool
    supports_temperature: bool | None = None
    supports_top_p: bool | None = None
    supports_completion_video_url_message: bool | None = None
    supported_base64_formats: list[str] | None = None
    max_image_resolution: Resolution | None = None
    min_image_resolution: Resolution | None = None


# --- optional blocks --------------------------------------------------------------------------


class DefaultParams(Spec):
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class InputModalityTrigger(Spec):
    type: Literal["input-modality"]
    modality: ModalityField


class Base64InputTrigger(Spec):
    type: Literal["base64-input"]


class ContextExceededTrigger(Spec):
    type: Literal["context-exceeded"]


class ErrorFallbackTrigger(Spec):
    type: Literal["error-fallback"]


Trigger = Annotated[
    InputModalityTrigger | Base64InputTrigger | ContextExceededTrigger | ErrorFallbackTrigger,
    Field(discriminator="type"),
]


class RerouteRule(Spec):
    trigger: Trigger
    target_model_id: str
    preserve_params: bool | None = None
    log: bool | None = None


class DimensionRange(Spec):
    min: int
    max: int
    default: int


class EmbeddingLimits(Spec):
    max_batch_size: int | None = None
    dimensions: int | DimensionRange | None = None


class LegacyHealthCheck(Spec):
    """The seed page's shape: probe a full URL."""

    url: Uri
    method: HttpProbeMethod | None = None


class HealthCheckOff(Spec):
    mode: Literal["off"]


class PreflightHealthCheck(Spec):
    mode: Literal["preflight"]
    path: str
    method: HttpProbeMethod | None = None
    timeout_ms: int | None = None
    cache_ttl_seconds: int | None = None


class PeriodicHealthCheck(Spec):
    mode: Literal["periodic"]
    interval_seconds: int
    path: str
    method: HttpProbeMethod | None = None
    timeout_ms: int | None = None


def _health_check_tag(value: Any) -> str | None:
    # The seed's {url, method} shape has no "mode"; later API versions discriminate on it.
    if isinstance(value, dict):
        return value.get("mode", "url")
    if isinstance(value, BaseModel):
        return getattr(value, "mode", "url")
    return None


HealthCheck = Annotated[
    Annotated[LegacyHealthCheck, Tag("url")]
    | Annotated[HealthCheckOff, Tag("off")]
    | Annotated[PreflightHealthCheck, Tag("preflight")]
    | Annotated[PeriodicHealthCheck, Tag("periodic")],
    Discriminator(
        _health_check_tag,
        custom_error_type="invalid_health_check",
        custom_error_message="healthCheck needs a url, or a mode of off, preflight or periodic",
    ),
]


class RateLimitQueue(Spec):
    max_depth: int
    max_wait_ms: int


class RateLimit(Spec):
    scope: Literal["global", "org", "user", "apiKey", "externalUser"]
    rpm: int
    duration: int | None = None
    queue: RateLimitQueue | None = None


# --- the definition ---------------------------------------------------------------------------


class Definition(Spec):
    """One model: the body of the registry's add call."""

    id: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    model_id: str = Field(min_length=1)
    api_format: ApiFormatField
    created: int = Field(ge=0, le=MAX_SAFE_INTEGER)
    auth: Auth
    capabilities: Capabilities
    context_window: SafeInt
    public_name: str | None = None
    aliases: list[str] | None = None
    display_name: str | None = None
    base_url: Uri | None = None
    rpm: SafeInt | None = None
    default_params: DefaultParams | None = None
    reroute_rules: list[RerouteRule] | None = None
    hidden: bool | None = None
    embedding_limits: EmbeddingLimits | None = None
    health_check: HealthCheck | None = None
    rate_limits: list[RateLimit] | None = None
    api_provider_type: str | None = None


# --- registry entries (what list/get/add/update answer) ----------------------------------------


class EntryHealth(BaseModel):
    model_config = ConfigDict(extra="allow")

    is_available: bool | None = None
    last_health_check: float | None = None
    error: str | None = None


class Entry(BaseModel):
    """A live registry entry. ``definition`` stays raw: the server may add keys we never sent."""

    model_config = ConfigDict(extra="allow")

    id: str
    provider: str = ""
    model_id: str = ""
    source: str = "database"
    immutable: bool = False
    definition: dict[str, Any] = Field(default_factory=dict)
    health: EntryHealth = Field(default_factory=EntryHealth)
    created_at: float | None = None
    updated_at: float | None = None


class HealthResult(BaseModel):
    """The answer of the health call."""

    model_config = ConfigDict(extra="allow")

    is_available: bool
    checked_at: float | None = None
    error: str | None = None


# --- secrets ----------------------------------------------------------------------------------


def is_secret_path(path: tuple[str | int, ...]) -> bool:
    """Whether a value at this field path (API names) is a credential that must never print."""
    if not path or path[0] != "auth":
        return False
    rest = list(path[1:])
    if len(rest) >= 2 and rest[0] == "strategies" and isinstance(rest[1], int):
        rest = rest[2:]
    return rest == ["value"] or (len(rest) == 2 and rest[0] == "headers")


# --- error locations --------------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any] | None:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [m for m in typing.get_args(tp) if m is not type(None)]
    return None


def _member_tags(member: Any) -> set[str]:
    """Every name pydantic may use for this union member in an error location."""
    tags: set[str] = set()
    if typing.get_origin(member) is Annotated:
        for meta in typing.get_args(member)[1:]:
            if isinstance(meta, Tag):
                tags.add(meta.tag)
    inner = _unwrap(member)
    if isinstance(inner, type):
        tags.add(inner.__name__)
        if issubclass(inner, BaseModel):
            for key in ("type", "mode"):
                field = inner.model_fields.get(key)
                if field is not None and typing.get_origin(field.annotation) is Literal:
                    tags.update(str(v) for v in typing.get_args(field.annotation))
    return tags


def _fields_by_alias(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def describe_loc(
    loc: tuple[str | int, ...], root: type[BaseModel] = Definition
) -> tuple[str, list[str] | None]:
    """Turn a pydantic error location into the path the user wrote (union tags dropped) and
    the keys allowed in the object that holds the last element, when that is known."""
    shown: list[str | int] = []
    tp: Any = root
    known: list[str] | None = None
    for part in loc:
        tp = _unwrap(tp)
        members = _union_members(tp)
        while members is not None:
            # Optional[X]: one member; a tagged union: the next part names the member.
            if len(members) == 1:
                tp = _unwrap(members[0])
                members = _union_members(tp)
                continue
            chosen = next((m for m in members if str(part) in _member_tags(m)), None)
            if chosen is None:
                break
            tp, part = _unwrap(chosen), None
            break
        if part is None:
            continue
        shown.append(part)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = _fields_by_alias(tp)
            known = sorted(fields)
            tp = fields.get(str(part))
        elif origin is list:
            tp, known = typing.get_args(tp)[0], None
        elif origin is dict:
            tp, known = typing.get_args(tp)[1], None
        else:
            tp, known = None, None
    return format_path(shown), known


def format_path(path: typing.Iterable[str | int]) -> str:
    """``("capabilities", "modalities", "input", 0)`` -> ``capabilities.modalities.input[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def suggest(key: str, known: typing.Iterable[str]) -> str | None:
    """The closest known key to a misspelt one, if any is close enough."""
    lowered = {k.lower(): k for k in known}
    if key.lower() in lowered:
        return lowered[key.lower()]
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return match[0] if match else None


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_stem(model_id: str, max_length: int = 100) -> str:
    """A file name stem for an id: no separators or traversal, colons as ``_``, bounded length."""
    stem = _UNSAFE_IN_NAME.sub("_", model_id).strip("._-") or "model"
    if len(stem) > max_length:
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:10]
        stem = f"{stem[: max_length - 11]}-{digest}"
    return stem
