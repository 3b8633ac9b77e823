"""The daemons of one process, and environments: one :class:`~.core.Daemon` per environment,
each with its own client (its own key), limits, overlay, readiness and metrics, all over one
directory whose files are read once (:class:`SharedFiles`). The watcher, the endpoints and the
signals talk to the :class:`Fleet`; without environments it holds the one daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchfiles import awatch

from ..clock import wait_event
from .core import Daemon
from .files import ModelFiles
from .logs import LOGGER, event
from .notify import Notifier


class FileView:
    """One environment's window on the shared files. It reads nothing itself: a read done for
    all is remembered here (the ids the changed files declared before and after) until this
    environment's daemon plans it."""

    def __init__(self, shared: SharedFiles) -> None:
        self._shared = shared
        self.unseen: dict[str, set[str]] = {}  # changed path -> the ids its change touched

    def __getattr__(self, name: str) -> Any:
        # models, invalid_ids, failed, desired, problems, filter...: the shared files' own.
        return getattr(self._shared.files, name)

    def __len__(self) -> int:
        return len(self._shared.files)

    async def rescan(self, forced: Iterable[str] = ()) -> set[str] | None:
        """A full resync: the files changed on disk are read (once, for all), and every file
        changed since this environment last looked is named."""
        changed = await self._shared.rescan(self)
        if changed is None:
            return None
        changed |= set(self.unseen)
        self.unseen.clear()
        return changed

    async def refresh(self, paths: Iterable[str]) -> set[str]:
        """The ids the changes to ``paths`` touched (read already, for every environment)."""
        ids: set[str] = set()
        records = self._shared.files.records
        for path in paths:
            if path in self.unseen:
                ids |= self.unseen.pop(path)
            elif (record := records.get(path)) is not None and record.declared_id is not None:
                ids.add(record.declared_id)
        return ids


class SharedFiles:
    """The model files, read once for every environment; each read is told to the others."""

    def __init__(self, files: ModelFiles) -> None:
        self.files = files
        self.members: list[tuple[FileView, Daemon]] = []
        self._pending: set[str] = set()
        self._wake = asyncio.Event()

    def view(self) -> FileView:
        return FileView(self)

    def attach(self, view: FileView, daemon: Daemon) -> None:
        self.members.append((view, daemon))

    def notice(self, paths: Iterable[str]) -> None:
        """The watcher named these files: :meth:`reader` reads them (changes that arrive
        meanwhile are folded into its next read)."""
        self._pending.update(paths)
        self._wake.set()

    async def reader(self) -> None:
        """Read what the watcher named, once, and have every environment plan it; until
        cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            paths, self._pending = self._pending, set()
            try:
                ids = await self.files.refresh(paths)
            except Exception:  # a bug must not stop the reading: each environment rescans
                logging.getLogger(LOGGER).exception("reading the changed files failed")
                for _, daemon in self.members:
                    daemon.request_full("reading the changed files failed")
                continue
            for daemon in self._tell(paths, ids, skip=None):
                daemon.notice(paths)

    async def rescan(self, asking: FileView) -> set[str] | None:
        """Re-read what changed on disk (None: no directory). The other environments are told,
        and resync too: changes the watcher missed (at start, every file) are rare."""
        changed = await self.files.rescan(())
        if changed:
            for daemon in self._tell(changed, set(), skip=asking):
                daemon.request_full("files changed")
        return changed

    def _tell(self, paths: set[str], ids: set[str], skip: FileView | None) -> list[Daemon]:
        told = []
        for view, daemon in self.members:
            if view is not skip:
                for path in paths:
                    view.unseen.setdefault(path, set()).update(ids)
                told.append(daemon)
        return told


@dataclass
class Member:
    """One environment of the fleet ("" without environments)."""

    name: str
    daemon: Daemon
    notifier: Notifier | None = None
    overlay: Path | None = None


class Fleet:
    """Every daemon of the process: what the watcher feeds, the endpoints show and the
    signals stop. Ready when every environment is."""

    def __init__(
        self, members: list[Member], shared: SharedFiles | None, log: logging.Logger
    ) -> None:
        self.members = members
        self.shared = shared
        self.log = log
        first = members[0].daemon
        self.root, self.options, self.clock = first.root, first.options, first.clock
        # One daemon: its own stop (Daemon.stop) stops the fleet.
        self.stop_requested = asyncio.Event() if shared is not None else first.stop_requested

    @classmethod
    def of(cls, daemon: Daemon, notifier: Notifier | None = None) -> Fleet:
        """The fleet of one daemon (no environments)."""
        return cls([Member("", daemon, notifier)], None, daemon.log)  # type: ignore[arg-type]

    @property
    def environments(self) -> bool:
        return self.shared is not None

    @property
    def daemons(self) -> list[Daemon]:
        return [m.daemon for m in self.members]

    @property
    def filter(self) -> Any:
        return self.members[0].daemon.filter

    @property
    def stopping(self) -> bool:
        return self.stop_requested.is_set()

    @property
    def ready(self) -> bool:
        return all(d.readiness.ready for d in self.daemons)

    @property
    def why_not(self) -> str | None:
        """Why not ready: each environment that is not, with its reason."""
        if not self.environments:
            return self.members[0].daemon.readiness.why_not
        reasons = [
            f"{m.name}: {m.daemon.readiness.why_not}"
            for m in self.members
            if not m.daemon.readiness.ready
        ]
        return "; ".join(reasons) or None

    def notice(self, paths: Iterable[str]) -> None:
        """Files changed: read them once; every environment plans them."""
        if self.shared is None or not self.root.is_dir():
            for d in self.daemons:  # one daemon reads them itself; a missing directory is news
                d.notice(paths)
        else:
            self.shared.notice(paths)

    def request_full(self, reason: str) -> None:
        for d in self.daemons:
            d.request_full(reason)

    def directory_missing(self) -> None:
        for d in self.daemons:
            d.directory_missing()

    def stop(self) -> None:
        for d in self.daemons:
            d.stop()
        self.stop_requested.set()

    async def stopped(self) -> None:
        await self.stop_requested.wait()


async def watch_overlay(daemon: Daemon, directory: Path) -> None:
    """An environment's overlay directory: any change there is a full resync of that
    environment, which reads its overlay again."""
    missing = False
    while not daemon.stopping:
        if not directory.is_dir():
            missing = True
            await wait_event(daemon.clock, daemon.stop_requested, 1.0)
            continue
        if missing:
            missing = False
            daemon.request_full("overlay directory back")
        try:
            async for _ in awatch(
                directory,
                debounce=daemon.options.debounce_ms,
                step=daemon.options.step_ms,
                rust_timeout=500,
                stop_event=daemon.stop_requested,
            ):
                daemon.request_full("overlay changed")
                if not directory.is_dir():
                    break
        except (OSError, RuntimeError) as exc:
            event(daemon.log, "overlay watch error", logging.WARNING, error=str(exc))
            await wait_event(daemon.clock, daemon.stop_requested, 0.5)
