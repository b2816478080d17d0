"""Keep the built book free of requests to other hosts.

Jupyter Book v1 always loads sphinx-thebe, which injects inline configuration pointing at a
CDN copy of thebe (and, on incremental builds, injects it twice: a JavaScript error on every
page). The book has no live-code buttons, so thebe's hooks are disconnected here.
"""


def _drop_thebe(app, config):
    for event, listeners in app.events.listeners.items():
        listeners[:] = [l for l in listeners if getattr(l.handler, "__name__", "") != "init_thebe_core"]


def setup(app):
    app.connect("config-inited", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
