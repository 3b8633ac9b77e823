"""Settings from the environment (``MKA1_*``) and the optional ``reconciler.toml``."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from . import defaults
from .events import NOTIFY, Kind
from .plan import IgnoreRule
from .spec import format_path, suggest


class Settings(BaseModel):
    """Where the registry is and how to authenticate: ``MKA1_API_URL``, ``MKA1_API_KEY``,
    ``MKA1_ON_BEHALF_OF`` (names in any case). Command-line flags override these."""

    # Three strings need no pydantic-settings, whose import was a tenth of a second of every run.
    model_config = ConfigDict(frozen=True)

    api_url: str | None = None
    api_key: SecretStr | None = None
    on_behalf_of: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment (``os.environ`` unless given) holds."""
        names = {f"MKA1_{name}".upper(): name for name in cls.model_fields}
        env = os.environ if environ is None else environ
        return cls(**{names[k.upper()]: v for k, v in env.items() if k.upper() in names})


# --- reconciler.toml --------------------------------------------------------------------------

CONFIG_FILE = "reconciler.toml"


class ConfigError(Exception):
    """The config file is missing (when named), unreadable or says something unknown."""


class IgnoreConfig(BaseModel):
    """One ``[[ignore]]`` table: field paths never diffed, for ids matching ``ids``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    paths: list[str] = Field(min_length=1)
    ids: list[str] = Field(default_factory=lambda: ["*"], min_length=1)


ENV_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"  # printable in a header, a label, a file name


class EnvironmentConfig(BaseModel):
    """One ``[environments.NAME]`` table: a registry, the variable holding its key, and what
    differs there (an overlay directory, ownership, ignore rules, the prune limit)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    registry_url: str = Field(min_length=1)
    api_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    on_behalf_of: str | None = None
    overlay: str | None = Field(default=None, min_length=1)
    owns: list[str] | None = None  # replaces the top-level owns when set
    ignore: list[IgnoreConfig] = Field(default_factory=list)  # added to the top-level rules
    max_deletes: int | None = Field(default=None, ge=0)


def check_webhook_url(url: str) -> str:
    """An ``http(s)://host/...`` URL; the error never repeats it (a webhook path is a secret)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return url


class NotifyConfig(BaseModel):
    """One ``[[notify]]`` table: a webhook URL and the events it wants (default: all)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str
    events: list[Kind] = Field(default_factory=lambda: list(NOTIFY), min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_webhook_url(value)

    @field_validator("events", mode="before")
    @classmethod
    def _known_events(cls, value: object) -> object:
        # strict mode would take only enum members: accept their names, naming the choices.
        if isinstance(value, list):
            bad = [v for v in value if v not in {k.value for k in NOTIFY}]
            if bad:
                raise ValueError(f"unknown event {bad[0]!r}; known: {', '.join(k for k in NOTIFY)}")
            return [Kind(v) for v in value]
        return value


class FileConfig(BaseModel):
    """What ``reconciler.toml`` may say: ``owns``, ``[[ignore]]``, ``[[notify]]``,
    ``registry_url``, ``[environments.NAME]``, ``lint_file_names`` (warn about files not named
    after their id; on by default), ``cache`` (the parse cache; on by default), and what model
    files may do: ``allow_env`` (variables
    non-secret fields may name) and ``max_file_bytes``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    owns: list[str] = Field(default_factory=list)
    ignore: list[IgnoreConfig] = Field(default_factory=list)
    notify: list[NotifyConfig] = Field(default_factory=list)
    registry_url: str | None = None
    allow_env: list[str] = Field(default_factory=list)
    max_file_bytes: int = Field(default=defaults.MAX_FILE_BYTES, gt=0)
    environments: dict[Annotated[str, StringConstraints(pattern=ENV_NAME)], EnvironmentConfig] = (
        Field(default_factory=dict)
    )
    lint_file_names: bool = True
    cache: bool = True  # the parse cache of diff and sync (--no-cache, RECONCILER_NO_CACHE)
    path: str | None = Field(default=None, exclude=True)  # where it was read from, if anywhere

    def ignore_rules(self) -> tuple[IgnoreRule, ...]:
        """The ``[[ignore]]`` tables as plan ignore rules."""
        return tuple(IgnoreRule(tuple(i.paths), tuple(i.ids)) for i in self.ignore)

    def credential_env(self) -> tuple[str, ...]:
        """The variables that hold the reconciler's own credentials: no model file may name
        them, in any field (every environment's api_key_env among them)."""
        keys = (e.api_key_env for e in self.environments.values())
        return tuple(dict.fromkeys(("MKA1_API_KEY", *keys)))

    @model_validator(mode="after")
    def _one_way_to_a_registry(self) -> FileConfig:
        if self.environments and self.registry_url is not None:
            raise ValueError(
                "registry_url: with [environments], each environment names its registry_url"
            )
        return self

    @property
    def directory(self) -> Path:
        """Where paths in the file are relative to: its folder (the working directory if none)."""
        return Path(self.path).parent if self.path else Path()


def load_config(path: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> FileConfig:
    """Read ``path`` (it must exist), else ``./reconciler.toml`` if present, else defaults."""
    if path is None:
        candidate = (cwd or Path.cwd()) / CONFIG_FILE
        if not candidate.is_file():
            return FileConfig()
        path = candidate
    shown = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{shown}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from None
    if "path" in data:
        raise ConfigError(f"{shown}: path: unknown key")
    try:
        return FileConfig.model_validate({**data, "path": shown})
    except ValidationError as exc:
        messages = []
        for e in exc.errors(include_url=False):
            where = format_path(e["loc"])
            if e["type"] == "extra_forbidden":
                hint = suggest(str(e["loc"][-1]), _known_keys(e["loc"]))
                what = "unknown key" + (f"; did you mean {hint!r}?" if hint else "")
            elif e["type"] == "string_pattern_mismatch" and e["loc"][-1] in _PATTERNS:
                where = format_path(e["loc"][:-1]) if e["loc"][-1] == "[key]" else where
                what = _PATTERNS[str(e["loc"][-1])]
            else:
                what = e["msg"]
            messages.append(f"{shown}: {where}: {what}")
        raise ConfigError("\n".join(messages)) from None


_PATTERNS = {
    "[key]": "an environment name is letters, digits, '.', '_' and '-' (up to 63)",
    "api_key_env": "the name of an environment variable (letters, digits, '_')",
}


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
    model: type[BaseModel] = FileConfig
    if loc[0] == "environments":
        loc = loc[2:]  # environments.NAME.<key>
        model = EnvironmentConfig
    tables: dict[str | int, type[BaseModel]] = {"ignore": IgnoreConfig, "notify": NotifyConfig}
    if len(loc) > 1 and loc[0] in tables:
        model = tables[loc[0]]
    return [k for k in model.model_fields if k != "path"]
