"""How a sync shows its writes as they complete, and how a saved plan is written to disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

from ..events import Event, Kind
from ..plan import PENDING
from ..text import printable

# Progress in a pipe: a line per write; a bar on a terminal from this many writes.
BAR_FROM = 10


def write_private(path: Path, text: str) -> None:
    """Write a plan file readable by its owner only, whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


class Progress:
    """Writes as they complete, an event sink of the engine: a bar on a terminal, a line per
    write in a pipe. ``planned`` gives the total; the bar shows while in the ``with`` block."""

    def __init__(self, console: Console, *, quiet: bool) -> None:
        self.console, self.total, self.done = console, 0, 0
        self.quiet = quiet
        self.bar: RichProgress | None = None

    def __enter__(self) -> Progress:
        if not self.quiet and self.console.is_terminal and self.total >= BAR_FROM:
            # Imported here: a run that shows no bar (a no-op diff, a pipe) needs none of it.
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("syncing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.task = self.bar.add_task("sync", total=self.total)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def emit(self, event: Event) -> None:
        if event.kind is Kind.PLANNED:
            counts = dict(event.counts)
            self.total = sum(counts.get(a.value, 0) for a in PENDING)
            return
        if event.kind not in (Kind.WRITTEN, Kind.WRITE_FAILED):
            return  # never sent (a stop): the final report lists these
        self.done += 1
        if self.bar is not None:
            self.bar.advance(self.task)
        elif not self.quiet:
            verdict = "ok" if event.kind is Kind.WRITTEN else "failed (why: below)"
            line = f"[{self.done}/{self.total}] {event.action} {event.id}: {verdict}"
            self.console.file.write(printable(line) + "\n")
            self.console.file.flush()
