"""report.html: the report's sections as one self-contained web page, with the Markdown's verdicts; checked as text
here and in a real headless Chromium (driven by Playwright) where one is installed."""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench import cli, report
from bench.report import page
from bench.report.markdown_html import plain_text, split_row, to_html
from bench.table import TABLE_NAME

SMALL = ["run", "--problem", "seed_dependent", "--theta", "0,3", "--n", "10,100", "--replicates", "200",
         "--estimator", "pathwise,score_function,naive", "--no-progress"]  # fmt: skip
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "run"
    assert cli.main([*SMALL, "--out", str(out)]) == 0
    return out


class _Page(HTMLParser):
    """Every tag's attributes, the text of every table (rows of cell texts), and the ids present."""

    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self.ids: set[str] = set()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.attributes.append((tag, attrs))
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> _Page:
    parsed = _Page()
    parsed.feed(text)
    return parsed


def markdown_tables(markdown: str) -> list[list[list[str]]]:
    """The tables of a Markdown text as a reader sees their cells (markers removed)."""
    tables, current = [], None
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
                current.append([plain_text(cell) for cell in split_row(line)])
        else:
            current = None
    return tables


# ---------------------------------------------------------------------------------------------------------
# The page as text


def test_the_page_is_self_contained(small_run):
    text = (small_run / "report.html").read_text()
    parsed = parse(text)
    outside = [(tag, name, value) for tag, attrs in parsed.attributes for name, value in attrs.items()
               if name in ("src", "href", "srcset", "action", "data") and value
               and re.match(r"^\s*(https?:|//|ftp:|file:)", value, re.I)]  # fmt: skip
    assert not outside
    images = [attrs["src"] for tag, attrs in parsed.attributes if tag == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert not [attrs for tag, attrs in parsed.attributes if tag in ("link", "iframe") or (tag == "script" and "src" in attrs)]
    # plotly.js once, whatever the number of figures; each figure is drawn by its own small script.
    assert text.count(page.get_plotlyjs()[:200]) == 1
    figures = [attrs["id"] for tag, attrs in parsed.attributes if tag == "div" and attrs.get("class") == "plot"]
    assert len(figures) >= 2 and text.count("Plotly.newPlot(") == len(figures)
    assert len(text) < page.get_plotlyjs().__len__() + 2_000_000  # the bundle once plus a small report's figures


def test_the_page_has_every_section_and_the_same_verdicts_as_the_markdown(small_run):
    markdown = (small_run / "report.md").read_text()
    parsed = parse((small_run / "report.html").read_text())
    _, headings = to_html(markdown)
    sections = [h for h in headings if h.level == 2]
    assert len(sections) >= 4
    links = {attrs["href"] for tag, attrs in parsed.attributes if tag == "a" and "href" in attrs}
    for heading in sections:
        assert heading.anchor in parsed.ids and f"#{heading.anchor}" in links, heading.text
    # Every table of report.md, cell for cell, in the page (and in the same order), verdicts included.
    md_tables = markdown_tables(markdown)
    assert len(md_tables) >= 3
    assert parsed.tables[: len(md_tables)] == md_tables
    choice = next(t for t in md_tables if t[0][0] == "problem" and "not recommended" in t[0])
    assert any("pathwise" in cell for row in choice[1:] for cell in row)
    ranking = [t for t in md_tables if t[0][:2] == ["rank", "estimator"]]
    assert any(row[4].startswith("BIASED") for t in ranking for row in t[1:] if row[1] == "naive")
    # The page's own table of every cell carries the same verdict for each cell as the ranking tables.
    cells = parsed.tables[len(md_tables)]
    assert cells[0][:4] == ["problem", "θ", "N", "estimator"] and len(cells) - 1 == 2 * 2 * 3
    largest = {(row[1], row[3]): row[6] for row in cells[1:] if row[2] == "100"}
    for theta, table in zip(("0", "3"), ranking):  # a ranking table per θ, at the largest N
        for row in table[1:]:
            assert largest[(theta, row[1])] == row[4]


def test_a_registered_section_is_in_the_page_and_its_sidebar(small_run, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(small_run / TABLE_NAME, folder / TABLE_NAME)
    report.SECTIONS.register("mine", report.Section(25, lambda c: ["## My section", "", "Some *text* <b>here</b>.", ""]))
    try:
        report.write_report(folder)
    finally:
        report.SECTIONS.unregister("mine")
    text = (folder / "report.html").read_text()
    assert '<section id="my-section">' in text and '<a href="#my-section">My section</a>' in text
    assert "Some <em>text</em> &lt;b&gt;here&lt;/b&gt;." in text  # Markdown rendered, HTML in it escaped


def test_an_interrupted_render_leaves_both_reports_as_they_were(small_run, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in (TABLE_NAME, "report.md", "report.html"):
        shutil.copy(small_run / name, folder / name)
    before = {name: (folder / name).read_bytes() for name in ("report.md", "report.html")}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(page, "render_page", interrupted)
    assert cli.main(["report", str(folder)]) == 130
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_report_html_varbench_did_not_write_is_not_replaced(small_run, tmp_path, capsys):
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(small_run / TABLE_NAME, folder / TABLE_NAME)
    (folder / "report.html").write_text("<!DOCTYPE html>\n<p>my notes</p>\n")
    for args in (["report", str(folder)], [*SMALL, "--out", str(folder)]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert "report.html was not written by varbench" in err
    assert (folder / "report.html").read_text() == "<!DOCTYPE html>\n<p>my notes</p>\n"
    assert not (folder / "report.md").exists()


# ---------------------------------------------------------------------------------------------------------
# The Markdown subset


def test_markdown_subset():
    body, headings = to_html(
        "# Title\n\nA *word*, **bold**, `a*b*c <x>` and [a link](#here).\n\n## Part one\n\n- item one\n"
        "  continued\n- item `two`\n\n| a | b |\n|---|---:|\n| 1 \\| 2 | **x** |\n\n> **Note:** p < 1 & q\n\n"
        "![](missing.png)\n\n### Sub\n\ntext\nmore text\n"
    )
    assert [(h.level, h.text, h.anchor) for h in headings] == [(1, "Title", "title"), (2, "Part one", "part-one"),
                                                                (3, "Sub", "sub")]  # fmt: skip
    assert "<p>A <em>word</em>, <strong>bold</strong>, <code>a*b*c &lt;x&gt;</code> and <a href=\"#here\">a link</a>.</p>" in body
    assert "<li>item one<br>continued</li>" in body and "<li>item <code>two</code></li>" in body
    assert '<th style="text-align:right">b</th>' in body and "<td>1 | 2</td>" in body
    assert '<td style="text-align:right"><strong>x</strong></td>' in body
    assert "<blockquote><p><strong>Note:</strong> p &lt; 1 &amp; q</p></blockquote>" in body
    assert '<figure><img src="missing.png" alt=""></figure>' in body and "<p>text more text</p>" in body
    assert body.count("<section") == body.count("</section>") == 1


# ---------------------------------------------------------------------------------------------------------
# In a real browser


def _chromium() -> str | None:
    for candidate in (os.environ.get("VARBENCH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):  # fmt: skip
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                   "(`make test-browser` installs it)")  # fmt: skip
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium at $VARBENCH_CHROMIUM, /usr/bin/chromium or on PATH (`make test-browser` installs "
                    "Debian's chromium)")  # fmt: skip
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


@pytest.mark.integration
@pytest.mark.browser
def test_the_page_works_in_headless_chromium(browser_page, small_run):  # no run when the browser is skipped
    page_ = browser_page
    problems: list[str] = []
    requests: list[str] = []
    page_.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page_.on("pageerror", lambda error: problems.append(str(error)))
    page_.on("request", lambda request: requests.append(request.url))
    page_.goto((small_run / "report.html").as_uri())
    page_.wait_for_selector("#plot-1 .main-svg", timeout=10000)
    assert not problems  # no error on the console while loading
    # Only the file itself is loaded: no network, no other file.
    assert [url for url in requests if not url.startswith("data:")] == [(small_run / "report.html").as_uri()]

    # The verdict table, with the verdicts of report.md.
    choice = page_.locator("#which-estimator-to-choose table")
    assert choice.count() == 1
    markdown = (small_run / "report.md").read_text()
    for row in choice.locator("tbody tr").all():
        cells = [c.inner_text().strip() for c in row.locator("td").all()]
        assert "| " + " | ".join(cells) + " |" in markdown.replace("**", "")

    # A plot drawn, with one legend entry per estimator; hovering a point shows its numbers.
    traces = page_.evaluate("document.getElementById('plot-1').data.map(t => [t.name, t.legendgroup, t.visible])")
    assert {name for name, _, _ in traces} >= {"pathwise", "score_function", "naive (biased)"}
    # Hover the point farthest from every other trace's point (nearby points of other estimators would win).
    box = page_.evaluate("""() => {
        const gd = document.getElementById('plot-1');
        gd.scrollIntoView();
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.querySelector('.main-svg').getBoundingClientRect();
        const points = [];
        gd.calcdata.forEach((trace, i) => {
            if (gd.data[i].xaxis && gd.data[i].xaxis !== 'x') return;
            trace.forEach(p => points.push([i, xa._offset + xa.c2p(p.x), ya._offset + ya.c2p(p.y), p.x]));
        });
        let best = null, bestGap = -1;
        for (const [i, x, y, n] of points) {
            if (gd.data[i].mode !== 'lines+markers') continue;
            const gap = Math.min(...points.filter(q => q[0] !== i).map(q => Math.hypot(q[1] - x, q[2] - y)));
            if (gap > bestGap) { bestGap = gap; best = [r.left + x, r.top + y, gd.data[i].customdata[0][0], n]; }
        }
        return best;
    }""")
    page_.mouse.move(box[0], box[1])
    page_.wait_for_selector("#plot-1 .hoverlayer .hovertext", timeout=5000)
    hover = page_.locator("#plot-1 .hoverlayer .hovertext").first.text_content()
    assert hover.startswith(box[2]) and f"N = {box[3]}" in hover and "variance = " in hover and "95% CI [" in hover

    # Clicking an estimator's legend entry hides all its traces (every θ panel), and only those.
    name = traces[0][1]
    page_.locator("#plot-1 .legend .traces").nth(0).click()
    page_.wait_for_function("document.getElementById('plot-1').data[0].visible === 'legendonly'", timeout=5000)
    after = page_.evaluate("document.getElementById('plot-1').data.map(t => [t.legendgroup, t.visible])")
    assert all((visible == "legendonly") == (group == name) for group, visible in after)
    assert sum(group == name for group, _ in after) >= 2

    # The table of every cell sorts on a header click and filters by estimator.
    cells = page_.locator("#all-measured-cells table")
    variance_column = 7
    cells.locator("thead th").nth(variance_column).click()
    values = page_.evaluate(f"""Array.from(document.querySelectorAll('#all-measured-cells tbody tr'))
        .map(r => parseFloat(r.cells[{variance_column}].textContent))""")  # fmt: skip
    assert values == sorted(values) and len(values) == 12
    page_.locator("#all-measured-cells select[aria-label='estimator']").select_option("pathwise")
    shown = page_.evaluate("""Array.from(document.querySelectorAll('#all-measured-cells tbody tr'))
        .filter(r => !r.hidden).map(r => r.cells[3].textContent)""")  # fmt: skip
    assert shown == ["pathwise"] * 4
    assert not problems
