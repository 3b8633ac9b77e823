"""The operator endpoints on ``--listen``: /healthz, /readyz, /metrics, /status and a status page.

With environments, /status holds the fleet's readiness and one document per environment, the
page one section each, and /readyz answers for all of them (/readyz/NAME for one).

Nothing here can show a secret: the status holds ids, file names, states, times and messages,
never a definition, and the registry URL is shown without any user-info part.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
from datetime import datetime
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
            first[rel] = str(dataclasses.replace(problems[0], path=rel))
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


# --- the status page --------------------------------------------------------------------------


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _when(iso: str | None, now: str) -> str:
    """A ``<time>`` in UTC, zone named; the page's script shows it in the viewer's zone."""
    if iso is None:
        return "never"
    ago = max(0.0, _seconds(now) - _seconds(iso))
    clock = f'<time datetime="{iso}">{iso[11:19]} UTC</time>'
    if ago < 120:
        return f"{clock} ({ago:.0f}s ago)"
    return f"{clock} ({ago / 60:.0f}m ago)"


def _health(model: dict[str, Any]) -> tuple[str, str]:
    state = model["health"]["state"]
    return state, state


def render_rows(doc: dict[str, Any]) -> str:
    """The table body: one row per model (also rebuilt by the page's script every 2 s)."""
    now = doc["now"]
    rows = []
    for m in doc["models"]:
        health, cls = _health(m)
        error = m["last_error"] or m["health"]["error"] or ""
        rows.append(
            f'<tr class="model" data-id="{html.escape(m["id"])}">'
            f"<td>{html.escape(m['id'])}</td>"
            f"<td>{html.escape(m['file'] or '')}</td>"
            f'<td><span class="state {m["state"]}">{m["state"]}</span></td>'
            f'<td><span class="health {cls}">{health}</span></td>'
            f"<td>{_when(m['last_applied'], now)}</td>"
            f"<td>{_when(m['health']['checked_at'], now)}</td>"
            f'<td class="error">{html.escape(error)}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="7" class="empty">no models yet</td></tr>')
    return "\n".join(rows)


def render_invalid(doc: dict[str, Any]) -> str:
    """One line per file that failed to load."""
    return "".join(f"<li>{html.escape(f['error'])}</li>" for f in doc["invalid_files"])


def render_summary(doc: dict[str, Any]) -> str:
    """The line above the table: readiness, registry, last sync."""
    ready = "ready" if doc["ready"] else f"not ready: {doc['reason'] or ''}"
    registry = "up" if doc["registry"]["up"] else "down"
    parts = [
        f'<span class="{"ok" if doc["ready"] else "bad"}">{html.escape(ready)}</span>',
        *(['<span class="bad">dry run: nothing is written</span>'] if doc.get("dry_run") else []),
        f"registry {html.escape(doc['registry']['url'])} {registry}",
        f"last sync {_when(doc['last_sync'], doc['now'])}",
        f"{_counts(doc)}, {doc['files']} files",
    ]
    if doc["invalid_files"]:
        parts.append(f'<span class="bad">{len(doc["invalid_files"])} invalid file(s)</span>')
    if doc["directory_error"]:
        parts.append(f'<span class="bad">{html.escape(doc["directory_error"])}</span>')
    return " · ".join(parts)


def _counts(doc: dict[str, Any]) -> str:
    counts = doc.get("counts") or {"models": len(doc["models"])}
    states = ", ".join(f"{n} {state}" for state, n in counts.items() if state != "models")
    return f"{counts['models']} models" + (f" ({states})" if states else "")


def render_more(doc: dict[str, Any]) -> str:
    """Under the table: which rows it shows when it does not show every model."""
    listed = doc.get("listed") or {}
    if listed.get("models") == "problems":
        text = f"{len(doc['models'])} of {listed['matched']} models that need attention shown"
        return html.escape(text + "; every model: status?models=all")
    if listed.get("next_offset") is not None:
        return html.escape(f"{len(doc['models'])} of {listed['matched']} models shown")
    return ""


def render_section(doc: dict[str, Any], name: str | None = None) -> str:
    """One registry's part of the page: a heading (with environments), its summary, its
    models and its invalid files."""
    heading = f"<h2>{html.escape(name)}</h2>\n" if name is not None else ""
    return (
        _SECTION.replace("{{HEADING}}", heading)
        .replace("{{SUMMARY}}", render_summary(doc))
        .replace("{{ROWS}}", render_rows(doc))
        .replace("{{INVALID}}", render_invalid(doc))
        .replace("{{MORE}}", render_more(doc))
    )


def render_page(doc: dict[str, Any]) -> str:
    """The whole page, rendered on the server so it reads without script; the script keeps
    it fresh by re-rendering from /status. With environments: the fleet's readiness, then a
    section per environment."""
    envs = doc.get("environments")
    if envs is None:
        return _PAGE.replace("{{OVERALL}}", "").replace("{{SECTIONS}}", render_section(doc))
    ready = "ready" if doc["ready"] else f"not ready: {doc['reason'] or ''}"
    overall = f'<span class="{"ok" if doc["ready"] else "bad"}">{html.escape(ready)}</span>'
    sections = "\n".join(render_section(e, e["name"]) for e in envs)
    return _PAGE.replace("{{OVERALL}}", overall).replace("{{SECTIONS}}", sections)


_SECTION = """<section class="registry">
{{HEADING}}<div class="summary">{{SUMMARY}}</div>
<table><thead><tr><th>model</th><th>file</th><th>state</th><th>health</th>
<th>last applied</th><th>last check</th><th>last error</th></tr></thead>
<tbody class="rows">
{{ROWS}}
</tbody></table>
<div class="more">{{MORE}}</div>
<ul class="invalid bad">{{INVALID}}</ul>
</section>"""


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>reconciler status</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.2rem; margin: 0 0 .5rem; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .3rem; }
.summary, #overall { margin-bottom: 1rem; color: #444; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.error { color: #a00; max-width: 40rem; word-break: break-word; }
.state, .health { padding: .1rem .4rem; border-radius: .3rem; font-size: 12px; }
.synced, .up { background: #d9f2dd; } .pending { background: #fff3c4; }
.error, .invalid, .down { color: #a00; } .state.error, .state.invalid, .health.down
{ background: #f9d6d6; } .immutable, .orphan, .unknown { background: #e6e6f2; }
.ok { color: #070; } .bad { color: #a00; } .out-of-sync { background: #fde2c4; }
#zone { color: #666; font-size: 12px; }
</style></head>
<body>
<h1>reconciler</h1>
<div id="zone">times in UTC</div>
<div id="overall">{{OVERALL}}</div>
<div id="sections">
{{SECTIONS}}
</div>
<script>
const esc = s => String(s ?? "").replace(/[&<>"']/g,
  c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
// Every time is ISO 8601 UTC in /status; shown here in the viewer's zone, the zone named.
const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;
const CLOCK = {hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
               timeZoneName: "short"};
const local = iso => new Date(iso).toLocaleTimeString([], CLOCK);
function when(iso, now) {
  if (iso == null) return "never";
  const ago = Math.max(0, (Date.parse(now) - Date.parse(iso)) / 1000);
  const t = `<time datetime="${esc(iso)}">${esc(local(iso))}</time>`;
  return ago < 120 ? `${t} (${Math.round(ago)}s ago)` : `${t} (${Math.round(ago / 60)}m ago)`;
}
function localize() {
  for (const t of document.querySelectorAll("time[datetime]")) t.textContent = local(t.dateTime);
  document.getElementById("zone").textContent = `times in ${ZONE}`;
}
function counts(doc) {
  const c = doc.counts;
  const states = Object.keys(c).filter(k => k !== "models").map(k => `${c[k]} ${esc(k)}`);
  return `${c.models} models` + (states.length ? ` (${states.join(", ")})` : "");
}
function section(sec, doc) {
  const rows = doc.models.map(m => {
    const h = esc(m.health.state);
    return `<tr class="model" data-id="${esc(m.id)}"><td>${esc(m.id)}</td>` +
      `<td>${esc(m.file)}</td><td><span class="state ${esc(m.state)}">${esc(m.state)}</span></td>` +
      `<td><span class="health ${h}">${h}</span></td><td>${when(m.last_applied, doc.now)}</td>` +
      `<td>${when(m.health.checked_at, doc.now)}</td>` +
      `<td class="error">${esc(m.last_error || m.health.error)}</td></tr>`;
  });
  sec.querySelector(".rows").innerHTML =
    rows.join("\\n") || '<tr><td colspan="7" class="empty">no models yet</td></tr>';
  const s = [doc.ready ? '<span class="ok">ready</span>'
                       : `<span class="bad">not ready: ${esc(doc.reason)}</span>`,
    ...(doc.dry_run ? ['<span class="bad">dry run: nothing is written</span>'] : []),
    `registry ${esc(doc.registry.url)} ${doc.registry.up ? "up" : "down"}`,
    `last sync ${when(doc.last_sync, doc.now)}`,
    `${counts(doc)}, ${doc.files} files`];
  if (doc.invalid_files.length)
    s.push(`<span class="bad">${doc.invalid_files.length} invalid file(s)</span>`);
  if (doc.directory_error) s.push(`<span class="bad">${esc(doc.directory_error)}</span>`);
  sec.querySelector(".summary").innerHTML = s.join(" · ");
  const l = doc.listed;
  sec.querySelector(".more").textContent = l.models === "problems"
    ? `${doc.models.length} of ${l.matched} models that need attention shown; ` +
      "every model: status?models=all"
    : l.next_offset != null ? `${doc.models.length} of ${l.matched} models shown` : "";
  sec.querySelector(".invalid").innerHTML =
    doc.invalid_files.map(f => `<li>${esc(f.error)}</li>`).join("");
}
// One section per environment (in /status's order), or the one registry's.
function render(doc) {
  const sections = document.querySelectorAll("section.registry");
  (doc.environments || [doc]).forEach((env, i) => sections[i] && section(sections[i], env));
  if (doc.environments)
    document.getElementById("overall").innerHTML = doc.ready ? '<span class="ok">ready</span>'
      : `<span class="bad">not ready: ${esc(doc.reason)}</span>`;
}
async function refresh() {
  try {
    const r = await fetch("status", {cache: "no-store"});
    if (r.ok) render(await r.json());
  } catch (e) {
    document.getElementById("overall").innerHTML =
      '<span class="bad">the daemon does not answer</span>';
  }
}
localize();
setInterval(refresh, 2000);
</script>
</body></html>
"""
