"""The list answer (``diff``, ``sync``, the daemon), decoded as it arrives, and its entries
kept lean.

The answer of 10,000 entries is 8 MB of JSON. Read whole, it is held three times over at the
peak of a diff: the chunks as received and joined, the bytes, the text ``json`` decodes them to.
:class:`ListDecoder` takes it chunk by chunk and hands over each element of the ``data`` array as
soon as it is complete, so only a chunk and an element are held besides the entries built.

:class:`Entries` builds those entries sharing what is equal: a definition that holds every field
of its file's body with the same values takes the body's value objects (only its own top-level
dict and the keys the server adds are its own), every definition's keys are one set of strings,
and entries with the same health share one :class:`~reconciler.spec.EntryHealth`. Listed
entries are read, never assigned to (see :func:`_shared_set`).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..sameness import same
from ..spec import SERVER_MANAGED_KEYS, Entry, EntryHealth

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_BLANK = " \t\n\r"
_AFTER = ",:]}" + _BLANK  # what may follow a whole value
_SAME_AS_BODY = (("id", "id"), ("model_id", "modelId"), ("provider", "provider"))
DATA = "data"
MEMO = 256  # distinct healths (or server-added strings) shared; beyond, each keeps its own


class _Data(list):  # type: ignore[type-arg]
    """Where a streamed data array stood in the document: its elements went to ``on_item``."""


class ListDecoder:
    """``json.loads`` of a document fed in chunks: :meth:`feed` each chunk, then :meth:`close`
    for the document. Each element of the top-level ``data`` array (or of a top-level array)
    goes to ``on_item`` once decoded, and stands in the document as an empty :class:`list`
    subclass; ``on_begin`` is called as each such array starts (a repeated ``data`` key: the
    last wins, as for ``json.loads``). Values are decoded by ``json`` itself, so they are
    exactly its values; a document it would refuse raises ``ValueError`` at :meth:`close` at
    the latest. Text other than UTF-8 (a UTF-16 or UTF-32 answer) is decoded whole at the end.
    """

    def __init__(self, on_item: Callable[[Any], None], on_begin: Callable[[], None]) -> None:
        self._on_item, self._on_begin = on_item, on_begin
        self._text = ""
        self._pos = 0
        self._eof = False
        self._want = 0  # undecoded characters needed before a failed decode is tried again
        self._waiting: list[str] = []  # text received until that many came, not yet joined
        self._waited = 0
        self._utf8: codecs.IncrementalDecoder | None = None
        self._raw: list[bytes] | None = None  # not UTF-8: the bytes, decoded at the end
        self._head = b""
        self._parser: Iterator[None] = self._document()
        self._result: Any = None
        self._error: ValueError | None = None
        self.prefix = ""  # the first characters, for an error message

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the answer."""
        if self._raw is not None:
            self._raw.append(chunk)
            return
        if self._utf8 is None:
            self._head += chunk
            if len(self._head) < 4:
                return
            chunk, self._head = self._head, b""
            # As json.loads(bytes) decides: no NUL among the first bytes is UTF-8.
            if b"\x00" in chunk[:4] or chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
                self._raw = [chunk]
                return
            self._utf8 = codecs.getincrementaldecoder("utf-8-sig")("surrogatepass")
        self._push(self._utf8.decode(chunk))

    def close(self) -> Any:
        """The document (after every element went to ``on_item``); ``ValueError`` if the
        answer was not JSON."""
        if self._raw is not None or self._utf8 is None:
            raw = b"".join(self._raw or [self._head])
            self._raw = None
            return self._whole(json.loads(raw)) if raw else None
        self._eof = True
        self._push(self._utf8.decode(b"", final=True))
        if self._error is not None:
            raise self._error
        return self._result

    def _whole(self, doc: Any) -> Any:
        data = doc.get(DATA) if isinstance(doc, dict) else doc
        if isinstance(data, list):
            self._on_begin()
            for i, item in enumerate(data):
                data[i] = None
                self._on_item(item)
            data = _Data()
            if isinstance(doc, dict):
                doc[DATA] = data
            else:
                doc = data
        return doc

    def _push(self, text: str) -> None:
        if len(self.prefix) < 200:
            self.prefix += text[: 200 - len(self.prefix)]
        if self._error is not None:
            raise self._error
        self._waiting.append(text)
        self._waited += len(text)
        if len(self._text) - self._pos + self._waited < self._want and not self._eof:
            return  # joined once enough came: a large element is not copied at every chunk
        self._text = self._text[self._pos :] + "".join(self._waiting)
        self._pos = 0
        self._waiting, self._waited = [], 0
        try:
            next(self._parser)
        except StopIteration:
            pass
        except ValueError as exc:  # raised again on every later call
            self._error = exc
            raise

    # --- the parser: a generator that yields when it needs more text ---------------------------

    def _more(self) -> Iterator[None]:
        if self._eof:
            raise ValueError("truncated")
        yield

    def _skip(self) -> Iterator[None]:
        """Past whitespace, to a character that is there."""
        while True:
            self._pos = _WS.match(self._text, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._text):
                return
            yield from self._more()

    def _value(self) -> Iterator[Any]:
        while True:
            try:
                value, end = _DECODER.raw_decode(self._text, self._pos)
            except ValueError:
                if self._eof:
                    raise
                # Truncated, or wrong: known once more text came (twice as much, so a large
                # value is not decoded again and again).
                self._want = 2 * (len(self._text) - self._pos)
                yield
                continue
            if not self._eof and (end == len(self._text) or self._text[end] not in _AFTER):
                yield  # a number may go on ("4." of "4.5"): known once more text came
                continue
            self._want = 0
            self._pos = end
            return value

    def _char(self) -> str:
        c = self._text[self._pos]
        self._pos += 1
        return c

    def _items(self) -> Iterator[None]:
        self._on_begin()
        self._pos += 1
        yield from self._skip()
        if self._text[self._pos] == "]":
            self._pos += 1
            return
        text = self._text
        while True:
            # The common case in C: an element complete in the text, then "," and the next one.
            try:
                item, end = _DECODER.raw_decode(text, self._pos)
            except ValueError:
                end = len(text)
            if end < len(text) and text[end] in _AFTER:
                self._pos = end
            else:  # it may go on: decoded again once more text came
                item = yield from self._value()
            self._on_item(item)
            del item
            text, pos = self._text, self._pos
            if text.startswith(",", pos) and pos + 1 < len(text) and text[pos + 1] not in _BLANK:
                self._pos = pos + 1
                continue
            yield from self._skip()
            c = self._char()
            if c == "]":
                return
            if c != ",":
                raise ValueError("expected ',' or ']'")
            yield from self._skip()
            text = self._text

    def _document(self) -> Iterator[None]:
        yield from self._skip()
        doc: Any
        if self._text[self._pos] == "[":
            yield from self._items()
            doc = _Data()
        elif self._text[self._pos] == "{":
            doc = {}
            self._pos += 1
            yield from self._skip()
            if self._text[self._pos] == "}":
                self._pos += 1
            else:
                while True:
                    if self._text[self._pos] != '"':
                        raise ValueError("expected a key")
                    key = yield from self._value()
                    yield from self._skip()
                    if self._char() != ":":
                        raise ValueError("expected ':'")
                    yield from self._skip()
                    if key == DATA and self._text[self._pos] == "[":
                        yield from self._items()
                        doc[key] = _Data()
                    else:
                        doc[key] = yield from self._value()
                    yield from self._skip()
                    c = self._char()
                    if c == "}":
                        break
                    if c != ",":
                        raise ValueError("expected ',' or '}'")
                    yield from self._skip()
        else:
            doc = yield from self._value()
        while True:  # only whitespace after the document
            self._pos = _WS.match(self._text, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._text):
                raise ValueError("extra data")
            if self._eof:
                break
            yield
        self._result = doc


def is_streamed(data: Any) -> bool:
    """Whether ``data`` (the document's ``data`` value) was an array handed over element by
    element."""
    return isinstance(data, _Data)


class Entries:
    """Listed entries built from decoded elements, sharing what is equal (module docstring).
    ``bodies``: each model's body by id, from the files (or nothing). ``validate`` builds an
    entry (pydantic's validator). A first failure is kept in :attr:`failed` (the caller decides
    what it means once the whole answer was read)."""

    def __init__(
        self,
        bodies: Mapping[str, Any],
        validate: Callable[[Any], Entry],
        intern: bool = True,
    ) -> None:
        self._bodies = bodies
        self._validate = validate
        self._intern = intern  # False: the keys were shared by one decoding call already
        self._keys: dict[str, str] = {}
        self._values: dict[str, str] = {}
        self._healths: dict[tuple[Any, ...], EntryHealth] = {}
        self._field_sets: dict[frozenset[str], set[str]] = {}
        self._last: set[str] = set()  # the last entry's set fields (as shared)
        self._last_health: EntryHealth | None = None
        self.entries: list[Entry] = []
        # The ids whose definition holds their body's very values and besides only keys the
        # server manages, by that body: the plan need not compare them again (make_plan).
        self.held: dict[str, dict[str, Any]] = {}
        self.failed: BaseException | None = None

    def begin(self) -> None:
        self.entries = []
        self.held = {}

    def add(self, item: Any) -> None:
        # Once per listed entry (10,000 in a no-op diff of 10,000 files): kept to a few calls.
        if self.failed is not None:
            return
        try:
            if type(item) is dict:
                self._lighten(item)
            entry = self._validate(item)
        except Exception as exc:
            self.failed = exc
            return
        names = entry.__pydantic_fields_set__
        if names == self._last:  # the common case: the fields of the entry before
            object.__setattr__(entry, "__pydantic_fields_set__", self._last)
        else:
            self._last = _shared_set(entry, self._field_sets)
        health = entry.health
        if health is not self._last_health:  # a health of the memo is shared already
            _shared_set(health, self._field_sets)
            self._last_health = health
        self.entries.append(entry)

    def _lighten(self, item: dict[str, Any]) -> None:
        key, definition = item.get("id"), item.get("definition")
        if type(key) is not str:  # not hashed: a list or an object is refused by validation
            key = None
        elif key in self.held:  # listed twice: the last entry is the one compared
            del self.held[key]
        body = self._bodies.get(key) if key is not None else None
        if type(body) is not dict:
            body = None
        if type(definition) is dict:
            # Not contextlib.suppress: a context manager per entry is 10 ms at 10,000 entries.
            try:  # noqa: SIM105
                item["definition"] = self._definition(definition, body, key)
            except RecursionError:  # too deep to walk: kept as decoded
                pass
        if body is not None:
            for field, name in _SAME_AS_BODY:  # the body's strings, not copies of them
                value, mine = body.get(name), item.get(field)
                if value == mine and type(value) is str and type(mine) is str:
                    item[field] = value
        health = item.get("health")
        if type(health) is dict and len(self._healths) < MEMO:
            shared = self._health(health)
            if shared is not None:
                item["health"] = shared

    def _definition(
        self, definition: dict[str, Any], body: dict[str, Any] | None, key: Any = None
    ) -> dict[str, Any]:
        keys = self._keys
        if body is not None and len(definition) >= len(body):
            try:
                mine = {k: definition[k] for k in body}
            except KeyError:
                mine = None
            if mine is not None and same(body, mine):
                # The body's keys and values (its key order: no reader of a listed definition
                # depends on it), then the keys the server added.
                shared = dict(body)
                added = definition.keys() - body.keys()
                for k in added:
                    value = definition[k]
                    if type(value) is str:
                        if len(self._values) < MEMO:
                            value = self._values.setdefault(value, value)  # "database"
                    elif type(value) in _NESTED:
                        value = _interned(value, keys)
                    shared[keys.setdefault(k, k)] = value
                if added <= SERVER_MANAGED_KEYS and key == body.get("id"):
                    self.held[key] = body
                return shared
        return _interned(definition, keys) if self._intern else definition  # type: ignore[no-any-return]

    def _health(self, health: dict[str, Any]) -> EntryHealth | None:
        # Keyed by type too: true, 1 and 1.0 are equal in Python and not to the registry. As
        # many healths as entries (their check times) fill the memo: then none is shared.
        values = tuple(health.values())
        key = (tuple(health), tuple(map(type, values)), values)
        try:
            shared = self._healths.get(key)
        except TypeError:  # a list or object among its values: not shared
            return None
        if shared is None:
            shared = self._healths[key] = EntryHealth.model_validate(health)
        return shared


_NESTED = (dict, list)


def _interned(value: Any, keys: dict[str, str]) -> Any:
    """``value`` with every object key one of ``keys`` (one decoding call shares keys within
    itself only: 10,000 definitions decoded one by one would each hold their own)."""
    if type(value) is dict:
        return {
            keys.setdefault(k, k): _interned(v, keys) if type(v) in _NESTED else v
            for k, v in value.items()
        }
    if type(value) is list and any(type(v) in _NESTED for v in value):
        return [_interned(v, keys) if type(v) in _NESTED else v for v in value]
    return value


def _shared_set(model: Any, seen: dict[frozenset[str], set[str]]) -> set[str]:
    """``model``'s set of set fields, shared with every listed model of the same fields.

    pydantic gives each model a set of its own (over 0.9 kB with its health's: 9 MB at 10,000
    entries). Listed entries are read, never assigned to (which would add to the shared set).
    """
    names = model.__pydantic_fields_set__
    shared = seen.setdefault(frozenset(names), names)
    object.__setattr__(model, "__pydantic_fields_set__", shared)
    return shared
