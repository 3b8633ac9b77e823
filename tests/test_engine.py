"""The engine against a second implementation of the registry seam: an in-memory registry.

The HTTP client is tested against the real local server elsewhere; here the point is that the
pipeline (plan, apply, events) needs nothing of HTTP, only :class:`reconciler.ports.Registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from reconciler import defaults, units
from reconciler.engine import Engine, Selector, plan
from reconciler.events import Kind, Recorder
from reconciler.plan import Action, Desired, PruneOptions
from reconciler.ports import ConflictError, Listing, Registry, RegistryError
from reconciler.source import DesiredState
from reconciler.spec import Entry, HealthResult

SECRET = "sk-live-do-not-print"


def body(model_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "provider": "openai",
        "modelId": model_id.split(":")[-1],
        "apiFormat": "openai-chat",
        "created": 1700000000,
        **extra,
    }


class MemoryRegistry:
    """A registry in a dict: add refuses an existing id (409), as a strict registry does."""

    def __init__(self, *bodies: dict[str, Any], refuse: str | None = None) -> None:
        self.entries = {b["id"]: b for b in bodies}
        self.refuse = refuse  # an id whose writes fail, echoing the body sent
        self.calls: list[str] = []

    async def list(self) -> Listing:
        self.calls.append("list")
        return Listing(Entry(id=i, definition=dict(b)) for i, b in sorted(self.entries.items()))

    def _check(self, model_id: str, sent: Mapping[str, Any]) -> None:
        if model_id == self.refuse:
            raise RegistryError(f"rejected {dict(sent)}", 422)

    async def add(self, definition: Mapping[str, Any]) -> Entry:
        self.calls.append(f"add {definition['id']}")
        self._check(definition["id"], definition)
        if definition["id"] in self.entries:
            raise ConflictError("exists", 409)
        self.entries[definition["id"]] = dict(definition)
        return Entry(id=definition["id"], definition=dict(definition))

    async def update(self, model_id: str, patch: Mapping[str, Any]) -> Entry:
        self.calls.append(f"update {model_id}")
        self._check(model_id, patch)
        merged = {**self.entries[model_id], **patch}
        self.entries[model_id] = {k: v for k, v in merged.items() if v is not None}
        return Entry(id=model_id, definition=self.entries[model_id])

    async def remove(self, model_id: str) -> None:
        self.calls.append(f"remove {model_id}")
        del self.entries[model_id]

    async def check_health(self, model_id: str) -> HealthResult:
        return HealthResult(is_available=True)


def state(*bodies: dict[str, Any], sensitive: frozenset = frozenset()) -> DesiredState:
    return DesiredState(
        {b["id"]: Desired(b, f"{b['id']}.toml", sensitive) for b in bodies}, files=len(bodies)
    )


def test_the_memory_registry_is_a_registry() -> None:
    registry: Registry = MemoryRegistry()  # checked by the type checker; and at run time:
    assert all(callable(getattr(registry, n)) for n in ("list", "add", "update", "remove"))


def test_plan_then_apply_makes_the_registry_match_and_tells_the_sink() -> None:
    registry = MemoryRegistry(body("team:old"), body("team:same"), body("team:upd", rpm=1))
    events = Recorder()
    engine = Engine(registry, events, clock=lambda: 42.0)
    desired = state(body("team:new"), body("team:same"), body("team:upd", rpm=2))

    async def go() -> tuple[Any, list[Any]]:
        made = engine.plan(desired, await engine.live(), prune=PruneOptions(("team:*",)))
        return made, await engine.apply(made)

    made, outcomes = anyio.run(go)
    assert [(c.id, c.action) for c in made.changes] == [
        ("team:new", Action.CREATE),
        ("team:old", Action.DELETE),
        ("team:same", Action.UNCHANGED),
        ("team:upd", Action.UPDATE),
    ]
    assert all(o.ok for o in outcomes) and len(outcomes) == 3
    assert sorted(registry.entries) == ["team:new", "team:same", "team:upd"]
    assert registry.entries["team:upd"]["rpm"] == 2
    # add over an existing entry got 409: the update went through PATCH
    assert "update team:upd" in registry.calls
    planned, *written = events.events
    assert planned.kind is Kind.PLANNED and planned.time == 42.0
    assert dict(planned.counts) == {
        "create": 1,
        "update": 1,
        "delete": 1,
        "unchanged": 1,
        "immutable": 0,
        "invalid": 0,
    }
    assert sorted((e.kind, e.action, e.id) for e in written) == [
        (Kind.WRITTEN, "create", "team:new"),
        (Kind.WRITTEN, "delete", "team:old"),
        (Kind.WRITTEN, "update", "team:upd"),
    ]
    assert {e.file for e in written} == {"team:new.toml", None, "team:upd.toml"}


def test_a_failed_write_is_an_event_that_never_quotes_a_secret() -> None:
    registry = MemoryRegistry(refuse="team:a")
    events = Recorder()
    engine = Engine(registry, events)
    secret = body("team:a", auth={"type": "api-key", "value": SECRET})

    async def go() -> list[Any]:
        return await engine.apply(engine.plan(state(secret), await engine.live()))

    (outcome,) = anyio.run(go)
    assert not outcome.ok and outcome.status == 422
    assert SECRET not in (outcome.error or "")
    (failed,) = [e for e in events.events if e.kind is Kind.WRITE_FAILED]
    assert (
        failed.id == "team:a" and SECRET not in failed.text and SECRET not in (failed.error or "")
    )


def test_a_saved_plan_is_applied_as_it_was_planned() -> None:
    """Plan and apply are separate steps: the plan made against one listing is applied later,
    and only its writes are made."""
    registry = MemoryRegistry()
    engine = Engine(registry)
    made = anyio.run(lambda: _plan(engine, state(body("team:a"), body("team:b"))))
    registry.entries["team:c"] = body("team:c")  # someone else's change meanwhile
    anyio.run(engine.apply, made)
    assert sorted(registry.entries) == ["team:a", "team:b", "team:c"]


async def _plan(engine: Engine, desired: DesiredState) -> Any:
    return engine.plan(desired, await engine.live())


def test_select_plans_only_the_selected_ids() -> None:
    live = [Entry(id="team:x", definition=body("team:x"))]
    made = plan(
        state(body("team:a"), body("other:b")),
        live,
        prune=PruneOptions(("*",), max_deletes=10),
        select=Selector(["team:*"]),
    )
    assert [(c.id, c.action) for c in made.changes] == [
        ("team:a", Action.CREATE),
        ("team:x", Action.DELETE),
    ]


def test_a_paged_listing_fences_prune() -> None:
    live = Listing([Entry(id="team:x", definition=body("team:x"))])
    live.has_more = True
    made = plan(state(body("team:a")), live, prune=PruneOptions(("team:*",)))
    assert made.prune_skipped and not any(c.action is Action.DELETE for c in made.changes)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (1_700_000_000, 1_700_000_000),  # seconds
        (1_700_000_000_000, 1_700_000_000),  # milliseconds
        (99_999_999_999, 99_999_999_999),  # seconds in the year 5138
        (100_000_000_000, 100_000_000),  # ms in 1973
    ],
)
def test_one_rule_for_milliseconds(value: float | None, seconds: float | None) -> None:
    from reconciler import report
    from reconciler.daemon import health

    assert units.unix_seconds(value) == seconds
    # the health report, the daemon and the loader's warning all read the same rule
    assert report.seconds(value) == seconds
    assert health._seconds(value) == seconds
    if value is not None:
        assert units.is_milliseconds(value) == (value >= units.MS_THRESHOLD)


def test_the_cli_defaults_are_the_defaults_module() -> None:
    import inspect

    from reconciler.cli.reconcile import sync
    from reconciler.cli.watch import watch

    params = inspect.signature(sync).parameters
    assert params["concurrency"].default == defaults.CONCURRENCY
    assert params["timeout"].default == defaults.TIMEOUT
    w = inspect.signature(watch).parameters
    assert w["resync_interval"].default == defaults.RESYNC_INTERVAL
    assert w["prune_grace"].default == defaults.PRUNE_GRACE
    assert w["listen"].default == defaults.LISTEN


def _planned(creates: int) -> Any:
    from reconciler.events import Event

    counts = {"create": creates, "update": 0, "delete": 0, "unchanged": 3}
    return Event(Kind.PLANNED, 0.0, "planned", counts=tuple(counts.items()))


def test_progress_is_an_engine_sink_a_line_per_write_in_a_pipe() -> None:
    import io

    from rich.console import Console

    from reconciler.cli.progress import Progress
    from reconciler.events import Event

    out = io.StringIO()
    show = Progress(Console(file=out, force_terminal=False), quiet=False)
    show.emit(_planned(2))
    with show:
        show.emit(Event(Kind.WRITTEN, 0.0, "", id="team:a", action="create"))
        show.emit(Event(Kind.NOT_ATTEMPTED, 0.0, "", id="team:c", action="create"))
        show.emit(Event(Kind.WRITE_FAILED, 0.0, "", id="team:b", action="create", error="x"))
    assert out.getvalue().splitlines() == [
        "[1/2] create team:a: ok",
        "[2/2] create team:b: failed (why: below)",
    ]


def test_progress_on_a_terminal_is_a_bar_sized_by_the_plan() -> None:
    import io

    from rich.console import Console

    from reconciler.cli.progress import BAR_FROM, Progress
    from reconciler.events import Event

    show = Progress(Console(file=io.StringIO(), force_terminal=True), quiet=False)
    show.emit(_planned(BAR_FROM))
    with show:
        assert show.bar is not None
        for i in range(BAR_FROM):
            show.emit(Event(Kind.WRITTEN, 0.0, "", id=f"team:{i}", action="create"))
        (task,) = show.bar.tasks
        assert (task.total, task.completed) == (BAR_FROM, BAR_FROM)
    assert show.bar is None
