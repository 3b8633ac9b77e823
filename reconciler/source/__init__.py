"""Read model definition files from a directory: the desired state, plus every problem found.

The loader never stops at the first bad file. Each file becomes a :class:`FileResult` (a model's
API body or the errors that kept it from being one); :func:`load_dir` adds the checks across files
(duplicate ids) and returns a :class:`DesiredState`, the one desired-state type of the engine. The
daemon keeps ``FileResult``s per path and re-reads only what changed, so loading one file and
combining many are separate steps.

Files are untrusted (they come from pull requests): whatever one holds, it fails alone, with a
message that never quotes a credential or a value a placeholder put in (:mod:`.files` reads
safely, :mod:`.placeholders` decides what ``${VARIABLE}`` may reach).
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from pydantic import ValidationError

from ..plan import Desired
from ..positions import locate
from ..secrets import FieldPath, scrub
from ..spec import Definition, describe_loc, error_hint, format_path, safe_file_stem, suggest
from ..text import printable
from ..units import is_milliseconds
from .files import SUFFIXES, ModelFileFilter, Unreadable, discover, read_capped, yaml_files
from .parse import loads_toml
from .placeholders import DEFAULT_POLICY, VARIABLE, LoadPolicy, substitute

__all__ = [
    "DEFAULT_POLICY",
    "FILE_NAME",
    "NO_MODEL_FILES",
    "SUFFIXES",
    "DesiredState",
    "Document",
    "FileResult",
    "LoadPolicy",
    "ModelFileFilter",
    "Problem",
    "check_ids",
    "combine",
    "discover",
    "load_dir",
    "load_file",
    "no_model_files",
    "read_document",
    "validate_data",
]

Severity = Literal["error", "warning"]
MAX_PROBLEMS = 20  # per file: a list of 100,000 wrong items is one mistake, not 100,000 lines
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 60, 60, 2
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


class Problem(NamedTuple):
    """One error or warning about one file, located as precisely as the file allows. A tuple:
    10,000 naming warnings are built (and rebuilt from the parse cache) in a fifth of a frozen
    dataclass's time, and held in as little memory as with slots."""

    path: str
    message: str
    field: str | None = None
    line: int | None = None
    severity: Severity = "error"
    column: int | None = None
    code: str | None = None  # the kind (file-name, inline-secret...): repeated ones summarise

    def __str__(self) -> str:
        """``path:line:col: error|warning: field: message``, the one problem format."""
        where = self.path + (f":{self.line}:{self.column or 1}" if self.line else "")
        what = f"{self.field}: " if self.field else ""
        return printable(f"{where}: {self.severity}: {what}{self.message}")


@dataclass(frozen=True)
class FileResult:
    """What one file holds: a model's API body (validated, camelCase, unset fields omitted), or
    the errors that kept it from being one."""

    path: str
    body: dict[str, Any] | None
    declared_id: str | None = None
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    sensitive: frozenset[FieldPath] = frozenset()  # fields a ${VARIABLE} filled: never shown


@dataclass(frozen=True)
class DesiredState:
    """What the files ask for: each valid model's :class:`~reconciler.plan.Desired` by id, and
    what was wrong with the rest. The one input of planning, in the CLI and the daemon."""

    models: dict[str, Desired] = field(default_factory=dict)
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    # Ids named by files that failed: nothing is written for them and nothing pruned.
    invalid_ids: dict[str, str] = field(default_factory=dict)
    files: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def failed_files(self) -> int:
        """How many files failed to load (each once, whether or not it names an id); an empty
        directory is no failed file (prune says so on its own)."""
        return len({p.path for p in self.errors if p.code != NO_MODEL_FILES})

    def subset(self, ids: Iterable[str]) -> DesiredState:
        """Only the models (valid or not) of ``ids``; problems and counts left out."""
        ids = set(ids)
        return DesiredState(
            {i: d for i, d in self.models.items() if i in ids},
            invalid_ids={i: f for i, f in self.invalid_ids.items() if i in ids},
        )


def load_dir(
    root: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    now: float | None = None,
    policy: LoadPolicy = DEFAULT_POLICY,
) -> DesiredState:
    """Load every model file under ``root``; never stops at the first bad one. A directory
    without any model file is an error (a wrong ``--dir`` must not read as "all in sync")."""
    if not os.path.isdir(root):
        where = os.fspath(root)
        problem = Problem(where, "not a directory" if os.path.exists(root) else "no such directory")
        return DesiredState(errors=(problem,))
    paths = list(discover(root))
    if not paths:
        return DesiredState(errors=(no_model_files(root),))
    return combine(load_file(p, root, env=env, now=now, policy=policy) for p in paths)


NO_MODEL_FILES = "no-model-files"


def no_model_files(root: str | os.PathLike[str]) -> Problem:
    """The error for a directory that holds no model file, naming what it holds instead."""
    others = yaml_files(root)
    hint = f"; {', '.join(others)} not read: model files end in .toml or .json" if others else ""
    return Problem(os.fspath(root), f"no model files (*.toml, *.json){hint}", code=NO_MODEL_FILES)


class _Loaded(Protocol):
    path: str
    declared_id: str | None
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]


L = TypeVar("L", bound=_Loaded)


def check_ids(
    results: Sequence[L], is_valid: Callable[[L], bool]
) -> tuple[list[L], list[Problem], list[Problem], dict[str, str]]:
    """The cross-file check, for any per-file record: files sharing an id all fail, naming
    each other. Returns the valid records, every error and warning, and failed ids -> file."""
    by_id: dict[str, list[L]] = defaultdict(list)
    for r in results:
        if r.declared_id is not None:
            by_id[r.declared_id].append(r)
    valid: list[L] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    invalid: dict[str, str] = {}
    for r in results:
        errors.extend(r.errors)
        warnings.extend(r.warnings)
        same = by_id.get(r.declared_id or "", [])
        if len(same) > 1:
            named = [o.path for o in same if o is not r]
            # Bounded: a thousand files sharing one id must not cost a million names.
            others = ", ".join(named[:3]) + (f" (+{len(named) - 3} more)" if len(named) > 3 else "")
            errors.append(
                Problem(r.path, f"id {r.declared_id!r} is also declared in {others}", "id")
            )
            invalid[r.declared_id or ""] = r.path
        elif is_valid(r):
            valid.append(r)
        elif r.declared_id is not None:
            invalid[r.declared_id] = r.path
    return valid, errors, warnings, invalid


def combine(results: Iterable[FileResult]) -> DesiredState:
    """Join per-file results into one desired state, failing every file that shares an id."""
    results = list(results)
    valid, errors, warnings, invalid = check_ids(results, lambda r: r.body is not None)
    models = {r.body["id"]: Desired(r.body, r.path, r.sensitive) for r in valid if r.body}
    return DesiredState(models, tuple(errors), tuple(warnings), invalid, len(results))


def load_file(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
    policy: LoadPolicy = DEFAULT_POLICY,
) -> FileResult:
    """Read, substitute ``${VARIABLES}`` in, and validate one model file. Never raises: whatever
    the path holds, the answer is a model or the problems that kept it from being one."""
    shown = os.fspath(path)  # as given: discover() joins it onto ``root`` already
    try:
        return _load(shown, env, now, policy)
    except RecursionError:
        return _failed(shown, "nested too deeply to be a model definition")
    except MemoryError:
        return _failed(shown, "too large to load")
    except Exception as exc:  # one file must never end the run, whatever it holds
        return _failed(shown, f"cannot load ({type(exc).__name__}): please report this")


def _failed(
    shown: str, message: str, line: int | None = None, column: int | None = None
) -> FileResult:
    return FileResult(shown, None, None, (Problem(shown, message, line=line, column=column),))


@dataclass(frozen=True)
class Document:
    """One file read, parsed and its placeholders filled: what model files and overlays share.
    ``data`` is None when that failed; ``errors`` say why."""

    path: str
    text: str = ""
    raw: dict[str, Any] = field(default_factory=dict)  # as written, before substitution
    data: dict[str, Any] | None = None
    declared_id: str | None = None
    errors: tuple[Problem, ...] = ()
    sensitive: frozenset[FieldPath] = frozenset()  # fields a ${VARIABLE} filled
    values: frozenset[str] = frozenset()  # what the placeholders put in: never printed

    def line(self, loc: Iterable[str | int]) -> int | None:
        """Best-effort line of the key at ``loc`` in the file."""
        return locate(self.text, loc)[0]


def read_document(
    shown: str,
    env: Mapping[str, str] | None = None,
    policy: LoadPolicy = DEFAULT_POLICY,
    what: str = "one model definition",
) -> Document:
    """Read (capped), parse and substitute ``${VARIABLES}`` in one file: an object at the top
    level. Raises only what :func:`load_file` guards against (RecursionError, MemoryError)."""

    def failed(message: str, line: int | None = None, column: int | None = None) -> Document:
        return Document(shown, errors=(Problem(shown, message, line=line, column=column),))

    try:
        text = read_capped(shown, policy.max_file_bytes).decode("utf-8")
    except Unreadable as exc:
        return failed(exc.message)
    except UnicodeDecodeError as exc:
        return failed(f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte order mark, as some editors write: accepted in TOML and JSON
    if not text.strip():
        return failed(f"empty file: expected {what}")

    is_json = shown.endswith(".json")
    try:
        raw = json.loads(text) if is_json else loads_toml(text)
    except RecursionError:
        return failed(f"nested too deeply to be {what}")
    except ValueError as exc:
        return failed(*_parse_error(exc, is_json))
    if not isinstance(raw, dict):
        return failed(f"expected {what} (an object) at the top level")

    declared = raw.get("id") if isinstance(raw.get("id"), str) else None
    if "${" not in text:  # most files hold no placeholder: skip rebuilding every table
        return Document(shown, text, raw, raw, declared)
    sub = substitute(raw, os.environ if env is None else env, policy)
    if sub.problems:
        problems = tuple(
            Problem(shown, why, format_path(loc), line, column=column)
            for loc, why in sub.problems[:MAX_PROBLEMS]
            for line, column in [locate(text, loc)]
        )
        return Document(shown, text, raw, None, declared, problems)
    return Document(shown, text, raw, sub.data, declared, (), sub.sensitive, sub.values)


def validate_data(
    doc: Document, data: Mapping[str, Any]
) -> tuple[Definition | None, tuple[Problem, ...]]:
    """Validate ``data`` against the schema; problems located in ``doc``, never quoting what
    its placeholders put in."""
    try:
        return Definition.model_validate(data), ()
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems = [
            _validation_problem(doc.path, doc.text, e, doc.sensitive, doc.values)
            for e in errors[:MAX_PROBLEMS]
        ]
        if len(errors) > MAX_PROBLEMS:
            problems.append(
                Problem(doc.path, f"{len(errors) - MAX_PROBLEMS} more error(s) not shown")
            )
        return None, tuple(problems)


def _load(
    shown: str, env: Mapping[str, str] | None, now: float | None, policy: LoadPolicy
) -> FileResult:
    doc = read_document(shown, env, policy)
    if doc.data is None:
        return FileResult(shown, None, doc.declared_id, doc.errors)
    definition, problems = validate_data(doc, doc.data)
    if definition is None:
        return FileResult(shown, None, doc.declared_id, problems)
    warnings = tuple(
        Problem(shown, message, fld, line, "warning", column, code)
        for loc, fld, message, code in _lint(
            definition, shown, raw=doc.raw, now=now, names=policy.lint_file_names
        )
        for line, column in [locate(doc.text, loc)]
    )
    return FileResult(shown, definition.to_api(), definition.id, (), warnings, doc.sensitive)


# --- parsing ----------------------------------------------------------------------------------


def _parse_error(exc: ValueError, is_json: bool) -> tuple[str, int | None, int | None]:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg}", exc.lineno, exc.colno
    if is_json:
        return f"invalid JSON: {exc}", None, None  # e.g. an integer of more than 4300 digits
    message = str(exc)
    match = _TOML_POSITION.search(message)
    line, column = (int(match.group(1)), int(match.group(2))) if match else (None, None)
    return f"invalid TOML: {_TOML_POSITION.sub('', message).strip()}", line, column


def _validation_problem(
    shown: str,
    text: str,
    error: Any,
    sensitive: frozenset[FieldPath] = frozenset(),
    values: frozenset[str] = frozenset(),
) -> Problem:
    loc = tuple(error["loc"])
    path, known = describe_loc(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        hint = suggest(key, known or [])
        message = "unknown key" + (f"; did you mean {hint!r}?" if hint else "")
    elif kind == "missing":
        message = "required field is missing"
    else:
        message = error["msg"]
        filled = _near(path, sensitive)
        # Anything under auth (a superset of secrets.is_secret_path, whose union tags pydantic's
        # loc still carries) or near a filled field is named without its input.
        quiet = "auth" in loc or filled
        if "input" in error and kind not in ("model_type", "dict_type") and not quiet:
            message += f" (got {_SHORT.repr(error['input'])})"
        hint = None if filled else error_hint(error)  # a near miss says something of the value
        if hint:
            message += f"; {hint}"
        message = scrub(message, values) if values else message
    line, column = locate(text, loc)
    return Problem(shown, message, path or None, line, column=column)


def _near(path: str, sensitive: frozenset[FieldPath]) -> bool:
    """Whether an error at ``path`` (as shown) may quote a value a placeholder put in: the path
    is a filled field, inside one, or holds one."""
    for loc in sensitive:
        filled = format_path(loc)
        if path == filled or not path or filled.startswith((f"{path}.", f"{path}[")):
            return True
        if path.startswith((f"{filled}.", f"{filled}[")):
            return True
    return False


# --- warnings ---------------------------------------------------------------------------------


def _lint(
    definition: Definition,
    path: str,
    raw: Mapping[str, Any],
    now: float | None,
    names: bool = True,
) -> Iterator[tuple[tuple, str, str, str]]:
    """Things that validate but are probably mistakes: (loc, field, message, code)."""
    for loc in _inline_secret_locs(raw):
        yield (
            loc,
            format_path(loc),
            "inline secret in the file; reference it with envVar (read on the gateway side) "
            "or a ${VARIABLE} placeholder instead",
            "inline-secret",
        )
    now = time.time() if now is None else now
    if is_milliseconds(definition.created):
        ms = "looks like milliseconds; the API wants unix seconds"
        yield ("created",), "created", ms, "created-ms"
    elif definition.created > now + 86_400:
        yield ("created",), "created", "lies in the future", "created-future"
    name = os.path.basename(path)
    stem, suffix = os.path.splitext(name)
    expected = (definition.id, definition.id.split(":")[-1])  # the safe stem only if needed
    if names and stem not in expected and stem != (safe := safe_file_stem(definition.id)):
        yield (
            ("id",),
            "id",
            f"file name {name!r} does not match the id {definition.id!r} (expected {safe}{suffix})",
            FILE_NAME,
        )


FILE_NAME = "file-name"  # the code of the naming lint's warning


def _inline_secret_locs(raw: Mapping[str, Any]) -> Iterator[tuple]:
    """Where the file (before substitution) spells an api-key value out."""
    auth = raw.get("auth")
    if not isinstance(auth, dict):
        return
    candidates: list[tuple[tuple, Any]] = [(("auth",), auth)]
    for i, strategy in enumerate(auth.get("strategies") or []):
        candidates.append((("auth", "strategies", i), strategy))
    for loc, block in candidates:
        if not isinstance(block, dict) or block.get("type") != "api-key":
            continue
        value = block.get("value")
        if isinstance(value, str) and value and not VARIABLE.fullmatch(value.strip()):
            yield (*loc, "value")
