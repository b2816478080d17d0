"""The built HTML book is self-contained: every page loads with no failed request, no request
outside the book, no JavaScript error and no broken image (headless Debian chromium)."""
import functools
import http.server
import socketserver
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, REPO

HTML = REPO / "_build" / "html"
pytestmark = [pytest.mark.slow, pytest.mark.browser]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.skip("no built book: run `make book` first (`make test` does)")
    handler = functools.partial(_Quiet, directory=str(HTML))
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def pages():
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                  if not p.relative_to(HTML).as_posix().startswith(("_static/", "_sources/", "reports/")))


def test_every_chapter_was_built():
    if not HTML.exists():
        pytest.skip("no built book")
    built = set(pages())
    toc = (REPO / "_toc.yml").read_text()
    chapters = [line.split("file:")[1].strip() for line in toc.splitlines() if "file:" in line]
    chapters.append(toc.split("root:")[1].split()[0])
    assert len(chapters) >= 8
    for chapter in (f"{c}.html" for c in chapters):
        assert chapter in built, f"{chapter} missing from the built book"


def test_every_page_is_self_contained(server, browser, artifacts):
    problems = []
    for page_path in pages():
        page = browser.new_page()
        outside, failed, errors = [], [], []
        page.on("request", lambda r: outside.append(r.url)
                if urlparse(r.url).scheme in ("http", "https", "ws", "wss")
                and urlparse(r.url).hostname != "127.0.0.1" else None)
        page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
        page.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server}/{page_path}", wait_until="networkidle")
        broken = page.evaluate("""() => [...document.images]
            .filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src.slice(0, 80))""")
        if page_path.endswith("architecture.html"):
            page.screenshot(path=str(artifacts / "architecture.png"), full_page=False)
        for kind, items in (("outside request", outside), ("failed request", failed),
                            ("page error", errors), ("broken image", broken)):
            problems += [f"{page_path}: {kind}: {item}" for item in items]
        page.close()
    assert not problems, "\n".join(problems)


def test_math_is_rendered_by_the_local_mathjax(server, browser):
    page = browser.new_page()
    page.goto(f"{server}/book/small_filters.html", wait_until="networkidle")
    page.wait_for_function("() => window.MathJax && window.MathJax.startup && MathJax.startup.document",
                           timeout=15000)
    scripts = page.evaluate("() => [...document.scripts].map(s => s.src).filter(Boolean)")
    assert any(urlparse(s).path.endswith("/_static/mathjax/tex-chtml.js") for s in scripts), scripts
    assert page.locator("mjx-container").count() >= 3      # formulas typeset by the local copy
    page.close()


LOG_MARKERS = ("IPKernelApp", "KeyboardInterrupt", "Traceback (most recent call last)", "UserWarning",
               "FutureWarning", "DeprecationWarning", "RuntimeWarning")


def test_no_page_shows_log_lines_or_stderr():
    # the experiments issue: a page of the book holds results and prose, never a kernel's log
    if not HTML.exists():
        pytest.skip("no built book")
    for page in pages():
        html = (HTML / page).read_text(errors="replace")
        found = [m for m in LOG_MARKERS if m in html]
        assert not found, f"{page} shows log lines: {found}"
        assert 'class="output stderr' not in html, f"{page} shows a cell's stderr"


def test_the_bibliography_is_reachable_and_the_intro_cites_the_paper(server, browser):
    # the book issue: the paper with its arXiv link and every work the book names, cited where used
    page = browser.new_page()
    page.goto(f"{server}/book/intro.html", wait_until="networkidle")
    page.locator("nav.bd-docs-nav a", has_text="Bibliography").first.click()
    page.wait_for_load_state("networkidle")
    assert page.url.endswith("/book/bibliography.html")
    entries = page.locator("div.citation, dl.citation > dt, [id^='id'].citation").count()
    text = page.inner_text("article").lower()  # the bibliography style sets titles in sentence case
    assert "https://arxiv.org/abs/1409.1556" in page.content() and "very deep convolutional networks" in text
    for work in ("glorot", "ioffe", "fashion-mnist", "overfeat", "going deeper"):
        assert work in text, work
    assert entries >= 10 or text.count("[") >= 10, entries
    # a citation in the intro links to its entry on the bibliography page
    page.goto(f"{server}/book/intro.html", wait_until="networkidle")
    cites = page.locator("a[href*='bibliography.html#']")
    assert cites.count() >= 5
    page.close()


PROSE_TEXT = """() => { const a = document.querySelector('article').cloneNode(true);
    a.querySelectorAll('pre, code, .cell_input, mjx-container, script, style, .MathJax').forEach(e => e.remove());
    return a.textContent; }"""
TABLE_CELLS = """() => [...document.querySelectorAll('article table td, article table th')]
    .map(c => c.textContent.trim())"""


def test_no_page_shows_raw_latex_in_its_prose(server, browser):
    # the book issue: "$S$ = 37" printed as text where MathJax does not typeset it (printed
    # Markdown, search snippets)
    import re

    problems = []
    page = browser.new_page()
    for path in pages():
        if not path.startswith("book/"):
            continue
        page.goto(f"{server}/{path}", wait_until="networkidle")
        text = page.evaluate(PROSE_TEXT)
        problems += [f"{path}: raw LaTeX {m!r}" for m in re.findall(r"\$[^$\s][^$\n]{0,40}\$", text)]
    page.close()
    assert not problems, "\n".join(problems)


def test_the_scorecard_table_says_dash_not_nan(server, browser):
    # a missing paper number or a pending interval is a dash with its reason, never "nan"
    page = browser.new_page()
    page.goto(f"{server}/book/scorecard.html", wait_until="networkidle")
    cells = page.evaluate(TABLE_CELLS)
    page.close()
    assert len(cells) > 100 and "—" in cells
    assert not [c for c in cells if c.lower() in ("nan", "none", "<na>")]
