"""Loaded files crossing back from a worker process, as the first diff's and the daemon's
workers send them: one marshal document of plain tuples. Written and read in C (a fraction of
pickle's time over thousands of nested dicts), read straight from the bytes (no text, as JSON
needs), the problems sent as the plain tuples they are (pickled, they cost 60 ms more for
10,000 files with a warning each), and each chunk's equal short strings held once.

A record is a :class:`Loaded` (a subclass's further fields plain data too).
"""

from __future__ import annotations

import marshal
import pickle
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from ..secrets import FieldPath
from . import Problem

R = TypeVar("R")
Stamp = tuple[int, int, int]  # what the daemon compares to see a file changed (daemon.files)

PARALLEL_FROM = 400  # files to read; below this worker processes cost more than they save


class Loaded(NamedTuple):
    """A file's load reduced to plain data, so it crosses a process boundary cheaply (a pickled
    pydantic Definition costs more to unpickle than the file costs to parse): its API body when
    it is valid alone, else the errors; ``stamp``: taken before the read, where kept."""

    path: str
    declared_id: str | None
    body: dict[str, Any] | None
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    sensitive: frozenset[FieldPath]
    stamp: Stamp | None = None


def to_wire(records: Sequence[Loaded], values: bool = False) -> bytes:
    """``records`` as one marshal document; pickled as they are when marshal cannot write
    them (nested too deeply). ``values``: equal tables and arrays of the bodies' top level
    held once too (:func:`share_values`), for readers that never change a body."""
    seen: dict[str, str] = {}
    same: dict[bytes, Any] | None = {} if values else None
    try:
        for r in records:
            if r[2] is not None:
                share_strings(r[2], seen)
                if same is not None:
                    share_values(r[2], same)
        rows = [(*r[:3], list(map(tuple, r[3])), list(map(tuple, r[4])), *r[5:]) for r in records]
        return b"m" + marshal.dumps(rows)
    except (RecursionError, ValueError):
        return b"p" + pickle.dumps(list(records))


def from_wire(wire: bytes, record: Callable[..., R]) -> list[R]:
    """The records :func:`to_wire` wrote, each made by ``record`` (the NamedTuple)."""
    # Our own worker's bytes, from a pipe of this process: marshal is no format for untrusted
    # data, and this is none.
    if wire[:1] == b"p":
        records: list[R] = pickle.loads(memoryview(wire)[1:])
        return records
    make = Problem._make
    return [
        record(
            *r[:3],
            tuple(map(make, r[3])) if r[3] else (),
            tuple(map(make, r[4])) if r[4] else (),
            *r[5:],
        )
        for r in marshal.loads(memoryview(wire)[1:])
    ]


def share_strings(value: dict[str, Any] | list[Any], seen: dict[str, str]) -> None:
    """Every short string in ``value`` made the first equal one in ``seen``, in place: marshal
    writes a string held twice once (and the parent, and the parse cache, read it back once),
    so thousands of bodies naming the same provider, format or URL hold it once a chunk."""
    items = value.items() if type(value) is dict else enumerate(value)  # type: ignore[union-attr]
    for k, v in items:
        kind = type(v)
        if kind is str:
            if len(v) <= 128:
                value[k] = seen.setdefault(v, v)  # type: ignore[index]
        elif kind is dict or kind is list:
            share_strings(v, seen)


def share_values(body: dict[str, Any], seen: dict[bytes, Any]) -> None:
    """Each table or array at ``body``'s top level made the first one equal to it in ``seen``,
    in place: models of one provider name the same ``auth``, ``capabilities`` or
    ``defaultParams``, and each is then decoded (and parsed from the parse cache) once a chunk,
    not once a model. Only for bodies nothing writes to (the diff's: see ``plan.Desired``).
    Equal means the same marshal bytes (types and all: ``1`` is no ``True`` nor ``1.0``)."""
    for k, v in body.items():
        kind = type(v)
        if kind is dict or kind is list:
            body[k] = seen.setdefault(marshal.dumps(v), v)
