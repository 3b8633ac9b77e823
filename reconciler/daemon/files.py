"""The daemon's view of the model directory: each file's last result, re-read only when its
stamp (mtime, size, inode) changes or the watcher names it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..clock import SYSTEM, Clock
from ..events import Event, Kind, Sink
from ..source import (
    DEFAULT_POLICY,
    DesiredState,
    FileResult,
    LoadPolicy,
    ModelFileFilter,
    combine,
    discover,
    load_file,
)
from .state import keep_last_good

Stamp = tuple[int, int, int]
Result = FileResult | None


class ModelFiles:
    """Every model file under ``root`` as last read; an invalid one is an ``invalid-file``
    event."""

    def __init__(
        self,
        root: Path,
        events: Callable[[], Sink],
        policy: LoadPolicy = DEFAULT_POLICY,
        clock: Clock = SYSTEM,
    ) -> None:
        self.root = root
        self.clock = clock
        self.policy = policy
        self._events = events
        self.filter = ModelFileFilter()
        self.results: dict[str, FileResult] = {}
        self.load = DesiredState()
        self._stamps: dict[str, Stamp] = {}

    def rescan(self, forced: Iterable[str]) -> set[str] | None:
        """Re-read the files that changed on disk (or that the watcher named): their paths.
        None when the directory is not there (the last known files are kept: a directory being
        replaced must not look like every model was deleted)."""
        if not self.root.is_dir():
            return None
        forced = set(forced)
        seen: set[str] = set()
        changed: set[str] = set()
        for path in discover(self.root):
            key = str(path)
            seen.add(key)
            stamp = _stamp(key)
            if key in forced or stamp is None or stamp != self._stamps.get(key):
                self._read(key, stamp)
                changed.add(key)
        for key in set(self.results) - seen:
            self._forget(key)
            changed.add(key)
        self.load = combine(self.results.values())
        return changed

    def refresh(
        self, paths: Iterable[str]
    ) -> tuple[list[FileResult | None], list[FileResult | None]]:
        """Re-read (or forget) the files the watcher named: their results before and after."""
        paths = list(paths)
        before = [self.results.get(p) for p in paths]
        for p in paths:
            if os.path.lexists(p) and self.filter.accepts(p):
                self._read(p, _stamp(p))
            else:
                self._forget(p)
        self.load = combine(self.results.values())
        return before, [self.results.get(p) for p in paths]

    def first_error(self, file: str | None) -> str:
        """``a.toml:3:1: error: rpm: ...`` (+N more): what is wrong with a file, for its row."""
        result = self.results.get(file or "")
        problems = result.errors if result and result.errors else ()
        if not problems:
            problems = tuple(p for p in self.load.errors if p.path == file)
        if not problems:
            return "the file failed validation"
        first = dataclasses.replace(problems[0], path=os.path.relpath(problems[0].path, self.root))
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{first}{more}"  # the one problem format: path:line:col: error: field: message

    def _read(self, path: str, stamp: Stamp | None) -> None:
        loaded = load_file(path, self.root, policy=self.policy)
        new = keep_last_good(loaded, self.results.get(path))
        self.results[path] = new
        if stamp is not None:
            self._stamps[path] = stamp
        if new.errors:
            rel = os.path.relpath(path, self.root)
            first = str(new.errors[0])
            more = f" (+{len(new.errors) - 1} more)" if len(new.errors) > 1 else ""
            self._events().emit(
                Event(
                    Kind.INVALID_FILE,
                    self.clock.time(),
                    f"{rel} is invalid: {first}{more}",
                    id=new.declared_id,
                    file=rel,
                    error=first,
                )
            )

    def _forget(self, path: str) -> None:
        self.results.pop(path, None)
        self._stamps.pop(path, None)


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
