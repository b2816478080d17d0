"""The built book as a reader on a narrow screen meets it (headless Debian chromium at 800 px):
the sidebar toggle opens the chapter list on every page and a chapter link leads to that
chapter; at 1280 px the same toggle hides and restores the sidebar; one search box; and every
page loads with no console error and no failed request, the favicon included. Screenshots of
every page at 800 px, sidebar open, go to artifacts/screenshots-800/ (ignored by git)."""
from urllib.parse import urljoin, urlparse

import pytest

from conftest import REPO
from test_book_html import browser, pages, server  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
NARROW, WIDE = {"width": 800, "height": 900}, {"width": 1280, "height": 900}
SEARCH = ".search-button-field, .search-button, form.bd-search"
# the sidebar lists every chapter of _toc.yml (the root page is the title link above them)
CHAPTERS = (REPO / "_toc.yml").read_text().count("- file:")


def visible(page, selector):
    return [e for e in page.locator(selector).all() if e.is_visible()]


def test_sidebar_opens_on_every_page_and_a_chapter_link_leads_there(server, browser, artifacts):
    shots = artifacts / "screenshots-800"
    shots.mkdir(exist_ok=True)
    for path in pages():
        page = browser.new_page(viewport=NARROW)
        page.goto(f"{server}/{path}", wait_until="networkidle")
        toggles = visible(page, ".primary-toggle")
        assert len(toggles) == 1, f"{path}: {len(toggles)} visible sidebar toggles"
        dialog = page.locator("#pst-primary-sidebar-modal")
        assert not dialog.evaluate("d => d.open")
        toggles[0].click()
        page.wait_for_function("() => document.querySelector('#pst-primary-sidebar-modal').open",
                               timeout=5000)
        links = visible(page, "#pst-primary-sidebar-modal nav a.reference.internal")
        assert len(links) == CHAPTERS, f"{path}: the open sidebar shows {len(links)} chapter links"
        page.screenshot(path=str(shots / (path.replace("/", "_").removesuffix(".html") + ".png")))
        # the first chapter listed after this page (or the first one): a different page
        here = urlparse(page.url).path
        targets = [urlparse(urljoin(page.url, a.get_attribute("href"))).path for a in links]
        pick = next((i for i, t in enumerate(targets) if t != here and i > targets.index(here)), None) \
            if here in targets else None
        pick = pick if pick is not None else next(i for i, t in enumerate(targets) if t != here)
        title = links[pick].inner_text().strip()
        links[pick].click()
        page.wait_for_load_state("networkidle")
        assert urlparse(page.url).path == targets[pick], (path, title, page.url)
        assert page.locator("main h1").first.inner_text().replace("#", "").strip() == title
        page.close()


def test_sidebar_closes_at_800px(server, browser):
    page = browser.new_page(viewport=NARROW)
    page.goto(f"{server}/book/architecture.html", wait_until="networkidle")
    visible(page, ".primary-toggle")[0].click()
    page.wait_for_function("() => document.querySelector('#pst-primary-sidebar-modal').open")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.querySelector('#pst-primary-sidebar-modal').open")
    # the chapter list is back in its place, ready to be opened again
    assert page.locator("#pst-primary-sidebar nav a.reference.internal").count() == CHAPTERS
    visible(page, ".primary-toggle")[0].click()
    page.wait_for_function("() => document.querySelector('#pst-primary-sidebar-modal').open")
    page.close()


def test_sidebar_hides_and_returns_at_1280px(server, browser, artifacts):
    page = browser.new_page(viewport=WIDE)
    page.goto(f"{server}/book/small_filters.html", wait_until="networkidle")
    sidebar = page.locator("#pst-primary-sidebar")
    links = "#pst-primary-sidebar nav a.reference.internal"
    assert sidebar.is_visible() and len(visible(page, links)) == CHAPTERS
    toggles = visible(page, ".primary-toggle")
    assert len(toggles) == 1
    toggles[0].click()
    page.wait_for_function("() => getComputedStyle(document.querySelector('#pst-primary-sidebar'))"
                           ".visibility === 'hidden'", timeout=5000)
    page.screenshot(path=str(artifacts / "small_filters_1280_sidebar_hidden.png"))
    toggles[0].click()
    page.wait_for_function("() => getComputedStyle(document.querySelector('#pst-primary-sidebar'))"
                           ".visibility === 'visible'", timeout=5000)
    assert len(visible(page, links)) == CHAPTERS
    page.close()


@pytest.mark.parametrize("viewport", [NARROW, WIDE], ids=["800px", "1280px"])
def test_one_search_box(server, browser, viewport):
    page = browser.new_page(viewport=viewport)
    page.goto(f"{server}/book/intro.html", wait_until="networkidle")
    boxes = [e.evaluate("e => e.className") for e in visible(page, SEARCH)]
    assert len(boxes) == 1, boxes
    page.close()


def test_every_page_has_no_console_error_and_no_404(server, browser):
    problems = []
    for path in [""] + pages():           # "": the site root, a redirect page with no icon link
        page = browser.new_page(viewport=NARROW)
        page.on("console", lambda m, path=path: problems.append(f"/{path}: console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e, path=path: problems.append(f"/{path}: page error: {e}"))
        page.on("requestfailed", lambda r, path=path: problems.append(f"/{path}: failed: {r.url}"))
        page.on("response", lambda r, path=path: problems.append(f"/{path}: HTTP {r.status}: {r.url}")
                if r.status >= 400 else None)
        page.goto(f"{server}/{path}", wait_until="networkidle")
        icons = page.evaluate("() => [...document.querySelectorAll('link[rel~=icon]')].map(l => l.href)")
        if path:                            # every book page names its favicon ...
            assert icons, f"/{path}: no <link rel=icon>"
        for url in icons + [f"{server}/favicon.ico"]:   # ... and it, and /favicon.ico, are served
            r = page.request.get(url)
            if r.status != 200 or not r.headers.get("content-type", "").startswith("image/"):
                problems.append(f"/{path}: favicon {url}: HTTP {r.status} {r.headers.get('content-type')}")
        page.close()
    assert not problems, "\n".join(problems)
