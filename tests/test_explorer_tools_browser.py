"""The fusion calculator and the testing explorer in the built HTML book, with no kernel, at
800 and 1280 CSS pixels: headless chromium opens the Fusion and Testing pages from a local
http.server, drives the controls and reads the numbers shown. The page's JavaScript must give
the numbers the package gives on the data the page carries (fused errors: ``FusionState`` over
``QuantisedPosteriors``, i.e. ``evaluate.fuse``; views: ``TestingState`` over
``PrecomputedViews``), bad selections must give a message, nothing may be fetched outside the
book and the tools must fit the page's width."""
import json
from urllib.parse import urlparse

import numpy as np
import pytest

from test_book_html import browser, server  # noqa: F401  (fixtures: the built book, served; chromium)
from vgg_lib import evaluate as E
from vgg_lib.explorer.fusion.evaluations import QuantisedPosteriors
from vgg_lib.explorer.fusion.state import FusionState, ties
from vgg_lib.explorer.testing.precomputed import PrecomputedViews
from vgg_lib.explorer.testing.state import TestingState

pytestmark = [pytest.mark.slow, pytest.mark.browser]
WIDTHS = (800, 1280)
COMBINATIONS = [(["D-S256-512", "E-full"], ["dense_paper"], 0),
                (["A-full", "B-full", "C-full", "D-full", "E-full"], ["dense_paper", "dense_train"], 1),
                (["D-S256-512"], ["dense_paper_n5000", "multi_crop_paper_n5000"], 2),
                (["A-full", "A-LRN-full", "B-full", "B-5x5-full", "C-full", "D-full", "E-full", "D-S384",
                  "D-S256-512"], ["dense_paper"], 0)]


def _open(browser, server, path: str, width: int, ready: str):  # noqa: F811
    """The page at ``width`` CSS pixels, its tool scrolled into view and ready; ``pg.problems``
    collects outside or failed requests and script errors."""
    pg = browser.new_page(viewport={"width": width, "height": 900})
    pg.problems = []
    pg.on("request", lambda r: pg.problems.append(f"outside request: {r.url[:100]}")
          if urlparse(r.url).scheme in ("http", "https", "ws", "wss")
          and urlparse(r.url).hostname != "127.0.0.1" else None)
    # The widget manager's stylesheet sometimes asks for its fonts under book/@jupyter-widgets/
    # instead of _static/html-manager/ (404 or aborted): on the Fusion page in about half the loads,
    # with or without the calculator in it (test_book_html's concern, not the tools'). Anything else counts.
    manager_font = lambda url: "/book/@jupyter-widgets/" in url  # noqa: E731
    pg.on("requestfailed", lambda r: None if manager_font(r.url)
          else pg.problems.append(f"failed request: {r.url[:100]} ({r.failure})"))
    pg.on("response", lambda r: pg.problems.append(f"HTTP {r.status}: {r.url[:100]}")
          if r.status >= 400 and not manager_font(r.url) else None)
    pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
    pg.goto(f"{server}/{path}", wait_until="networkidle")
    pg.wait_for_selector(ready, timeout=30_000)
    pg.locator(ready).scroll_into_view_if_needed()
    return pg


def _payload(pg, root: str) -> dict:
    """The data the page's tool carries (its ``<script type="application/json">``)."""
    return json.loads(pg.evaluate(f"() => document.getElementById(document.querySelector('{root}').id + '-data')"
                                  ".textContent"))


def _fits(pg, root: str) -> bool:
    """The tool is no wider than the page's content column: nothing sticks out or scrolls."""
    return pg.evaluate(f"""() => {{ const r = document.querySelector('{root}');
        return r.scrollWidth <= r.clientWidth + 1 && r.getBoundingClientRect().right <= window.innerWidth; }}""")


@pytest.fixture(params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def fusion(request, browser, server):  # noqa: F811
    pg = _open(browser, server, "book/fusion.html", request.param, ".vgg-fus.fus-ready")
    yield pg
    pg.close()


@pytest.fixture(params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def testing(request, browser, server):  # noqa: F811
    pg = _open(browser, server, "book/testing.html", request.param, ".vgg-tex.tex-ready")
    yield pg
    pg.close()


def test_fusion_javascript_equals_python(fusion, artifacts):
    assert fusion.locator(".vgg-fus").count() == 1 and fusion.locator(".fus-nojs").count() == 0
    source = QuantisedPosteriors(_payload(fusion, ".vgg-fus"))
    state = FusionState(source.evaluations, source)
    # the first by clicking the page's own checkboxes, the others through its select()
    fusion.locator(".vgg-fus .fus-method[value='dense_train']").uncheck()
    shown = fusion.locator(".vgg-fus .fus-top1")
    for i, (nets, methods, seed) in enumerate(COMBINATIONS):
        state.select(nets=nets, methods=methods, seed=seed)
        python = state.result
        assert python["message"] == "", (nets, methods)
        if i == 0:
            for box in fusion.locator(".vgg-fus .fus-net").all():
                box.set_checked(box.get_attribute("value") in nets)
        else:
            fusion.evaluate("([n, m, s]) => document.querySelector('.vgg-fus').vggFusion.select(n, m, s)",
                            [nets, methods, seed])
        assert float(shown.get_attribute("data-value")) == python["top1"], (nets, methods, seed)
        assert shown.inner_text() == f"{python['top1']:.2f}%"
        assert float(fusion.locator(".vgg-fus .fus-top5").get_attribute("data-value")) == python["top5"]
        # and evaluate.fuse scored by evaluate.topk_error: the very number, but for images with ties
        posts = [source.get(n, t, seed) for n, t in python["members"]]
        fused, labels = E.fuse([p for p, _ in posts]), posts[0][1]
        tied = ties(fused.numpy(), labels)
        assert E.topk_error(fused, labels, 1) == python["top1"] if tied == 0 else \
            abs(E.topk_error(fused, labels, 1) - python["top1"]) <= 100 * tied / len(labels)
    fusion.locator(".vgg-fus").screenshot(path=str(artifacts / f"fusion_static_{fusion.viewport_size['width']}.png"))
    assert _fits(fusion, ".vgg-fus")
    assert not fusion.problems, "\n".join(fusion.problems)


def test_fusion_bad_selections_give_a_message(fusion):
    message = fusion.locator(".vgg-fus .fus-message")
    for box in fusion.locator(".vgg-fus .fus-net").all():
        box.uncheck()
    assert message.inner_text() == "Select at least one net and one evaluation method."
    assert fusion.locator(".vgg-fus .fus-top1").count() == 0
    fusion.evaluate("() => document.querySelector('.vgg-fus').vggFusion.select(['E-full', 'D-S256-512'], "
                    "['dense_paper', 'multi_crop_paper_n5000'], 0)")
    assert message.inner_text().startswith("These evaluations scored different images")
    assert "5,000-image subset" in message.inner_text()
    fusion.locator(".vgg-fus .fus-net[value='D-S256-512']").uncheck()        # E-full by dense_paper alone
    assert message.inner_text() == "" and fusion.locator(".vgg-fus .fus-top1").count() == 1
    assert "E-full (multi-crop, three Q, 5,000 images)" in fusion.inner_text(".vgg-fus .fus-result .fus-note")
    fusion.locator(".vgg-fus .fus-method[value='dense_paper']").uncheck()     # E-full has no multi-crop
    assert message.inner_text() == "None of the selected nets was evaluated by the selected methods."
    assert not fusion.problems, "\n".join(fusion.problems)


def test_testing_explorer_controls_drive_the_view(testing, artifacts):
    assert testing.locator(".vgg-tex").count() == 1 and testing.locator(".tex-nojs").count() == 0
    svg = testing.locator(".vgg-tex svg.tex-image")
    testing.select_option(".vgg-tex .tex-method", "dense")
    testing.select_option(".vgg-tex .tex-q", "73")
    assert svg.get_attribute("data-boxes") == "36"                 # 6x6 windows of the score map
    assert testing.locator(".vgg-tex table.tex-scores tr").count() == 6
    testing.locator(".vgg-tex").screenshot(path=str(artifacts / f"testing_static_dense_{testing.viewport_size['width']}.png"))
    testing.select_option(".vgg-tex .tex-q", "32")
    assert svg.get_attribute("data-boxes") == "1"                  # one window: the centre crop
    testing.select_option(".vgg-tex .tex-method", "multi")
    assert svg.get_attribute("data-boxes") == "25"
    assert testing.locator(".vgg-tex table.tex-per-crop td").count() == 25
    testing.locator(".vgg-tex").screenshot(path=str(artifacts / f"testing_static_multi_{testing.viewport_size['width']}.png"))
    testing.select_option(".vgg-tex .tex-method", "centre")
    assert svg.get_attribute("data-boxes") == "1"
    testing.evaluate("() => document.querySelector('.vgg-tex').vggTesting.select({Q: 40})")
    assert testing.inner_text(".vgg-tex .tex-message") == "Q 40 is not available; allowed: 32, 37, 42, 55, 73"
    assert testing.input_value(".vgg-tex .tex-q") == "32"
    assert _fits(testing, ".vgg-tex")
    assert not testing.problems, "\n".join(testing.problems)


def test_testing_javascript_equals_python(testing):
    payload = _payload(testing, ".vgg-tex")
    sources = {net: PrecomputedViews(payload, net) for net in payload["nets"]}
    images = [e["index"] for e in payload["images"]]
    state = TestingState(sources, images, payload["qs"], payload["classes"])
    for net in payload["nets"]:
        for image in images[:3]:
            for method in ("centre", "multi", "dense"):
                for q in (payload["qs"][0], payload["qs"][-1]):
                    state.select(net=net, image=image, method=method, Q=q, cls="label")
                    py = state.numbers
                    js = testing.evaluate("(s) => document.querySelector('.vgg-tex').vggTesting.select(s)",
                                          {"net": net, "image": image, "method": method, "Q": q, "cls": "label"})
                    where = (net, image, method, q)
                    assert (js["prediction"], js["label"], js["best"]) == (py["prediction"], py["label"], py["best"]), where
                    assert np.allclose(js["posteriors"], py["posteriors"], atol=1e-6), where
                    assert np.allclose(js["per_crop"], py["per_crop"], atol=1e-6), where
                    assert [tuple(b) for b in js["boxes"]] == py["boxes"], where
    verdict = testing.inner_text(".vgg-tex .tex-verdict")
    assert verdict == ("right" if py["right"] else "wrong")
    assert not testing.problems, "\n".join(testing.problems)
