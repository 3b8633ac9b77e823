"""The API key read from a file (``--api-key-file``), so it is not on a command line for ``ps``.

Errors name the file and what is wrong with it, never a byte of its content.
"""

from __future__ import annotations

from pathlib import Path

from .answers import printable

MAX_KEY_FILE = 4096  # a key is tens of bytes; a bigger file is the wrong file


class KeyFileError(Exception):
    """The key file cannot be used; the message names the file, not the content."""


def read_key_file(path: Path) -> str:
    """The key in ``path``: one line, a trailing newline (``\\n`` or ``\\r\\n``) dropped."""
    shown = printable(str(path))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read the API key file {shown}: {exc.strerror or exc}") from None
    if len(raw) > MAX_KEY_FILE:
        raise KeyFileError(f"the API key file {shown} is over {MAX_KEY_FILE} bytes")
    try:
        key = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise KeyFileError(f"the API key file {shown} is not UTF-8 text") from None
    if not key:
        raise KeyFileError(f"the API key file {shown} is empty")
    if not (key.isascii() and key.isprintable()) or " " in key:
        raise KeyFileError(
            f"the API key file {shown} must hold the key alone on one line "
            "(printable ASCII, no spaces)"
        )
    return key
