"""The testing explorer's precomputed views, committed under ``results/explorer/`` because the
checkpoints are not: a handful of validation images, every test scale of ``QS``, for two
reference nets, computed by ``compute_view`` and quantised (posteriors to 8 bits, scores to
0.01) so that the file, and the book page that embeds it, stay small.

    python -m vgg_lib.explorer.testing.precomputed            # from runs/reference/{A,D}-s0

writes ``results/explorer/testing_views.json`` with its provenance (the command, the commit,
each net's checkpoint and validation error). The static page and the explorer without a
checkpoint read it back with ``PrecomputedViews``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from ... import experiments as X
from ...runs import load_run
from ..fusion.evaluations import pack, unpack
from .views import GRID, LiveViews, checkpoint_dir

NETS = ("A-s0", "D-s0")                          # the shallowest and a deep reference net, seed 0
CLASSES_SHOWN = (0, 1, 5, 6, 8, 9)              # one image of each: T-shirt/top ... Ankle boot
QS = (32, 37, 42, 55, 73)   # Sect. 4.2's three scales for S = 256 (32, 37, 42 here) and those of S = 384, 512
SCORE_SCALE = 100                                # scores kept to 0.01 (int16)
ROWS = 1 + 2 * GRID ** 2 + 2                     # centre, 50 crops, multi-crop mean, dense
FILE = "explorer/testing_views.json"
COMMAND = "python -m vgg_lib.explorer.testing.precomputed"


def views_file(results=None):
    return X.results_root(results) / FILE


def pick_images(val, classes=CLASSES_SHOWN) -> list[int]:
    """The first validation image of each class of ``classes``."""
    labels = np.asarray(val.labels)
    return [int(np.flatnonzero(labels == c)[0]) for c in classes]


def net_block(views: list[list[dict]]) -> dict:
    """One net's views (per image, per Q) as two packed arrays: posteriors (8 bits) and scores."""
    posts = np.array([[np.vstack([v["centre"], v["crops"], v["multi"], v["dense"]]) for v in row] for row in views])
    side = max(v["scores"].shape[0] for row in views for v in row)
    scores = np.zeros(posts.shape[:2] + (side, side, posts.shape[-1]), np.int16)
    for i, row in enumerate(views):
        for j, v in enumerate(row):
            h, w = v["scores"].shape[:2]
            scores[i, j, :h, :w] = np.rint(v["scores"] * SCORE_SCALE)
    q = np.clip(np.rint(posts * 255), 0, 255).astype(np.uint8)
    return {"posteriors": pack(q), "scores": pack(scores.astype("<i2").view(np.uint8)), "score_side": side}


def build(nets=NETS, qs=QS, runs=None) -> dict:
    """The payload: every view of every net in ``nets`` (finished checkpoints under ``runs``)."""
    found = {n: checkpoint_dir(n, runs) for n in nets}
    missing = [n for n, f in found.items() if f is None]
    if missing:
        raise FileNotFoundError(f"no finished checkpoint of {', '.join(missing)} under {X.work_root(runs)}: train "
                                "it first (python -m vgg_lib.experiments reproduce --runs A D --seeds 0)")
    t0 = time.perf_counter()
    views, record, images, classes = {}, {}, [], []
    for name, folder in found.items():
        run = load_run(folder)
        live = LiveViews(run)
        indices = pick_images(live.val)
        views[name] = (run.params["config"], [[live.view(i, q) for q in qs] for i in indices])
        images = [{"index": i, "label": live.label(i), "png": live.image_uri(i)} for i in indices]
        classes = list(run.classes)
        record[name] = {"checkpoint": f"runs/{folder.relative_to(X.work_root(runs).parent).as_posix()}",
                        "config": run.params["config"], "val_top1_err": round(run.summary["val_top1_err"], 2),
                        "epochs": run.summary["epochs_done"]}
    out = payload(views, images, classes, qs)
    # the grid's provenance record (command, commit, machine, date, wall time), and what it read
    out["provenance"] = X.provenance(COMMAND, time.perf_counter() - t0, threads=torch.get_num_threads()) | {
        "nets": record, "quantisation": f"posteriors round(255 p) as uint8; scores round({SCORE_SCALE} s) as "
                                        "int16; both gzip + base64"}
    return out


def payload(views: dict, images: list[dict], classes: list[str], qs) -> dict:
    """``views``: ``{net: (configuration, [[view per Q] per image])}``, all on ``images``
    (``{"index", "label", "png"}``) at ``qs``; the geometry is read from the first view."""
    first = next(iter(views.values()))[1][0]
    return {"classes": classes, "qs": list(qs), "grid": GRID, "crop": first[0]["crop"], "stride": first[0]["stride"],
            "map_sides": {str(v["Q"]): list(v["scores"].shape[:2]) for v in first},
            "positions": {str(v["Q"]): v["positions"].tolist() for v in first}, "images": images,
            "nets": {name: {"config": config, **net_block(rows)} for name, (config, rows) in views.items()}}


class PrecomputedViews:
    """The committed views of one net, read back as ``compute_view`` gives them (to 8 bits)."""

    def __init__(self, payload: dict, net: str):
        self.payload, self.net = payload, net
        block, n_img, n_q = payload["nets"][net], len(payload["images"]), len(payload["qs"])
        classes = len(payload["classes"])
        self._posts = unpack(block["posteriors"], (n_img, n_q, ROWS, classes)).astype(np.float32) / 255
        side = block["score_side"]
        raw = unpack(block["scores"], (n_img, n_q, side, side, classes * 2))
        self._scores = raw.reshape(-1).view("<i2").reshape(n_img, n_q, side, side, classes).astype(np.float32)

    @property
    def images(self) -> list[int]:
        return [e["index"] for e in self.payload["images"]]

    def image_uri(self, index: int) -> str:
        return self.payload["images"][self._position(index)]["png"]

    def _position(self, index: int) -> int:
        return self.images.index(index)

    def view(self, index: int, Q: int) -> dict:
        i, j, p = self._position(index), self.payload["qs"].index(Q), self.payload
        h, w = p["map_sides"][str(Q)]
        rows = self._posts[i, j]
        return {"Q": Q, "label": p["images"][i]["label"], "crop": p["crop"], "stride": p["stride"],
                "centre": rows[0], "crops": rows[1:-2], "multi": rows[-2], "dense": rows[-1],
                "positions": np.array(p["positions"][str(Q)]),
                "scores": self._scores[i, j, :h, :w] / SCORE_SCALE}


def load(results=None) -> dict:
    return json.loads(views_file(results).read_text())


def main(argv=None) -> int:
    argparse.ArgumentParser(prog=COMMAND,
                            description=__doc__.split("\n\n")[0]).parse_args(argv)
    payload = build()
    target = views_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    print(f"wrote {target.relative_to(X.repo_root())}: {target.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
