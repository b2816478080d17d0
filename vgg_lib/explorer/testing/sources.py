"""Where the testing explorer's views come from, net by net: computed now when the net's
checkpoint is under ``runs/`` (the grid's, or the book build's re-trained one), else the
committed precomputed views; and the one line that says which."""

from __future__ import annotations

from ...runs import load_run
from .precomputed import PrecomputedViews
from .views import LiveViews, checkpoint_dir


def sources_for(payload: dict, runs=None) -> tuple[dict, str]:
    """``({net: LiveViews or PrecomputedViews}, note)`` for the nets of ``payload``."""
    sources, live, stored = {}, [], []
    for net in payload["nets"]:
        folder = checkpoint_dir(net, runs)
        if folder is None:
            sources[net] = PrecomputedViews(payload, net)
            stored.append(net)
        else:
            sources[net] = LiveViews(load_run(folder))
            live.append(net)
    if not stored:
        note = f"Live: computed now by {', '.join(live)} from their checkpoints under runs/."
    elif not live:
        note = (f"No checkpoint of {', '.join(stored)} under runs/ (checkpoints are not committed): showing the "
                "views precomputed in results/explorer/testing_views.json (posteriors to 8 bits).")
    else:
        note = (f"Live: {', '.join(live)} (checkpoints under runs/); no checkpoint of {', '.join(stored)}: its "
                "views are the precomputed ones of results/explorer/testing_views.json.")
    return sources, note
