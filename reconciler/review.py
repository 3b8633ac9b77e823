"""A plan for code review: a Markdown pull-request comment and GitHub workflow annotations.

Every value goes through :mod:`reconciler.secrets`' redaction (credentials and values a
``${VARIABLE}`` filled), and every id and message through :func:`~reconciler.text.printable`, as
in the other formats.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from . import diagnostics
from .plan import Action, Change, FieldChange, FieldOp, FieldPath, Plan
from .report import Problems, show_value, summary_line
from .secrets import redact_field
from .spec import format_path
from .text import printable

# GitHub refuses comments over 65,536 characters: details stop before that.
COMMENT_BUDGET = 60_000
MARKER = "<!-- reconciler-plan -->"  # lets a workflow find and update its earlier comment
_SIGN = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.DELETE: "-",
    Action.IMMUTABLE: "!",
    Action.INVALID: "x",
}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell and HTML (no markup, no column break)."""
    return html.escape(" ".join(printable(text).split())).replace("|", "&#124;")


def _diff_lines(field: FieldChange, sensitive: frozenset[FieldPath]) -> list[str]:
    field = redact_field(field, sensitive)
    where = printable(format_path(field.path))
    if field.op is FieldOp.ADD:
        return [f"+ {where}: {show_value(field.path, field.new)}"]
    if field.op is FieldOp.REMOVE:
        return [f"- {where}: {show_value(field.path, field.old)}"]
    return [
        f"- {where}: {show_value(field.path, field.old)}",
        f"+ {where}: {show_value(field.path, field.new)}",
    ]


def _fence(body: str) -> str:
    # A fence longer than any backtick run inside, so a value cannot close it.
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}diff\n{body}\n{fence}"


def markdown(plan: Plan, load: Problems | None = None, *, title: str = "reconciler diff") -> str:
    """The plan as a PR comment: a summary line, a table of the models that change, then per
    model its field changes in a collapsible block; load problems last."""
    shown = [c for c in plan.changes if c.action is not Action.UNCHANGED]
    in_sync = len(plan.changes) - len(shown)
    out = [MARKER, f"### {title}", "", f"**{summary_line(plan, load)}** {in_sync} in sync.", ""]
    if plan.prune_skipped:
        out += [f"> [!WARNING]\n> {_cell(plan.prune_skipped)}", ""]
    if shown:
        out += ["| | model | action | file | detail |", "|---|---|---|---|---|"]
        for c in shown:
            out.append(
                f"| {_SIGN[c.action]} | <code>{_cell(c.id)}</code> | {c.action.value} "
                f"| {_cell(c.file or '')} | {_cell(c.reason)} |"
            )
        out.append("")
    else:
        out += ["No changes.", ""]
    size = sum(len(line) + 1 for line in out)
    for n, c in enumerate(c for c in shown if c.fields):
        block = _details(c)
        if size + len(block) > COMMENT_BUDGET:
            rest = sum(1 for c in shown if c.fields) - n
            out.append(f"_{rest} more model(s) not detailed here: see the job log._")
            break
        out.append(block)
        size += len(block) + 1
    problems = diagnostics.lines(load.errors, load.warnings) if load is not None else []
    if problems:
        body = "\n".join(text for text, _ in problems)
        out += ["", "<details><summary>Problems in the files</summary>", "", _fence(body)]
        out += ["", "</details>"]
    return "\n".join(out).rstrip() + "\n"


def _details(change: Change) -> str:
    body = "\n".join(
        printable(line) for f in change.fields for line in _diff_lines(f, change.sensitive)
    )
    summary = f"<code>{_cell(change.id)}</code>: {change.action.value}"
    return f"<details><summary>{summary}</summary>\n\n{_fence(body)}\n\n</details>"


def annotations(plan: Plan, load: Problems | None = None) -> list[str]:
    """Load problems and each pending change as GitHub workflow commands: a notice on the file
    of every create and update (a warning for an immutable conflict)."""
    out = diagnostics.github_annotations((*load.errors, *load.warnings)) if load else []
    for c in plan.changes:
        if c.action in (Action.UNCHANGED, Action.INVALID):
            continue
        level = "warning" if c.action is Action.IMMUTABLE else "notice"
        props = [f"file={_prop(c.file)}", "line=1"] if c.file else []
        props.append(f"title={_prop(f'{c.action.value} {c.id}')}")
        lines: Sequence[str] = [
            c.reason,
            *(line for f in c.fields for line in _diff_lines(f, c.sensitive)),
        ]
        out.append(f"::{level} {','.join(props)}::{_data(chr(10).join(lines))}")
    return out


def _data(text: str) -> str:
    text = "\n".join(printable(line) for line in text.split("\n"))
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(",", "%2C").replace(":", "%3A")
