"""Settings from the environment (pydantic-settings) and the optional ``reconciler.toml``."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the registry is and how to authenticate: ``MKA1_API_URL``, ``MKA1_API_KEY``,
    ``MKA1_ON_BEHALF_OF``. Command-line flags override these."""

    model_config = SettingsConfigDict(env_prefix="MKA1_", extra="ignore")

    api_url: str | None = None
    api_key: SecretStr | None = None
    on_behalf_of: str | None = None
