"""The ``reconciler`` command line (Typer): wires the adapters together, holds no logic of its own.

Exit codes, for every command: 0 success / in sync, 1 error (invalid files, failed writes, the
registry unreachable or refusing the key), 2 ``diff`` found pending changes.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from . import source

app = typer.Typer(
    name="reconciler",
    help="Keep the MKA1 gateway's model registry in step with a directory of model files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
registry_app = typer.Typer(help="The local registry server.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2

DirOption = typer.Option(
    Path("models.d"), "--dir", "-d", help="Directory of model files (*.toml, *.json)."
)


class ValidateOutput(StrEnum):
    TEXT = "text"
    JSON = "json"
    GITHUB = "github"


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@app.command()
def validate(
    directory: Path = DirOption,
    output: ValidateOutput = typer.Option(ValidateOutput.TEXT, "--output", "-o"),
) -> None:
    """Check every model file; exit 0 when all are valid, 1 otherwise. Changes nothing."""
    result = source.load_dir(directory)
    problems = sorted(
        (*result.errors, *result.warnings), key=lambda p: (p.path, p.line or 0, p.severity)
    )
    if output is ValidateOutput.JSON:
        print(
            json.dumps(
                {
                    "valid": len(result.models),
                    "files": result.files,
                    "errors": [_problem_json(p) for p in result.errors],
                    "warnings": [_problem_json(p) for p in result.warnings],
                    "models": {i: m.path for i, m in sorted(result.models.items())},
                },
                indent=2,
            )
        )
    elif output is ValidateOutput.GITHUB:
        for p in problems:
            print(_github_annotation(p))
    else:
        _print_validation(result, problems)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_ERROR)


def _problem_json(p: source.Problem) -> dict[str, object]:
    return {"file": p.path, "line": p.line, "field": p.field, "message": p.message}


def _github_annotation(p: source.Problem) -> str:
    # Workflow commands need %, CR and LF escaped in the message, and also , and : in properties.
    def esc(text: str, prop: bool = False) -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(",", "%2C").replace(":", "%3A") if prop else text

    props = [f"file={esc(p.path, True)}"]
    if p.line:
        props.append(f"line={p.line}")
    if p.field:
        props.append(f"title={esc(p.field, True)}")
    return f"::{p.severity} {','.join(props)}::{esc(p.message)}"


def _print_validation(result: source.LoadResult, problems: list[source.Problem]) -> None:
    from rich.table import Table

    out = _console()
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        where = p.path + (f":{p.line}" if p.line else "")
        field = f"[bold]{p.field}[/bold]: " if p.field else ""
        out.print(f"[{colour}]{p.severity}[/{colour}] {where}: {field}{p.message}", markup=True)
    if result.models:
        table = Table(title=f"{len(result.models)} valid model(s)", title_justify="left")
        for column in ("id", "provider", "modelId", "apiFormat", "auth", "file"):
            table.add_column(column)
        for model_id, m in sorted(result.models.items()):
            d = m.definition
            table.add_row(model_id, d.provider, d.model_id, d.api_format, d.auth.type, m.path)
        out.print(table)
    n_err, n_warn = len(result.errors), len(result.warnings)
    status = "[green]ok[/green]" if result.ok else "[red]invalid[/red]"
    out.print(
        f"{status}: {result.files} file(s), {len(result.models)} valid, "
        f"{n_err} error(s), {n_warn} warning(s)"
    )


def main() -> None:
    """Console-script entry point."""
    app(prog_name="reconciler")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
