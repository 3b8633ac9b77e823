"""Read model definition files from a directory: the desired state, plus every problem found.

The loader never stops at the first bad file. Each file becomes a :class:`FileResult` (a model or
the errors that kept it from being one); :func:`load_dir` adds the checks across files (duplicate
ids) and returns a :class:`LoadResult`. The daemon keeps ``FileResult``s per path and re-reads only
what changed, so loading one file and combining many are separate steps.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import ValidationError

from .spec import Definition, describe_loc, error_hint, format_path, safe_file_stem, suggest

SUFFIXES = (".toml", ".json")
Severity = Literal["error", "warning"]

# ${NAME} is replaced from the environment at load time; $${NAME} stands for a literal ${NAME}.
_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass(frozen=True)
class Problem:
    """One error or warning about one file, located as precisely as the file allows."""

    path: str
    message: str
    field: str | None = None
    line: int | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.path + (f":{self.line}" if self.line else "")
        what = f"{self.field}: " if self.field else ""
        return f"{where}: {self.severity}: {what}{self.message}"


@dataclass(frozen=True)
class FileResult:
    """What one file holds: a definition, or the errors that kept it from being one."""

    path: str
    definition: Definition | None
    declared_id: str | None = None
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class ModelFile:
    path: str
    definition: Definition

    @property
    def id(self) -> str:
        return self.definition.id


@dataclass(frozen=True)
class LoadResult:
    """The desired state: valid models by id, and what was wrong with the rest."""

    models: dict[str, ModelFile] = field(default_factory=dict)
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    # Ids named by files that failed: nothing is written for them and nothing pruned.
    invalid_ids: dict[str, str] = field(default_factory=dict)
    files: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


class ModelFileFilter:
    """Which paths are model files: ``*.toml``/``*.json``, not hidden, not an editor leftover.

    Callable as a watchfiles filter (``change, path``) as well as on a bare path.
    """

    def accepts(self, path: str | os.PathLike[str]) -> bool:
        name = os.path.basename(path)
        if name.startswith((".", "#", "~")) or name.endswith(("~", ".swp", ".swx", ".tmp")):
            return False
        return name.endswith(SUFFIXES)

    def __call__(self, change: object, path: str) -> bool:
        parts = Path(path).parts
        return self.accepts(path) and not any(p.startswith(".") for p in parts[:-1][-8:])


def discover(root: Path, file_filter: ModelFileFilter | None = None) -> Iterator[Path]:
    """Every model file under ``root``, recursively, in a stable order; hidden folders skipped."""
    accepts = (file_filter or ModelFileFilter()).accepts
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath)
        # A folder named like a model file is reported, so a typo'd mkdir is not silently ignored.
        for name in dirnames:
            if accepts(name):
                yield base / name
        for name in sorted(filenames):
            if accepts(name):
                yield base / name


def load_dir(
    root: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    now: float | None = None,
) -> LoadResult:
    """Load every model file under ``root``; never stops at the first bad one."""
    root = Path(root)
    if not root.is_dir():
        problem = Problem(str(root), "not a directory" if root.exists() else "no such directory")
        return LoadResult(errors=(problem,))
    results = [load_file(p, root, env=env, now=now) for p in discover(root)]
    return combine(results)


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
            others = ", ".join(o.path for o in same if o is not r)
            errors.append(
                Problem(r.path, f"id {r.declared_id!r} is also declared in {others}", "id")
            )
            invalid[r.declared_id or ""] = r.path
        elif is_valid(r):
            valid.append(r)
        elif r.declared_id is not None:
            invalid[r.declared_id] = r.path
    return valid, errors, warnings, invalid


def combine(results: Iterable[FileResult]) -> LoadResult:
    """Join per-file results into one desired state, failing every file that shares an id."""
    results = list(results)
    valid, errors, warnings, invalid = check_ids(results, lambda r: r.definition is not None)
    models = {r.definition.id: ModelFile(r.path, r.definition) for r in valid if r.definition}
    return LoadResult(models, tuple(errors), tuple(warnings), invalid, len(results))


def load_file(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
) -> FileResult:
    """Read, substitute ``${VARIABLES}`` in, and validate one model file."""
    path = Path(path)
    shown = _display_path(path, root)

    def failed(message: str, line: int | None = None, declared: str | None = None) -> FileResult:
        return FileResult(shown, None, declared, (Problem(shown, message, line=line),))

    if path.is_symlink() and not path.exists():
        return failed(f"broken symlink (points to {os.readlink(path)})")
    if path.is_dir():
        return failed("is a directory, not a model file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return failed(f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        return failed(f"cannot read: {exc.strerror or exc}")
    if not text.strip():
        return failed("empty file: expected one model definition")

    try:
        data = _parse(path, text)
    except ValueError as exc:
        return failed(*_parse_error(exc))
    if not isinstance(data, dict):
        return failed("expected one model definition (an object) at the top level")

    declared = data.get("id") if isinstance(data.get("id"), str) else None
    raw = data
    # Most files hold no placeholder: skip rebuilding every table for them.
    data, missing = (
        _substitute(raw, os.environ if env is None else env) if "${" in text else (raw, [])
    )
    if missing:
        return FileResult(
            shown,
            None,
            declared,
            tuple(
                Problem(
                    shown,
                    f"environment variable {var} is not set",
                    format_path(loc),
                    _find_line(text, loc),
                )
                for loc, var in missing
            ),
        )

    try:
        definition = Definition.model_validate(data)
    except ValidationError as exc:
        problems = tuple(_validation_problem(shown, text, e) for e in exc.errors())
        return FileResult(shown, None, declared, problems)

    warnings = tuple(
        Problem(shown, message, fld, _find_line(text, loc), "warning")
        for loc, fld, message in _lint(definition, path, raw=raw, now=now)
    )
    return FileResult(shown, definition, definition.id, (), warnings)


# --- parsing ----------------------------------------------------------------------------------


def _parse(path: Path, text: str) -> Any:
    if path.suffix == ".json":
        return json.loads(text)
    return tomllib.loads(text)


def _parse_error(exc: ValueError) -> tuple[str, int | None]:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg}", exc.lineno
    message = str(exc)
    match = _TOML_POSITION.search(message)
    line = int(match.group(1)) if match else None
    return f"invalid TOML: {_TOML_POSITION.sub('', message).strip()}", line


def _substitute(data: Any, env: Mapping[str, str]) -> tuple[Any, list[tuple[tuple, str]]]:
    missing: list[tuple[tuple, str]] = []

    def walk(value: Any, loc: tuple) -> Any:
        if isinstance(value, str) and "${" in value:

            def replace(m: re.Match[str]) -> str:
                if m.group(1):
                    return m.group(0)[1:]
                if m.group(2) not in env:
                    missing.append((loc, m.group(2)))
                    return ""
                return env[m.group(2)]

            return _VARIABLE.sub(replace, value)
        if isinstance(value, dict):
            return {k: walk(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(value)]
        return value

    return walk(data, ()), missing


def _validation_problem(shown: str, text: str, error: Any) -> Problem:
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
        if "input" in error and kind not in ("model_type", "dict_type") and not _is_secret(loc):
            message += f" (got {error['input']!r})"
        hint = error_hint(error)
        if hint:
            message += f"; {hint}"
    return Problem(shown, message, path or None, _find_line(text, loc))


def _is_secret(loc: tuple) -> bool:
    return "auth" in loc


def _display_path(path: Path, root: str | os.PathLike[str] | None) -> str:
    if root is not None:
        try:
            return str(Path(root) / path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def _find_line(text: str, loc: Iterable[str | int]) -> int | None:
    """Best-effort line of the deepest key of ``loc`` that the text names, after its parents."""
    keys = [k for k in loc if isinstance(k, str)]
    lines = text.splitlines()
    start, found = 0, None
    for key in keys:
        pattern = re.compile(
            rf'^\s*(\[+\s*)?([\w.-]+\.)?["\']?{re.escape(key)}["\']?\s*(=|\.|\]|":|:)'
            rf'|^\s*"{re.escape(key)}"\s*:'
        )
        for n in range(start, len(lines)):
            if pattern.search(lines[n]):
                start, found = n, n + 1
                break
        else:
            continue
    return found


# --- warnings ---------------------------------------------------------------------------------

_MS_THRESHOLD = 100_000_000_000  # unix seconds reach this in the year 5138; ms passed it in 1973


def _lint(
    definition: Definition,
    path: Path,
    raw: Mapping[str, Any],
    now: float | None,
) -> Iterator[tuple[tuple, str, str]]:
    """Things that validate but are probably mistakes: (loc, field, message)."""
    for loc in _inline_secret_locs(raw):
        yield (
            loc,
            format_path(loc),
            "inline secret in the file; reference it with envVar (read on the gateway side) "
            "or a ${VARIABLE} placeholder instead",
        )
    now = time.time() if now is None else now
    if definition.created >= _MS_THRESHOLD:
        yield ("created",), "created", "looks like milliseconds; the API wants unix seconds"
    elif definition.created > now + 86_400:
        yield ("created",), "created", "lies in the future"
    stem = path.stem
    if stem not in {definition.id, safe_file_stem(definition.id), definition.id.split(":")[-1]}:
        yield (
            ("id",),
            "id",
            f"file name {path.name!r} does not match the id {definition.id!r} "
            f"(expected {safe_file_stem(definition.id)}{path.suffix})",
        )


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
        if isinstance(value, str) and value and not _VARIABLE.fullmatch(value.strip()):
            yield (*loc, "value")
