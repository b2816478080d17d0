"""What the fusion calculator can fuse: the committed evaluations of the reference nets, found by
name in ``results/<run>-s<seed>/posteriors_<tag>.npz`` (so that regenerated results are read as
they are), what each evaluation scored (data set, split, number of images) and the posteriors.

Two sources of posteriors behave alike (``get(net, tag, seed) -> (posteriors, labels)``):
``ResultsPosteriors``, the committed float16 posteriors of every image, and
``QuantisedPosteriors``, the first images of each evaluation quantised to 8 bits, which is what
the static page carries (its JavaScript fuses exactly these numbers).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ... import experiments as X

# the nets of the Fusion chapter, and the jittered D of shapes (Table 5), scored on other images
NETS = tuple(dict.fromkeys(X.FUSION_MEMBERS + tuple(X.TABLE5_NETS.values())))
_TAG = re.compile(r"^(?P<method>[a-z_]+?)_(?P<scales>paper|train)(?:_n(?P<n>\d+))?$")
_METHOD_NAMES = {"dense": "dense", "multi_crop": "multi-crop", "dense_posteriors": "dense, posteriors averaged",
                 "single_scale": "centre crop", "dense_multi_crop": "dense & multi-crop"}
# 8 bits: q = round(255 p). Read back as q / 256, a multiple of 2**-8: sums of such numbers are
# exact in float32, so averaging them (``evaluate.fuse``) orders classes exactly as the page's
# integer sums do, ties included.
LEVELS, DIVISOR = 255, 256


def method_label(tag: str) -> str:
    """``"dense_paper_n5000"`` -> ``"dense, three Q, 5,000 images"``: how a tag is shown."""
    m = _TAG.match(tag)
    if m is None:
        return tag
    scales = "three Q" if m["scales"] == "paper" else "Q = S"
    return (f"{_METHOD_NAMES.get(m['method'], m['method'])}, {scales}"
            + (f", {int(m['n']):,} images" if m["n"] else ""))


@dataclass(frozen=True)
class ImageSet:
    """What an evaluation scored: two evaluations can be fused only if these are equal."""

    dataset: str
    split: str
    images: int
    subset: bool       # a seeded random subset of the split (``--size``), not all of it

    def describe(self) -> str:
        part = f"{self.images:,}-image subset" if self.subset else f"{self.images:,} images"
        return f"{self.dataset} {self.split}, {part}"


def image_set(net: str, tag: str, seed: int, results=None) -> ImageSet:
    record = json.loads((X.results_root(results) / X.folder_name(net, seed) / f"eval_{tag}.json").read_text())
    m = _TAG.match(tag)
    return ImageSet(record["dataset"], record["split"], int(record["images"]), bool(m and m["n"]))


def available(nets=NETS, seeds=X.SEEDS, results=None) -> dict[tuple[str, str], ImageSet]:
    """``{(net, tag): ImageSet}`` of every evaluation whose posteriors are committed for all
    ``seeds`` (in the order of ``nets``, then of the tags' names)."""
    root = X.results_root(results)
    out = {}
    for net in nets:
        tags = None
        for seed in seeds:
            found = {p.stem[len("posteriors_"):] for p in (root / X.folder_name(net, seed)).glob("posteriors_*.npz")}
            tags = found if tags is None else tags & found
        for tag in sorted(tags or ()):
            out[(net, tag)] = image_set(net, tag, seeds[0], results)
    return out


class ResultsPosteriors:
    """The committed posteriors (float16 on disk, float32 here) of every scored image."""

    def __init__(self, results=None):
        self.results = results

    def get(self, net: str, tag: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        p, y = _committed(net, tag, seed, None if self.results is None else str(self.results))
        return p.copy(), y.copy()                # the cache's arrays stay as read


@lru_cache(maxsize=256)
def _committed(net: str, tag: str, seed: int, results) -> tuple[np.ndarray, np.ndarray]:
    return X.posteriors(net, seed, tag, results)


def quantise(p: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(p, np.float64) * LEVELS), 0, LEVELS).astype(np.uint8)


def dequantise(q: np.ndarray) -> np.ndarray:
    return np.asarray(q, np.float32) / DIVISOR


def pack(a: np.ndarray) -> str:
    """uint8 bytes, gzipped, base64: the page unpacks them with the browser's DecompressionStream."""
    return base64.b64encode(gzip.compress(np.ascontiguousarray(a, np.uint8).tobytes(), 9, mtime=0)).decode()


def unpack(text: str, shape) -> np.ndarray:
    return np.frombuffer(gzip.decompress(base64.b64decode(text)), np.uint8).reshape(shape)


def subset_payload(images: int, evaluations: dict | None = None, seeds=X.SEEDS, results=None) -> dict:
    """The page's data: per evaluation (default: ``available()``) and seed the first ``images``
    rows of its posteriors, quantised (``pack``), what it scored, and per image set the labels
    of those rows."""
    source = ResultsPosteriors(results)
    evaluations = available(NETS, seeds, results) if evaluations is None else evaluations
    evals, label_sets = {}, {}
    for (net, tag), scored in evaluations.items():
        key = scored.describe()
        n = min(images, scored.images)
        entry = {"net": net, "tag": tag, "images": key, "seeds": {},
                 "scored": [scored.dataset, scored.split, scored.images, scored.subset]}
        for seed in seeds:
            p, y = source.get(net, tag, seed)
            entry["seeds"][str(seed)] = pack(quantise(p[:n]))
            labels = label_sets.setdefault(key, {"n": n, "classes": int(p.shape[1]), "labels": y[:n]})
            if not np.array_equal(labels["labels"], y[:n]):
                raise ValueError(f"{net} {tag} seed {seed}: labels differ from other evaluations of {key}")
        evals[f"{net}|{tag}"] = entry
    return {"nets": list(dict.fromkeys(e["net"] for e in evals.values())), "seeds": list(seeds),
            "methods": {tag: method_label(tag) for tag in sorted({e["tag"] for e in evals.values()})},
            "evaluations": evals, "levels": LEVELS, "divisor": DIVISOR,
            "image_sets": {k: {"n": v["n"], "classes": v["classes"], "labels": pack(v["labels"])}
                           for k, v in label_sets.items()}}


class QuantisedPosteriors:
    """The page's posteriors (``subset_payload``) read back: what its JavaScript fuses.
    ``evaluations`` are the ones it holds, for ``FusionState(evaluations, source)``."""

    def __init__(self, payload: dict):
        self.payload = payload
        self.evaluations = {}
        for entry in payload["evaluations"].values():
            dataset, split, n, subset = entry["scored"]
            self.evaluations[(entry["net"], entry["tag"])] = ImageSet(dataset, split, n, subset)

    def get(self, net: str, tag: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        entry = self.payload["evaluations"][f"{net}|{tag}"]
        scored = self.payload["image_sets"][entry["images"]]
        shape = (scored["n"], scored["classes"])
        return (dequantise(unpack(entry["seeds"][str(seed)], shape)),
                unpack(scored["labels"], (scored["n"],)).astype(np.int64))
