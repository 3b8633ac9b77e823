"""Text that came from outside (ids, file names, messages) made safe to print on one line.

A file name or a registry id may hold newlines, ESC sequences, C1 controls or bidi overrides: on a
terminal or in a log they would forge lines or rewrite the screen. :func:`printable` escapes them
for people; :func:`json_text` does the same inside a JSON document without changing its meaning.
"""

from __future__ import annotations

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every unprintable character written as ``\\xNN``/``\\uNNNN`` (as ``repr``
    does, without the quotes); printable text comes back unchanged, at the cost of one scan."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(document: str) -> str:
    """A JSON document (from ``json.dumps(..., ensure_ascii=False)``) with every unprintable
    character inside its strings written as a ``\\u`` escape: the same data, safe on a terminal.
    Layout whitespace (newlines of ``indent``) is kept: json already escapes it within strings."""
    if document.isprintable():
        return document
    return "".join(
        ch if ch.isprintable() or ch in "\n\r\t" else _json_escape(ch) for ch in document
    )
