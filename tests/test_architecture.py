"""ARCHITECTURE.md's layer table is the import-linter contract, row for row, and no module of the
package grows past 450 lines (the developers' guide)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_layer_table_matches_the_contract() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contract = config["tool"]["importlinter"]["contracts"][0]
    layers = [
        sorted(m.strip().removeprefix("reconciler.") for m in layer.split("|"))
        for layer in contract["layers"]
    ]
    text = (REPO / "ARCHITECTURE.md").read_text()
    table = text[text.index("| layer (top to bottom)") : text.index("## Seams")]
    rows = [line.split(" | ")[0] for line in table.splitlines()[2:] if line.startswith("| `")]
    documented = [sorted(m.strip("/") for m in re.findall(r"`([a-z_/]+)`", row)) for row in rows]
    assert documented == layers


def test_no_module_over_450_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "reconciler").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert long == {}
