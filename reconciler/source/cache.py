"""The parse cache: what a model file loaded to, remembered by the file's identity and stat.

A repeated ``diff`` over files that did not change need not parse and validate them again.
Each entry is keyed by the path and ``(device, inode, size, mtime_ns, ctime_ns)``, as git's
index is; a file replaced (an editor's rename), rewritten, touched or chmod-ed misses.

Safe by construction rather than by care at each use:

- **Edits within one timestamp tick** (git's "racy" files): a file whose mtime or ctime is not
  at least :data:`RACY_NS` older than the moment it was stat-ed is not stored, so a second write
  in the same tick as the read can never hide behind an unchanged stat. The directories a walk
  listed, kept so that a run finding none of them changed need not walk again, follow the same
  rule, and are kept only for a tree without symlinks whose every file is cached.
- **Secrets**: a file whose load put in a ``${VARIABLE}`` (any field it filled), or that spells a
  credential out (``auth.value``, header values), is never stored: the cache file holds nothing
  that the model files do not hold in plain sight, and no value from the environment. It is
  written 0600 in a 0700 folder all the same.
- **Only valid files**: a file with an error, or a warning that depends on the clock
  (``created`` in the future), is loaded afresh each time.
- **A bad cache file** (truncated, edited, another version, another policy, not the user's, group-
  or world-writable) is ignored as a whole, and every column is checked for shape as read:
  the worst it can do is cost a parse.
- **Nowhere to write** (a read-only filesystem, no home): the run goes on without it.

One cache file per directory and load policy, under ``$XDG_CACHE_HOME/reconciler/`` (default
``~/.cache/reconciler/``); it holds the files of the last run only, so it never grows stale. The
folder does not grow without end either (checkouts in temporary directories each leave a file):
writing one removes the others unused for :data:`STALE_NS`, and the least recently used beyond
:data:`KEEP_FILES`; reading one marks it used.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import sys
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .cachefile import (
    LENGTH,
    Cached,
    Cached_entry,
    Table,
    Warning_,
    by_file,
    chunks,
    columns,
    rows,
    table,
)
from .files import Stat, Walked, file_key, unchanged
from .placeholders import LoadPolicy

# 6: the directories walked; 5: a CRC-32 of the payload, where BLAKE2b took 4 ms (the file is
# ours: no attacker's hash to resist); 4: columns in discovery order; 3: marshal in batches of
# entries; 2: whole; 1: JSON
FORMAT = 6
MAGIC = b"reconciler-parse-cache"
RACY_NS = 2_000_000_000  # FAT keeps 2 s; ext4, XFS, APFS and NTFS far finer
MAX_CACHE_BYTES = 512 << 20
UNCACHEABLE_WARNINGS = frozenset({"created-future", "inline-secret"})
STALE_NS = 30 * 86_400 * 1_000_000_000  # another directory's cache file unused this long goes
KEEP_FILES = 20  # cache files kept in the folder (this run's included), the most recently used
USED_NS = 86_400 * 1_000_000_000  # a file read is marked used when its mark is older than this
LEFTOVER_NS = 3_600 * 1_000_000_000  # a temporary file this old was left by a killed run


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/reconciler``, else ``~/.cache/reconciler`` (a relative XDG value is
    ignored, as the spec says)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME", "")
    root = (
        Path(base) if os.path.isabs(base) else Path(env.get("HOME") or "~").expanduser() / ".cache"
    )
    return root / "reconciler"


def file_stat(path: str) -> Stat | None:
    """The identity and stat of a regular file (links followed), or None."""
    try:
        return file_key(os.stat(path))
    except (OSError, ValueError):
        return None


def _code_stamp() -> str:
    """What a load's answer depends on: the modules that read, parse, validate and lint a file,
    by size and mtime (an editable install changes them under the same version; another
    version is other files), with the compiled parser and validator under them."""
    import pydantic
    import pydantic_core._pydantic_core as validator
    import pytomlpp._impl as parser

    from .. import blocks, positions, secrets, spec, text, units
    from . import __file__ as source_file
    from . import files, parse, placeholders

    modules = (blocks, positions, secrets, spec, text, units, files, parse, placeholders)
    names = [source_file, __file__, *(m.__file__ for m in modules)]
    parts = [pydantic.VERSION]
    for name in [*names, validator.__file__, parser.__file__]:
        st = file_stat(name or "")
        parts.append(f"{st[2]}:{st[3]}" if st else "?")
    return ",".join(parts)


class ParseCache:
    """The cache of one directory under one load policy: :meth:`get` before loading a file,
    :meth:`put` after, :meth:`save` at the end (writes only when something changed)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        policy: LoadPolicy,
        folder: Path,
        now_ns: int | None = None,
    ) -> None:
        self.folder = folder
        material = "\0".join(
            [
                f"{FORMAT}.{marshal.version}",
                sys.version,  # marshal's format may change with Python's
                os.path.abspath(root),
                repr(policy),
                _code_stamp(),
            ]
        )
        self.key = hashlib.blake2b(material.encode("utf-8", "replace"), digest_size=16).hexdigest()
        self.path = folder / f"loads-{self.key}.bin"
        self._old: Table | None = None
        self._index: dict[str, int] | None = None  # path -> its row in _old, made on first get
        self._warnings: dict[int, tuple[Warning_, ...]] = {}  # row -> its warnings, likewise
        self._new: dict[str, Cached_entry] = {}  # what this run keeps, by path
        self._changed = False
        self._same = False
        # Taken before any file is stat-ed: the racy check's "now".
        self.started_ns = time.time_ns() if now_ns is None else now_ns
        self._loaded = False

    def exists(self) -> bool:
        """Whether a cache file for this directory and policy is there (not whether it is good)."""
        return self.path.is_file()

    def load(self) -> None:
        """Read the cache file (once); a missing or bad one reads as empty."""
        if not self._loaded:
            self._loaded = True
            self._read()

    # --- reading ------------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except (OSError, ValueError):
            return
        try:
            st = os.fstat(fd)
            if not _trusted(st) or st.st_size > MAX_CACHE_BYTES:
                return
            if self.started_ns - st.st_mtime_ns > USED_NS and os.utime in os.supports_fd:
                # Used, if unchanged: not pruned as stale by another directory's run.
                with _quiet():
                    os.utime(fd, ns=(self.started_ns, self.started_ns))
            with os.fdopen(fd, "rb", closefd=False) as f:
                blob = f.read(st.st_size + 1)  # not a buffer of the cap's size, shrunk after
        except OSError:
            return
        finally:
            os.close(fd)
        head, _, _ = blob[:256].partition(b"\n")
        payload = memoryview(blob)[len(head) + 1 :]  # no copy of a file of some MB
        expected = b"%s %d %s %s" % (
            MAGIC,
            FORMAT,
            self.key.encode(),
            b"%08x" % zlib.crc32(payload),
        )
        if head != expected:
            return  # another format, directory or policy, or not what was written: ignore it
        try:
            # marshal: the objects built in C straight from the bytes, each repeated key once,
            # in half the time json takes (no text, no intermediate document). It is no format
            # for untrusted data, and needs none here: the file is ours alone (checked above)
            # and what we wrote (its CRC), and every column is checked for shape as read.
            found = table(chunks(payload))
        except (EOFError, ValueError, TypeError):  # not what marshal writes
            return
        finally:
            payload.release()
        del blob, payload
        self._old = found

    def whole(self, paths: Sequence[str], keys: Sequence[Stat | None]) -> Table | None:
        """The last run's files when ``paths`` and their ``keys`` are all the same as then, in
        the same order (each file cached and unchanged, none added or gone); else None."""
        self.load()
        old = self._old
        if old is None or old.paths != paths or old.keys != keys:
            return None
        self._same = True  # nothing to write
        return old

    def listed(self) -> tuple[list[str], Walked] | None:
        """The paths the last run found, and the directories it listed, when none of those has
        changed since (a walk would find the same paths); else None."""
        self.load()
        old = self._old
        if old is None or not old.walked or not unchanged(old.walked):
            return None
        return old.paths, old.walked

    def get(self, path: str, key: Stat | None) -> Cached | None:
        """What ``path`` loaded to when its stat was ``key``; None when unknown or changed."""
        if key is None:
            return None
        self.load()
        old = self._old
        if old is None:
            return None
        if self._index is None:
            self._index = dict(zip(old.paths, range(len(old.paths)), strict=True))
            self._warnings = by_file(old)
        row = self._index.get(path)
        if row is None or old.keys[row] != key:
            return None
        found = (old.ids[row], old.bodies[row], self._warnings.get(row, ()))
        self._new[path] = (key, *found)
        return found

    # --- writing ------------------------------------------------------------------------------

    def put(
        self,
        path: str,
        key: Stat | None,
        declared_id: str | None,
        body: dict[str, Any] | None,
        warnings: tuple[Warning_, ...],
        codes: tuple[str | None, ...],
        sensitive: bool,
    ) -> None:
        """Remember a file's load if it may be remembered (see the module docstring)."""
        if key is None or body is None or sensitive or declared_id is None:
            return
        if any(c in UNCACHEABLE_WARNINGS for c in codes) or _holds_secret(body):
            return
        if max(key[3], key[4]) > self.started_ns - RACY_NS:
            return  # changed too recently to trust its stat: it may change again unseen
        self._new[path] = (key, declared_id, body, warnings)
        self._changed = True

    def save(self, order: Sequence[str] | None = None, walked: Walked | None = None) -> None:
        """Write the entries of this run, in ``order`` (the paths as discovered: a next run
        finding the same files in the same order takes them at once; see :meth:`whole`), with
        the directories ``walked`` to find them when each file is cached and no directory
        changed too recently to trust its stat; atomically, 0600 in a 0700 folder; never
        raises."""
        old = self._old
        if self._same:  # all as read: written again only for a walk it could not keep then
            if old is None or old.walked or not self._keeps(walked, len(old.paths), order):
                return
            self._new = rows(old)
            self._changed = True
        new = self._new
        paths = list(new) if order is None else [p for p in order if p in new]
        walked = walked if self._keeps(walked, len(paths), order) else []
        same_walk = walked == (old.walked if old else [])
        if not self._changed and paths == (old.paths if old else []) and same_walk:
            return
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _trusted(os.stat(self.folder), folder=True):
                return
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".loads-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:  # mkstemp makes it 0600
                    # The bodies in batches, each written before the next is made: marshal's
                    # bytes of the whole (5 MB at 10,000 files) and its table of every object
                    # written would be the peak of a first diff. The head, with the digest, last.
                    f.write(self._head(b"0" * 8))
                    crc = 0
                    for part in columns(paths, new, walked or []):
                        length = len(part).to_bytes(LENGTH, "little")
                        crc = zlib.crc32(part, zlib.crc32(length, crc))
                        f.write(length)
                        f.write(part)
                        del part
                    f.seek(0)
                    f.write(self._head(b"%08x" % crc))
                os.replace(tmp, self.path)
            except BaseException:
                with _quiet():
                    os.unlink(tmp)
                raise
        except (OSError, TypeError, ValueError):
            return  # read-only, full, not ours: the run does not need the cache
        self._prune()

    def _keeps(self, walked: Walked | None, cached: int, order: Sequence[str] | None) -> bool:
        """Whether a walk may be stored: it found only files that are cached, and no directory
        it listed changed within :data:`RACY_NS` of this run (the racy-file rule)."""
        if not walked or order is None or cached != len(order):
            return False
        return all(max(d[3], d[4]) <= self.started_ns - RACY_NS for d in walked)

    def _head(self, digest: bytes) -> bytes:
        return b"%s %d %s %s\n" % (MAGIC, FORMAT, self.key.encode(), digest)

    def _prune(self) -> None:
        """Remove the folder's other cache files unused for :data:`STALE_NS`, those beyond the
        :data:`KEEP_FILES` most recently used, and temporary files a killed run left."""
        found: list[tuple[int, str]] = []
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    name = entry.name
                    ours = name.startswith("loads-") and name.endswith(".bin")
                    leftover = name.startswith(".loads-") and name.endswith(".tmp")
                    if not (ours or leftover) or name == self.path.name:
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    if leftover:
                        if self.started_ns - st.st_mtime_ns > LEFTOVER_NS:
                            with _quiet():
                                os.unlink(entry.path)
                        continue
                    found.append((st.st_mtime_ns, entry.path))
        except OSError:
            return
        found.sort(reverse=True)  # the most recently used first
        for rank, (used_ns, path) in enumerate(found, start=1):  # this run's file is rank 0
            if rank >= KEEP_FILES or self.started_ns - used_ns > STALE_NS:
                with _quiet():
                    os.unlink(path)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _trusted(st: os.stat_result, folder: bool = False) -> bool:
    """Ours (same user) and writable by nobody else: ssh's rule for its own files."""
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False
    return stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)


def _holds_secret(body: Mapping[str, Any]) -> bool:
    """Whether the body spells out a credential (``auth.value`` or header values, also in
    composite strategies): such a file is not copied into the cache."""
    auth = body.get("auth")
    if not isinstance(auth, dict):
        return False
    if auth.get("value") is not None or auth.get("headers"):
        return True
    strategies = auth.get("strategies")  # once a file: no generator unless there are some
    return bool(strategies) and any(
        isinstance(s, dict) and (s.get("value") is not None or s.get("headers")) for s in strategies
    )
