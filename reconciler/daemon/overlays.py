"""One environment's overlay in the daemon: read again at each full resync (and when its
directory changes), applied to every plan of that environment, full or of one changed id.

:data:`NO_OVERLAY` is the daemon without environments: the base models as they are.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..overlay import Overlays, apply_overlays, load_overlays
from ..plan import Desired
from ..secrets import hidden_values
from ..source import DEFAULT_POLICY, DesiredState, LoadPolicy, Problem


class Overlay:
    """No overlay: every model as its file declares it."""

    errors: tuple[Problem, ...] = ()

    def everything(self, load: DesiredState) -> DesiredState:
        """The environment's desired state at a full resync."""
        return load

    def subset(self, state: DesiredState, ids: set[str]) -> DesiredState:
        """The environment's desired state of ``ids`` (``state``: the files' for those ids)."""
        return state

    def hidden(self, model_id: str) -> set[str]:
        """Values this environment's overlay filled that must never print."""
        return set()

    def keeps(self, model_id: str) -> bool:
        """Whether this environment manages the model (an overlay may exclude it)."""
        return True

    @property
    def failed_files(self) -> int:
        """Overlay files that failed to load (or to merge)."""
        return len({p.path for p in self.errors})

    def first_error(self, file: str | None) -> str | None:
        """The first problem of an overlay file (None: not one of them)."""
        return None


NO_OVERLAY = Overlay()


class EnvOverlay(Overlay):
    """An environment's overlay directory; its problems are kept by id, so a change to one
    model file re-plans (and re-judges) that id alone."""

    def __init__(self, directory: Path, policy: LoadPolicy = DEFAULT_POLICY) -> None:
        self.directory = directory
        self.policy = policy
        self.overlays = Overlays(str(directory))
        self.problems: dict[str, tuple[Problem, ...]] = {}
        self.applied: dict[str, Desired] = {}
        self.excluded: set[str] = set()

    @property  # type: ignore[override]
    def errors(self) -> tuple[Problem, ...]:
        return (*self.overlays.errors, *(p for ps in self.problems.values() for p in ps))

    def everything(self, load: DesiredState) -> DesiredState:
        self.overlays = load_overlays(self.directory, policy=self.policy)
        self.problems.clear()
        self.applied.clear()
        self.excluded.clear()
        models, invalid = dict(load.models), dict(load.invalid_ids)
        self.apply(models, invalid)
        return dataclasses.replace(
            load, models=models, invalid_ids=invalid, errors=load.errors + self.errors
        )

    def subset(self, state: DesiredState, ids: set[str]) -> DesiredState:
        models, invalid = dict(state.models), dict(state.invalid_ids)
        self.apply(models, invalid, ids)
        return dataclasses.replace(state, models=models, invalid_ids=invalid)

    def apply(
        self, models: dict[str, Desired], invalid: dict[str, str], ids: set[str] | None = None
    ) -> None:
        """Change ``models`` and ``invalid`` in place (only ``ids``, or all when None)."""
        o = self.overlays
        for i in set(o.by_id) | set(o.invalid_ids) if ids is None else ids:
            self.problems.pop(i, None)
            self.applied.pop(i, None)
            self.excluded.discard(i)
            one = dataclasses.replace(
                o,
                by_id={i: o.by_id[i]} if i in o.by_id else {},
                errors=(),
                warnings=(),
                invalid_ids={i: o.invalid_ids[i]} if i in o.invalid_ids else {},
            )
            if not one.by_id and not one.invalid_ids:
                continue
            done = apply_overlays(
                {i: models[i]} if i in models else {},
                {i: invalid[i]} if i in invalid else {},
                one,
            )
            models.pop(i, None)
            models.update(done.models)
            invalid.update(done.invalid_ids)
            if done.errors:
                self.problems[i] = done.errors
            if done.excluded:
                self.excluded.add(i)
            if i in done.models:
                self.applied[i] = done.models[i]

    def hidden(self, model_id: str) -> set[str]:
        model = self.applied.get(model_id)
        return hidden_values(model.body, model.sensitive) if model is not None else set()

    def keeps(self, model_id: str) -> bool:
        return model_id not in self.excluded and model_id not in self.problems

    def first_error(self, file: str | None) -> str | None:
        problems = [p for p in self.errors if p.path == file]
        if not problems:
            return None
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{problems[0]}{more}"
