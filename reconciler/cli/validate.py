"""``reconciler validate``: check the model files offline."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .. import source
from .common import EXIT_ERROR, EXIT_OK, ConfigOpt, DirOpt, console, load_file_config


class ValidateOutput(StrEnum):
    TEXT = "text"
    JSON = "json"
    GITHUB = "github"


def validate(
    directory: DirOpt = Path("models.d"),
    output: Annotated[ValidateOutput, typer.Option("--output", "-o")] = ValidateOutput.TEXT,
    config: ConfigOpt = None,
) -> None:
    """Check every model file; exit 0 when all are valid, 1 otherwise. Changes nothing."""
    from .. import reconcile, report

    policy = reconcile.load_policy(load_file_config(console(stderr=True), config))
    result = source.load_dir(directory, policy=policy)
    if output is ValidateOutput.JSON:
        print(json.dumps(report.validation_json(result), indent=2))
    elif output is ValidateOutput.GITHUB:
        for line in report.github_annotations(result):
            print(line)
    else:
        report.render_validation(console(), result)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_ERROR)
