"""The local registry as a Starlette app: the six registry calls, bearer auth, faults, control.

``create_app(store, api_key, *, strict_add=False, add_defaults=False, faults=None, immutable=(),
max_body_bytes=1 MiB)`` builds the app (what every request passes first is in ``guards``);
uvicorn serves it (``reconciler registry serve``) and ``httpx.ASGITransport`` runs it in-process
for unit tests. ``immutable`` takes API definition bodies (camelCase mappings, as
``Definition.to_api()`` gives) that become read-only YAML-sourced entries; a mapping may carry its
own ``source`` (default ``"yaml"``). ``app.state.control`` and ``app.state.store`` expose the state.

Decisions where the API page is silent:
- Ids are read from the raw (still percent-encoded) path, so ``%2F`` in an id is part of the id.
- Auth is checked before routing: an unknown route without a key answers 401, with one 404.
- Add and update drop ``source``/``immutable`` from a body (a client may echo them back); update
  ignores an ``id`` equal to the entry's and answers 422 to a different one. Add over an existing
  database entry keeps its ``created_at`` and last health. ``null`` anywhere in a stored body means
  "absent": nulls are not stored.
- A new entry's health is ``{"is_available": true, "last_health_check": null, "error": null}``
  until the health call probes it; YAML-sourced entries have null ``created_at``/``updated_at``.
- Health calls are counted but are not writes: faults for writes do not apply to them.
- ``drop_next_writes`` only shows through a real server (uvicorn closes the socket); in-process,
  ``httpx.ASGITransport`` raises on the unfinished answer instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import anyio
from anyio import to_thread
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from ..spec import SERVER_MANAGED_KEYS, Definition
from .answers import error, json_answer, printable, validation_error
from .faults import Call, Control, Faults, ServerOptions
from .guards import BODY_DEADLINE, DEFAULT_MAX_BODY, AccessLog, BearerAuth, BodyLimit
from .jsonbody import read_json
from .probe import probe
from .record import CALL_KEY, CallRecorder, record_path
from .store import Store, dumps

PREFIX = "/api/v1/llm/models/registry"
CONTROL_PATH = "/_control"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
DEFINITION_KEYS = frozenset(f.alias or name for name, f in Definition.model_fields.items())
# What --add-defaults stores for omitted fields, the way a newer gateway might; "version" is a key
# this schema does not know, standing in for fields of later API versions.
TOP_DEFAULTS: dict[str, Any] = {"hidden": False, "aliases": [], "rerouteRules": [], "version": 1}
CAPABILITY_DEFAULTS: dict[str, Any] = {"supportsTemperature": False, "supportsTopP": False}

log = logging.getLogger("reconciler.server")


def now_ms() -> int:
    return int(time.time() * 1000)


def with_defaults(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition as a gateway that fills in defaults and newer fields would store it."""
    out = {**TOP_DEFAULTS, **definition}
    if isinstance(out.get("capabilities"), Mapping):
        out["capabilities"] = {**CAPABILITY_DEFAULTS, **out["capabilities"]}
    return out


def make_entry(
    definition: Mapping[str, Any],
    *,
    source: str = "database",
    immutable: bool = False,
    created_at: int | None = None,
    updated_at: int | None = None,
    health: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An entry in the API's answer shape, ``source``/``immutable`` echoed into the definition."""
    body = {k: v for k, v in definition.items() if k not in SERVER_MANAGED_KEYS}
    return {
        "id": body["id"],
        "provider": body["provider"],
        "model_id": body["modelId"],
        "source": source,
        "immutable": immutable,
        "definition": {**body, "source": source, "immutable": immutable},
        "health": dict(health or {"is_available": True, "last_health_check": None, "error": None}),
        "created_at": created_at,
        "updated_at": updated_at,
    }


class _DroppedResponse(Response):
    """Send the answer's head and half its body, then stop: the connection drops mid-answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        half = self.body[: max(1, len(self.body) // 2)]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        # Returning unfinished makes uvicorn close the socket; the client sees a short body.


class _PrefixRoute(Route):
    """Every path under ``PREFIX``, whatever it holds: Starlette's ``{x:path}`` pattern stops at
    a newline, so an entry whose id has one could be added but never read or removed."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            return Match.FULL, {"endpoint": self.endpoint, "path_params": {}}
        return Match.NONE, {}


class Registry:
    """The handlers, over one store and one control state."""

    def __init__(self, store: Store, control: Control, clock: Callable[[], int] = now_ms) -> None:
        self.store = store
        self.control = control
        self.clock = clock
        # One writer at a time: read-modify-write sections never interleave across requests.
        self.write_lock = anyio.Lock()

    # --- routing -------------------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or quote(request.scope["path"]).encode()
        raw = raw.split(b"?", 1)[0]
        rest = raw[len(PREFIX) :]
        if not raw.startswith(PREFIX.encode()) or (rest and not rest.startswith(b"/")):
            raise HTTPException(404)
        parts = [unquote_to_bytes(p).decode("utf-8", "replace") for p in rest.split(b"/")[1:]]
        if parts in ([], [""]):
            routes = {
                "GET": ("list", self.list),
                "HEAD": ("list", self.list),
                "POST": ("add", self.add),
            }
            entry_id = None
        elif len(parts) == 1:
            routes = {
                "GET": ("get", self.get),
                "HEAD": ("get", self.get),
                "PATCH": ("update", self.update),
                "DELETE": ("remove", self.remove),
            }
            entry_id = parts[0]
        elif len(parts) == 2 and parts[1] == "health" and parts[0]:
            routes = {"POST": ("health", self.health)}
            entry_id = parts[0]
        else:
            raise HTTPException(404)
        method = request.method
        if method not in routes:
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(routes))})
        call, handler = routes[method]
        setattr(request.state, CALL_KEY, call)  # for the CallRecorder
        return await self.guarded(call, handler, request, entry_id)

    async def guarded(
        self, call: Call, handler: Callable[..., Any], request: Request, entry_id: str | None
    ) -> Response:
        """Apply the fault knobs around one API call."""
        faults = self.control.faults
        if faults.latency_ms:
            await anyio.sleep(faults.latency_ms / 1000)
        verdict = self.control.admit(call)
        if verdict == "rate_limit":
            return error(
                429,
                "rate_limit_error",
                "rate limited (injected fault)",
                headers={"Retry-After": str(faults.retry_after)},
            )
        if verdict == "fail":
            return error(503, "service_unavailable", "write refused (injected fault)")
        args = (request,) if entry_id is None else (request, entry_id)
        response: Response = await handler(*args)
        if verdict == "drop" and response.status_code < 400 and self.control.take_drop():
            log.warning("dropping the connection after a stored %s (injected fault)", call)
            return _DroppedResponse(
                response.body,
                response.status_code,
                media_type=None,
                headers={"content-type": "application/json"},
            )
        return response

    # --- the six calls -------------------------------------------------------------------------

    async def list(self, request: Request) -> Response:
        data = await to_thread.run_sync(self.store.list_json)
        return Response('{"object":"list","data":' + data + "}", media_type="application/json")

    async def get(self, request: Request, entry_id: str) -> Response:
        entry = await to_thread.run_sync(self.store.get, entry_id)
        if entry is None:
            return self._not_found(entry_id)
        return json_answer(entry)

    async def add(self, request: Request) -> Response:
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        try:
            definition = Definition.model_validate(_without_managed(body))
        except ValidationError as exc:
            return validation_error(exc)
        stored = _dump(definition)
        if self.control.options.add_defaults:
            stored = with_defaults(stored)
        async with self.write_lock:
            old = await to_thread.run_sync(self.store.get, definition.id)
            if old is not None and old.get("immutable"):
                return self._immutable(old, "added over")
            if old is not None and self.control.options.strict_add:
                return error(
                    409,
                    "conflict_error",
                    f"model '{printable(definition.id)}' already exists; update it instead",
                )
            now = self.clock()
            entry = make_entry(
                stored,
                created_at=old["created_at"] if old else now,
                updated_at=now,
                health=old["health"] if old else None,
            )
            await to_thread.run_sync(self.store.put, entry)
        return json_answer(entry)

    async def update(self, request: Request, entry_id: str) -> Response:
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        patch = _without_managed(body)
        if "id" in patch and patch.pop("id") != entry_id:
            return error(
                422,
                "validation_error",
                "id cannot be changed by update",
                details=[{"loc": "id", "msg": "id cannot be changed by update"}],
            )
        async with self.write_lock:
            old = await to_thread.run_sync(self.store.get, entry_id)
            if old is None:
                return self._not_found(entry_id)
            if old.get("immutable"):
                return self._immutable(old, "updated")
            # Keys this schema does not know are the server's own additions; they are re-added.
            merged = {k: v for k, v in old["definition"].items() if k in DEFINITION_KEYS}
            for key, value in patch.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            try:
                definition = Definition.model_validate(merged)
            except ValidationError as exc:
                return validation_error(exc, "the updated definition is invalid")
            stored = _dump(definition)
            extras = {k: v for k, v in old["definition"].items() if k not in DEFINITION_KEYS}
            stored = {**stored, **{k: v for k, v in extras.items() if k not in SERVER_MANAGED_KEYS}}
            if self.control.options.add_defaults:
                stored = with_defaults(stored)
            entry = make_entry(
                stored,
                created_at=old.get("created_at"),
                updated_at=self.clock(),
                health=old.get("health"),
            )
            await to_thread.run_sync(self.store.put, entry)
        return json_answer(entry)

    async def remove(self, request: Request, entry_id: str) -> Response:
        async with self.write_lock:
            old = await to_thread.run_sync(self.store.get, entry_id)
            if old is None:
                return self._not_found(entry_id)
            if old.get("immutable"):
                return self._immutable(old, "removed")
            await to_thread.run_sync(self.store.delete, entry_id)
        return json_answer({"deleted": True})

    async def health(self, request: Request, entry_id: str) -> Response:
        entry = await to_thread.run_sync(self.store.get, entry_id)
        if entry is None:
            return self._not_found(entry_id)
        outcome = await probe(entry["definition"])
        checked = self.clock()
        health = {
            "is_available": outcome.is_available,
            "last_health_check": checked,
            "error": outcome.error,
        }
        async with self.write_lock:
            # Re-read: the definition may have changed while the probe was out.
            current = await to_thread.run_sync(self.store.get, entry_id)
            if current is not None:
                current["health"] = health
                await to_thread.run_sync(self.store.put, current)
        return json_answer(
            {"is_available": outcome.is_available, "checked_at": checked, "error": outcome.error}
        )

    # --- control -------------------------------------------------------------------------------

    async def control_route(self, request: Request) -> Response:
        if request.method == "POST":
            body = await read_json(request)
            if isinstance(body, Response):
                return body
            try:
                self.control.update(body)
            except ValidationError as exc:
                details = [
                    {"loc": ".".join(map(str, e["loc"])), "msg": e["msg"]}
                    for e in exc.errors(include_url=False)
                ]
                return error(422, "validation_error", "invalid control settings", details=details)
            except ValueError as exc:
                return error(400, "invalid_request_error", str(exc))
            log.info("control: %s", dumps(self.control.state()["faults"]))
        return json_answer(self.control.state())

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _not_found(entry_id: str) -> Response:
        return error(404, "not_found_error", f"model '{printable(entry_id)}' not found")

    @staticmethod
    def _immutable(entry: Mapping[str, Any], verb: str) -> Response:
        return error(
            403,
            "permission_error",
            f"model '{printable(entry['id'])}' is {entry.get('source')}-sourced and immutable; "
            f"it cannot be {verb} through the API",
        )


def _dump(definition: Definition) -> dict[str, Any]:
    return definition.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)


def _without_managed(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in SERVER_MANAGED_KEYS}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not_found_error", 405: "method_not_allowed"}
    messages = {
        404: f"no route for {printable(request.url.path)}",
        405: f"{printable(request.method, 16)} not allowed here",
    }
    return error(
        exc.status_code,
        kinds.get(exc.status_code, "invalid_request_error"),
        messages.get(exc.status_code, exc.detail),
        headers=exc.headers,
    )


def create_app(
    store: Store,
    api_key: str,
    *,
    strict_add: bool = False,
    add_defaults: bool = False,
    faults: Faults | None = None,
    immutable: Iterable[Mapping[str, Any]] = (),
    record: str | os.PathLike[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    body_deadline: float = BODY_DEADLINE,
) -> Starlette:
    """The registry app over ``store``; ``immutable`` bodies replace any stored YAML entries.
    ``record`` (default ``$RECONCILER_RECORD_CALLS``) is a file every call is logged to. A
    request body over ``max_body_bytes`` answers 413; one slower than ``body_deadline`` s, 408."""
    if not api_key:
        raise ValueError("an API key is required")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    entries = []
    for body in immutable:
        body = dict(body)
        source = str(body.pop("source", None) or "yaml")
        body.pop("immutable", None)
        entries.append(make_entry(body, source=source, immutable=True))
    store.replace_immutable(entries)
    control = Control(
        faults=faults or Faults(),
        options=ServerOptions(strict_add=strict_add, add_defaults=add_defaults),
    )
    registry = Registry(store, control)
    app = Starlette(
        routes=[
            _PrefixRoute(PREFIX, registry.dispatch, methods=ALL_METHODS),
            Route(CONTROL_PATH, registry.control_route, methods=["GET", "POST"]),
        ],
        middleware=[
            Middleware(AccessLog),
            Middleware(BearerAuth, api_key=api_key),
            Middleware(BodyLimit, max_bytes=max_body_bytes, deadline=body_deadline),
            Middleware(CallRecorder, path=record_path(record)),
        ],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.store = store
    app.state.control = control
    app.state.registry = registry
    return app
