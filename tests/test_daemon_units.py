"""The daemon's pure pieces, with plain data: states, prune grace, pacing, listen, rendering."""

from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.apply import Outcome
from reconciler.daemon.logs import event, setup
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.page import render_page, render_rows
from reconciler.daemon.state import (
    ModelStatus,
    Readiness,
    State,
    affected_ids,
    due_orphans,
    jittered,
    keep_last_good,
    next_due,
    parse_listen,
    retry_delay,
    state_after,
    track_orphans,
)
from reconciler.daemon.web import public_url
from reconciler.plan import Action, Change
from reconciler.report import iso_time
from reconciler.source import FileResult, Problem


@pytest.mark.parametrize(
    ("action", "outcome", "state"),
    [
        (Action.INVALID, None, State.INVALID),
        (Action.IMMUTABLE, None, State.IMMUTABLE),
        (Action.UNCHANGED, None, State.SYNCED),
        (Action.CREATE, None, State.PENDING),
        (Action.UPDATE, Outcome("a", Action.UPDATE, True), State.SYNCED),
        (Action.UPDATE, Outcome("a", Action.UPDATE, False, "HTTP 503"), State.ERROR),
    ],
)
def test_state_after(action: Action, outcome: Outcome | None, state: State) -> None:
    assert state_after(Change("a", action), outcome) is state


def test_a_half_written_file_keeps_the_id_it_held() -> None:
    broken = FileResult("m/a.toml", None, None, (Problem("m/a.toml", "invalid TOML"),))
    good = FileResult("m/a.toml", None, "team:a")
    assert keep_last_good(broken, good).declared_id == "team:a"
    assert keep_last_good(broken, None).declared_id is None
    # A file that parses says for itself which id it holds, even a new one.
    renamed = FileResult("m/a.toml", None, "team:b", (Problem("m/a.toml", "x"),))
    assert keep_last_good(renamed, good).declared_id == "team:b"


def test_affected_ids_before_and_after() -> None:
    old = [FileResult("a", None, "x"), None]
    new = [FileResult("a", None, "y"), FileResult("b", None, None)]
    assert affected_ids(old, new) == {"x", "y"}


def test_prunable() -> None:
    from reconciler.plan import prunable
    from reconciler.spec import Entry

    assert prunable(Entry(id="team:a"), ["team:*"])
    assert not prunable(Entry(id="other:a"), ["team:*"])
    assert not prunable(Entry(id="team:a"), [])
    assert not prunable(Entry(id="team:a", immutable=True), ["team:*"])


def test_orphans_wait_out_the_grace_and_forget_returning_files() -> None:
    since = track_orphans({}, ["a", "b"], now=100.0)
    assert since == {"a": 100.0, "b": 100.0}
    since = track_orphans(since, ["a", "c"], now=103.0)  # b's file came back
    assert since == {"a": 100.0, "c": 103.0}
    assert due_orphans(since, now=104.9, grace=5) == set()
    assert due_orphans(since, now=105.0, grace=5) == {"a"}
    assert next_due(since, now=102.0, grace=5) == 3.0
    assert next_due(since, now=200.0, grace=5) == 0.0
    assert next_due({}, now=1.0, grace=5) is None


def test_retry_delay_fast_for_outages_slow_for_a_refused_key() -> None:
    outage = [retry_delay(n, auth=False, interval=60) for n in range(1, 9)]
    assert outage[0] == 0.5
    assert outage == sorted(outage) and max(outage) <= 30
    # Never slower than the resync interval itself.
    assert retry_delay(10, auth=False, interval=1) == 1
    assert retry_delay(1, auth=True, interval=1) == 5
    assert retry_delay(10, auth=True, interval=1) == 60


def test_jitter_stays_within_ten_percent() -> None:
    assert jittered(60, 0.0) == pytest.approx(54)
    assert jittered(60, 0.5) == pytest.approx(60)
    assert jittered(60, 0.999) < 66


def test_readiness_needs_a_sync_and_an_answering_registry() -> None:
    r = Readiness()
    assert not r.ready
    r.registry_up = True
    assert not r.ready
    r.synced_once = True
    assert r.ready
    r.registry_up = False
    assert not r.ready
    assert r.why_not == "no sync yet"


def test_never_ready_while_the_directory_is_missing() -> None:
    r = Readiness(synced_once=True, registry_up=True, directory_missing="/m: no such directory")
    assert not r.ready
    assert r.why_not == "/m: no such directory"
    r.directory_missing = None
    assert r.ready and r.why_not is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9180", ("127.0.0.1", 9180)),
        ("[::1]:9180", ("::1", 9180)),
        (":9180", ("0.0.0.0", 9180)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9180", "host:", "host:port", "h:70000"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(text)


def test_public_url_drops_credentials() -> None:
    assert public_url("https://user:pw@reg.example.com:8443/base") == (
        "https://reg.example.com:8443/base"
    )


def _doc(models: list[ModelStatus]) -> dict[str, object]:
    return {
        "now": 1000.0,
        "ready": False,
        "reason": "no sync yet",
        "registry": {"url": "http://r", "up": False},
        "last_sync": None,
        "files": 1,
        "invalid_files": [],
        "directory_error": None,
        "models": [m.as_json() for m in models],
    }


def test_status_rows_escape_ids_and_errors() -> None:
    m = ModelStatus("team:<b>", "a.toml", State.ERROR, last_error="bad <script>")
    rows = render_rows(_doc([m]))
    assert 'data-id="team:&lt;b&gt;"' in rows
    assert "<script>" not in rows and "bad &lt;script&gt;" in rows
    page = render_page(_doc([m]))
    assert page.count('<tr class="model" data-id="team:') == 1
    assert "not ready: no sync yet" in page


def test_model_status_json_shape() -> None:
    m = ModelStatus("a", "a.toml", State.SYNCED, 1704067205.5, None, True, 1704067206.0, None)
    assert m.as_json() == {
        "id": "a",
        "file": "a.toml",
        "state": "synced",
        "last_applied": "2024-01-01T00:00:05Z",
        "last_error": None,
        "health": {
            "state": "up",
            "available": True,
            "checked_at": "2024-01-01T00:00:06Z",
            "error": None,
        },
    }
    # The same format as `health -o json`.
    assert m.as_json()["last_applied"] == iso_time(1704067205.5)
    never = ModelStatus("b").as_json()["health"]
    assert never == {"state": "unknown", "available": None, "checked_at": None, "error": None}


def test_metrics_exposition_parses_with_states_and_availability() -> None:
    metrics = Metrics()
    metrics.writes.labels(action="create", outcome="ok").inc()
    models = [
        ModelStatus("a", state=State.SYNCED, available=True),
        ModelStatus("b", available=False),
        ModelStatus("c", state=State.OUT_OF_SYNC),
    ]
    metrics.watch_models(lambda: models)
    body = metrics.exposition()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    assert samples[("reconciler_writes_total", (("action", "create"), ("outcome", "ok")))] == 1
    assert samples[("reconciler_models", (("state", "synced"),))] == 1
    assert samples[("reconciler_models", (("state", "pending"),))] == 1
    assert samples[("reconciler_model_available", (("id", "a"),))] == 1
    assert samples[("reconciler_model_available", (("id", "b"),))] == 0
    assert ("reconciler_model_available", (("id", "c"),)) not in samples  # never checked
    assert samples[("reconciler_models_out_of_sync", ())] == 2  # pending b, out-of-sync c


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_one_line_per_event(fmt: str) -> None:
    stream = io.StringIO()
    log = setup(fmt, stream)  # type: ignore[arg-type]
    try:
        event(log, "write", logging.WARNING, id="a", error="line one\nline two")
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    if fmt == "json":
        record = json.loads(lines[0])
        assert record["event"] == "write" and record["level"] == "warning"
        assert record["error"] == "line one\nline two"
    else:
        assert 'warning write id=a error="line one line two"' in lines[0]


def test_status_lists_every_model_up_to_the_limit_then_only_problems() -> None:
    from types import SimpleNamespace

    from starlette.datastructures import QueryParams

    from reconciler.daemon.web import LIST_LIMIT, BadQuery, Query, select_models

    few = {f"m{i}": ModelStatus(f"m{i}", state=State.SYNCED) for i in range(3)}
    rows, matched, shown = select_models(SimpleNamespace(models=few), Query())
    assert (len(rows), matched, shown) == (3, 3, "all")

    many = {f"m{i:05d}": ModelStatus(f"m{i:05d}", state=State.SYNCED) for i in range(1000)}
    many["m00007"].state = State.ERROR
    many["m00009"].available = False  # synced, but down
    daemon = SimpleNamespace(models=many)
    rows, matched, shown = select_models(daemon, Query())
    assert [r.id for r in rows] == ["m00007", "m00009"] and shown == "problems"
    rows, matched, _ = select_models(daemon, Query.parse(QueryParams("models=all")))
    assert len(rows) == matched == 1000
    rows, matched, _ = select_models(
        daemon, Query.parse(QueryParams("models=all&limit=10&offset=995"))
    )
    assert [r.id for r in rows] == [f"m{i:05d}" for i in range(995, 1000)] and matched == 1000
    rows, _, _ = select_models(daemon, Query.parse(QueryParams("id=m00003&id=nope")))
    assert [r.id for r in rows] == ["m00003"]
    rows, _, _ = select_models(daemon, Query.parse(QueryParams("state=error")))
    assert [r.id for r in rows] == ["m00007"]
    assert LIST_LIMIT < 1000
    for bad in ("models=some", "limit=-1", "offset=x", "state=happy"):
        with pytest.raises(BadQuery):
            Query.parse(QueryParams(bad))
