"""Parsing one model file's text: TOML through toml++ (``pytomlpp``), tomllib for the message.

tomllib (pure Python) was a third of a no-op diff's CPU. toml++ is a strict TOML 1.0 parser,
about four times faster here, and agrees with tomllib on every document both accept. Whatever
toml++ refuses (a syntax error, or one of the few TOML 1.0 documents it cannot represent, such
as an integer beyond 64 bits) is parsed again by tomllib, so what is accepted, the values and
every error message with its line and column are tomllib's, as before. Unlike rtoml (which
accepts TOML 1.1 drafts: newlines and trailing commas in inline tables, ``\\e``), nothing that
tomllib refuses gets through.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytomlpp


def loads_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads(text)``, faster; raises what tomllib raises for a document it refuses."""
    try:
        return pytomlpp.loads(text)
    except Exception:  # tomllib decides: it accepts a few documents toml++ cannot hold, says why
        return tomllib.loads(text)
