"""The one pipeline of ``diff``, ``sync`` and the daemon:

    desired state (:class:`~reconciler.source.DesiredState`, from the model files)
    + live entries (:meth:`Engine.live`, from a :class:`~reconciler.ports.Registry`)
    -> plan (:func:`plan`, pure: :func:`reconciler.plan.make_plan`)
    -> apply (:meth:`Engine.apply`: bounded, stoppable; :mod:`reconciler.apply`)
    -> outcomes

Plan and apply are separate calls, so a plan can be saved, reviewed and applied later
(:mod:`reconciler.planfile`). Each step tells one event sink what it did (``planned`` once per
plan; ``written``, ``write-failed`` or ``not-attempted`` per write): the CLI's progress is such
a sink, the daemon's logs, metrics and notifications are others.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from . import defaults
from .apply import Outcome, Stop, UpdateMethod, apply_plan
from .events import Discard, Event, Kind, Sink
from .plan import Change, IgnoreRule, Plan, PruneOptions, make_plan, summary
from .ports import Listing, Registry
from .secrets import hidden_values, scrub
from .source import DesiredState
from .spec import Entry

__all__ = ["Engine", "Selector", "plan"]


class Selector:
    """``--select``: the ids matching any of these fnmatch patterns (every id when none)."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)

    def __call__(self, model_id: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(model_id, p) for p in self.patterns)


def plan(
    state: DesiredState,
    live: Iterable[Entry],
    *,
    prune: PruneOptions | None = None,
    ignore: Sequence[IgnoreRule] = (),
    select: Selector | None = None,
) -> Plan:
    """Plan a desired state against live entries, every load failure (and a list answer that
    says it paged) fencing prune; with ``select``, only the selected ids are planned (and
    pruned). Pure."""
    complete = not (isinstance(live, Listing) and live.has_more)
    held = live.held if isinstance(live, Listing) else None
    models, invalid = state.models, state.invalid_ids
    if select is not None and select.patterns:
        models = {i: d for i, d in models.items() if select(i)}
        invalid = {i: f for i, f in invalid.items() if select(i)}
        live = [e for e in live if select(e.id)]
    return make_plan(
        models,
        live,
        invalid=invalid,
        prune=prune,
        ignore=ignore,
        load_errors=state.failed_files,
        live_complete=complete,
        held=held,
    )


@dataclass
class Engine:
    """Plans and applies against one registry, telling ``events`` each step."""

    registry: Registry
    events: Sink = field(default_factory=Discard)
    concurrency: int = defaults.CONCURRENCY
    update_method: UpdateMethod = "add"
    clock: Callable[[], float] = time.time  # unix seconds, for the events' time

    async def live(self) -> Listing:
        """The registry's entries, listed once."""
        return await self.registry.list()

    def plan(
        self,
        state: DesiredState,
        live: Iterable[Entry],
        *,
        prune: PruneOptions | None = None,
        ignore: Sequence[IgnoreRule] = (),
        select: Selector | None = None,
    ) -> Plan:
        """:func:`plan`, told to the sink."""
        made = plan(state, live, prune=prune, ignore=ignore, select=select)
        self.planned(made)
        return made

    def planned(self, made: Plan) -> None:
        """Tell the sink about a plan (one made here, or a saved one about to be applied)."""
        counts = summary(made)
        text = ", ".join(f"{n} {action}" for action, n in counts.items() if n) or "nothing"
        self.events.emit(
            Event(Kind.PLANNED, self.clock(), f"planned: {text}", counts=tuple(counts.items()))
        )

    async def apply(self, made: Plan, *, stop: Stop | None = None) -> list[Outcome]:
        """Write the plan's creates, updates and deletes; one outcome per write, in plan order,
        each error free of the model's secret and substituted values."""
        changes = {c.id: c for c in made.changes}

        def told(outcome: Outcome) -> None:
            change = changes.get(outcome.id)
            self.events.emit(self._event(_hidden(outcome, change), change))

        outcomes = await apply_plan(
            made,
            self.registry,
            concurrency=self.concurrency,
            update_method=self.update_method,
            on_result=told,
            stop=stop,
        )
        return [_hidden(o, changes.get(o.id)) for o in outcomes]

    def _event(self, o: Outcome, change: Change | None) -> Event:
        action = o.action.value
        if o.ok:
            kind, text = Kind.WRITTEN, f"{action} {o.id}: ok"
        elif not o.attempted:
            kind, text = Kind.NOT_ATTEMPTED, f"{action} {o.id}: {o.error}"
        else:
            kind, text = Kind.WRITE_FAILED, f"{action} {o.id} failed: {o.error}"
        file = change.file if change is not None else None
        return Event(kind, self.clock(), text, id=o.id, file=file, error=o.error, action=action)


def _hidden(outcome: Outcome, change: Change | None) -> Outcome:
    """``outcome`` without any secret or substituted value of its change in the error: a
    registry may echo what it was sent."""
    if outcome.error is None or change is None or not change.body:
        return outcome
    return outcome._replace(
        error=scrub(outcome.error, hidden_values(change.body, change.sensitive))
    )
