"""What the fusion calculator shows, as plain Python: no ipywidgets, no drawing.

``FusionState`` holds the selected nets, evaluation methods (tags such as ``dense_paper``) and
seed; ``result`` fuses every selected net's evaluation by every selected method that exists
(``evaluate.fuse``, Sect. 4.4) and scores it (``evaluate.topk_error``). A selection that cannot
be fused (nothing selected, no such evaluation, evaluations of different images) gives a
``message`` instead of numbers; a name that does not exist raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np
import torch

from ... import evaluate as E
from ... import experiments as X
from .evaluations import ImageSet, ResultsPosteriors, available, method_label

DEFAULT_NETS = ("D-S256-512", "E-full")      # the paper's best pair (Table 6: D and E, jittered)
DEFAULT_METHODS = ("dense_paper",)


def topk_error(posteriors, labels, k: int = 1) -> float:
    """Top-k error in percent, a tie across the k-th place counted as a miss: an image is right
    when fewer than k other classes have a posterior at least as high as its label's.

    ``evaluate.topk_error`` leaves ties to ``torch.topk``, whose order among equal values is
    unspecified; 8-bit posteriors (the page's) tie often (many classes at 0), so the calculator
    and its JavaScript share this rule. Without ties both give the same number."""
    p = torch.as_tensor(posteriors)
    y = torch.as_tensor(labels).long()
    E.topk_error(p, y, k)                                     # the same checks of shapes, k, labels
    own = p.gather(1, y[:, None])
    hit = (p >= own).sum(1) - 1 < k                           # fewer than k others at least as likely
    return 100.0 * (1.0 - hit.double().mean().item())          # evaluate.topk_error's very formula


def ties(posteriors, labels) -> int:
    """Images on which the label's posterior equals another class's (where the tie rule matters)."""
    p, y = np.asarray(posteriors), np.asarray(labels)
    own = p[np.arange(len(y)), y]
    return int(((p == own[:, None]).sum(1) > 1).sum())


class FusionState:
    """``nets``, ``methods``, ``seed``: the selection; ``result``: the fused errors or a message.

    ``evaluations``: ``{(net, tag): ImageSet}`` that may be selected (default: every committed
    one, ``evaluations.available``); ``source``: where posteriors come from (default the
    committed ones; ``QuantisedPosteriors`` for the page's subset)."""

    def __init__(self, evaluations: dict[tuple[str, str], ImageSet] | None = None, source=None,
                 nets=DEFAULT_NETS, methods=DEFAULT_METHODS, seed: int = X.SEEDS[0], seeds=X.SEEDS):
        self.evaluations = available() if evaluations is None else evaluations
        self.source = ResultsPosteriors() if source is None else source
        self.seeds = tuple(seeds)
        self.all_nets = list(dict.fromkeys(n for n, _ in self.evaluations))
        self.all_methods = sorted({t for _, t in self.evaluations})
        self.nets, self.methods, self.seed = [], [], self.seeds[0]
        self.select(nets=[n for n in nets if n in self.all_nets],
                    methods=[m for m in methods if m in self.all_methods], seed=seed)

    def select(self, nets=None, methods=None, seed=None) -> None:
        """Change the selection (each checked before any is applied)."""
        nets = self.nets if nets is None else self._check(list(nets), self.all_nets, "net")
        methods = self.methods if methods is None else self._check(list(methods), self.all_methods, "method")
        if seed is not None and seed not in self.seeds:
            raise ValueError(f"seed {seed!r} is not one of the reference seeds {', '.join(map(str, self.seeds))}")
        self.nets, self.methods = nets, methods
        self.seed = self.seed if seed is None else seed

    @staticmethod
    def _check(names: list, allowed: list, what: str) -> list:
        bad = [n for n in names if n not in allowed]
        if bad:
            raise ValueError(f"{what} {bad[0]!r} has no committed evaluation; allowed: {', '.join(allowed)}")
        return [n for n in allowed if n in names]          # in the listed order, once each

    @property
    def members(self) -> list[tuple[str, str]]:
        """The selected (net, tag) pairs that were evaluated."""
        return [(n, t) for n in self.nets for t in self.methods if (n, t) in self.evaluations]

    @property
    def result(self) -> dict:
        """``members``, ``skipped`` (selected pairs without an evaluation), ``message``; when it
        can be fused also ``images``, ``top1``, ``top5`` (percent) and ``singles`` (each
        member's own top-1 error)."""
        members = self.members
        skipped = [f"{n} ({method_label(t)})" for n in self.nets for t in self.methods
                   if (n, t) not in self.evaluations]
        out = {"members": members, "skipped": skipped, "message": ""}
        scored = {self.evaluations[m] for m in members}
        if not self.nets or not self.methods:
            out["message"] = "Select at least one net and one evaluation method."
        elif not members:
            out["message"] = "None of the selected nets was evaluated by the selected methods."
        elif len(scored) > 1:
            first = {}                                   # each image set, by its first member
            for m in members:
                first.setdefault(self.evaluations[m], m)
            out["message"] = ("These evaluations scored different images, so their posteriors cannot be "
                              "averaged image by image: " + "; ".join(
                                  f"{n} ({method_label(t)}): {s.describe()}" for s, (n, t) in first.items())
                              + ". Select evaluations of the same images.")
        if out["message"]:
            return out
        posts = [self.source.get(n, t, self.seed) for n, t in members]
        labels = posts[0][1]
        fused = E.fuse([p for p, _ in posts])
        out.update(images=len(labels), top1=topk_error(fused, labels, 1),
                   top5=topk_error(fused, labels, 5) if fused.shape[1] >= 5 else None,
                   singles={f"{n}|{t}": topk_error(p, labels, 1) for (n, t), (p, _) in zip(members, posts)})
        return out
