"""Per-environment overlays: small files that change a few keys of a model in one environment.

An overlay directory holds files like model files (``*.toml``/``*.json``), each naming the ``id``
it changes and the keys to change, spelled as in model files. They are merged into the base
definition as a JSON merge patch (RFC 7386): tables merge key by key, arrays and scalars
replace, ``null`` (JSON) removes a key. TOML has no null, so a TOML overlay removes keys with
``remove = ["baseUrl", "defaultParams.topP"]``. ``exclude = true`` (and nothing else) leaves the
model out of that environment. The merged definition is what the schema validates; its
errors name the overlay file, since the base file validated alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import source
from .plan import Desired
from .source import Document, Problem

DIRECTIVES = ("id", "exclude", "remove")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``patch`` applied to ``target`` (neither is changed)."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def removal(path: tuple[str, ...]) -> dict[str, Any]:
    """The merge patch that removes the key at ``path``: ``a.b`` -> ``{"a": {"b": null}}``."""
    patch: dict[str, Any] = {path[-1]: None}
    for key in reversed(path[:-1]):
        patch = {key: patch}
    return patch


@dataclass(frozen=True)
class OverlayFile:
    """One overlay file: the keys it changes (``patch``), or ``exclude``, or its errors."""

    path: str
    declared_id: str | None
    doc: Document | None = None
    patch: dict[str, Any] = field(default_factory=dict)
    removals: tuple[tuple[str, ...], ...] = ()
    exclude: bool = False
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class Overlays:
    """An environment's overlay directory, read: valid files by id, and what was wrong."""

    directory: str
    by_id: dict[str, OverlayFile] = field(default_factory=dict)
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    invalid_ids: dict[str, str] = field(default_factory=dict)


def read_overlay(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    policy: source.LoadPolicy = source.DEFAULT_POLICY,
) -> OverlayFile:
    """Read one overlay file (as hostile as a model file); errors name the file and field."""
    shown = os.fspath(path)
    try:
        doc = source.read_document(shown, env, policy, what="one overlay (an id and keys)")
    except (RecursionError, MemoryError):
        return OverlayFile(shown, None, errors=(Problem(shown, "too large or deep to load"),))
    if doc.data is None:
        return OverlayFile(doc.path, doc.declared_id, errors=doc.errors)

    def failed(fld: str, message: str) -> OverlayFile:
        line = doc.line((fld,))
        return OverlayFile(
            doc.path, doc.declared_id, errors=(Problem(doc.path, message, fld, line),)
        )

    data = doc.data
    if not isinstance(data.get("id"), str) or not data["id"]:
        return failed("id", "required: the id of the model this overlay changes")
    exclude = data.get("exclude", False)
    if not isinstance(exclude, bool):
        return failed("exclude", "must be true or false")
    remove = data.get("remove", [])
    if not isinstance(remove, list) or not all(isinstance(r, str) and r for r in remove):
        return failed("remove", "must be a list of field paths, e.g. ['baseUrl']")
    patch = {k: v for k, v in data.items() if k not in DIRECTIVES}
    if exclude and (patch or remove):
        return failed("exclude", "an excluded model takes no other keys")
    removals = tuple(tuple(r.split(".")) for r in remove)
    if any(not all(_KEY.fullmatch(k) for k in r) for r in removals):
        return failed("remove", "names keys of tables only (a.b); replace a list to change it")
    if ("id",) in removals:
        return failed("remove", "the id cannot be removed")
    return OverlayFile(doc.path, doc.declared_id, doc, patch, removals, exclude)


def load_overlays(
    root: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    policy: source.LoadPolicy = source.DEFAULT_POLICY,
) -> Overlays:
    """Read every overlay file under ``root``; two files for one id both fail."""
    shown = os.fspath(root)
    if not Path(root).is_dir():
        missing = "not a directory" if Path(root).exists() else "no such overlay directory"
        return Overlays(shown, errors=(Problem(shown, missing),))
    files = [read_overlay(p, env, policy) for p in source.discover(Path(root))]
    valid, errors, warnings, invalid = source.check_ids(files, lambda f: not f.errors)
    by_id = {f.declared_id: f for f in valid if f.declared_id is not None}
    return Overlays(shown, by_id, tuple(errors), tuple(warnings), invalid)


@dataclass(frozen=True)
class Overlaid:
    """The desired state of one environment: models by id after its overlays, and what failed."""

    models: dict[str, Desired]
    errors: tuple[Problem, ...]
    invalid_ids: dict[str, str]
    excluded: tuple[str, ...] = ()


def apply_overlays(
    models: Mapping[str, Desired], invalid_ids: Mapping[str, str], overlays: Overlays
) -> Overlaid:
    """Merge each overlay into its base model and validate the result; an overlay whose id no
    base file declares is an error (one whose base file failed adds nothing: that file did)."""
    out = dict(models)
    errors = list(overlays.errors)
    invalid = dict(invalid_ids)
    for model_id, path in overlays.invalid_ids.items():
        # A failed overlay must not leave its model deployed unchanged (an exclude, a limit):
        # the model is held back in this environment, as for a base file that failed.
        out.pop(model_id, None)
        invalid.setdefault(model_id, path)
    excluded: list[str] = []
    for model_id, o in overlays.by_id.items():
        base = models.get(model_id)
        if base is None:
            if model_id not in invalid_ids:
                line = o.doc.line(("id",)) if o.doc else None
                errors.append(
                    Problem(o.path, f"no model file declares id {model_id!r}", "id", line)
                )
                invalid[model_id] = o.path
            continue
        if o.exclude:
            del out[model_id]
            excluded.append(model_id)
            continue
        assert o.doc is not None
        merged = merge_patch(base.body, o.patch)
        for path in o.removals:  # functional: the base body is shared by every environment
            merged = merge_patch(merged, removal(path))
        definition, problems = source.validate_data(o.doc, merged)
        if definition is None:
            errors.extend(problems)
            invalid[model_id] = o.path
            del out[model_id]
            continue
        # What the overlay's placeholders filled is as secret as the base file's.
        sensitive = base.sensitive | o.doc.sensitive
        out[model_id] = base._replace(body=definition.to_api(), sensitive=sensitive)
    return Overlaid(out, tuple(errors), invalid, tuple(excluded))
