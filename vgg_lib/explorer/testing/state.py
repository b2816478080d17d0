"""What the testing explorer shows, as plain Python: no ipywidgets, no drawing.

``TestingState`` holds the net, the validation image, the test method (centre crop, multi-crop,
dense; Sect. 3.2), the test scale Q and the class whose scores are shown; ``numbers`` reports
what the page shows: the method's posteriors, its prediction against the label, and each crop's
or window's posterior of the shown class. Views come from a source per net: ``LiveViews`` (a
checkpoint, computing now) or ``PrecomputedViews`` (the committed views). Every change is
checked first: bad input raises ``ValueError`` with one line saying what is allowed, and leaves
the state as it was.
"""

from __future__ import annotations

import numpy as np

METHODS = {"centre": "centre crop", "multi": "multi-crop (5x5 grid and flips)",
           "dense": "dense (fully convolutional)"}


def softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class TestingState:
    """``net``, ``image`` (a validation index), ``method`` (a key of ``METHODS``), ``Q``, ``cls``
    (the class shown; ``None``: the image's label); ``view`` and ``numbers`` follow from them.

    ``sources``: ``{net: LiveViews or PrecomputedViews}``; ``images``, ``qs``, ``classes``: what
    may be chosen."""

    __test__ = False        # a state of the testing explorer, not a pytest test class

    def __init__(self, sources: dict, images, qs, classes, net=None, method: str = "dense", Q=None):
        self.sources, self.images, self.qs, self.classes = dict(sources), list(images), list(qs), list(classes)
        self.net = net if net in self.sources else next(iter(self.sources))
        self.image, self.method, self.cls = self.images[0], "dense", None
        self.Q = self.qs[len(self.qs) // 2] if Q is None else Q
        self.select(method=method, Q=self.Q)

    def select(self, net=None, image=None, method=None, Q=None, cls=None) -> None:
        """Change any of the selection; ``cls="label"`` shows the image's class again."""
        checks = (("net", net, list(self.sources)), ("image", image, self.images), ("method", method, list(METHODS)),
                  ("Q", Q, self.qs), ("class", cls, [*self.classes, "label"]))
        for what, value, allowed in checks:
            if value is not None and value not in allowed:
                raise ValueError(f"{what} {value!r} is not available; allowed: {', '.join(map(str, allowed))}")
        if image is not None and image != self.image:
            self.cls = None                          # a new image: show its own class
        self.net = self.net if net is None else net
        self.image = self.image if image is None else image
        self.method = self.method if method is None else method
        self.Q = self.Q if Q is None else Q
        if cls is not None:
            self.cls = None if cls == "label" else cls

    @property
    def view(self) -> dict:
        return self.sources[self.net].view(self.image, self.Q)

    @property
    def image_uri(self) -> str:
        return self.sources[self.net].image_uri(self.image)

    @property
    def numbers(self) -> dict:
        """``posteriors`` (the method's), ``prediction``, ``label``, ``right``, ``shown`` (class
        index), ``per_crop`` (the shown class's posterior per crop, or per window of the score
        map), ``boxes`` ((top, left, side) in rescaled pixels of the crops or windows), ``best``
        (the box most confident of the shown class)."""
        v = self.view
        shown = v["label"] if self.cls is None else self.classes.index(self.cls)
        if self.method == "centre":
            middle = v["positions"][len(v["positions"]) // 2]        # the grid's middle crop is the centre crop
            post, per, boxes = v["centre"], v["centre"][None, shown], [(*middle, v["crop"])]
        elif self.method == "multi":
            post, per = v["multi"], v["crops"][:, shown]
            boxes = [(int(t), int(left), v["crop"]) for t, left in v["positions"]]
        else:
            h, w = v["scores"].shape[:2]
            post, per = v["dense"], softmax(v["scores"])[..., shown].reshape(-1)
            boxes = [(i * v["stride"], j * v["stride"], v["crop"]) for i in range(h) for j in range(w)]
        prediction = int(np.argmax(post))
        best = int(np.argmax(per)) % len(boxes)        # a flipped crop has its crop's box
        return {"best": best, "posteriors": np.asarray(post), "prediction": prediction, "label": v["label"],
                "right": prediction == v["label"], "shown": shown, "per_crop": np.asarray(per),
                "boxes": [tuple(int(b) for b in box) for box in boxes]}

    def __getitem__(self, key: str):
        return self.numbers[key]
