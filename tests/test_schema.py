"""``reconciler schema``: the JSON Schema of a model file, checked with the jsonschema library."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from reconciler.cli import app

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "models.d").glob("*.toml"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    return json.loads(result.stdout)


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_model_is_valid(schema: dict[str, Any], path: Path) -> None:
    errors = list(validator(schema).iter_errors(tomllib.loads(path.read_text())))
    assert errors == []


def test_a_typo_and_a_wrong_enum_are_caught(schema: dict[str, Any]) -> None:
    data = tomllib.loads(SHIPPED[0].read_text())
    data["contextWindw"] = data.pop("contextWindow")
    data["apiFormat"] = "chat"
    messages = sorted(e.message for e in validator(schema).iter_errors(data))
    assert any("'contextWindow' is a required property" in m for m in messages), messages
    assert any("'contextWindw' was unexpected" in m for m in messages), messages
    assert any("'chat' is not one of" in m for m in messages), messages


def test_descriptions_and_enums_for_editors(schema: dict[str, Any]) -> None:
    props = schema["properties"]
    assert schema["description"].startswith("One model")
    assert all(p.get("description") for p in props.values()), [
        k for k, p in props.items() if not p.get("description")
    ]
    assert "responses" in schema["$defs"]["ApiFormat"]["enum"]
    assert "null" not in json.dumps(props["rpm"])  # TOML cannot write null: no null branch


def test_written_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "model.schema.json"
    assert CliRunner().invoke(app, ["schema", "--out", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["$schema"].startswith("https://json-schema.org/")
