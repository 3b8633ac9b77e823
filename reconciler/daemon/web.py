"""The operator endpoints on ``--listen``: /healthz, /readyz, /metrics, /status and a status page.

With environments, /status holds the fleet's readiness and one document per environment, the
page one section each, and /readyz answers for all of them (/readyz/NAME for one).

Nothing here can show a secret: the status holds ids, file names, states, times and messages,
never a definition, and the registry URL is shown without any user-info part.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..text import json_text
from .core import Daemon
from .fleet import Fleet
from .page import render_page
from .state import ModelStatus, State, iso_or_none


def public_url(url: str) -> str:
    """The registry URL without ``user:password@``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def invalid_files(daemon: Daemon) -> list[dict[str, str]]:
    """Each file that failed to load, with its first problem (paths relative to the directory)."""
    files = daemon.model_files
    first: dict[str, str] = {}
    for path in files.failed:
        problems = files.problems(path)
        if problems:
            rel = os.path.relpath(path, daemon.root)
            first[rel] = str(problems[0]._replace(path=rel))
    for p in daemon.overlay.errors:  # an environment's overlay files, named as configured
        first.setdefault(p.path, str(p))
    return [{"file": f, "error": e} for f, e in sorted(first.items())]


LIST_LIMIT = 200  # rows in one /status answer by default: 10,000 rows are 1.75 MB every 2 s


class BadQuery(ValueError):
    """A /status query parameter that makes no sense (answered 400)."""


@dataclasses.dataclass(frozen=True)
class Query:
    """Which models /status lists: ``models`` all, problems, or auto (all up to the limit, else
    the problems), ``id`` and ``state`` filters, ``limit`` and ``offset``."""

    models: str = "auto"
    ids: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0

    @classmethod
    def parse(cls, params: Any) -> Query:
        """From the query string (a Starlette ``QueryParams``); :class:`BadQuery` if wrong."""
        models = params.get("models", "auto")
        if models not in ("auto", "all", "problems"):
            raise BadQuery("models: expected all, problems or auto")
        states = tuple(params.getlist("state"))
        known = {s.value for s in State}
        if any(x not in known for x in states):
            raise BadQuery(f"state: expected one of {', '.join(sorted(known))}")
        ids = tuple(params.getlist("id"))
        return cls(models, ids, states, _count(params, "limit"), _count(params, "offset") or 0)


def _count(params: Any, name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not text.isdigit():
        raise BadQuery(f"{name}: expected a whole number")
    return int(text)


def needs_attention(m: ModelStatus) -> bool:
    """Not in step with its file, or its endpoint down: what an operator looks at first."""
    return m.state is not State.SYNCED or m.available is False


def select_models(daemon: Daemon, query: Query) -> tuple[list[ModelStatus], int, str]:
    """The rows one answer lists (sorted by id), how many matched in all, and which rows they
    are (``all`` or ``problems``)."""
    models = daemon.models
    shown = query.models
    if shown == "auto":
        shown = "all" if len(models) <= LIST_LIMIT or query.ids or query.states else "problems"
    if query.ids:
        picked = [models[i] for i in dict.fromkeys(query.ids) if i in models]
    else:
        picked = list(models.values())
    if shown == "problems":
        picked = [m for m in picked if needs_attention(m)]
    if query.states:
        picked = [m for m in picked if m.state.value in query.states]
    picked.sort(key=lambda m: m.id)
    limit = query.limit
    if limit is None and query.models != "all":
        limit = LIST_LIMIT
    end = None if limit is None else query.offset + limit
    return picked[query.offset : end], len(picked), shown


def status_document(daemon: Daemon, query: Query | None = None) -> dict[str, Any]:
    """The /status JSON: the daemon as a whole, counts by state, then the rows ``query``
    picks (every model up to 200, else those that need attention), sorted by id."""
    query = query or Query()
    rows, matched, shown = select_models(daemon, query)
    counts: dict[str, int] = {}
    health: dict[str, int] = {"up": 0, "down": 0, "unknown": 0}
    for m in daemon.models.values():
        counts[m.state.value] = counts.get(m.state.value, 0) + 1
        health[m.health] += 1
    run = daemon.last_run
    return {
        "ready": daemon.readiness.ready,
        "reason": daemon.readiness.why_not,
        "dry_run": daemon.options.dry_run,
        "registry": {
            "url": public_url(daemon.client.base_url),
            "up": daemon.readiness.registry_up,
        },
        "directory": str(daemon.root),
        "directory_error": daemon.dir_error,
        "files": len(daemon.model_files),
        "invalid_files": invalid_files(daemon),
        "last_sync": iso_or_none(daemon.last_sync),
        "last_run": {
            "kind": run.kind or None,
            "at": iso_or_none(run.at),
            "seconds": run.seconds,
            "ok": run.ok,
            "summary": run.summary,
            "error": run.error,
        },
        "started": iso_or_none(daemon.started),
        "now": iso_or_none(daemon.clock.time()),
        "counts": {"models": len(daemon.models), **dict(sorted(counts.items()))},
        "health": health,
        "listed": {
            "models": shown,
            "matched": matched,
            "offset": query.offset,
            "next_offset": query.offset + len(rows) if query.offset + len(rows) < matched else None,
        },
        "models": [m.as_json() for m in rows],
    }


def fleet_document(fleet: Fleet, query: Query | None = None) -> dict[str, Any]:
    """/status: the one daemon's document; with environments, the fleet's readiness (ready when
    every environment is) and each environment's document, in the order selected."""
    if not fleet.environments:
        return status_document(fleet.daemons[0], query)
    first = fleet.daemons[0]
    return {
        "ready": fleet.ready,
        "reason": fleet.why_not,
        "directory": str(first.root),
        "files": len(first.model_files),
        "started": iso_or_none(first.started),
        "now": iso_or_none(first.clock.time()),
        "environments": [
            {"name": m.name, **status_document(m.daemon, query)} for m in fleet.members
        ],
    }


class StatusResponse(JSONResponse):
    """JSON with every unprintable character escaped: ids and paths may hold ESC or C1 bytes."""

    def render(self, content: Any) -> bytes:
        return json_text(json.dumps(content, ensure_ascii=False)).encode("utf-8")


def create_app(daemon: Daemon | Fleet) -> Starlette:
    """The Starlette app serving the daemon's (or every environment's) state."""
    fleet = Fleet.of(daemon) if isinstance(daemon, Daemon) else daemon

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        if fleet.ready:
            return PlainTextResponse("ready\n")
        one = fleet.daemons[0].readiness.reason  # without environments: as it always said
        reason = fleet.why_not if fleet.environments else one
        return PlainTextResponse(f"not ready: {reason}\n", status_code=503)

    async def ready_env(request: Request) -> Response:
        name = request.path_params["name"]
        member = next((m for m in fleet.members if fleet.environments and m.name == name), None)
        if member is None:
            return PlainTextResponse("no such environment\n", status_code=404)
        if member.daemon.readiness.ready:
            return PlainTextResponse("ready\n")
        why = member.daemon.readiness.why_not
        return PlainTextResponse(f"not ready: {why}\n", status_code=503)

    async def status(request: Request) -> Response:
        try:
            query = Query.parse(request.query_params)
        except BadQuery as exc:
            return PlainTextResponse(f"bad query: {exc}\n", status_code=400)
        return StatusResponse(fleet_document(fleet, query))

    async def page(_: Request) -> Response:
        return HTMLResponse(render_page(fleet_document(fleet)))

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/readyz/{name}", ready_env, methods=["GET", "HEAD"]),
            Route("/metrics", _Asgi(fleet.daemons[0].metrics.asgi_app()), methods=["GET"]),
            Route("/status", status, methods=["GET"]),
            Route("/", page, methods=["GET"]),
        ]
    )


class _Asgi:
    """An ASGI app as a route's endpoint (a plain function would be taken for a handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
