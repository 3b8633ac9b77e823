"""Record every registry call the local registry answers, as JSON lines: off unless asked.

The test suite sets ``RECONCILER_RECORD_CALLS`` to a file; each API call then appends one line
``{"call", "agent", "status", "request"?, "answer"?}`` (``request`` for add and update, ``answer``
when it is JSON) and the suite checks every line against the official SDK's models. Credentials
in a definition (``auth.value``, custom-header values) are written as ``(redacted)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..spec import REDACTED, is_secret_path
from .jsonbody import check

RECORD_ENV = "RECONCILER_RECORD_CALLS"
# The key Registry.guarded sets in the request state: which of the six calls this was.
CALL_KEY = "registry_call"
_WITH_BODY = frozenset({"add", "update"})


def record_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Where to record: the explicit path, else ``$RECONCILER_RECORD_CALLS``, else nowhere."""
    chosen = explicit if explicit is not None else os.environ.get(RECORD_ENV)
    return Path(chosen) if chosen else None


def redact_definition(definition: Any, path: tuple[str | int, ...] = ()) -> Any:
    """A copy of a definition (or part of one, at ``path``) with every credential replaced."""
    if path and is_secret_path(path):
        return REDACTED
    if isinstance(definition, Mapping):
        return {k: redact_definition(v, (*path, k)) for k, v in definition.items()}
    if isinstance(definition, list):
        return [redact_definition(v, (*path, i)) for i, v in enumerate(definition)]
    return definition


def _redact_answer(answer: Any) -> Any:
    if not isinstance(answer, Mapping):
        return answer
    if isinstance(answer.get("data"), list):
        return {**answer, "data": [_redact_answer(e) for e in answer["data"]]}
    if isinstance(answer.get("definition"), Mapping):
        return {**answer, "definition": redact_definition(answer["definition"])}
    return answer


def _json(raw: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(raw)
    except (ValueError, RecursionError):  # a hostile body the registry answered 400 to
        return False, None


class CallRecorder:
    """ASGI middleware: a passive tap on the request and answer bodies of each registry call."""

    def __init__(self, app: ASGIApp, path: Path | None) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.path is None:
            await self.app(scope, receive, send)
            return
        request: list[bytes] = []
        answer: list[bytes] = []
        status = 0

        async def tap_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request.append(message.get("body", b""))
            return message

        async def tap_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
                if not message.get("more_body", False):
                    # Recorded before the last byte goes out: whoever got the answer finds its
                    # line already written (many calls finish together at high concurrency).
                    self._record(scope, status, request, answer)
            await send(message)

        await self.app(scope, tap_receive, tap_send)

    def _record(self, scope: Scope, status: int, request: list[bytes], answer: list[bytes]) -> None:
        assert self.path is not None
        call = (scope.get("state") or {}).get(CALL_KEY)
        if call is None:
            return  # not one of the six calls (control, unknown route)
        headers = dict(scope["headers"])
        line: dict[str, Any] = {
            "call": call,
            "agent": headers.get(b"user-agent", b"").decode("latin-1"),
            "status": status,
        }
        if call in _WITH_BODY:
            ok, body = _json(b"".join(request))
            if ok and check(body) is None:  # not too deep to walk (the registry answered 400)
                line["request"] = redact_definition(body)
        ok, body = _json(b"".join(answer))
        if ok:
            line["answer"] = _redact_answer(body)
        # ensure_ascii: a lone surrogate in a refused body is written escaped, not a crash.
        data = (json.dumps(line) + "\n").encode()
        # One write(2) in append mode: lines from several servers on one file never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
