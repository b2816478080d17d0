"""Keep the built book free of requests to other hosts, and of requests that fail.

* Jupyter Book v1 always loads sphinx-thebe, which injects inline configuration pointing at a
  CDN copy of thebe (and, on incremental builds, injects it twice: a JavaScript error on every
  page). The book has no live-code buttons, so thebe's hooks are disconnected here.
* A favicon drawn here (a 3x3 filter in the book's colours) is the pages' ``html_favicon`` and
  is also written as ``favicon.ico`` at the site root, where browsers look for one on pages that
  do not name theirs (the root ``index.html`` redirect): no ``/favicon.ico`` 404.
* ``static/book.css`` fixes the theme's layout where the book needs it (code lines wrap).
"""
import shutil
from pathlib import Path

STATIC = Path(__file__).parent / "static"


def _drop_thebe(app, config):
    for event, listeners in app.events.listeners.items():
        listeners[:] = [l for l in listeners if getattr(l.handler, "__name__", "") != "init_thebe_core"]


def draw_favicon(path: Path) -> Path:
    """A 3x3 grid of cells, the centre one dark: VGG's only filter size. 16 and 32 px, ICO."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    for r in range(3):
        for c in range(3):
            fill = (23, 64, 110, 255) if (r, c) == (1, 1) else (76, 146, 201, 255)
            d.rectangle((1 + 10 * c, 1 + 10 * r, 8 + 10 * c, 8 + 10 * r), fill=fill)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="ICO", sizes=[(16, 16), (32, 32)])
    return path


def _favicon(app, config):
    if not config.html_favicon:
        # drawn next to the doctrees: a build product, nothing binary in the repository
        config.html_favicon = str(draw_favicon(Path(app.doctreedir) / "favicon.ico"))


def _root_favicon(app, exception):
    if exception is None and app.builder.format == "html" and config_favicon(app).exists():
        shutil.copyfile(config_favicon(app), Path(app.outdir) / "favicon.ico")


def config_favicon(app) -> Path:
    return Path(app.confdir) / app.config.html_favicon


def _static(app, config):
    config.html_static_path.append(str(STATIC))


def setup(app):
    app.connect("config-inited", _drop_thebe, priority=900)
    # before Sphinx validates html_favicon (priority 800) and copies html_static_path
    app.connect("config-inited", _favicon, priority=700)
    app.connect("config-inited", _static)
    app.connect("build-finished", _root_favicon)
    app.add_css_file("book.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
