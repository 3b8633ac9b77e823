"""The parse cache: what a model file loaded to, remembered by the file's identity and stat.

A repeated ``diff`` over files that did not change need not parse and validate them again.
Each entry is keyed by the path and ``(device, inode, size, mtime_ns, ctime_ns)``, as git's
index is; a file replaced (an editor's rename), rewritten, touched or chmod-ed misses.

Safe by construction rather than by care at each use:

- **Edits within one timestamp tick** (git's "racy" files): a file whose mtime or ctime is not
  at least :data:`RACY_NS` older than the moment it was stat-ed is not stored, so a second write
  in the same tick as the read can never hide behind an unchanged stat.
- **Secrets**: a file whose load put in a ``${VARIABLE}`` (any field it filled), or that spells a
  credential out (``auth.value``, header values), is never stored: the cache file holds nothing
  that the model files do not hold in plain sight, and no value from the environment. It is
  written 0600 in a 0700 folder all the same.
- **Only valid files**: a file with an error, or a warning that depends on the clock
  (``created`` in the future), is loaded afresh each time.
- **A bad cache file** (truncated, edited, another version, another policy, not the user's, group-
  or world-writable) is ignored as a whole, and every entry is checked for shape before use:
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .placeholders import LoadPolicy

FORMAT = 3  # 3: marshal in batches (2: marshal whole, 1: JSON)
BATCH = 500  # files a batch: its marshal bytes ~0.4 MB, written and read one after the other
_LENGTH = 8  # each batch's byte count before it, little-endian
MAGIC = b"reconciler-parse-cache"
RACY_NS = 2_000_000_000  # FAT keeps 2 s; ext4, XFS, APFS and NTFS far finer
MAX_CACHE_BYTES = 512 << 20
UNCACHEABLE_WARNINGS = frozenset({"created-future", "inline-secret"})
STALE_NS = 30 * 86_400 * 1_000_000_000  # another directory's cache file unused this long goes
KEEP_FILES = 20  # cache files kept in the folder (this run's included), the most recently used
USED_NS = 86_400 * 1_000_000_000  # a file read is marked used when its mark is older than this
LEFTOVER_NS = 3_600 * 1_000_000_000  # a temporary file this old was left by a killed run

Stat = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns
# What a cached file loaded to: its id, API body and warnings (message, field, line, column, code).
Warning_ = tuple[str, str | None, int | None, int | None, str | None]
Cached = tuple[str, dict[str, Any], tuple[Warning_, ...]]


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
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _code_stamp() -> str:
    # An editable install keeps its version while its code changes: the modules whose change
    # could change a load's answer are part of the key, by size and mtime.
    from .. import blocks, spec
    from . import __file__ as source_file

    parts = []
    for name in (blocks.__file__, spec.__file__, source_file, __file__):
        st = file_stat(name or "")
        parts.append(f"{st[2]}:{st[3]}" if st else "?")
    return ",".join(parts)


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("reconciler", "pydantic-core", "pytomlpp"):
        try:
            out.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            out.append(f"{name}=?")
    return ";".join(out)


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
                _versions(),
                _code_stamp(),
            ]
        )
        self.key = hashlib.blake2b(material.encode("utf-8", "replace"), digest_size=16).hexdigest()
        self.path = folder / f"loads-{self.key}.bin"
        self._old: dict[str, Any] = {}
        self._new: dict[str, list[Any]] = {}
        self._changed = False
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
            hashlib.blake2b(payload, digest_size=16).hexdigest().encode(),
        )
        if head != expected:
            return  # another format, directory or policy, or not what was written: ignore it
        try:
            # marshal: the objects built in C straight from the bytes, each repeated key once,
            # in half the time json takes (no text, no intermediate document). It is no format
            # for untrusted data, and needs none here: the file is ours alone (checked above)
            # and what we wrote (the digest), and every entry is checked for shape before use.
            files = _batches(payload)
        except (EOFError, ValueError, TypeError):  # not what marshal writes
            return
        finally:
            payload.release()
        del blob, payload
        if files is not None:
            self._old = files

    def get(self, path: str, key: Stat | None) -> Cached | None:
        """What ``path`` loaded to when its stat was ``key``; None when unknown or changed."""
        if key is None:
            return None
        self.load()
        entry = self._old.get(path)
        found = _parse_entry(entry, key)
        if found is None:
            return None
        self._new[path] = entry  # type: ignore[assignment]  # kept as it was read
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
        self._new[path] = [*key, declared_id, body, [list(w) for w in warnings]]
        self._changed = True

    def save(self) -> None:
        """Write the entries of this run (atomically, 0600 in a 0700 folder); never raises."""
        if not self._changed and len(self._new) == len(self._old):
            return
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _trusted(os.stat(self.folder), folder=True):
                return
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".loads-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:  # mkstemp makes it 0600
                    # In batches, each written before the next is made: marshal's bytes of the
                    # whole (8 MB at 10,000 files) and its table of every object written would
                    # be the peak of a first diff. The head, with the digest, comes last.
                    f.write(self._head(b"0" * 32))
                    digest = hashlib.blake2b(digest_size=16)
                    entries = list(self._new.items())
                    for i in range(0, len(entries), BATCH):
                        part = marshal.dumps(dict(entries[i : i + BATCH]))
                        length = len(part).to_bytes(_LENGTH, "little")
                        digest.update(length)
                        digest.update(part)
                        f.write(length)
                        f.write(part)
                        del part
                    f.seek(0)
                    f.write(self._head(digest.hexdigest().encode()))
                os.replace(tmp, self.path)
            except BaseException:
                with _quiet():
                    os.unlink(tmp)
                raise
        except (OSError, TypeError, ValueError):
            return  # read-only, full, not ours: the run does not need the cache
        self._prune()

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


def _batches(payload: memoryview) -> dict[str, Any] | None:
    """The entries of a payload of marshal batches, each after its length; None for a payload
    of another shape."""
    files: dict[str, Any] = {}
    at, end = 0, len(payload)
    while at < end:
        size = int.from_bytes(payload[at : at + _LENGTH], "little")
        at += _LENGTH
        if size <= 0 or at + size > end:
            return None
        part = marshal.loads(payload[at : at + size])
        at += size
        if not isinstance(part, dict):
            return None
        files.update(part)
    return files


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
    blocks = [auth, *(s for s in auth.get("strategies") or () if isinstance(s, dict))]
    return any(b.get("value") is not None or b.get("headers") for b in blocks)


def _parse_entry(entry: Any, key: Stat) -> Cached | None:
    """A cached entry checked for shape against ``key``; None for anything else."""
    if not isinstance(entry, list) or len(entry) != 8 or tuple(entry[:5]) != key:
        return None
    declared_id, body, warnings = entry[5], entry[6], entry[7]
    if not isinstance(declared_id, str) or not isinstance(body, dict):
        return None
    if body.get("id") != declared_id or not isinstance(warnings, list):
        return None
    if not warnings:
        return declared_id, body, ()
    out: list[Warning_] = []
    for w in warnings:  # no generator per warning: 10,000 files not named after their ids
        if not (isinstance(w, list) and len(w) == 5):
            return None
        message, field, line, column, code = w
        if not isinstance(message, str):
            return None
        if not (field is None or isinstance(field, str)) or not (
            code is None or isinstance(code, str)
        ):
            return None
        if not (line is None or type(line) is int) or not (column is None or type(column) is int):
            return None
        out.append((message, field, line, column, code))
    return declared_id, body, tuple(out)
