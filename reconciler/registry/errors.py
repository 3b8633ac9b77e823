"""Registry answers as one-line messages: the server's error body, whatever its shape, and a
transport failure's cause, so a user reads what went wrong, never a traceback."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any

import httpx

MAX_MESSAGE = 300


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _issue_text(issue: Any) -> str:
    """One validation issue (FastAPI ``{loc, msg}`` or Zod ``{path, message}``) as text."""
    if not isinstance(issue, Mapping):
        return str(issue)
    loc = issue.get("loc", issue.get("path", issue.get("field")))
    msg = issue.get("msg", issue.get("message", ""))
    if isinstance(loc, list | tuple):
        # FastAPI prefixes "body"; the user wrote the rest.
        parts = [str(p) for p in loc if p != "body"]
        loc = ".".join(parts)
    return f"{loc}: {msg}" if loc else str(msg)


def _issues(value: Any) -> list[str]:
    if isinstance(value, list):
        return [_issue_text(i) for i in value]
    if isinstance(value, Mapping):
        # {"field": "message"} or {"field": ["message", ...]}
        return [
            f"{k}: {'; '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items()
        ]
    return []


def error_message(response: httpx.Response) -> str:
    """The server's message from an error answer, whatever shape the body has, on one line."""
    try:
        body = response.json()
    except ValueError:
        return one_line(response.text) or response.reason_phrase
    message: Any = None
    issues: list[str] = []
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            message = error.get("message")
            for key in ("details", "errors", "issues", "fields"):
                issues += _issues(error.get(key))
        elif isinstance(error, str):
            message = error
        detail = body.get("detail")
        if isinstance(detail, str):
            message = message or detail
        else:
            issues += _issues(detail)
        message = message or body.get("message")
        for key in ("errors", "issues"):
            issues += _issues(body.get(key))
    if not message and not issues:
        return one_line(response.text) or response.reason_phrase
    text = str(message or "invalid request")
    if issues:
        text += " (" + "; ".join(issues) + ")"
    return one_line(text)


def transport_cause(exc: httpx.TransportError, timeout: float) -> str:
    """A short human cause for a transport error: what went wrong, not a traceback."""
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.ConnectError):
        # anyio wraps the OSError ("All connection attempts failed"): look down the chain.
        refused = "refused" in lowered
        cause: BaseException | None = exc
        for _ in range(8):  # bounded: exception chains can loop
            if cause is None or refused:
                break
            refused = getattr(cause, "errno", None) == errno.ECONNREFUSED
            cause = cause.__cause__ or cause.__context__
        if refused:
            return "connection refused"
        if any(s in lowered for s in ("name or service", "nodename", "getaddrinfo", "resolve")):
            return "host name not found (DNS)"
        if "ssl" in lowered or "certificate" in lowered:
            return f"TLS error: {one_line(text, 120)}"
        return f"cannot connect: {one_line(text, 120)}" if text else "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed before a complete answer (protocol error)"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "connection dropped"
    return one_line(f"{type(exc).__name__}: {text}", 160) if text else type(exc).__name__
