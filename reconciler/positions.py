"""Where a field is in the text of a model file (TOML or JSON): line and column for a problem.

Best effort on the raw text, without a position-keeping parser: keys are found after their
parents, list elements counted as ``[[table]]`` headers or as the items of an inline array.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable


def locate(text: str, loc: Iterable[str | int]) -> tuple[int | None, int | None]:
    """Best-effort line and column (1-based) of ``loc`` in the text: each key after its
    parents; a list index as the n-th ``[[table]]`` header or the n-th element of the array."""
    lines = text.splitlines()
    start, found = 0, None
    key: str | None = None
    for part in loc:
        if isinstance(part, str):
            key = part
            # Built once per field name (a naming warning locates "id" in thousands of files);
            # a long key, which only a hostile file names, is not kept.
            pattern = _field_pattern(part) if len(part) <= 64 else _pattern(part)
            for n in range(start, len(lines)):
                if pattern.search(lines[n]):
                    column = lines[n].find(part)
                    start, found = n, (n + 1, column + 1 if column >= 0 else 1)
                    break
        elif key is not None and found is not None:
            element = _element(lines, start, key, part)
            if element is not None:
                start, found = element[0] - 1, element
    return found if found is not None else (None, None)


def _pattern(part: str) -> re.Pattern[str]:
    return re.compile(
        rf'^\s*(\[+\s*)?([\w.-]+\.)?["\']?{re.escape(part)}["\']?\s*(=|\.|\]|":|:)'
        rf'|^\s*"{re.escape(part)}"\s*:'
    )


_field_pattern = functools.lru_cache(maxsize=128)(_pattern)


def _element(lines: list[str], start: int, key: str, index: int) -> tuple[int, int] | None:
    """Where element ``index`` of the array ``key`` (found on line ``start``) begins."""
    header = re.compile(rf"^\s*\[\[\s*([\w.-]+\.)?{re.escape(key)}\s*\]\]")
    if header.search(lines[start]):
        seen = -1
        for n in range(start, len(lines)):
            if header.search(lines[n]):
                seen += 1
                if seen == index:
                    return n + 1, lines[n].index("[") + 1
        return None
    # An inline (TOML) or JSON array: scan from the key's separator for its elements.
    n, col = start, lines[start].find(key) + len(key)
    separator = re.compile(r"\s*[\"']?\s*[=:]").match(lines[start], col)
    col = separator.end() if separator else col
    depth, count, quote, fresh = 0, -1, "", False
    while n < len(lines):
        line = lines[n]
        while col < len(line):
            ch = line[col]
            if quote:
                if ch == "\\":
                    col += 1
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch == "#" and depth:
                break  # a TOML comment runs to the end of the line
            elif ch in "[{":
                depth += 1
                if depth == 1 and ch == "[":
                    count, fresh = 0, True
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    return None
            elif ch == "," and depth == 1:
                count += 1
                fresh = True
            if fresh and depth >= 1 and not ch.isspace() and ch not in "[,":
                if count == index:
                    return n + 1, col + 1
                fresh = False
            col += 1
        n, col = n + 1, 0
    return None
