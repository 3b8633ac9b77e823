"""The enums and nested blocks of a model definition, as the official SDK defines them.

Every enum and block here follows the request models of ``meetkai-mka1`` 0.6.0 (the SDK release
whose registry calls match the published API page); ``tests/test_sdk.py`` checks them against the
installed SDK. Where the page and the SDK differ, both are accepted (see ``LegacyHealthCheck``).
Descriptions end up in the JSON Schema of a model file.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Annotated, Any, Literal

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


class Spec(BaseModel):
    """Base of every schema model: camelCase aliases, unknown keys forbidden, no type coercion."""

    # strict: "131072" is not an int and 1 is not true; a config file should say what it means.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
        # An enum field holds its value: written back out (the API body) without a property
        # call per value, 4 a file (a tenth of writing a model back out).
        use_enum_values=True,
        # JSON Schema titles in the file's own spelling ("envVar", not "Envvar").
        field_title_generator=lambda name, field: field.alias or to_camel(name),
        # Built at first use: a diff whose files all come from the parse cache validates none.
        defer_build=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The API's camelCase JSON, with only the fields that were set."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


_URL = TypeAdapter(AnyUrl)


@functools.lru_cache(maxsize=4096)
def _valid_url(value: str) -> None:
    # Remembered: thousands of models share a handful of base and health URLs. A failure
    # raises, and is not remembered.
    _URL.validate_python(value)


def _check_uri(value: str) -> str:
    # Validate as a URL but keep the user's spelling: AnyUrl would add a trailing slash.
    _valid_url(value)
    return value


Uri = Annotated[str, AfterValidator(_check_uri)]
SafeInt = Annotated[int, Field(gt=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]


# --- enums ------------------------------------------------------------------------------------


class ApiFormat(StrEnum):
    """The API the upstream model speaks (transcriptions and tts came with later API versions)."""

    RESPONSES = "responses"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    IMAGES = "images"
    TRANSCRIPTIONS = "transcriptions"
    TTS = "tts"


class ApiProviderType(StrEnum):
    """The gateway's client for the upstream provider, as SDK 0.6.0 lists them."""

    GROQ = "groq"
    AZURE = "azure"
    MEETKAI = "meetkai"
    MEETKAI_GATEWAY = "meetkaiGateway"
    FAL = "fal"
    OPENAI = "openai"


class Modality(StrEnum):
    """A kind of content a model reads or writes."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


class HttpProbeMethod(StrEnum):
    """The HTTP method of a health probe."""

    GET = "GET"
    HEAD = "HEAD"


class RateLimitScope(StrEnum):
    """Who shares one rate-limit budget."""

    GLOBAL = "global"
    ORG = "org"
    USER = "user"
    API_KEY = "apiKey"
    EXTERNAL_USER = "externalUser"


def _enum(tp: type[StrEnum], description: str) -> Any:
    # Enums arrive as plain strings from TOML/JSON; strict mode would demand enum instances.
    return Annotated[tp, Field(strict=False, description=description)]


ApiFormatField = _enum(ApiFormat, "The API the upstream model speaks.")
ModalityField = _enum(Modality, "A modality: text, image, audio or video.")
ProbeMethodField = _enum(HttpProbeMethod, "GET or HEAD; the gateway's default when omitted.")


# --- auth -------------------------------------------------------------------------------------


class ApiKeyAuth(Spec):
    """One API key, sent in a header."""

    type: Literal["api-key"]
    env_var: str | None = Field(None, description="Variable on the gateway side holding the key.")
    value: str | None = Field(None, description="The key itself (an inline secret; prefer envVar).")
    header_name: str | None = Field(None, description="Header to send the key in.")


class CustomHeadersAuth(Spec):
    """Fixed headers, and headers read from the gateway's environment."""

    type: Literal["custom-headers"]
    headers: dict[str, str] = Field(description="Header name -> value (values are secrets).")
    env_vars: dict[str, str] | None = Field(
        None, description="Header name -> variable on the gateway side."
    )


class NoAuth(Spec):
    """No credentials."""

    type: Literal["none"]


SimpleAuth = Annotated[ApiKeyAuth | CustomHeadersAuth | NoAuth, Field(discriminator="type")]


class CompositeAuth(Spec):
    """Several strategies at once (the page lists the three simple kinds as members)."""

    type: Literal["composite"]
    strategies: list[SimpleAuth] = Field(min_length=1, description="Applied in order.")


Auth = Annotated[
    ApiKeyAuth | CustomHeadersAuth | NoAuth | CompositeAuth,
    Field(discriminator="type", description="How the gateway authenticates upstream."),
]


# --- capabilities -----------------------------------------------------------------------------


class Modalities(Spec):
    """What the model reads and writes."""

    input: list[ModalityField] = Field(description="Modalities the model reads.")
    output: list[ModalityField] = Field(description="Modalities the model writes.")


class Resolution(Spec):
    """An image size bound in pixels."""

    max_width: int = Field(description="Width in pixels.")
    max_height: int = Field(description="Height in pixels.")


class Capabilities(Spec):
    """What the model can do; the gateway routes and validates requests by it."""

    modalities: Modalities
    reasoning: bool = Field(description="Whether the model reasons before answering.")
    supports_temperature: bool | None = Field(None, description="Accepts a temperature.")
    supports_top_p: bool | None = Field(None, description="Accepts top_p.")
    supports_completion_video_url_message: bool | None = Field(
        None, description="Accepts video URLs in completions messages."
    )
    supported_base64_formats: list[str] | None = Field(
        None, description="Image formats accepted inline as base64 (png, jpeg, ...)."
    )
    max_image_resolution: Resolution | None = Field(None, description="Largest image accepted.")
    min_image_resolution: Resolution | None = Field(None, description="Smallest image accepted.")


# --- optional blocks --------------------------------------------------------------------------


class DefaultParams(Spec):
    """Sampling parameters applied when a request leaves them out."""

    temperature: float | None = Field(None, description="Default temperature.")
    top_p: float | None = Field(None, description="Default top_p.")
    presence_penalty: float | None = Field(None, description="Default presence penalty.")
    frequency_penalty: float | None = Field(None, description="Default frequency penalty.")


class InputModalityTrigger(Spec):
    """Reroute when the request holds this modality."""

    type: Literal["input-modality"]
    modality: ModalityField


class Base64InputTrigger(Spec):
    """Reroute when the request holds base64 input."""

    type: Literal["base64-input"]


class ContextExceededTrigger(Spec):
    """Reroute when the request exceeds the context window."""

    type: Literal["context-exceeded"]


class ErrorFallbackTrigger(Spec):
    """Reroute when the upstream call fails."""

    type: Literal["error-fallback"]


Trigger = Annotated[
    InputModalityTrigger | Base64InputTrigger | ContextExceededTrigger | ErrorFallbackTrigger,
    Field(discriminator="type", description="When the rule applies."),
]


class RerouteRule(Spec):
    """Send a request to another model when the trigger fires."""

    trigger: Trigger
    target_model_id: str = Field(description="Registry id of the model to reroute to.")
    preserve_params: bool | None = Field(None, description="Keep the request's parameters.")
    log: bool | None = Field(None, description="Log each reroute.")


class DimensionRange(Spec):
    """Output dimensions a caller may choose."""

    min: int = Field(description="Fewest dimensions.")
    max: int = Field(description="Most dimensions.")
    default: int = Field(description="Dimensions when the request names none.")


class EmbeddingLimits(Spec):
    """Limits of an embeddings model."""

    max_batch_size: int | None = Field(None, description="Most inputs in one request.")
    dimensions: int | DimensionRange | None = Field(
        None, description="Fixed output dimensions, or a range with a default."
    )


class LegacyHealthCheck(Spec):
    """The published page's shape: probe a full URL. The SDK knows only the mode shapes."""

    url: Uri = Field(description="Full URL to probe.")
    method: ProbeMethodField | None = None


class HealthCheckOff(Spec):
    """No health checks."""

    mode: Literal["off"]


class PreflightHealthCheck(Spec):
    """Probe before sending a request, with the result cached."""

    mode: Literal["preflight"]
    path: str = Field(description="Path under baseUrl to probe.")
    method: ProbeMethodField | None = None
    timeout_ms: int | None = Field(None, description="Probe timeout in milliseconds.")
    cache_ttl_seconds: int | None = Field(None, description="How long a result is reused.")


class PeriodicHealthCheck(Spec):
    """Probe on a fixed interval."""

    mode: Literal["periodic"]
    interval_seconds: int = Field(description="Seconds between probes.")
    path: str = Field(description="Path under baseUrl to probe.")
    method: ProbeMethodField | None = None
    timeout_ms: int | None = Field(None, description="Probe timeout in milliseconds.")
    cache_ttl_seconds: int | None = Field(None, description="How long a result is reused.")


def _health_check_tag(value: Any) -> str | None:
    # The seed's {url, method} shape has no "mode"; later API versions discriminate on it.
    if isinstance(value, dict):
        return value.get("mode", "url")
    if isinstance(value, BaseModel):
        # Its fields, not getattr: a model without the field answers through pydantic's
        # __getattr__ and an exception, for every model written back out.
        return vars(value).get("mode", "url")  # type: ignore[no-any-return]
    return None


HEALTH_CHECK_MODES = ("off", "preflight", "periodic")

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
    Field(description="How the gateway checks the model: {url, method} or a mode."),
]


class RateLimitQueue(Spec):
    """Queue requests over the limit instead of refusing them."""

    max_depth: int = Field(description="Most requests waiting.")
    max_wait_ms: int = Field(description="Longest wait in milliseconds.")


class RateLimit(Spec):
    """A requests-per-minute budget shared by one scope."""

    scope: Annotated[RateLimitScope, Field(strict=False, description="Who shares the budget.")]
    rpm: int = Field(description="Requests per minute.")
    duration: int | None = Field(None, description="Window length in seconds.")
    queue: RateLimitQueue | None = None
