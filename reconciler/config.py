"""Settings from the environment (pydantic-settings) and the optional ``reconciler.toml``."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .plan import IgnoreRule
from .spec import format_path, suggest


class Settings(BaseSettings):
    """Where the registry is and how to authenticate: ``MKA1_API_URL``, ``MKA1_API_KEY``,
    ``MKA1_ON_BEHALF_OF``. Command-line flags override these."""

    model_config = SettingsConfigDict(env_prefix="MKA1_", extra="ignore")

    api_url: str | None = None
    api_key: SecretStr | None = None
    on_behalf_of: str | None = None


# --- reconciler.toml --------------------------------------------------------------------------

CONFIG_FILE = "reconciler.toml"


class ConfigError(Exception):
    """The config file is missing (when named), unreadable or says something unknown."""


class IgnoreConfig(BaseModel):
    """One ``[[ignore]]`` table: field paths never diffed, for ids matching ``ids``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    paths: list[str] = Field(min_length=1)
    ids: list[str] = Field(default_factory=lambda: ["*"], min_length=1)


class FileConfig(BaseModel):
    """What ``reconciler.toml`` may say: ``owns``, ``[[ignore]]``, ``registry_url``, and what
    model files may do: ``allow_env`` (variables non-secret fields may name) and
    ``max_file_bytes``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    owns: list[str] = Field(default_factory=list)
    ignore: list[IgnoreConfig] = Field(default_factory=list)
    registry_url: str | None = None
    allow_env: list[str] = Field(default_factory=list)
    max_file_bytes: int = Field(default=1 << 20, gt=0)
    path: str | None = Field(default=None, exclude=True)  # where it was read from, if anywhere

    def ignore_rules(self) -> tuple[IgnoreRule, ...]:
        """The ``[[ignore]]`` tables as plan ignore rules."""
        return tuple(IgnoreRule(tuple(i.paths), tuple(i.ids)) for i in self.ignore)

    def credential_env(self) -> tuple[str, ...]:
        """The variables that hold the reconciler's own credentials: no model file may name
        them, in any field (every key variable the configuration names belongs here)."""
        return ("MKA1_API_KEY",)


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
            else:
                what = e["msg"]
            messages.append(f"{shown}: {where}: {what}")
        raise ConfigError("\n".join(messages)) from None


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
    model = IgnoreConfig if len(loc) > 1 and loc[0] == "ignore" else FileConfig
    return [k for k in model.model_fields if k != "path"]
