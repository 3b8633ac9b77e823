"""The status page on ``/``: rendered on the server from the ``/status`` document (it reads
without script), then kept fresh by its script, which renders the same from ``/status`` every
2 s; a section per environment. Everything shown is escaped: ids and paths come from files."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any


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
