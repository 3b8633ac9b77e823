"""Registry entries -> model files: the pure rendering (:func:`render`) and a thin writer.

Rendering validates each entry's definition against the schema (an entry the schema rejects is
reported, never altered into something that validates), swaps inline secrets for ``${VARIABLE}``
placeholders, escapes any other ``${NAME}`` so the loader reads it back literally, orders the keys
for people, and picks a safe, unique file name per id. Writing never leaves the target directory
and never replaces a file unless asked.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import ValidationError

from . import source
from .secrets import FieldPath, is_credential_header, is_secret_path
from .spec import (
    SERVER_MANAGED_KEYS,
    Definition,
    Entry,
    describe_loc,
    error_hint,
    format_path,
    safe_file_stem,
)

SUFFIX = ".toml"

# Identity first, then what a reader looks for next; the rest follows by kind (see _order_top).
TOP_ORDER = (
    "id",
    "provider",
    "modelId",
    "publicName",
    "displayName",
    "aliases",
    "baseUrl",
    "apiFormat",
    "apiProviderType",
    "created",
    "contextWindow",
    "rpm",
    "hidden",
)
TABLE_ORDER = ("auth", "capabilities", "defaultParams", "embeddingLimits", "healthCheck")
ARRAY_TABLE_ORDER = ("rerouteRules", "rateLimits")

# What the loader substitutes (source._VARIABLE without the $$ escape): ${NAME}.
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NOT_IN_VARIABLE = re.compile(r"[^A-Za-z0-9]+")
_MAX_VARIABLE_PREFIX = 60


@dataclass(frozen=True)
class Variable:
    """An environment variable a written file needs: where its secret came from."""

    name: str
    model_id: str
    field: str


@dataclass(frozen=True)
class RenderedFile:
    """One model file ready to write."""

    model_id: str
    filename: str
    text: str
    variables: tuple[Variable, ...] = ()
    has_secrets: bool = False  # written as they are (--with-secrets): keep the file private
    dropped: tuple[str, ...] = ()  # top-level keys the registry added that the schema lacks


@dataclass(frozen=True)
class Skipped:
    """An entry not rendered, and why; ``rejected`` when the schema refused its definition."""

    model_id: str
    reason: str
    rejected: bool = False


@dataclass(frozen=True)
class Rendering:
    files: tuple[RenderedFile, ...]
    skipped: tuple[Skipped, ...]

    @property
    def rejected(self) -> tuple[Skipped, ...]:
        return tuple(s for s in self.skipped if s.rejected)


WriteStatus = Literal["written", "overwritten", "exists", "declared", "unsafe", "failed"]


@dataclass(frozen=True)
class WriteOutcome:
    """What became of one rendered file; ``detail`` says why it was not written."""

    file: RenderedFile
    path: str
    status: WriteStatus
    detail: str = ""

    @property
    def written(self) -> bool:
        return self.status in ("written", "overwritten")


# --- pure core --------------------------------------------------------------------------------


def render(
    entries: Iterable[Entry], *, include_immutable: bool = False, with_secrets: bool = False
) -> Rendering:
    """Render entries as TOML files (sorted by id): immutable/non-database ones only when asked,
    secrets as placeholders unless ``with_secrets``; what was left out says why."""
    skipped: list[Skipped] = []
    bodies: dict[str, dict[str, Any]] = {}
    dropped: dict[str, tuple[str, ...]] = {}
    for entry in sorted(entries, key=lambda e: e.id):
        if not include_immutable and (entry.immutable or entry.source != "database"):
            skipped.append(
                Skipped(
                    entry.id,
                    f"immutable ({entry.source or 'unknown'}-sourced); "
                    "--include-immutable exports it",
                )
            )
            continue
        body, problem = definition_body(entry)
        dropped[entry.id] = unknown_keys(entry)
        if body is None:
            skipped.append(Skipped(entry.id, problem, rejected=True))
        elif entry.id in bodies:
            skipped.append(Skipped(entry.id, "the registry listed this id twice", rejected=True))
        else:
            bodies[entry.id] = body
    names = file_names(bodies)
    used_variables: set[str] = set()
    files = []
    for model_id, body in bodies.items():
        inline = with_secrets and any(
            not _PLACEHOLDER.fullmatch(_lookup(body, loc).strip()) for loc, _ in secret_paths(body)
        )
        body, variables = protect_strings(body, with_secrets=with_secrets, taken=used_variables)
        text = to_toml(body, variables)
        files.append(
            RenderedFile(
                model_id, names[model_id], text, tuple(variables), inline, dropped[model_id]
            )
        )
    return Rendering(tuple(files), tuple(skipped))


_KNOWN_KEYS = frozenset(f.alias or name for name, f in Definition.model_fields.items())


def unknown_keys(entry: Entry) -> tuple[str, ...]:
    """Top-level keys of the live definition that no file can declare: the registry's own."""
    return tuple(sorted(set(entry.definition) - _KNOWN_KEYS - SERVER_MANAGED_KEYS))


def definition_body(entry: Entry) -> tuple[dict[str, Any] | None, str]:
    """The entry's definition as the schema dumps it, or None and what the schema objected to.

    Top-level keys the schema does not know are the registry's own additions (a newer gateway's
    bookkeeping): no file could declare them and the diff ignores them, so they are left out
    (and reported by the caller) rather than failing the whole entry. Anything else the schema
    rejects fails the entry: it is not silently altered."""
    raw = {
        k: v
        for k, v in entry.definition.items()
        if k not in SERVER_MANAGED_KEYS and k not in unknown_keys(entry)
    }
    if raw.get("id") != entry.id:
        return None, f"its definition names id {raw.get('id')!r}, not {entry.id!r}"
    try:
        definition = Definition.model_validate(raw)
    except ValidationError as exc:
        details = []
        for e in exc.errors(include_url=False):
            where, _ = describe_loc(tuple(e["loc"]))
            what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            hint = error_hint(e)
            what += f"; {hint}" if hint else ""
            # Only the location and pydantic's message: the input may be a secret.
            details.append(f"{where}: {what}" if where else what)
        return None, "the schema rejects its definition: " + "; ".join(details)
    return _drop_none(definition.to_api()), ""


def file_names(ids: Iterable[str]) -> dict[str, str]:
    """A safe, unique file name per id: ``safe_file_stem`` plus ``.toml``; ids whose stems clash
    (also when only letter case differs) get ``-2``, ``-3``... in id order after the first."""
    groups: dict[str, list[str]] = defaultdict(list)
    for model_id in sorted(set(ids)):
        groups[safe_file_stem(model_id).lower()].append(model_id)
    taken = set(groups)
    stems: dict[str, str] = {}
    for members in groups.values():
        stems[members[0]] = safe_file_stem(members[0])
        for model_id in members[1:]:
            base, n = safe_file_stem(model_id), 2
            while f"{base}-{n}".lower() in taken:
                n += 1
            stems[model_id] = f"{base}-{n}"
            taken.add(stems[model_id].lower())
    return {model_id: stems[model_id] + SUFFIX for model_id in sorted(stems)}


def secret_paths(body: Mapping[str, Any]) -> list[tuple[FieldPath, str]]:
    """Where a definition holds an inline secret to write as a placeholder: (path, variable
    suffix) for each string at a secret path (:func:`~reconciler.secrets.is_secret_path`), but a
    header only when its name looks like a credential (X-Tenant, X-Region are written as they
    are)."""
    found: list[tuple[FieldPath, str]] = []

    def walk(value: Any, loc: FieldPath) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, (*loc, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*loc, i))
        elif isinstance(value, str) and is_secret_path(loc):
            if loc[-1] == "value" and loc[-2] != "headers":
                found.append((loc, "API_KEY"))
            elif is_credential_header(str(loc[-1])):
                found.append((loc, "HEADER_" + _upper_snake(str(loc[-1]))))

    walk(body.get("auth"), ("auth",))
    return found


def variable_prefix(model_id: str) -> str:
    """``meetkai:team-x`` -> ``MEETKAI_TEAM_X``: a valid, bounded environment variable prefix."""
    prefix = _upper_snake(model_id) or "MODEL"
    if prefix[0].isdigit():
        prefix = "MODEL_" + prefix
    if len(prefix) > _MAX_VARIABLE_PREFIX:
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:8].upper()
        prefix = f"{prefix[: _MAX_VARIABLE_PREFIX - 9].rstrip('_')}_{digest}"
    return prefix


def protect_strings(
    body: Mapping[str, Any], *, with_secrets: bool = False, taken: set[str] | None = None
) -> tuple[dict[str, Any], list[Variable]]:
    """A copy of ``body`` that loads back to ``body``: inline secrets become ``${VARIABLE}``
    placeholders (names unique within ``taken``, which grows), unless ``with_secrets``; any
    other ``${NAME}`` in a string is escaped as ``$${NAME}``. Values that already are one
    ``${NAME}`` placeholder in a secret field are kept as they are."""
    taken = set() if taken is None else taken
    model_id = str(body.get("id", ""))
    secrets = dict(secret_paths(body))
    variables: list[Variable] = []

    def walk(value: Any, loc: tuple[str | int, ...]) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        if loc in secrets:
            if _PLACEHOLDER.fullmatch(value.strip()):
                return value
            if not with_secrets and value:
                name = _unique(f"{variable_prefix(model_id)}_{secrets[loc]}", taken)
                variables.append(Variable(name, model_id, format_path(loc)))
                return "${" + name + "}"
        return _PLACEHOLDER.sub(lambda m: "$" + m.group(0), value)

    return walk(body, ()), variables


def to_toml(body: Mapping[str, Any], variables: Iterable[Variable] = ()) -> str:
    """The TOML text of one definition, keys in reading order, with a note per placeholder."""
    head = "".join(
        f"# {v.field}: set ${v.name} in the environment before loading this file.\n"
        for v in variables
    )
    return head + tomli_w.dumps(order_keys(body))


def order_keys(body: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys in reading order: identity, other scalars (A-Z), tables, arrays of tables.
    Nested tables keep the schema's field order (``type``/``mode`` first), as the dump gives."""

    def rank(key: str) -> tuple[int, int, str]:
        value = body[key]
        if key in TOP_ORDER:
            return 0, TOP_ORDER.index(key), key
        if isinstance(value, Mapping):
            return 2, _index(TABLE_ORDER, key), key
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            return 3, _index(ARRAY_TABLE_ORDER, key), key
        return 1, 0, key

    return {key: body[key] for key in sorted(body, key=rank)}


def _index(order: tuple[str, ...], key: str) -> int:
    return order.index(key) if key in order else len(order)


def _drop_none(value: Any) -> Any:
    # TOML has no null; the schema dump leaves unset fields out, so None is an explicit "unset".
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value


def _lookup(body: Mapping[str, Any], loc: tuple[str | int, ...]) -> Any:
    value: Any = body
    for part in loc:
        value = value[part]
    return value


def _upper_snake(text: str) -> str:
    return _NOT_IN_VARIABLE.sub("_", text).strip("_").upper()


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


# --- the writer -------------------------------------------------------------------------------


def declared_ids(directory: Path) -> dict[str, str]:
    """Resolved path -> id of every model file already in ``directory`` (placeholders are not
    substituted: only the declared ids matter here)."""
    if not directory.is_dir():
        return {}
    loaded = source.load_dir(directory, env={})
    found = {m.file: model_id for model_id, m in loaded.models.items()}
    found.update({path: model_id for model_id, path in loaded.invalid_ids.items()})
    return {str(Path(path).resolve()): model_id for path, model_id in found.items()}


def write_files(
    files: Iterable[RenderedFile], directory: Path, *, overwrite: bool = False
) -> list[WriteOutcome]:
    """Write each file into ``directory`` (created if missing), never outside it, never over a
    file unless ``overwrite``, never over a file that declares another id, and never a second
    file for an id that another file in the directory already declares."""
    directory.mkdir(parents=True, exist_ok=True)
    root = directory.resolve()
    existing = declared_ids(directory)
    elsewhere = {model_id: path for path, model_id in existing.items()}
    outcomes = []
    for file in files:
        target = directory / file.filename
        shown = str(target)
        resolved = target.resolve()
        if resolved.parent != root or target.name != file.filename:
            outcomes.append(WriteOutcome(file, shown, "unsafe", "the path leaves the directory"))
            continue
        owner = existing.get(str(resolved))
        other = elsewhere.get(file.model_id)
        if other is not None and other != str(resolved):
            outcomes.append(WriteOutcome(file, shown, "declared", f"already declared in {other}"))
        elif owner is not None and owner != file.model_id:
            outcomes.append(
                WriteOutcome(file, shown, "exists", f"the file holds another model ({owner})")
            )
        elif target.is_symlink() or (target.exists() and not target.is_file()):
            outcomes.append(WriteOutcome(file, shown, "unsafe", "not a regular file"))
        elif target.exists() and not overwrite:
            outcomes.append(
                WriteOutcome(file, shown, "exists", "file exists (--overwrite replaces it)")
            )
        else:
            status: WriteStatus = "overwritten" if target.exists() else "written"
            try:
                _write_atomic(target, file.text, 0o600 if file.has_secrets else 0o644)
            except OSError as exc:
                outcomes.append(WriteOutcome(file, shown, "failed", exc.strerror or str(exc)))
                continue
            outcomes.append(WriteOutcome(file, shown, status))
    return outcomes


def _write_atomic(target: Path, text: str, mode: int) -> None:
    # A watcher (the daemon) must never read a half-written file: write aside, then rename.
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
