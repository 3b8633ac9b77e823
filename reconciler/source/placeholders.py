"""``${VARIABLE}`` placeholders: which a file may use where, and what they put in.

A model file comes from a pull request and is loaded where the reconciler's own credentials are
in the environment. So a placeholder reaches only what it was granted: in a non-secret field a
variable listed in ``allow_env`` (names or fnmatch patterns, empty by default); in a secret field
(``auth.value``, custom header values) any variable; nowhere the reconciler's own credentials
(``deny_env``) and never in ``id`` (ids print everywhere). Each field a placeholder filled is
recorded, so its value is never shown again.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic.alias_generators import to_camel

from ..secrets import FieldPath, is_secret_path
from .files import MAX_FILE_BYTES

# ${NAME} is replaced from the environment at load time; $${NAME} stands for a literal ${NAME}.
VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
CREDENTIAL_ENV = ("MKA1_API_KEY",)


@dataclass(frozen=True)
class LoadPolicy:
    """What the loader allows a file: variables per field kind, and its size."""

    allow_env: tuple[str, ...] = ()  # names or fnmatch patterns, for non-secret fields
    deny_env: tuple[str, ...] = CREDENTIAL_ENV  # the reconciler's own credentials: never
    max_file_bytes: int = MAX_FILE_BYTES
    lint_file_names: bool = True  # warn about files not named after their id

    def refusal(self, name: str, loc: FieldPath) -> str | None:
        """Why ``${name}`` may not stand at ``loc``, or None when it may."""
        if any(fnmatch.fnmatchcase(name, p) for p in self.deny_env):
            return f"${{{name}}} is the reconciler's own credential: no model file may use it"
        if loc[:1] == ("id",):
            return f"${{{name}}}: placeholders are not allowed in id (ids are printed and sent)"
        if is_secret_path(loc) or any(fnmatch.fnmatchcase(name, p) for p in self.allow_env):
            return None
        return (
            f"${{{name}}} is not allowed in a non-secret field: list it in allow_env in "
            "reconciler.toml, or use it in auth.value or a header value"
        )


DEFAULT_POLICY = LoadPolicy()


class Substituted(NamedTuple):
    """A file's data with placeholders replaced, and what that touched."""

    data: Any
    sensitive: frozenset[FieldPath]  # the fields a placeholder filled (also as camelCase)
    values: frozenset[str]  # what was put in: scrubbed from any message about the file
    problems: tuple[tuple[FieldPath, str], ...]  # (where, why) for each refused or unset one


def substitute(data: Any, env: Mapping[str, str], policy: LoadPolicy) -> Substituted:
    """Replace every allowed ``${NAME}`` in the strings of ``data`` (keys are never touched)."""
    sensitive: set[FieldPath] = set()
    values: set[str] = set()
    problems: list[tuple[FieldPath, str]] = []

    def walk(value: Any, loc: FieldPath) -> Any:
        if isinstance(value, str) and "${" in value:
            filled = False

            def replace(m: re.Match[str]) -> str:
                nonlocal filled
                if m.group(1):
                    return m.group(0)[1:]
                name = m.group(2)
                why = policy.refusal(name, loc)
                if why is None and name not in env:
                    why = f"environment variable {name} is not set"
                if why is not None:
                    problems.append((loc, why))
                    return ""
                filled = True
                values.add(env[name])
                return env[name]

            out = VARIABLE.sub(replace, value)
            if filled:
                sensitive.add(loc)
                sensitive.add(_camel(loc))
            return out
        if isinstance(value, dict):
            return {k: walk(v, (*loc, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(value)]
        return value

    out = walk(data, ())
    return Substituted(out, frozenset(sensitive), frozenset(values), tuple(problems))


def _camel(loc: FieldPath) -> FieldPath:
    # Files may spell fields in snake_case (populate_by_name); the API body is camelCase.
    return tuple(to_camel(p) if isinstance(p, str) and "_" in p else p for p in loc)
