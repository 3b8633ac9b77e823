"""One line per event on stderr: ``text`` for people, ``json`` for log shippers."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

from ..events import NOTIFY, Event, Kind
from ..text import json_text, printable

LogFormat = Literal["text", "json"]
LOGGER = "reconciler.daemon"


class _Formatter(logging.Formatter):
    def __init__(self, fmt: LogFormat) -> None:
        super().__init__()
        self.kind = fmt

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        event = record.getMessage()
        if record.name != LOGGER:  # uvicorn and friends: keep where it came from
            fields = {"logger": record.name, **fields}
        if record.exc_info:
            fields = {**fields, "traceback": self.formatException(record.exc_info)}
        level = record.levelname.lower()
        if self.kind == "json":
            # json_text: an id or a path with ESC or C1 bytes must not reach a terminal raw.
            return json_text(
                json.dumps(
                    {"time": stamp, "level": level, "event": event, **fields},
                    default=str,
                    ensure_ascii=False,
                )
            )
        # Newlines inside a value would split one event over lines: keep values on one line.
        parts = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None)
        return f"{stamp} {level:<7} {event}" + (f" {parts}" if parts else "")


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = printable(" ".join(text.split())) if isinstance(value, str) else json_text(text)
    return json.dumps(text, ensure_ascii=False) if (" " in text or not text) else text


def setup(fmt: LogFormat, stream: TextIO | None = None) -> logging.Logger:
    """Route the daemon's and uvicorn's logs to one handler in ``fmt``; the daemon logger."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # uvicorn's own start/stop chatter is noise next to the daemon's events.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "watchfiles"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return logging.getLogger(LOGGER)


class EnvironmentLog(logging.LoggerAdapter[logging.Logger]):
    """The daemon's logger for one environment: every line carries ``environment=NAME``."""

    def __init__(self, log: logging.Logger, environment: str) -> None:
        super().__init__(log, {"environment": environment})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra["fields"] = {**(self.extra or {}), **(extra.get("fields") or {})}
        kwargs["extra"] = extra
        return msg, kwargs


Log = logging.Logger | EnvironmentLog


def event(log: Log, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields (never a secret: callers pass ids, counts and messages)."""
    log.log(level, name, extra={"fields": fields})


class LogSink:
    """The log sink of the event seam: one line per event (``drift corrected``, ``invalid
    file``...). Sync failures and writes are logged where they happen (``write``, ``registry
    error``), with more detail than the event holds, so they are not repeated here."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def emit(self, e: Event) -> None:
        if e.kind not in NOTIFY or e.kind is Kind.SYNC_FAILED:
            return  # the engine's steps too: the daemon logs each write with its field changes
        trouble = e.kind is Kind.INVALID_FILE or e.available is False
        event(
            self.log,
            e.kind.value.replace("-", " "),
            logging.WARNING if trouble else logging.INFO,
            id=e.id,
            file=e.file,
            fields=list(e.fields) or None,
            available=e.available,
            error=e.error,
        )
