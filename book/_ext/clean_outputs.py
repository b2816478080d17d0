"""Fail the build when a page shows a log line instead of a result.

A kernel's warnings (``[IPKernelApp] WARNING ...``), an interrupted cell or a traceback in an
output cell mean the page is not what the chapter says; such a page must not be published.
"""

import re
from pathlib import Path

from sphinx.errors import ExtensionError

LOG_LINES = re.compile(r"IPKernelApp|KeyboardInterrupt|Traceback \(most recent call last\)|"
                       r"Kernel (?:died|restarting)|RuntimeWarning|DeprecationWarning|UserWarning")


def _check(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    found = []
    for page in sorted(Path(app.outdir).rglob("*.html")):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        for hit in LOG_LINES.finditer(page.read_text(errors="replace")):
            found.append(f"{page.relative_to(app.outdir)}: {hit.group(0)}")
    if found:
        raise ExtensionError("log lines in the built pages (fix the chapter, do not publish them): "
                             + "; ".join(found[:10]))


def setup(app):
    app.connect("build-finished", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
