"""The daemon's view of the model directory, kept up to date one file at a time.

Each file's last read is a small :class:`FileRecord` (its API body, not a pydantic model: a
tenth of the memory, and it crosses a process boundary cheaply). The combined desired state
(valid models by id, failed ids, the files that fail, duplicate ids included) is updated for
the ids a changed file declared before and declares now, so a change costs the same with 100
files or 50,000. Reading runs off the event loop: in a thread, or in worker processes when many
files changed (start, a checkout), so ``/healthz`` keeps answering meanwhile.

:class:`ModelFiles` holds no registry state: several daemons (one per environment) can share one.
What a rescan or refresh re-read is answered to its caller only; daemons sharing the state must
share that answer too (a write for a file just re-read follows an edit; otherwise it is drift).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..clock import SYSTEM, Clock
from ..events import Event, Kind, Sink
from ..plan import Desired
from ..source import (
    DEFAULT_POLICY,
    DesiredState,
    LoadPolicy,
    ModelFileFilter,
    Problem,
    discover,
    load_file,
)
from ..source.wire import PARALLEL_FROM, Loaded, Stamp, from_wire, to_wire
from .state import keep_last_good

# One file as last read (the stamp taken first: a save during the read is seen next rescan).
FileRecord = Loaded


def read_files(paths: list[str], root: str, policy: LoadPolicy) -> list[FileRecord]:
    """Read each file (stamp taken first: a save during the read is seen at the next rescan)."""
    out: list[FileRecord] = []
    for path in paths:
        stamp = _stamp(path)
        r = load_file(path, root, policy=policy)
        record = FileRecord(r.path, r.declared_id, r.body, r.errors, r.warnings, r.sensitive, stamp)
        out.append(record)
    return out


def read_files_wire(paths: list[str], root: str, policy: LoadPolicy) -> bytes:
    """:func:`read_files` in a worker, its records on the wire (:mod:`..source.wire`), as the
    first diff's workers send theirs."""
    return to_wire(read_files(paths, root, policy))


def unwire(wire: bytes) -> list[FileRecord]:
    """The records :func:`read_files_wire` sent."""
    return from_wire(wire, FileRecord)


class ModelFiles:
    """Every model file under ``root`` as last read, and the desired state they combine to; an
    invalid file is an ``invalid-file`` event."""

    def __init__(
        self,
        root: Path,
        events: Callable[[], Sink],
        policy: LoadPolicy = DEFAULT_POLICY,
        clock: Clock = SYSTEM,
        workers: int | None = None,
    ) -> None:
        self.root = root
        self.clock = clock
        self.policy = policy
        self.workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        self._events = events
        self.filter = ModelFileFilter()
        self.records: dict[str, FileRecord] = {}
        self.models: dict[str, Desired] = {}  # valid ids -> body, file, filled fields
        self.invalid_ids: dict[str, str] = {}  # ids named by failing files -> one such file
        self.failed: dict[str, None] = {}  # the files that fail (own errors or a shared id)
        self._by_id: dict[str, dict[str, None]] = {}  # id -> the files declaring it
        self._lock = asyncio.Lock()  # one read at a time, whoever shares this state

    def __len__(self) -> int:
        return len(self.records)

    def desired(self, ids: Iterable[str] | None = None) -> DesiredState:
        """The desired state as one value (of ``ids`` only when given), problems included:
        what ``diff`` would plan from. Built on each call, in O(models) (O(ids) with ids)."""
        if ids is not None:
            ids = set(ids)
            models = {i: self.models[i] for i in ids if i in self.models}
            invalid = {i: self.invalid_ids[i] for i in ids if i in self.invalid_ids}
            return DesiredState(models, invalid_ids=invalid)
        errors = tuple(p for path in self.failed for p in self.problems(path))
        warnings = tuple(w for r in self.records.values() for w in r.warnings)
        return DesiredState(
            dict(self.models), errors, warnings, dict(self.invalid_ids), len(self.records)
        )

    # --- reading ------------------------------------------------------------------------------

    async def rescan(self, forced: Iterable[str] = ()) -> set[str] | None:
        """Re-read the files that changed on disk (or that the watcher named) and forget those
        gone: their paths. None when the directory is not there (the last known files are kept:
        a directory being replaced must not look like every model was deleted)."""
        async with self._lock:
            forced = set(forced)
            stamps = {p: r.stamp for p, r in self.records.items()}
            scanned = await asyncio.to_thread(_scan, self.root, stamps, forced)
            if scanned is None:
                return None
            changed, gone = scanned
            await self._read(changed)
            for path in gone:
                self._apply(path, None)
                await _pause()
            return set(changed) | set(gone)

    async def refresh(self, paths: Iterable[str]) -> set[str]:
        """Re-read (or forget) the files the watcher named: every id they declared before or
        declare now (a shared id clearing or appearing included)."""
        async with self._lock:
            paths = list(paths)
            keep = [p for p in paths if os.path.lexists(p) and self.filter.accepts(p)]
            ids = await self._read(keep)
            for path in set(paths) - set(keep):
                ids |= self._apply(path, None)
            return ids

    async def _read(self, paths: list[str]) -> set[str]:
        ids: set[str] = set()
        if not paths:
            return ids
        for chunk in await self._load(paths):
            for n, record in enumerate(chunk, 1):
                ids |= self._apply(record.path, record)
                if n % 200 == 0:
                    await _pause()
            await _pause()
        return ids

    async def _load(self, paths: list[str]) -> list[list[FileRecord]]:
        root = str(self.root)
        parallel = self.workers >= 2 and "fork" in mp.get_all_start_methods()
        if parallel and len(paths) >= PARALLEL_FROM:
            try:
                return await self._in_processes(paths, root)
            except (BrokenProcessPool, OSError):  # a worker killed (memory): read here instead
                pass
        return [await asyncio.to_thread(read_files, paths, root, self.policy)]

    async def _in_processes(self, paths: list[str], root: str) -> list[list[FileRecord]]:
        # fork: workers start with everything imported. The loop's own thread forks, and no
        # other thread of ours holds a lock a worker needs (they only parse files).
        pool = ProcessPoolExecutor(
            self.workers, mp_context=mp.get_context("fork"), initializer=_worker_signals
        )
        try:
            # Small chunks: each answer is unpickled holding the GIL (the loop waits meanwhile).
            size = max(100, min(500, -(-len(paths) // (self.workers * 4))))
            loop = asyncio.get_running_loop()
            futures = [
                loop.run_in_executor(pool, read_files_wire, paths[i : i + size], root, self.policy)
                for i in range(0, len(paths), size)
            ]
            return [unwire(await f) for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # --- the combined state -------------------------------------------------------------------

    def _apply(self, path: str, new: FileRecord | None) -> set[str]:
        """Put one file's read in place (None: it is gone); the ids whose standing may change."""
        old = self.records.get(path)
        if new is None:
            if old is None:
                return set()
            del self.records[path]
        else:
            new = keep_last_good(new, old)
            self.records[path] = new
        ids: set[str] = set()
        if old is not None and old.declared_id is not None:
            ids.add(old.declared_id)
            declaring = self._by_id.get(old.declared_id, {})
            declaring.pop(path, None)
            if not declaring:
                self._by_id.pop(old.declared_id, None)
        if new is not None and new.declared_id is not None:
            ids.add(new.declared_id)
            self._by_id.setdefault(new.declared_id, {})[path] = None
        for model_id in ids:
            self._settle(model_id)
        self._mark(path)
        if new is not None and new.errors:
            self._invalid_event(new)
        return ids

    def _settle(self, model_id: str) -> None:
        paths = self._by_id.get(model_id)
        if not paths:
            self.models.pop(model_id, None)
            self.invalid_ids.pop(model_id, None)
            return
        for path in paths:
            self._mark(path)
        if len(paths) > 1:  # files sharing an id all fail, naming each other
            self.models.pop(model_id, None)
            self.invalid_ids[model_id] = max(paths)
            return
        path = next(iter(paths))
        record = self.records[path]
        if record.body is not None and not record.errors:
            self.models[model_id] = Desired(record.body, path, record.sensitive)
            self.invalid_ids.pop(model_id, None)
        else:
            self.models.pop(model_id, None)
            self.invalid_ids[model_id] = path

    def _mark(self, path: str) -> None:
        if self.problems(path):
            self.failed[path] = None
        else:
            self.failed.pop(path, None)

    def problems(self, path: str) -> tuple[Problem, ...]:
        """The file's errors, a shared id included."""
        record = self.records.get(path)
        if record is None:
            return ()
        paths = self._by_id.get(record.declared_id or "", {})
        if len(paths) < 2:
            return record.errors
        named = sorted(p for p in paths if p != path)
        # Bounded: a thousand files sharing one id must not cost a million names.
        others = ", ".join(named[:3]) + (f" (+{len(named) - 3} more)" if len(named) > 3 else "")
        shared = Problem(path, f"id {record.declared_id!r} is also declared in {others}", "id")
        return (*record.errors, shared)

    def first_error(self, file: str | None) -> str:
        """``a.toml:3:1: error: rpm: ...`` (+N more): what is wrong with a file, for its row."""
        problems = self.problems(file or "")
        if not problems:
            return "the file failed validation"
        first = problems[0]._replace(path=os.path.relpath(problems[0].path, self.root))
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{first}{more}"  # the one problem format: path:line:col: error: field: message

    def _invalid_event(self, record: FileRecord) -> None:
        rel = os.path.relpath(record.path, self.root)
        first = str(record.errors[0])
        more = f" (+{len(record.errors) - 1} more)" if len(record.errors) > 1 else ""
        self._events().emit(
            Event(
                Kind.INVALID_FILE,
                self.clock.time(),
                f"{rel} is invalid: {first}{more}",
                id=record.declared_id,
                file=rel,
                error=first,
            )
        )


def _scan(
    root: Path, stamps: dict[str, Stamp | None], forced: set[str]
) -> tuple[list[str], list[str]] | None:
    """The files to re-read (new, changed stamp, or named) and those gone; None without the
    directory. Runs in a thread: 50,000 stats are no work for the event loop."""
    if not root.is_dir():
        return None
    if not stamps:  # nothing read yet (the start): every file is read, and stamped as it is
        return list(discover(root)), []
    changed: list[str] = []
    seen: set[str] = set()
    for path in discover(root):
        seen.add(path)
        stamp = _stamp(path)
        if path in forced or stamp is None or stamp != stamps.get(path):
            changed.append(path)
    return changed, [p for p in stamps if p not in seen]


async def _pause() -> None:
    """Let the web endpoints in between two chunks of bookkeeping."""
    await asyncio.sleep(0)


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _worker_signals() -> None:
    # Ctrl-C reaches the whole process group: the daemon decides how to stop; a worker dying of
    # it would break the pool in the middle of a resync.
    # The event loop's wakeup fd is the parent's: a signal here must not reach its loop.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # A worker lives for one read and makes no cycles worth finding: the collector would only
    # walk the growing results again and again.
    gc.disable()
