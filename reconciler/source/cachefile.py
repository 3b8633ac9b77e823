"""The parse cache's file layout (see :mod:`.cache`): the files of the last run as columns in
discovery order, so that a run finding every file as it was takes them whole, with a couple of
list comparisons. An index (paths, stat keys, ids, the warnings' columns, the directories
walked) then the bodies in batches, each a marshal chunk after its length; every column is
checked for shape as read, in one pass in C each.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterator, Mapping
from itertools import chain, repeat
from typing import Any, NamedTuple

from .files import Stat, Walked

BATCH = 500  # bodies a batch: its marshal bytes ~0.3 MB, written and read one after the other
LENGTH = 8  # each batch's byte count before it, little-endian

# What a cached file loaded to: its id, API body and warnings (message, field, line, column, code).
Warning_ = tuple[str, str | None, int | None, int | None, str | None]
Cached = tuple[str, dict[str, Any], tuple[Warning_, ...]]
Cached_entry = tuple[Stat, str, dict[str, Any], tuple[Warning_, ...]]  # with its key


class Table(NamedTuple):
    """The files the last run cached, in its discovery order, checked for shape: each one's path,
    key, id and body; its warnings as columns (file index, message, field, line, column, code),
    in file order."""

    paths: list[str]
    keys: list[Stat]
    ids: list[str]
    bodies: list[dict[str, Any]]
    warned: list[int]
    messages: list[str]
    fields: list[str | None]
    lines: list[int | None]
    columns: list[int | None]
    codes: list[str | None]
    walked: Walked  # the directories listed to find ``paths`` (all it found), else empty


def columns(paths: list[str], new: Mapping[str, Cached_entry], walked: Walked) -> Iterator[bytes]:
    """The marshal chunks of a cache file: the index (paths, keys, ids, the warnings' columns
    and the directories walked), then the bodies in batches."""
    rows = [new[p] for p in paths]
    warned: list[int] = []
    columns: list[list[Any]] = [[], [], [], [], []]
    for i, row in enumerate(rows):
        for w in row[3]:
            warned.append(i)
            for column, value in zip(columns, w, strict=True):
                column.append(value)
    ids = [r[1] for r in rows]
    yield marshal.dumps((paths, [r[0] for r in rows], ids, warned, *columns, walked))
    for i in range(0, len(rows), BATCH):
        yield marshal.dumps([r[2] for r in rows[i : i + BATCH]])


def chunks(payload: memoryview) -> list[Any]:
    """The objects of a payload of marshal chunks, each after its length; ValueError for a
    payload of another shape."""
    out = []
    at, end = 0, len(payload)
    while at < end:
        size = int.from_bytes(payload[at : at + LENGTH], "little")
        at += LENGTH
        if size <= 0 or at + size > end:
            raise ValueError("not a cache payload")
        out.append(marshal.loads(payload[at : at + size]))
        at += size
    return out


def _only(values: Any, *kinds: type) -> bool:
    """Whether every item of ``values`` is exactly of one of ``kinds`` (a bool is no int)."""
    return set(map(type, values)) <= set(kinds)


_NONE = type(None)


def table(chunks: list[Any]) -> Table | None:
    """The chunks as a :class:`Table` if every column has the shape written; else None. Checked
    column by column, each in one pass in C, so a cache of 10,000 files is checked in a few ms."""
    if not chunks or type(chunks[0]) is not tuple or len(chunks[0]) != 10:
        return None
    index = chunks[0]
    if not _only(index, list) or not _only(chunks[1:], list):
        return None
    paths, keys, ids, warned, messages, fields, lines, columns, codes, walked = index
    if not (_only(walked, tuple) and set(map(len, walked)) <= {5}):
        return None
    if not (_only((d[0] for d in walked), str) and _only(chain(*(d[1:] for d in walked)), int)):
        return None
    bodies = list(chain.from_iterable(chunks[1:]))
    n = len(paths)
    if len(keys) != n or len(ids) != n or len(bodies) != n:
        return None
    if not (_only(paths, str) and _only(ids, str) and _only(bodies, dict) and _only(keys, tuple)):
        return None
    if not (set(map(len, keys)) <= {5} and _only(chain.from_iterable(keys), int)):
        return None
    if list(map(dict.get, bodies, repeat("id"))) != ids:
        return None  # a body naming another id than its file did
    m = len(warned)
    if any(len(c) != m for c in (messages, fields, lines, columns, codes)):
        return None
    if not (_only(warned, int) and _only(messages, str) and _only(fields, str, _NONE)):
        return None
    if not (_only(lines, int, _NONE) and _only(columns, int, _NONE) and _only(codes, str, _NONE)):
        return None
    if warned and (warned[0] < 0 or warned[-1] >= n or warned != sorted(warned)):
        return None
    return Table(paths, keys, ids, bodies, warned, messages, fields, lines, columns, codes, walked)


def rows(table: Table) -> dict[str, Cached_entry]:
    """The table's files as the entries :meth:`.ParseCache.save` writes."""
    warnings = by_file(table)
    rows = zip(table.paths, table.keys, table.ids, table.bodies, strict=True)
    return {p: (k, i, b, warnings.get(r, ())) for r, (p, k, i, b) in enumerate(rows)}


def by_file(table: Table) -> dict[int, tuple[Warning_, ...]]:
    """Each warned row's warnings."""
    out: dict[int, list[Warning_]] = {}
    rows = zip(table.messages, table.fields, table.lines, table.columns, table.codes, strict=True)
    for i, w in zip(table.warned, rows, strict=True):
        out.setdefault(i, []).append(w)
    return {i: tuple(ws) for i, ws in out.items()}
