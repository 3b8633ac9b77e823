"""The model definition schema: one registry add-call body, exactly as the API spells it.

Python attributes are snake_case; every field has its camelCase API name as alias, and the
models are dumped with ``by_alias=True, exclude_unset=True`` so that a file read and written
back says what the file said. Unknown keys are errors (a silently ignored typo is how a GitOps
tool lies), and :func:`describe_loc` turns pydantic's error locations into the path a user
wrote plus the keys that were allowed there, for "did you mean" hints; :func:`error_hint` does
the same for a value that misses an enum. The enums and nested blocks live in ``blocks``.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SkipValidation,
    Tag,
)
from pydantic_core import PydanticCustomError

from .blocks import (
    HEALTH_CHECK_MODES,
    MAX_SAFE_INTEGER,
    ApiFormat,
    ApiFormatField,
    ApiKeyAuth,
    ApiProviderType,
    Auth,
    Capabilities,
    CompositeAuth,
    CustomHeadersAuth,
    DefaultParams,
    EmbeddingLimits,
    HealthCheck,
    HttpProbeMethod,
    LegacyHealthCheck,
    Modality,
    NoAuth,
    RateLimit,
    RateLimitScope,
    RerouteRule,
    SafeInt,
    Spec,
    Uri,
)

# Re-exported: secrets.py is the one module that says which paths hold credentials.
from .secrets import REDACTED as REDACTED
from .secrets import is_secret_path as is_secret_path

# The blocks are re-exported: callers import every schema name from here.
__all__ = [
    "MAX_SAFE_INTEGER",
    "ApiFormat",
    "ApiKeyAuth",
    "ApiProviderType",
    "CompositeAuth",
    "CustomHeadersAuth",
    "Definition",
    "Entry",
    "EntryHealth",
    "HealthResult",
    "HttpProbeMethod",
    "LegacyHealthCheck",
    "Modality",
    "NoAuth",
    "RateLimitScope",
    "Spec",
]

SERVER_MANAGED_KEYS = frozenset({"source", "immutable"})

# The id grammar: what the registry can address as one URL path segment, and what prints safely.
MAX_ID_LENGTH = 256
_ID_FORBIDDEN = "/\\?#%"
_ID_FORBIDDEN_RE = re.compile(r"[/\\?#%]")


def _check_id(value: str) -> str:
    if (
        len(value) <= MAX_ID_LENGTH
        and value.isprintable()
        and value == value.strip()
        and value not in (".", "..")
        and not _ID_FORBIDDEN_RE.search(value)
    ):
        return value  # the common case, at C speed; the checks below name what is wrong

    def refuse(rule: str) -> PydanticCustomError:
        return PydanticCustomError("model_id", "invalid id: {rule}", {"rule": rule})

    if len(value) > MAX_ID_LENGTH:
        raise refuse(f"{len(value)} characters, at most {MAX_ID_LENGTH} are allowed")
    if value in (".", ".."):
        raise refuse("'.' and '..' name no URL path segment")
    bad = next((c for c in value if c in _ID_FORBIDDEN), None)
    if bad is not None:
        raise refuse(f"'{bad}' is not allowed (an id is one URL path segment: no / \\ ? # %)")
    if not value.isprintable():
        c = next(c for c in value if not c.isprintable())
        raise refuse(f"control or invisible character U+{ord(c):04X} is not allowed")
    if value != value.strip():
        raise refuse("leading or trailing whitespace is not allowed")
    return value


ModelId = Annotated[str, Field(min_length=1), AfterValidator(_check_id)]


# --- the definition ---------------------------------------------------------------------------


class Definition(Spec):
    """One model: the body of the registry's add call."""

    id: ModelId = Field(
        description="Registry id, e.g. meetkai:my-custom-chat-v1: one URL path segment "
        "(1-256 printable characters, not . or .., none of / \\ ? # %)."
    )
    provider: str = Field(min_length=1, description="Upstream provider, e.g. openai, azure.")
    model_id: str = Field(min_length=1, description="The upstream provider's model name.")
    api_format: ApiFormatField
    created: int = Field(ge=0, le=MAX_SAFE_INTEGER, description="Unix seconds.")
    auth: Auth
    capabilities: Capabilities
    context_window: SafeInt = Field(description="Context window in tokens.")
    public_name: str | None = Field(None, description="Name clients use (page only, not SDK).")
    aliases: list[str] | None = Field(None, description="More names (page only, not SDK).")
    display_name: str | None = Field(None, description="Human-readable name.")
    base_url: Uri | None = Field(None, description="Base URL of the upstream API.")
    rpm: SafeInt | None = Field(None, description="Requests per minute.")
    default_params: DefaultParams | None = None
    reroute_rules: list[RerouteRule] | None = Field(
        None, description="Where to send a request instead, in order."
    )
    hidden: bool | None = Field(None, description="Leave the model out of model lists.")
    embedding_limits: EmbeddingLimits | None = None
    health_check: HealthCheck | None = Field(
        None, description="How the gateway checks the model: {url, method} or a mode."
    )
    rate_limits: list[RateLimit] | None = Field(None, description="Budgets by scope.")
    api_provider_type: Annotated[ApiProviderType, Field(strict=False)] | None = Field(
        None, description="The gateway's client for the provider (optional on the page)."
    )


# --- registry entries (what list/get/add/update answer) ----------------------------------------


class EntryHealth(BaseModel):
    model_config = ConfigDict(extra="allow")

    is_available: bool | None = None
    last_health_check: float | None = None
    error: str | None = None


def _an_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("a definition is an object")
    return value


class Entry(BaseModel):
    """A live registry entry. ``definition`` stays raw: the server may add keys we never sent."""

    model_config = ConfigDict(extra="allow")

    id: str
    provider: str = ""
    model_id: str = ""
    source: str = "database"
    immutable: bool = False
    # Kept as decoded, not copied: 10,000 entries' definitions are tens of MB.
    definition: Annotated[SkipValidation[dict[str, Any]], BeforeValidator(_an_object)] = Field(
        default_factory=dict
    )
    health: EntryHealth = Field(default_factory=EntryHealth)
    created_at: float | None = None
    updated_at: float | None = None


class HealthResult(BaseModel):
    """The answer of the health call."""

    model_config = ConfigDict(extra="allow")

    is_available: bool
    checked_at: float | None = None
    error: str | None = None


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


def _squash(text: str) -> str:
    return re.sub(r"[-_\s]", "", text.lower())


def suggest_value(value: str, known: Iterable[str]) -> str | None:
    """The allowed value a wrong one was probably meant to be: the same but for case or dashes
    (``meetkai-gateway``), an allowed value it extends (``azure-openai`` -> ``azure``), or a
    close spelling."""
    known = list(known)
    squashed = _squash(value)
    for k in known:
        if _squash(k) == squashed:
            return k
    extended = [k for k in known if len(_squash(k)) >= 3 and squashed.startswith(_squash(k))]
    if extended:
        return max(extended, key=len)
    return suggest(value, known)


_QUOTED = re.compile(r"'([^']*)'")


def allowed_values(error: Mapping[str, Any]) -> tuple[list[str], Any]:
    """For a pydantic error about an enum or a union tag: the allowed values and the one given."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("enum", "literal_error"):
        return _QUOTED.findall(str(ctx.get("expected", ""))), error.get("input")
    if kind == "union_tag_invalid":
        return _QUOTED.findall(str(ctx.get("expected_tags", ""))), ctx.get("tag")
    if kind == "invalid_health_check":
        given = error.get("input")
        return list(HEALTH_CHECK_MODES), given.get("mode") if isinstance(given, Mapping) else None
    return [], None


def error_hint(error: Mapping[str, Any], root: type[BaseModel] | None = None) -> str | None:
    """``did you mean 'azure'?`` for a near miss of a key, an enum value or a union tag, else
    None. Values need the error's input (``errors(include_input=True)``); a hint only ever names
    an allowed key or value, never the input."""
    if error["type"] == "extra_forbidden":
        _, known = describe_loc(tuple(error["loc"]), root or Definition)
        match = suggest(str(error["loc"][-1]), known or [])
    else:
        known, given = allowed_values(error)
        fits = known and isinstance(given, str)
        match = suggest_value(given, known) if fits else None
        match = None if match == given else match
    return f"did you mean {match!r}?" if match else None


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_stem(model_id: str, max_length: int = 100) -> str:
    """A file name stem for an id: no separators or traversal, colons as ``_``, bounded length."""
    stem = _UNSAFE_IN_NAME.sub("_", model_id).strip("._-") or "model"
    if len(stem) > max_length:
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:10]
        stem = f"{stem[: max_length - 11]}-{digest}"
    return stem
