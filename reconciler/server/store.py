"""SQLite persistence for registry entries: one row per entry, the entry kept as its JSON answer.

Keeping the answer's JSON text makes listing a string join (no parsing or validation per row), so
10,000 entries list in milliseconds. One connection guarded by a lock serves every thread: SQLite
allows one writer at a time anyway, and ``:memory:`` needs one shared connection to exist at all.

The file holds every definition, inline secrets included: it is created 0600 and any directory
made for it 0700, whatever the umask. SQLite gives its ``-wal`` and ``-shm`` files the mode of
the database file.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    immutable INTEGER NOT NULL DEFAULT 0,
    entry TEXT NOT NULL
)
"""


def dumps(value: Any) -> str:
    """Compact JSON, the one spelling the store and the answers share."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


log = logging.getLogger("reconciler.server")


def _create_private(path: Path) -> None:
    """Create ``path`` (and its missing directories) readable by the owner only."""
    missing = []
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, left as it is
        os.chmod(directory, 0o700)  # mkdir's mode passes through the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        info = os.stat(path)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISREG(info.st_mode) and mode & 0o077:
            log.warning(
                "%s is readable by others (mode %03o); it holds every definition, inline "
                "secrets included: chmod 600 it",
                path,
                mode,
            )
        return
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken the owner's bits too
    finally:
        os.close(fd)


class Store:
    """Registry entries in SQLite (WAL mode for a file; ``:memory:`` works too)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            _create_private(Path(self.path))
        self._lock = threading.Lock()
        # autocommit mode: each statement commits on its own unless wrapped in BEGIN...COMMIT.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a process crash; only a power loss can lose the tail.
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(_SCHEMA)

    def close(self) -> None:
        """Checkpoint and close the database."""
        with self._lock:
            self._db.close()

    def list_json(self) -> str:
        """The entries as a JSON array text, ordered by id."""
        with self._lock:
            rows = self._db.execute("SELECT entry FROM entries ORDER BY id").fetchall()
        return "[" + ",".join(row[0] for row in rows) + "]"

    def get(self, entry_id: str) -> dict[str, Any] | None:
        """One entry, or None."""
        with self._lock:
            row = self._db.execute("SELECT entry FROM entries WHERE id = ?", (entry_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, entry: Mapping[str, Any]) -> None:
        """Insert or replace one entry (keyed by its ``id``)."""
        row = (entry["id"], int(bool(entry.get("immutable"))), dumps(entry))
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO entries (id, immutable, entry) VALUES (?,?,?)", row
            )

    def put_many(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace many entries in one transaction; returns how many."""
        rows = [(e["id"], int(bool(e.get("immutable"))), dumps(e)) for e in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO entries (id, immutable, entry) VALUES (?,?,?)", rows
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return len(rows)

    def delete(self, entry_id: str) -> bool:
        """Remove one entry; whether it existed."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        return cursor.rowcount > 0

    def replace_immutable(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Drop every immutable entry and store these instead (the configuration read at start)."""
        rows = [(e["id"], 1, dumps(e)) for e in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM entries WHERE immutable = 1")
                self._db.executemany(
                    "INSERT OR REPLACE INTO entries (id, immutable, entry) VALUES (?,?,?)", rows
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return len(rows)

    def count(self) -> int:
        """How many entries are stored."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
