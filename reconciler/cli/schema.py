"""``reconciler schema``: the JSON Schema of a model file, for editors and linters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail


def schema(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write it to this file instead of stdout.", show_default=False),
    ] = None,
) -> None:
    """Print the JSON Schema of a model file (for Taplo / Even Better TOML: #:schema PATH)."""
    from ..schema import model_schema

    text = json.dumps(model_schema(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        print(text, end="")
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(console(stderr=True), f"{out}: {exc.strerror or exc}")
