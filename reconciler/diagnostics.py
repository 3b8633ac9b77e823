"""Load problems for people and machines: ``path:line:col: error|warning: field: message`` lines
(a warning repeated across many files summarised), JSON-ready data and GitHub annotations."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from .source import FILE_NAME, Problem
from .text import printable

# A warning of one kind seen this many times or more prints as one line (unless --verbose).
SUMMARISE_FROM = 4
_KINDS = {
    FILE_NAME: "files not named after their id",
    "inline-secret": "inline secrets in files",
    "created-ms": "files whose created looks like milliseconds",
    "created-future": "files whose created lies in the future",
}


def sort_key(p: Problem) -> tuple[str, int, int]:
    """Problems by file, then position."""
    return (p.path, p.line or 0, p.column or 0)


def lines(
    errors: Iterable[Problem], warnings: Iterable[Problem], *, verbose: bool = False
) -> list[tuple[str, str]]:
    """Every error, then the warnings (each kind seen often as one line unless ``verbose``), as
    (text, severity) pairs."""
    out = [(str(p), p.severity) for p in sorted(errors, key=sort_key)]
    by_code: dict[str | None, list[Problem]] = defaultdict(list)
    for p in sorted(warnings, key=sort_key):
        by_code[p.code].append(p)
    for code, group in by_code.items():
        if verbose or code is None or len(group) < SUMMARISE_FROM:
            out.extend((str(p), p.severity) for p in group)
            continue
        kind = _KINDS.get(code, f"{code} warnings")
        out.append(
            (f"warning: {len(group):,} {kind} (--verbose lists each); first: {group[0]}", "warning")
        )
    return out


def render(
    console: Console,
    errors: Iterable[Problem],
    warnings: Iterable[Problem],
    *,
    verbose: bool = False,
    quiet: bool = False,
) -> None:
    """Print the problems on ``console`` (stderr); ``quiet`` leaves the warnings out."""
    shown = lines(errors, () if quiet else warnings, verbose=verbose)
    if not shown:
        return
    if console.color_system is None:
        console.file.write("".join(f"{text}\n" for text, _ in shown))
        console.file.flush()
        return
    for text, severity in shown:
        style = "red" if severity == "error" else "yellow"
        console.print(Text(text, style=style))


def problem_json(p: Problem) -> dict[str, Any]:
    """A load problem as JSON-ready data."""
    return {
        "file": p.path,
        "line": p.line,
        "column": p.column if p.line else None,
        "severity": p.severity,
        "field": p.field,
        "message": p.message,
        "code": p.code,
    }


def github_annotations(problems: Sequence[Problem]) -> list[str]:
    """Every problem as a GitHub Actions workflow command, so a pull request shows it on its
    line. %, CR and LF are escaped in the message; in properties also , and :."""

    def esc(text: str, prop: bool = False) -> str:
        text = printable(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(",", "%2C").replace(":", "%3A") if prop else text

    out = []
    for p in sorted(problems, key=sort_key):
        props = [f"file={esc(p.path, True)}"]
        if p.line:
            props += [f"line={p.line}", f"col={p.column or 1}"]
        if p.field:
            props.append(f"title={esc(p.field, True)}")
        out.append(f"::{p.severity} {','.join(props)}::{esc(p.message)}")
    return out
