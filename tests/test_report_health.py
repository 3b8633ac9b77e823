"""Unit tests for the health rows, their exit rule and their rendering."""

from __future__ import annotations

from rich.console import Console

from reconciler import report
from reconciler.registry import RegistryError
from reconciler.spec import Entry, EntryHealth, HealthResult

MS = 1_767_607_200_000  # 2026-01-05T10:00:00Z in milliseconds


def entry(model_id: str, available: bool | None, last: float | None = None, error=None) -> Entry:
    health = EntryHealth(is_available=available, last_health_check=last, error=error)
    return Entry(id=model_id, health=health)


def test_rows_follow_the_registry_state_sorted_by_id() -> None:
    rows = report.health_rows([entry("b", False, MS, "503"), entry("a", True)])
    assert rows == [
        report.HealthRow("a", True, None, None),
        report.HealthRow("b", False, MS / 1000, "503"),
    ]
    assert report.iso_time(rows[1].last_check) == "2026-01-05T10:00:00Z"


def test_declared_ids_filter_and_missing_ones_are_down() -> None:
    rows = report.health_rows([entry("a", True), entry("b", True)], ids=["a", "ghost"])
    assert [(r.id, r.available, r.error, r.in_registry) for r in rows] == [
        ("a", True, None, True),
        ("ghost", False, "not in registry", False),
    ]
    assert report.health_failed(rows, checked=False)


def test_fresh_checks_win_and_failed_checks_are_unknown() -> None:
    checks = {
        "a": HealthResult(is_available=False, checked_at=MS, error="timeout"),
        "b": RegistryError("health b: HTTP 500", 500),
    }
    rows = report.health_rows([entry("a", True), entry("b", True)], checks=checks)
    assert rows[0] == report.HealthRow("a", False, MS / 1000, "timeout")
    assert rows[1].available is None and rows[1].error == "check failed: health b: HTTP 500"


def test_exit_rule_unknown_fails_only_after_a_check() -> None:
    never = [report.HealthRow("a", None, None)]
    assert not report.health_failed(never, checked=False)
    assert report.health_failed(never, checked=True)
    assert not report.health_failed([report.HealthRow("a", True, None)], checked=True)
    assert report.health_failed([report.HealthRow("a", False, None)], checked=False)


def test_seconds_accepts_both_units() -> None:
    assert report.seconds(MS) == report.seconds(MS / 1000) == MS / 1000
    assert report.seconds(None) is None


def test_json_and_table() -> None:
    rows = [report.HealthRow("a[b]", True, MS / 1000), report.HealthRow("c", False, None, "down")]
    doc = report.health_json(rows)
    assert doc["models"][0] == {
        "id": "a[b]",
        "available": True,
        "last_check": "2026-01-05T10:00:00Z",
        "error": None,
    }
    assert doc["summary"] == {"available": 1, "unavailable": 1, "unknown": 0}
    console = Console(record=True, width=120, color_system=None)
    report.render_health(console, rows)
    text = console.export_text()
    assert "a[b]" in text and "never" in text and "down" in text
    assert "2 model(s): 1 available, 1 unavailable, 0 unknown." in text


def test_the_json_summary_counts_failed_and_not_attempted_writes_apart() -> None:
    from reconciler.apply import Outcome
    from reconciler.plan import Action, Change, Plan

    plan = Plan(tuple(Change(f"m{i}", Action.CREATE) for i in range(4)))
    outcomes = [
        Outcome("m0", Action.CREATE, True),
        Outcome("m1", Action.CREATE, False, "HTTP 500", 500),
        Outcome("m2", Action.CREATE, False, "not attempted: interrupted", attempted=False),
        Outcome("m3", Action.CREATE, False, "not attempted: interrupted", attempted=False),
    ]
    counts = report.counts(plan, outcomes)
    assert (counts["applied"], counts["failed"], counts["notAttempted"]) == (1, 1, 2)
