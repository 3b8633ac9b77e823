"""Small builders shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

API = "/api/v1/llm/models/registry"


def minimal(model_id: str = "meetkai:min", **fields: Any) -> dict[str, Any]:
    """The smallest valid add body for ``model_id``; ``fields`` override or add keys."""
    return {
        "id": model_id,
        "provider": "openai-compatible",
        "modelId": model_id.split(":")[-1],
        "apiFormat": "responses",
        "created": 1704067200,
        "auth": {"type": "none"},
        "capabilities": {"modalities": {"input": ["text"], "output": ["text"]}, "reasoning": False},
        "contextWindow": 8192,
        **fields,
    }


def item(model_id: str) -> str:
    """The API path of one entry, its id percent-encoded as one segment."""
    return f"{API}/{quote(model_id, safe='')}"


def listed_entry(model_id: str = "meetkai:x", **definition: Any) -> dict[str, Any]:
    """One entry of the list answer as the registry writes it; ``definition`` adds fields."""
    return {
        "id": model_id,
        "provider": "openai",
        "model_id": "gpt",
        "source": "database",
        "immutable": False,
        "definition": {"id": model_id, **definition, "source": "database", "immutable": False},
        "health": {"is_available": None, "last_health_check": None, "error": None},
        "created_at": 1,
        "updated_at": 2,
    }
