"""The self-contained HTML of a tool for the book without a kernel: its CSS, its data (JSON in a
``<script type="application/json">``) and its script inline, mounted on a ``<div>``. Nothing is
fetched: the built page must make no request outside itself."""

from __future__ import annotations

import json
import uuid
from importlib import resources


def asset(name: str) -> str:
    """A file of ``vgg_lib/widgets_static`` (the tools' CSS and JavaScript)."""
    return resources.files("vgg_lib").joinpath("widgets_static", name).read_text(encoding="utf-8")


def tool_html(prefix: str, css: str, script: str, mount: str, payload: dict, start: dict, cls: str,
              nojs: str) -> str:
    """``<style>`` + ``<div class=cls>`` + data + ``<script>`` calling ``mount(div, data, start)``.
    ``nojs``: what the div says where no script runs."""
    uid = f"{prefix}-{uuid.uuid4().hex[:8]}"
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    return (f'<style>{asset(css)}</style>'
            f'<div class="{cls}" id="{uid}"><p class="{prefix}-nojs">{nojs}</p></div>'
            f'<script type="application/json" id="{uid}-data">{data}</script>'
            f'<script>{asset(script)}\n{mount}(document.getElementById("{uid}"), '
            f'JSON.parse(document.getElementById("{uid}-data").textContent), {json.dumps(start)});</script>')
