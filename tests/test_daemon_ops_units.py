"""The operations pieces of the daemon, with plain data and fake clocks: drift, the delete
fence, field-by-field write logs with secrets redacted, metrics, events."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.daemon.changes import REDACTED, describe, field_paths, scrub_text
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.state import State, fence_deletes, is_drift
from reconciler.events import NOTIFY, Event, Fanout, Kind, Recorder
from reconciler.plan import Action, Change, FieldChange, FieldOp

SECRET = "sk-live-do-not-show"


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics.exposition().decode())
        for s in f.samples
    }


def _update(*fields: FieldChange, file: str = "a.toml", body: dict | None = None) -> Change:
    return Change("a", Action.UPDATE, file, fields=fields, body=body)


@pytest.mark.parametrize(
    ("action", "before", "reread", "drift"),
    [
        (Action.UPDATE, State.SYNCED, False, True),  # edited in the registry
        (Action.CREATE, State.SYNCED, False, True),  # deleted in the registry
        (Action.UPDATE, State.SYNCED, True, False),  # the file changed: an edit, not drift
        (Action.UPDATE, None, False, False),  # first sync: cannot tell
        (Action.UPDATE, State.ERROR, False, False),  # a retried write
        (Action.DELETE, State.SYNCED, False, False),
        (Action.UNCHANGED, State.SYNCED, False, False),
    ],
)
def test_is_drift(action: Action, before: State | None, reread: bool, drift: bool) -> None:
    assert is_drift(Change("a", action, "a.toml"), before, reread) is drift


def test_the_delete_fence_slides_over_the_window() -> None:
    # --max-deletes 2 over an hour: two single deletes pass, the third within the hour waits.
    allowed, recent = fence_deletes([], 1, 0.0, window=3600, max_deletes=2)
    assert allowed and recent == []
    allowed, recent = fence_deletes([0.0], 1, 600.0, window=3600, max_deletes=2)
    assert allowed
    allowed, recent = fence_deletes([0.0, 600.0], 1, 1200.0, window=3600, max_deletes=2)
    assert not allowed and recent == [0.0, 600.0]
    # An hour after the first, one slot is free again.
    allowed, recent = fence_deletes([0.0, 600.0], 1, 3600.0, window=3600, max_deletes=2)
    assert allowed and recent == [600.0]
    # Three at once are fenced like three one by one.
    assert not fence_deletes([], 3, 0.0, window=3600, max_deletes=2)[0]


def test_write_log_lines_show_values_but_never_secrets() -> None:
    change = _update(
        FieldChange(("rpm",), FieldOp.CHANGE, 999, 5),
        FieldChange(("auth", "value"), FieldOp.CHANGE, "old-secret", SECRET),
        FieldChange(("auth",), FieldOp.ADD, None, {"type": "api-key", "value": SECRET}),
        FieldChange(
            ("auth", "strategies"),
            FieldOp.CHANGE,
            [],
            [{"type": "custom-headers", "headers": {"X-Key": SECRET}}],
        ),
        FieldChange(("displayName",), FieldOp.REMOVE, "Old", None),
    )
    lines = describe(change)
    assert lines[0] == "rpm: 999 -> 5"
    assert lines[1] == f'auth.value: "{REDACTED}" -> "{REDACTED}"'
    assert lines[4] == 'displayName: "Old" -> (unset)'
    text = "\n".join(lines)
    assert SECRET not in text and "old-secret" not in text
    assert '"type": "api-key"' in lines[2]  # the rest of an object stays readable
    assert field_paths(change)[:2] == ("rpm", "auth.value")


def test_a_placeholder_path_is_redacted_when_the_plan_marks_it() -> None:
    change = _update(FieldChange(("displayName",), FieldOp.CHANGE, "a", "from-env-value"))
    assert "from-env-value" in describe(change)[0]
    # The plan marks paths filled from a ${VAR} placeholder as sensitive.
    marked = change._replace(sensitive=frozenset({("displayName",)}))
    assert describe(marked)[0] == f'displayName: "{REDACTED}" -> "{REDACTED}"'
    body = {"id": "a", "displayName": "from-env-value"}
    error = "HTTP 400: displayName 'from-env-value' is too long"
    assert (
        scrub_text(error, marked._replace(body=body))
        == f"HTTP 400: displayName '{REDACTED}' is too long"
    )


def test_registry_errors_lose_secret_values_they_echo() -> None:
    change = _update(body={"id": "a", "auth": {"type": "api-key", "value": SECRET}})
    assert (
        scrub_text(f"HTTP 400: bad value {SECRET!r}", change) == f"HTTP 400: bad value '{REDACTED}'"
    )
    assert scrub_text(None, change) is None


def test_every_counter_starts_at_zero_and_no_created_series() -> None:
    metrics = Metrics()
    samples = _samples(metrics)
    for action in ("create", "update", "delete"):
        for outcome in ("ok", "error"):
            assert (
                samples[("reconciler_writes_total", (("action", action), ("outcome", outcome)))]
                == 0
            )
    for outcome in ("sent", "failed", "dropped", "deduplicated"):
        assert samples[("reconciler_notifications_total", (("outcome", outcome),))] == 0
    assert (
        samples[("reconciler_reconcile_runs_total", (("kind", "full"), ("result", "error")))] == 0
    )
    assert samples[("reconciler_health_rounds_skipped_total", ())] == 0
    assert samples[("reconciler_prune_skipped_total", (("reason", "max-deletes"),))] == 0
    assert not [name for name, _ in samples if name.endswith("_created")]
    info = [labels for name, labels in samples if name == "reconciler_build_info"]
    assert info and dict(info[0])["version"]
    assert samples[("reconciler_dry_run", ())] == 0
    assert samples[("reconciler_models_out_of_sync", ())] == 0
    metrics.model_seen("team:a")
    assert _samples(metrics)[("reconciler_drift_corrected_total", (("id", "team:a"),))] == 0


def test_a_common_label_is_one_change() -> None:
    # What environments will do: every series carries the label, nothing else changes.
    metrics = Metrics(common={"environment": "prod"})
    metrics.watch_models(list)
    samples = _samples(metrics)
    assert samples
    assert all(dict(labels).get("environment") == "prod" for _, labels in samples)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_registry_calls_are_timed_at_the_transport() -> None:
    metrics = Metrics()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/down":
            raise httpx.ConnectError("refused")
        return httpx.Response(200 if request.method == "GET" else 503, json={"ok": True})

    transport = metrics.transport(httpx.MockTransport(answer))
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        assert (await client.get("/x")).json() == {"ok": True}
        await client.post("/x")
        with pytest.raises(httpx.ConnectError):
            await client.get("/down")
    samples = _samples(metrics)
    name = "reconciler_registry_request_duration_seconds_count"
    assert samples[(name, (("method", "GET"), ("status", "200")))] == 1
    assert samples[(name, (("method", "POST"), ("status", "503")))] == 1
    assert samples[(name, (("method", "GET"), ("status", "error")))] == 1


def test_events_fan_out_and_a_failing_sink_costs_the_others_nothing() -> None:
    class Broken:
        def emit(self, event: Event) -> None:
            raise RuntimeError("bug")

    recorder, metrics = Recorder(), Metrics()
    fanout = Fanout([Broken(), metrics, recorder])
    e = Event(Kind.DRIFT_CORRECTED, 1704067200.0, "a put back", id="a", fields=("rpm",))
    fanout.emit(e)
    assert recorder.events == [e]
    assert _samples(metrics)[("reconciler_drift_corrected_total", (("id", "a"),))] == 1


def test_event_json_is_one_object_with_iso_time_and_text() -> None:
    e = Event(Kind.DRIFT_CORRECTED, 1704067200.0, "a put back", id="a", fields=("rpm",))
    assert e.as_json() == {
        "event": "drift-corrected",
        "time": "2024-01-01T00:00:00Z",
        "id": "a",
        "fields": ["rpm"],
        "text": "a put back",
    }
    assert e.as_json("prod")["environment"] == "prod"
    invalid = Event(Kind.INVALID_FILE, 0.0, "x.toml is invalid", file="x.toml", error="bad")
    body = invalid.as_json()
    assert body["file"] == "x.toml" and "id" not in body and "fields" not in body
    json.dumps(body)


# --- the write step of one run, against a fake registry at the client's transport -------------


def _daemon(tmp_path, answer, **options):  # type: ignore[no-untyped-def]
    import logging

    from reconciler.daemon.core import Daemon, Options
    from reconciler.registry import NO_RETRY, RegistryClient

    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return answer(request)

    client = RegistryClient(
        "http://registry.test", "key", transport=httpx.MockTransport(handler), retry=NO_RETRY
    )
    recorder = Recorder()
    d = Daemon(Options(tmp_path, **options), client, logging.getLogger("t"), Metrics(), recorder)
    d.live = {}
    return d, recorder, calls


def notified(recorder: Recorder) -> list[Event]:
    """The events a webhook would get (the engine's per-write events left out)."""
    return [e for e in recorder.events if e.kind in NOTIFY]


def _create(model_id: str) -> Change:
    body = {"id": model_id, "provider": "p", "modelId": model_id}
    return Change(model_id, Action.CREATE, None, body=body)


def _entry(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(200, json={"id": body["id"], "definition": body})


@pytest.mark.anyio
async def test_a_failing_registry_is_one_event_a_refused_model_is_its_own(tmp_path) -> None:
    from reconciler.daemon import writes
    from reconciler.plan import Plan

    d, recorder, _ = _daemon(tmp_path, lambda r: httpx.Response(503, json={"error": "down"}))
    plan = Plan(tuple(_create(f"team:{i}") for i in range(5)))
    outcomes = await writes.apply(d, plan, set())
    assert len(outcomes) == 5 and not any(o.ok for o in outcomes)
    # The engine tells each write (for progress, a status page); the news is one event.
    assert [e.kind for e in recorder.events].count(Kind.WRITE_FAILED) == 5
    (failed,) = notified(recorder)
    assert failed.kind is Kind.SYNC_FAILED and failed.id is None and failed.error == "HTTP 503"
    assert failed.text.startswith("5 writes failed (HTTP 503)")

    d, recorder, _ = _daemon(tmp_path, lambda r: httpx.Response(400, json={"error": "bad"}))
    await writes.apply(d, plan, set())
    assert sorted(e.id or "" for e in notified(recorder)) == [f"team:{i}" for i in range(5)]


@pytest.mark.anyio
async def test_drift_is_a_write_to_a_model_that_was_in_sync(tmp_path) -> None:
    from reconciler.daemon import writes
    from reconciler.plan import Plan

    d, recorder, _ = _daemon(tmp_path, _entry)
    d.status("team:a").state = State.SYNCED  # in sync at the last run
    update = Change(
        "team:a",
        Action.UPDATE,
        str(tmp_path / "a.toml"),
        fields=(FieldChange(("rpm",), FieldOp.CHANGE, 999, 5),),
        body={"id": "team:a", "provider": "p", "modelId": "a", "rpm": 5},
    )
    await writes.apply(d, Plan((update, _create("team:b"))), set())
    (drift,) = notified(recorder)  # team:b is new: not drift
    assert (drift.kind, drift.id, drift.fields, drift.file) == (
        Kind.DRIFT_CORRECTED,
        "team:a",
        ("rpm",),
        "a.toml",
    )
    assert d.models["team:a"].state is State.SYNCED


@pytest.mark.anyio
async def test_dry_run_makes_no_call_and_reports_once(tmp_path) -> None:
    from reconciler.daemon import writes
    from reconciler.plan import Plan

    d, recorder, calls = _daemon(tmp_path, _entry, dry_run=True)
    plan = Plan((_create("team:a"),))
    for _ in range(3):  # three resyncs finding the same difference
        assert await writes.apply(d, plan, set()) == []
    assert calls == []
    assert [e.kind for e in notified(recorder)] == [Kind.DRIFT_DETECTED]
    assert d.models["team:a"].state is State.OUT_OF_SYNC


def test_notify_tables_in_the_config_file(tmp_path) -> None:
    from reconciler.config import ConfigError, load_config

    path = tmp_path / "reconciler.toml"
    path.write_text(
        '[[notify]]\nurl = "https://hooks.example/T/secret"\n'
        '[[notify]]\nurl = "http://chat.example/hook"\n'
        'events = ["drift-corrected", "sync-failed"]\n'
    )
    every, some = load_config(path).notify
    assert every.events == list(NOTIFY)
    assert some.events == [Kind.DRIFT_CORRECTED, Kind.SYNC_FAILED]
    for text, message in [
        ('[[notify]]\nurl = "ftp://h/secret-token"\n', "notify[0].url: "),
        ('[[notify]]\nurl = "https://h/x"\nevents = ["drift"]\n', "unknown event 'drift'"),
        ('[[notify]]\nurl = "https://h/x"\nevent = ["drift-corrected"]\n', "did you mean 'events'"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as error:
            load_config(path)
        assert message in str(error.value)
        assert "secret-token" not in str(error.value)
