"""Render plans, results and load problems: text on a Rich console, or plain JSON-ready data.

No I/O beyond printing to the :class:`~rich.console.Console` it is given. Every field value goes
through :func:`~reconciler.secrets.redact_field` first, so credentials (``auth.value``,
custom-header values, also inside composite strategies) and values a ``${VARIABLE}`` put in print
as ``(redacted)`` in every format, while a changed secret still shows as changed. Ids, paths and
messages are escaped (:func:`~reconciler.text.printable`): a hostile id cannot forge a line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from rich.console import Console
from rich.text import Text

from .apply import Outcome
from .diagnostics import problem_json
from .plan import Action, Change, FieldChange, FieldOp, FieldPath, Plan, summary
from .secrets import REDACTED, hidden_values, redact, redact_field, scrub
from .source import NO_MODEL_FILES, DesiredState, Problem
from .spec import Entry, HealthResult, format_path
from .text import printable
from .units import unix_seconds


class Problems(Protocol):
    """What a plan report needs from a load: a :class:`~reconciler.source.DesiredState` (or
    one environment's own problems)."""

    @property
    def errors(self) -> tuple[Problem, ...]: ...

    @property
    def warnings(self) -> tuple[Problem, ...]: ...


FORMAT_VERSION = 1  # of every JSON document; raised only when a key changes meaning or goes

_SIGN = {FieldOp.ADD: "+", FieldOp.REMOVE: "-", FieldOp.CHANGE: "~"}
_FIELD_STYLE = {FieldOp.ADD: "green", FieldOp.REMOVE: "red", FieldOp.CHANGE: "yellow"}
_ACTION_SIGN = {
    Action.CREATE: ("+", "green"),
    Action.UPDATE: ("~", "yellow"),
    Action.DELETE: ("-", "red"),
    Action.UNCHANGED: ("=", "dim"),
    Action.IMMUTABLE: ("!", "magenta"),
    Action.INVALID: ("x", "red"),
}


# --- field values ---------------------------------------------------------------------------


def field_json(field: FieldChange, sensitive: frozenset[FieldPath] = frozenset()) -> dict[str, Any]:
    """One field change as JSON-ready data, redacted."""
    field = redact_field(field, sensitive)
    return {
        "path": format_path(field.path),
        "op": field.op.value,
        "old": field.old,
        "new": field.new,
    }


def show_value(path: FieldPath, value: Any) -> str:
    """A value as one line: JSON, except the redaction marker which is shown bare."""
    value = redact(path, value)
    if value is REDACTED:
        return REDACTED
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def field_text(field: FieldChange, sensitive: frozenset[FieldPath] = frozenset()) -> str:
    """``~ rpm: 60 -> 120``, ``+ aliases: ["a"]``, ``- displayName: "Old"``."""
    field = redact_field(field, sensitive)
    where = format_path(field.path)
    if field.op is FieldOp.ADD:
        return f"+ {where}: {show_value(field.path, field.new)}"
    if field.op is FieldOp.REMOVE:
        return f"- {where}: {show_value(field.path, field.old)}"
    old, new = show_value(field.path, field.old), show_value(field.path, field.new)
    return f"~ {where}: {old} -> {new}"


# --- counts -----------------------------------------------------------------------------------


def counts(
    plan: Plan, outcomes: Sequence[Outcome] = (), load: Problems | None = None
) -> dict[str, int]:
    """The JSON summary: each action as often as ``changes`` holds it; ``applied`` and
    ``failed`` writes, and those ``notAttempted`` (interrupted, or the registry stopped
    answering); ``invalidFiles`` (files that did not load, with or without an id); ``warnings``."""
    out: dict[str, Any] = dict(summary(plan))
    out["applied"] = sum(1 for o in outcomes if o.ok)
    out["failed"] = sum(1 for o in outcomes if o.attempted and not o.ok)
    out["notAttempted"] = sum(1 for o in outcomes if not o.attempted)
    out["invalidFiles"] = invalid_files(load) if load is not None else out["invalid"]
    out["warnings"] = len(load.warnings) if load is not None else 0
    return out


def invalid_files(load: Problems) -> int:
    """How many files failed (a file with several errors counts once)."""
    return len({p.path for p in load.errors if p.code != NO_MODEL_FILES})


def summary_line(plan: Plan, load: Problems | None = None, *, prefix: str = "Plan") -> str:
    """``Plan: 2 to create, 1 to update, 0 to delete, 1 immutable skipped, 0 invalid.``"""
    c = counts(plan, (), load)
    invalid = max(c["invalid"], c["invalidFiles"])
    return (
        f"{prefix}: {c['create']} to create, {c['update']} to update, {c['delete']} to delete, "
        f"{c['immutable']} immutable skipped, {invalid} invalid."
    )


def result_line(outcomes: Sequence[Outcome]) -> str:
    """``Applied: 3 of 4 writes succeeded (2 created, 1 updated, 0 deleted), 1 failed.`` (plus
    ``, N not attempted`` when a stop or a silent registry left writes unsent)."""
    done = [o for o in outcomes if o.ok]
    by = {a: sum(1 for o in done if o.action is a) for a in Action}
    skipped = sum(1 for o in outcomes if not o.attempted)
    failed = len(outcomes) - len(done) - skipped
    return (
        f"Applied: {len(done)} of {len(outcomes)} writes succeeded "
        f"({by[Action.CREATE]} created, {by[Action.UPDATE]} updated, "
        f"{by[Action.DELETE]} deleted), {failed} failed"
        + (f", {skipped} not attempted." if skipped else ".")
    )


# --- text -------------------------------------------------------------------------------------


Line = tuple[str, str]  # text and Rich style: styled only when the console has colour


def render_plan(
    console: Console,
    plan: Plan,
    *,
    load: Problems | None = None,
    outcomes: Sequence[Outcome] = (),
    show_unchanged: bool = False,
) -> None:
    """Per model a field-level diff and the reason for each skip, then the summary line(s)."""
    failures = {o.id: o for o in outcomes if not o.ok}
    lines: list[Line] = []
    for change in plan.changes:
        if change.action is Action.UNCHANGED and not show_unchanged:
            continue
        lines.extend(change_lines(change, failures.get(change.id)))
    if plan.prune_skipped:
        lines.append((plan.prune_skipped, "yellow"))
    if plan.changes and not any(c.action is not Action.UNCHANGED for c in plan.changes):
        lines.append((f"No changes: {len(plan.changes)} model(s) in sync.", "green"))
    lines.append((summary_line(plan, load), "bold"))
    if outcomes:
        lines.append((result_line(outcomes), "bold red" if failures else "bold green"))
    emit(console, lines)


def emit(console: Console, lines: Sequence[Line]) -> None:
    """Print lines; without colour as plain text in one go (Rich's per-line styling costs most of
    a second for a thousand creates, and the styles would be dropped anyway)."""
    if not lines:
        return
    if console.color_system is None and not console.record:
        console.file.write("".join(f"{printable(text)}\n" for text, _ in lines))
        console.file.flush()
    else:
        console.print(Text("\n").join(Text(printable(text), style=style) for text, style in lines))


def render_change(console: Console, change: Change, failure: Outcome | None = None) -> None:
    """One model: a heading line (sign, id, file, action, reason), then its field lines."""
    emit(console, change_lines(change, failure))


def change_lines(change: Change, failure: Outcome | None = None) -> list[Line]:
    """The lines of one model: a heading (sign, id, file, action, reason), then its fields."""
    sign, style = _ACTION_SIGN[change.action]
    label = "immutable skipped" if change.action is Action.IMMUTABLE else change.action.value
    head = f"{sign} {change.id}" + (f" ({change.file})" if change.file else "") + f": {label}"
    if change.reason:
        head += f" - {change.reason}"
    lines = [(head, style)]
    # A create lists what it sends; an immutable conflict shows what the file would change.
    for field in change.fields:
        field_style = "dim" if change.action is Action.IMMUTABLE else _FIELD_STYLE[field.op]
        lines.append(("    " + field_text(field, change.sensitive), field_style))
    if failure is not None:
        lines.append((f"    failed: {failure_text(change, failure)}", "bold red"))
    return lines


def failure_text(change: Change, failure: Outcome) -> str:
    """Why a write failed, without any secret or substituted value the registry may quote."""
    return scrub(
        failure.error or "unknown error", hidden_values(change.body or {}, change.sensitive)
    )


def render_outcome(console: Console, outcome: Outcome) -> None:
    """One finished write, as a line (for a log-like view of a sync)."""
    text = f"  {outcome.action.value} {outcome.id}: " + (
        "ok" if outcome.ok else f"failed: {outcome.error}"
    )
    console.print(Text(printable(text), style="green" if outcome.ok else "red"))


def render_validation(console: Console, load: DesiredState) -> None:
    """What ``validate`` prints on stdout (the problems go to stderr): a table of valid models
    and a status line."""
    if load.models:
        from rich.table import Table  # only for the tables shown: a no-op diff prints none

        table = Table(title=f"{len(load.models)} valid model(s)", title_justify="left")
        for column in ("id", "provider", "modelId", "apiFormat", "auth", "file"):
            table.add_column(column)
        for model_id, m in sorted(load.models.items()):
            body, auth = m.body, m.body.get("auth") or {}
            cells = (
                model_id,
                body.get("provider", ""),
                body.get("modelId", ""),
                body.get("apiFormat", ""),
                auth.get("type", "") if isinstance(auth, dict) else "",
                m.file,
            )
            table.add_row(*(Text(printable(str(c))) for c in cells))
        console.print(table)
    status = Text("ok", style="green") if load.ok else Text("invalid", style="red")
    status.append(
        f": {load.files} file(s), {len(load.models)} valid, "
        f"{len(load.errors)} error(s), {len(load.warnings)} warning(s)",
        style="default",
    )
    console.print(status)


# --- JSON -------------------------------------------------------------------------------------


def validation_json(load: DesiredState) -> dict[str, Any]:
    """What ``validate --output json`` prints."""
    return {
        "formatVersion": FORMAT_VERSION,
        "valid": len(load.models),
        "files": load.files,
        "errors": [problem_json(p) for p in load.errors],
        "warnings": [problem_json(p) for p in load.warnings],
        "models": {i: m.file for i, m in sorted(load.models.items())},
    }


def plan_json(
    plan: Plan,
    *,
    load: Problems | None = None,
    outcomes: Sequence[Outcome] = (),
    include_unchanged: bool = True,
) -> dict[str, Any]:
    """The one JSON document of ``diff``/``sync``: ``summary`` and ``changes`` (redacted)."""
    failures = {o.id: o for o in outcomes if not o.ok}
    changes = []
    for change in plan.changes:
        if change.action is Action.UNCHANGED and not include_unchanged:
            continue
        failure = failures.get(change.id)
        changes.append(
            {
                "id": change.id,
                "action": change.action.value,
                "file": change.file,
                "fields": [field_json(f, change.sensitive) for f in change.fields],
                "reason": change.reason or None,
                "error": failure_text(change, failure) if failure else None,
            }
        )
    return {
        "formatVersion": FORMAT_VERSION,
        "summary": counts(plan, outcomes, load),
        "changes": changes,
        "prune_skipped": plan.prune_skipped,
        "errors": [problem_json(p) for p in load.errors] if load is not None else [],
        "warnings": [problem_json(p) for p in load.warnings] if load is not None else [],
    }


# --- health -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthRow:
    """One model's availability: ``None`` is unknown (never checked, or the check failed)."""

    id: str
    available: bool | None
    last_check: float | None  # unix seconds
    error: str | None = None
    in_registry: bool = True


def health_rows(
    entries: Iterable[Entry],
    ids: Iterable[str] | None = None,
    checks: Mapping[str, HealthResult | Exception] | None = None,
    hidden: Iterable[str] = (),
) -> list[HealthRow]:
    """Rows for ``ids`` (every entry when None), sorted by id: a fresh check's answer where there
    is one, else the registry's last known state; a declared id the registry lacks is down.
    Errors are scrubbed of ``hidden`` values (a probe may quote a URL a placeholder filled)."""
    hidden = set(hidden)
    rows = _health_rows(entries, ids, checks)
    return [replace(r, error=scrub(r.error, hidden)) if r.error and hidden else r for r in rows]


def _health_rows(
    entries: Iterable[Entry],
    ids: Iterable[str] | None,
    checks: Mapping[str, HealthResult | Exception] | None,
) -> list[HealthRow]:
    live = {e.id: e for e in entries}
    checks = checks or {}
    rows = []
    for model_id in sorted(set(live if ids is None else ids)):
        entry = live.get(model_id)
        check = checks.get(model_id)
        if entry is None:
            rows.append(HealthRow(model_id, False, None, "not in registry", in_registry=False))
        elif isinstance(check, HealthResult):
            rows.append(
                HealthRow(model_id, check.is_available, seconds(check.checked_at), check.error)
            )
        elif check is not None:
            error = getattr(check, "message", None) or str(check) or type(check).__name__
            rows.append(HealthRow(model_id, None, None, f"check failed: {error}"))
        else:
            h = entry.health
            rows.append(HealthRow(model_id, h.is_available, seconds(h.last_health_check), h.error))
    return rows


def seconds(timestamp: float | None) -> float | None:
    """Unix seconds from a timestamp in seconds or milliseconds (the API uses ms)."""
    return unix_seconds(timestamp)


def iso_time(timestamp: float | None) -> str | None:
    """``2024-01-01T00:00:00Z`` (UTC), or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def health_failed(rows: Sequence[HealthRow], *, checked: bool) -> bool:
    """Whether CI should fail: any model down, or, after ``--check``, any still unknown."""
    return any(r.available is False or (checked and r.available is None) for r in rows)


def health_counts(rows: Sequence[HealthRow]) -> dict[str, int]:
    """How many rows are available, unavailable and unknown."""
    return {
        "available": sum(1 for r in rows if r.available is True),
        "unavailable": sum(1 for r in rows if r.available is False),
        "unknown": sum(1 for r in rows if r.available is None),
    }


def health_json(rows: Sequence[HealthRow]) -> dict[str, Any]:
    """``{"models": [{id, available, last_check, error}], "summary": {...}}``."""
    return {
        "formatVersion": FORMAT_VERSION,
        "models": [
            {
                "id": r.id,
                "available": r.available,
                "last_check": iso_time(r.last_check),
                "error": r.error,
            }
            for r in rows
        ],
        "summary": health_counts(rows),
    }


def render_health(console: Console, rows: Sequence[HealthRow]) -> None:
    """A table (id, available, last check, error), then one summary line."""
    from rich.table import Table

    table = Table(title_justify="left")
    # The error folds; the id and time stay whole so a row still reads on a narrow terminal.
    table.add_column("id", no_wrap=True)
    table.add_column("available", no_wrap=True)
    table.add_column("last check", no_wrap=True)
    table.add_column("error", overflow="fold")
    for r in rows:
        if r.available is None:
            available = Text("unknown", style="yellow")
        else:
            available = Text("yes", style="green") if r.available else Text("no", style="red")
        table.add_row(
            Text(printable(r.id)),
            available,
            Text(iso_time(r.last_check) or "never"),
            Text(printable(r.error or "")),
        )
    if rows:
        console.print(table)
    c = health_counts(rows)
    style = "red" if c["unavailable"] else ("yellow" if c["unknown"] else "green")
    console.print(
        Text(
            f"{len(rows)} model(s): {c['available']} available, {c['unavailable']} unavailable, "
            f"{c['unknown']} unknown.",
            style=f"bold {style}",
        )
    )
