"""``reconciler validate``: check the model files offline."""

from __future__ import annotations

import json
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .. import defaults, source
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    ConfigOpt,
    DirOpt,
    QuietOpt,
    VerboseOpt,
    console,
    load_file_config,
)


class ValidateOutput(StrEnum):
    TEXT = "text"
    JSON = "json"
    GITHUB = "github"


def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Model files or directories to check (as pre-commit passes them); else --dir.",
            show_default=False,
        ),
    ] = None,
    directory: DirOpt = Path(defaults.DIRECTORY),
    output: Annotated[
        ValidateOutput,
        typer.Option(
            "--output", "-o", help="text, json, or github (workflow annotations on each line)."
        ),
    ] = ValidateOutput.TEXT,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check every model file; exit 0 when all are valid, 1 otherwise. Changes nothing."""
    from .. import diagnostics, environments, reconcile, report

    err = console(stderr=True)
    file_config = load_file_config(err, config, as_json=output is ValidateOutput.JSON)
    policy = reconcile.load_policy(file_config)
    result = load(paths or [directory], policy)
    if file_config.environments and not paths:
        # The overlays too, against the whole directory (a few files given would make every
        # overlay of another model look like one for an undeclared id).
        found = environments.check_overlays(file_config, result.models, result.invalid_ids, policy)
        result = replace(
            result,
            errors=result.errors + tuple(p for p in found if p.severity == "error"),
            warnings=result.warnings + tuple(p for p in found if p.severity != "error"),
        )
    if output is ValidateOutput.JSON:
        print(json.dumps(report.validation_json(result), indent=2))
    elif output is ValidateOutput.GITHUB:
        warnings = () if quiet else result.warnings
        for line in diagnostics.github_annotations((*result.errors, *warnings)):
            print(line)
    else:
        diagnostics.render(err, result.errors, result.warnings, verbose=verbose, quiet=quiet)
        report.render_validation(console(), result)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_ERROR)


def load(paths: list[Path], policy: source.LoadPolicy) -> source.DesiredState:
    """Files and directories as one load: ids checked across all of them."""
    first = paths[0]
    if len(paths) == 1 and (first.is_dir() or first.suffix not in source.SUFFIXES):
        return source.load_dir(first, policy=policy)
    results: list[source.FileResult] = []
    for path in paths:
        if path.is_dir():
            files = list(source.discover(path))
            if not files:
                results.append(
                    source.FileResult(str(path), None, None, (source.no_model_files(path),))
                )
            results.extend(source.load_file(f, path, policy=policy) for f in files)
        else:
            results.append(source.load_file(path, policy=policy))
    return source.combine(results)
