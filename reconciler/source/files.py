"""Finding model files under a directory and reading one, whatever sits at its path.

The tree and the files come from a pull request: a directory symlink may point back up the tree,
a ``*.toml`` may be a FIFO, a socket, a device or a link to ``/dev/zero``. :func:`discover`
follows each real directory once; :func:`read_capped` never opens what is not a regular file,
never blocks and never reads more than the cap.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path

from .. import defaults
from ..text import printable

SUFFIXES = (".toml", ".json")
MAX_FILE_BYTES = defaults.MAX_FILE_BYTES

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
_OPEN_FLAGS |= getattr(os, "O_CLOEXEC", 0)


class ModelFileFilter:
    """Which paths are model files: ``*.toml``/``*.json``, not hidden, not an editor leftover.

    Callable as a watchfiles filter (``change, path``) as well as on a bare path.
    """

    def accepts(self, path: str | os.PathLike[str]) -> bool:
        return self.accepts_name(os.path.basename(path))

    def accepts_name(self, name: str) -> bool:
        """:meth:`accepts` for a bare file name."""
        if name.startswith((".", "#", "~")) or name.endswith(("~", ".swp", ".swx", ".tmp")):
            return False
        return name.endswith(SUFFIXES)

    def __call__(self, change: object, path: str) -> bool:
        parts = Path(path).parts
        return self.accepts(path) and not any(p.startswith(".") for p in parts[:-1][-8:])


Stat = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns


def file_key(st: os.stat_result) -> Stat | None:
    """The identity and stat of a regular file, as the parse cache keys it; None for others."""
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def discover(
    root: str | os.PathLike[str], file_filter: ModelFileFilter | None = None
) -> Iterator[str]:
    """Every model file under ``root``, recursively, in a stable order; hidden folders skipped.

    Directory symlinks are followed, each real directory (device, inode) at most once, so a link
    back up the tree (``ln -s .. up``, ``ln -s . self``) neither loops nor counts a file twice. A
    directory named like a model file, or one that cannot be listed, is yielded too, so the loader
    reports it instead of silently missing its models.
    """
    return _walk(os.fspath(root), file_filter or ModelFileFilter(), None)


Walked = list[tuple[str, int, int, int, int]]  # each directory listed: path, dev, ino, m/ctime


def discover_keys(
    root: str | os.PathLike[str], file_filter: ModelFileFilter | None = None
) -> tuple[list[str], list[Stat | None], Walked | None]:
    """:func:`discover`'s paths, each with the :func:`file_key` of what it names (links
    followed), stat-ed as found: by name in its directory, a shorter lookup than the path. And
    the directories listed, each with its stat from before it was: while none of them changes,
    a walk finds the same paths (see :func:`unchanged`). None when the walk met a symlink (its
    target may change with no directory listed changing) or a directory it could not list."""
    keys: list[Stat | None] = []
    walked: list[tuple[str, int, int, int, int] | None] = []
    paths = list(_walk(os.fspath(root), file_filter or ModelFileFilter(), keys, walked))
    return paths, keys, (None if None in walked else walked)  # type: ignore[return-value]


def unchanged(walked: Walked) -> bool:
    """Whether every directory of ``walked`` is, by a stat of its path (links followed), the
    same directory, not changed since (git's untracked cache reasons the same way): no entry
    added, removed, renamed or replaced, so a walk would find the same paths."""
    try:
        for path, *key in walked:
            st = os.stat(path)
            if (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) != tuple(key):
                return False
    except (OSError, ValueError):
        return False
    return True


_NAME = attrgetter("name")
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _walk(
    top: str,
    chosen: ModelFileFilter,
    keys: list[Stat | None] | None,
    walked: list[tuple[str, int, int, int, int] | None] | None = None,
) -> Iterator[str]:
    """:func:`discover`; with ``keys``, each yielded path's key appended to it first; with
    ``walked``, each directory listed (None added for a symlink or a directory not listed)."""
    accepts, accepts_name = chosen.accepts, chosen.accepts_name
    try:
        st = os.stat(top)
    except OSError:
        return
    seen = {(st.st_dev, st.st_ino)}
    stack = [(top, st)]
    by_fd = keys is not None and os.stat in os.supports_dir_fd
    stat_ = os.stat
    while stack:
        current, st = stack.pop()
        if walked is not None:  # its stat from before the listing: a change after shows
            walked.append((current, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=_NAME)
        except OSError:
            if walked is not None:
                walked.append(None)
            if current == top or not accepts(current):  # else yielded already, as a file
                if keys is not None:
                    keys.append(None)
                yield current
            continue
        fd = _open_dir(current) if by_fd else None
        try:
            subdirs: list[tuple[str, os.stat_result]] = []
            for entry in entries:
                name = entry.name
                if walked is not None and entry.is_symlink() and not name.startswith("."):
                    walked.append(None)  # hidden ones are skipped, whatever they point to
                try:
                    is_dir = entry.is_dir()  # follows a symlink
                except OSError:
                    is_dir = False
                if not is_dir:
                    if accepts_name(name):
                        if keys is not None:
                            try:  # by name in its directory: a shorter lookup than the path
                                where = entry.path if fd is None else name
                                keys.append(file_key(stat_(where, dir_fd=fd)))
                            except (OSError, ValueError):
                                keys.append(None)
                        yield entry.path
                    continue
                if name.startswith("."):
                    continue
                if accepts_name(name):
                    if keys is not None:
                        keys.append(None)
                    yield entry.path
                try:
                    dst = entry.stat()
                except OSError:
                    if keys is not None:
                        keys.append(None)
                    yield entry.path
                    continue
                key = (dst.st_dev, dst.st_ino)
                if key not in seen:
                    seen.add(key)
                    subdirs.append((entry.path, dst))
        finally:
            if fd is not None:
                os.close(fd)
        stack.extend(reversed(subdirs))


def _open_dir(path: str) -> int | None:
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError:
        return None


class Unreadable(Exception):
    """Why a path could not be read as a model file (a message for the user, no content)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def read_capped(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at ``path``; :class:`Unreadable` for anything else (missing,
    a broken link, a directory, a FIFO, socket or device, over ``max_bytes``, unreadable)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise Unreadable(f"broken symlink (points to {printable(os.readlink(path))})") from None
        raise Unreadable("no such file") from None
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise Unreadable(_directory_problem(path))
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable(f"not a regular file ({_kind(st.st_mode)}): skipped without opening it")
    if st.st_size > max_bytes:
        raise Unreadable(_too_big(st.st_size, max_bytes))
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO after the stat, open returns at once.
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from None
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            raise Unreadable(f"not a regular file ({_kind(fst.st_mode)}): skipped")
        want = min(fst.st_size, max_bytes) + 1
        data = os.read(fd, want)
        if len(data) == want:  # longer than its size said (growing): read on, up to the cap
            chunks, total = [data], len(data)
            while total <= max_bytes:
                chunk = os.read(fd, max_bytes + 1 - total)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            data = b"".join(chunks)
        if len(data) > max_bytes:
            raise Unreadable(_too_big(len(data), max_bytes, at_least=True))
        return data
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _directory_problem(path: str) -> str:
    try:
        with os.scandir(path):
            pass
    except OSError as exc:
        return f"cannot list this directory: {exc.strerror or exc}; its model files are unknown"
    return "is a directory, not a model file"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a file"


def _too_big(size: int, limit: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return f"{more}{size} bytes, over the {limit}-byte limit (max_file_bytes in reconciler.toml)"


def yaml_files(root: str | os.PathLike[str], limit: int = 3) -> list[str]:
    """A few ``*.yaml``/``*.yml`` files under ``root`` (relative, sorted): what a user may have
    meant as model files when there are none."""
    base = Path(root)
    found = (p for p in base.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    shown = (str(p.relative_to(base)) for p in found)
    return sorted(s for s in shown if not any(x.startswith(".") for x in Path(s).parts))[:limit]
