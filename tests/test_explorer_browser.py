"""The receptive-field explorer in the built HTML book, with no kernel: headless chromium opens the
Small filters page from a local http.server, changes the controls and reads the numbers and the
drawn box; the page's own JavaScript must agree with ``analysis.receptive_field`` for every layer
of every configuration, and the page must fetch nothing outside the book."""
import functools
import http.server
import socketserver
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from conftest import CHROMIUM, CHROMIUM_ARGS, REPO
from vgg_lib.analysis import layer_table
from vgg_lib.configs import CONFIGS
from vgg_lib.models import vgg

PAGE = REPO / "_build" / "html" / "book" / "small_filters.html"
pytestmark = [pytest.mark.slow, pytest.mark.browser]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page(artifacts):
    if not PAGE.exists():
        pytest.skip(f"no built book ({PAGE.relative_to(REPO)} missing): run `make book` first "
                    "(`make test` does)")
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    handler = functools.partial(_Quiet, directory=str(PAGE.parents[1]))
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.problems = []
        pg.on("request", lambda r: pg.problems.append(f"outside request: {r.url[:100]}")
              if urlparse(r.url).scheme in ("http", "https", "ws", "wss")
              and urlparse(r.url).hostname != "127.0.0.1" else None)
        pg.on("requestfailed", lambda r: pg.problems.append(f"failed request: {r.url[:100]} ({r.failure})"))
        pg.on("response", lambda r: pg.problems.append(f"HTTP {r.status}: {r.url[:100]}")
              if r.status >= 400 else None)
        pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
        pg.goto(f"http://127.0.0.1:{httpd.server_address[1]}/book/small_filters.html",
                wait_until="networkidle")
        pg.locator(".vgg-rfx").scroll_into_view_if_needed()
        yield pg
        browser.close()
    httpd.shutdown()


def _box(pg):
    """The box's size in image pixels and in CSS pixels, and the view's scale."""
    return pg.evaluate("""() => {
        const root = document.querySelector('.vgg-rfx'), svg = root.querySelector('svg.rfx-view');
        const box = root.querySelector('.rfx-box'), vb = svg.viewBox.baseVal;
        return {size: +root.querySelector('.rfx-size').textContent, width: +box.getAttribute('width'),
                css: box.getBoundingClientRect().width, scale: svg.getBoundingClientRect().width / vb.width,
                x: +box.getAttribute('x')};
    }""")


def test_layer_control_changes_size_and_box(page, artifacts):
    assert page.locator(".vgg-rfx").count() == 1, "the explorer is missing from the page"
    assert page.locator(".vgg-rfx .rfx-nojs").count() == 0, "the explorer's script did not run"
    assert page.input_value(".vgg-rfx .rfx-config") == "D"
    assert page.input_value(".vgg-rfx .rfx-layer") == "conv5_3"
    b = _box(page)
    assert b["size"] == b["width"] == 196
    assert b["css"] == pytest.approx(196 * b["scale"], abs=1.5)
    page.screenshot(path=str(artifacts / "explorer_static_conv5_3.png"), full_page=False,
                    clip=page.locator(".vgg-rfx").bounding_box())
    page.select_option(".vgg-rfx .rfx-layer", "pool5")
    b = _box(page)
    assert b["size"] == b["width"] == 212
    assert b["css"] == pytest.approx(212 * b["scale"], abs=1.5)
    assert page.inner_text(".vgg-rfx .rfx-jump") == "32"
    assert page.inner_text(".vgg-rfx .rfx-params") == "14,714,688"
    assert page.locator(".vgg-rfx .rfx-grid circle").count() == 49        # 7 x 7 unit centres
    page.locator(".vgg-rfx").screenshot(path=str(artifacts / "explorer_static_pool5.png"))
    assert not page.problems, "\n".join(page.problems)


def test_page_javascript_agrees_with_receptive_field_everywhere(page):
    tables = page.evaluate("() => document.querySelector('.vgg-rfx').vggRfx.tables")
    assert set(tables) == set(CONFIGS)
    for name in CONFIGS:
        with torch.device("meta"):
            t = layer_table(vgg(name, init=None), total=False).set_index("name")
        t["cum"] = t["params"].cumsum()
        for row in tables[name]:
            r = t.loc[row["name"]]
            got = (row["size"], row["jump"], row["start"], row["map"], row["params"])
            assert got == (r.rf_size, r.rf_jump, r.rf_start, r.out_shape[1], r.cum), (name, row)
        assert len(tables[name]) == t.kind.isin(["conv", "pool"]).sum()


def test_configuration_unit_click_and_bad_unit(page, artifacts):
    page.select_option(".vgg-rfx .rfx-config", "E")
    page.select_option(".vgg-rfx .rfx-layer", "pool5")
    assert _box(page)["size"] == 268
    page.select_option(".vgg-rfx .rfx-config", "B-5x5")      # same layer name, B's field
    assert _box(page)["size"] == 156
    # a click on the image picks the unit whose centre is nearest: top-left corner -> (0, 0)
    page.select_option(".vgg-rfx .rfx-config", "D")
    page.select_option(".vgg-rfx .rfx-layer", "conv4_3")
    svg = page.locator(".vgg-rfx svg.rfx-view").bounding_box()
    scale = svg["width"] / (224 + 2 * 45)
    page.mouse.click(svg["x"] + (45 + 4) * scale, svg["y"] + (45 + 4) * scale)
    assert page.input_value(".vgg-rfx .rfx-row") == "0" and page.input_value(".vgg-rfx .rfx-col") == "0"
    b = _box(page)    # conv4_3: 92 px, unit (0, 0) centred on pixel 3.5: box from -42.5 (in the padding)
    assert (b["size"], b["x"]) == (92, 3.5 - 45.5 - 0.5)
    page.locator(".vgg-rfx").screenshot(path=str(artifacts / "explorer_static_corner.png"))
    page.evaluate("() => document.querySelector('.vgg-rfx').vggRfx.setUnit([40, 3])")
    assert page.inner_text(".vgg-rfx .rfx-message") == (
        "unit (40, 3) is outside layer conv4_3's 28x28 feature map; rows and columns go from 0 to 27")
    assert page.input_value(".vgg-rfx .rfx-row") == "0"


def test_compare_tab(page, artifacts):
    page.click(".vgg-rfx .rfx-tab[data-tab='1']")
    page.locator(".vgg-rfx .rfx-n").fill("3")
    assert page.inner_text(".vgg-rfx .rfx-cmp-params-stack") == "7,077,888 = 27 C²"
    assert page.inner_text(".vgg-rfx .rfx-cmp-params-single") == "12,845,056 = 49 C²"
    assert page.inner_text(".vgg-rfx .rfx-cmp-rf-stack") == page.inner_text(".vgg-rfx .rfx-cmp-rf-single") == "7 x 7"
    page.locator(".vgg-rfx").screenshot(path=str(artifacts / "explorer_static_compare.png"))
    page.click(".vgg-rfx .rfx-tab[data-tab='0']")
    assert not page.problems, "\n".join(page.problems)


def test_coordinates_named_and_compare_labels_apart(page, artifacts):
    page.select_option(".vgg-rfx .rfx-config", "D")
    page.select_option(".vgg-rfx .rfx-layer", "conv5_3")
    page.evaluate("() => document.querySelector('.vgg-rfx').vggRfx.setUnit([2, 9])")
    assert page.inner_text(".vgg-rfx .rfx-pixel") == "(row 39.5, column 151.5)"
    assert page.locator(".vgg-rfx .rfx-axes text").all_text_contents() == ["column 0 \u2192 223", "row 0 \u2192 223"]
    page.click(".vgg-rfx .rfx-tab[data-tab='1']")
    page.locator(".vgg-rfx .rfx-n").fill("4")
    value = page.locator(".vgg-rfx .rfx-n-out").bounding_box()
    label = page.locator(".vgg-rfx .rfx-c").locator("xpath=..").bounding_box()
    assert page.inner_text(".vgg-rfx .rfx-n-out") == "4"
    # "4" and "channels C" ran together; now at least a couple of characters apart, or on two lines
    assert label["x"] - (value["x"] + value["width"]) >= 16 or label["y"] >= value["y"] + value["height"]
    page.locator(".vgg-rfx").screenshot(path=str(artifacts / "explorer_static_compare_n4.png"))
    page.click(".vgg-rfx .rfx-tab[data-tab='0']")
    assert not page.problems, "\n".join(page.problems)
