"""report.html: the report's Markdown as one self-contained web page. A sidebar links every section, every table
sorts on a header click and filters by a text box and by its problem, estimator, θ and N columns (a small inline
script), the main figures are interactive plotly figures (plotly.js inlined once), and the other PNGs are data:
URIs, so the page needs no network and no other file."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from ..run_folder import REPORT_HTML_SIGNATURE
from .markdown_html import Heading, to_html

_STYLE = """
:root { --sidebar: 270px; --ink: #1f2933; --muted: #616e7c; --rule: #d9e2ec; --accent: #2659a6; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
nav#sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: var(--sidebar); overflow-y: auto; padding: 1em;
  background: #f5f7fa; border-right: 1px solid var(--rule); font-size: 13.5px; }
nav#sidebar .title { font-weight: 700; font-size: 16px; margin-bottom: .5em; }
nav#sidebar ul { list-style: none; margin: 0; padding: 0; }
nav#sidebar ul ul { padding-left: 1em; font-size: 12.5px; }
nav#sidebar li { margin: .2em 0; }
nav#sidebar a { color: var(--ink); text-decoration: none; display: block; padding: .1em .3em; border-radius: 3px; }
nav#sidebar a:hover, nav#sidebar a.current { background: #dde7f5; color: var(--accent); }
main { margin-left: var(--sidebar); padding: 1em 2em 4em; max-width: 1500px; }
h1 { margin-top: .3em; } h2 { border-bottom: 2px solid var(--rule); padding-bottom: .2em; margin-top: 2em; }
section { scroll-margin-top: 1em; }
code { background: #f0f4f8; padding: 0 .25em; border-radius: 3px; font-size: 90%; }
pre code { display: block; padding: .6em; overflow-x: auto; }
blockquote { border-left: 4px solid #f0b429; background: #fffbea; margin: 1em 0; padding: .3em 1em; }
.table-wrap { overflow-x: auto; margin: .4em 0 1.2em; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid var(--rule); padding: .25em .5em; vertical-align: top; }
thead th { background: #f0f4f8; position: sticky; top: 0; cursor: pointer; user-select: none; white-space: nowrap; }
thead th[aria-sort="ascending"]::after { content: " ▲"; } thead th[aria-sort="descending"]::after { content: " ▼"; }
tbody tr:nth-child(even) { background: #fafbfc; } tbody tr:hover { background: #eef4fc; }
.table-filter { display: flex; flex-wrap: wrap; gap: .5em; align-items: center; font-size: 13px; color: var(--muted); }
.table-filter input, .table-filter select { font: inherit; padding: .15em .3em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
.plot { min-height: 420px; }
.missing { color: #b44d12; }
"""

# Sorting and filtering of every table; kept small and dependency-free. A column sorts as numbers when every
# non-empty cell starts with one (ignoring ×, = and emphasis), else as text.
_SCRIPT = r"""
(function () {
  "use strict";
  var FILTERED = ["problem", "estimator", "θ", "N", "scheme", "metric", "verdict"];
  function text(cell) { return cell ? cell.textContent.trim() : ""; }
  function number(value) {
    var m = value.replace(/^[×=~≈\s]+/, "").match(/^[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?/i);
    return m ? parseFloat(m[0]) : NaN;
  }
  function setUp(table, index) {
    var head = table.tHead && table.tHead.rows[0], body = table.tBodies[0];
    if (!head || !body) return;
    var rows = Array.prototype.slice.call(body.rows), headers = Array.prototype.slice.call(head.cells);
    headers.forEach(function (th, column) {
      th.title = "sort by this column";
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var values = rows.map(function (row) { return text(row.cells[column]); });
        var numeric = values.every(function (v) { return v === "" || v === "—" || !isNaN(number(v)); });
        var order = rows.map(function (row, i) { return i; }).sort(function (a, b) {
          var x = values[a], y = values[b];
          if ((x === "" || x === "—") !== (y === "" || y === "—")) return (x === "" || x === "—") ? 1 : -1;
          var c = numeric ? number(x) - number(y) : x.localeCompare(y, undefined, {numeric: true});
          return (ascending ? c : -c) || a - b;
        });
        order.forEach(function (i) { body.appendChild(rows[i]); });
      });
    });
    if (rows.length < 3) return;
    var bar = document.createElement("div"), box = document.createElement("input"), count = document.createElement("span");
    bar.className = "table-filter";
    box.type = "search"; box.placeholder = "filter rows…"; box.setAttribute("aria-label", "filter rows of table " + (index + 1));
    bar.appendChild(box);
    var selects = [];
    headers.forEach(function (th, column) {
      var name = text(th);
      if (FILTERED.indexOf(name) < 0) return;
      var seen = [];
      rows.forEach(function (row) { var v = text(row.cells[column]); if (seen.indexOf(v) < 0) seen.push(v); });
      if (seen.length < 2) return;
      seen.sort(function (a, b) { return a.localeCompare(b, undefined, {numeric: true}); });
      var select = document.createElement("select");
      select.setAttribute("aria-label", name);
      select.appendChild(new Option(name + ": all", ""));
      seen.forEach(function (v) { select.appendChild(new Option(v, v)); });
      bar.appendChild(select);
      selects.push([column, select]);
    });
    bar.appendChild(count);
    function apply() {
      var needle = box.value.toLowerCase(), shown = 0;
      rows.forEach(function (row) {
        var keep = !needle || row.textContent.toLowerCase().indexOf(needle) >= 0;
        selects.forEach(function (pair) { if (pair[1].value && text(row.cells[pair[0]]) !== pair[1].value) keep = false; });
        row.hidden = !keep; shown += keep ? 1 : 0;
      });
      count.textContent = shown + " of " + rows.length + " rows";
    }
    box.addEventListener("input", apply);
    selects.forEach(function (pair) { pair[1].addEventListener("change", apply); });
    apply();
    var anchor = table.parentNode.classList.contains("table-wrap") ? table.parentNode : table;
    anchor.parentNode.insertBefore(bar, anchor);
  }
  Array.prototype.forEach.call(document.querySelectorAll("main table"), setUp);
  // The sidebar marks the section in view.
  var links = {};
  Array.prototype.forEach.call(document.querySelectorAll("nav#sidebar a"), function (a) { links[a.getAttribute("href").slice(1)] = a; });
  if ("IntersectionObserver" in window) {
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        var link = links[entry.target.id];
        if (link && entry.isIntersecting) {
          Array.prototype.forEach.call(document.querySelectorAll("nav#sidebar a.current"), function (a) { a.classList.remove("current"); });
          link.classList.add("current");
        }
      });
    }, {rootMargin: "0px 0px -70% 0px"});
    Array.prototype.forEach.call(document.querySelectorAll("main section"), function (s) { observer.observe(s); });
  }
})();
"""

_PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}


def _script_json(value: str) -> str:
    """JSON placed inside <script>: '</' could end the element early (a name with '</script>' in it)."""
    return value.replace("</", "<\\/")


def plot_html(figure: go.Figure, element_id: str) -> str:
    """A plotly figure as a <div> and the script that draws it (plotly.js is loaded once, in the page's head)."""
    spec = _script_json(pio.to_json(figure, validate=False))
    return (f'<div id="{element_id}" class="plot"></div>\n<script>(function () {{ var spec = {spec}; '
            f'Plotly.newPlot("{element_id}", spec.data, spec.layout, {json.dumps(_PLOT_CONFIG)}); }})();</script>')


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _sidebar(headings: list[Heading]) -> str:
    """One entry per ``##`` section, its ``###`` subsections nested below it."""
    entries: list[tuple[Heading, list[Heading]]] = []
    for heading in headings:
        if heading.level == 2:
            entries.append((heading, []))
        elif heading.level == 3 and entries:
            entries[-1][1].append(heading)

    def link(heading: Heading) -> str:
        return f'<a href="#{heading.anchor}">{html.escape(heading.text)}</a>'

    items = []
    for section, subsections in entries:
        nested = "<ul>" + "".join(f"<li>{link(h)}</li>" for h in subsections) + "</ul>" if subsections else ""
        items.append(f"<li>{link(section)}{nested}</li>")
    return "<ul>\n" + "\n".join(items) + "\n</ul>"


def render_page(markdown: str, folder: Path, figures: dict[str, go.Figure]) -> str:
    """The page of ``markdown`` (report.md's text). An image line whose file name is a key of ``figures`` becomes
    that interactive figure; any other image is read from ``folder`` and embedded."""
    drawn: list[str] = []

    def figure(src: str, alt: str) -> str:
        if src in figures:
            drawn.append(src)
            return plot_html(figures[src], f"plot-{len(drawn)}")
        path = folder / src
        if Path(src).name != src or path.suffix.lower() != ".png" or not path.is_file():
            return f'<span class="missing">figure {html.escape(src)} is not in the report folder</span>'
        return f'<img src="{png_data_uri(path)}" alt="{html.escape(alt or path.stem)}" loading="lazy">'

    body, headings = to_html(markdown, figure)
    title = next((h.text for h in headings if h.level == 1), "varbench report")
    return "\n".join([
        "<!DOCTYPE html>",
        REPORT_HTML_SIGNATURE,
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{get_plotlyjs()}</script>" if drawn else "",
        "</head>",
        "<body>",
        f'<nav id="sidebar" aria-label="sections"><div class="title">{html.escape(title)}</div>\n{_sidebar(headings)}\n</nav>',
        f"<main>\n{body}\n</main>",
        f"<script>{_SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ])
