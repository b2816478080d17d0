"""The paper's claims that the book tests, one record each, and the verdict of each: the scorecard.

A claim is a comparison of two things the paper compares (two nets, two test methods, a fusion
and a single net, two localisers), read as *second minus first*, in top-1 error points unless it
says otherwise: the paper's number (a single run, no interval; ``None`` where the paper gives
none, for our controls) and ours over seeds (``vgg_lib.stats``: paired where the two share each
seed's net or data order, Welch's otherwise), and the verdict of ``stats.verdict``. The claims
are data; ``scorecard()`` computes them all from ``results/`` for the scorecard page and the
Reproduction chapter, and ``tests/test_claims.py`` fails when a committed verdict changes without
``results/expected_verdicts.json`` changing with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import experiments as X
from . import paper, stats


@dataclass(frozen=True)
class Claim:
    """One comparison of the paper. ``evidence(results)`` returns our difference (a ``stats`` dict)
    or ``None`` while its runs have not landed; ``margin``: the claim is that there is *no*
    difference, tested for equivalence within it; ``page``: the book page that shows it."""

    name: str
    section: str
    table: str  # where the Reproduction chapter lists it: "3", "3 (all training data)", "4", "5", "6", "A", "B"
    page: str
    paper: float | None
    evidence: Callable
    runs: tuple[str, ...]
    margin: float | None = None
    lower_is_better: bool = True


# What one scorecard() has read: several claims come from one table (the fusions, Table 5's
# methods, the transfer scores, the localisers), which is read from results/ once.
_READ: dict = {}


def _read(reader, *args, **kwargs):
    key = (reader.__name__, args, tuple(sorted(kwargs.items())))
    if key not in _READ:
        _READ[key] = reader(*args, **kwargs)
    return _READ[key]


def _table3(config: str, S: str = "256") -> float:
    return X.paper_table3(config, S)[0]


def _set(set_name: str, first: str, second: str, landed: bool = False):
    """Evidence from a named set of the grid: ``second - first`` of its labels over all of the
    set's seeds, or (``landed``: a set still landing seed by seed) over those in ``results/``,
    ``None`` under two."""
    def evidence(results):
        wanted = X.landed_seeds(set_name, results) if landed else None
        if wanted is not None and len(wanted) < 2:
            return None
        df = X.table(set_name, seeds=wanted, results=results)
        return stats.compare_labels(df, first, second, paired=set_name in X.PAIRED_SETS)
    return evidence


def _runs(set_name: str, *labels: str) -> tuple[str, ...]:
    return tuple(X.SETS[set_name][label] for label in labels)


def _set_claims(suffix: str, landed: bool, section_note: str) -> list[Claim]:
    """The architecture comparisons of Table 3 (and Sect. 4.1's 5x5 net) on one set family."""
    page = "reproduction.html#table-3-the-comparisons-of-training" if not suffix else \
        "reproduction.html#the-core-comparisons-on-all-the-training-data"
    rows = [("depth: B vs A", "DEPTH", "A (11)", "B (13)", _table3("B") - _table3("A"), None),
            ("depth: D vs A", "DEPTH", "A (11)", "D (16)", _table3("D") - _table3("A"), None),
            ("depth: E vs A", "DEPTH", "A (11)", "E (19)", _table3("E") - _table3("A"), None),
            # Sect. 4.1: the error "saturates" at 19 layers: no difference claimed from D to E
            ("depth: E vs D", "DEPTH", "D (16)", "E (19)", _table3("E") - _table3("D"), stats.NO_DIFFERENCE_MARGIN),
            # Sect. 4.1: LRN "does not improve" A
            ("LRN: A-LRN vs A", "LRN", "A", "A-LRN", _table3("A-LRN") - _table3("A"), stats.NO_DIFFERENCE_MARGIN),
            # Sect. 4.1: B with 5x5 layers instead of pairs of 3x3 has a top-1 error 7% higher
            ("filters: B vs B-5x5", "FILTERS", "B-5x5", "B: 3x3 pairs", -7.0, None),
            ("kernels: D (3x3) vs C (1x1)", "ONE_BY_ONE", "C: 1x1", "D: 3x3", _table3("D") - _table3("C"), None)]
    table = "3" + section_note
    return [Claim(f"{name}{section_note}", "Table 3, Sect. 4.1", table, page, p, _set(s + suffix, a, b, landed),
                  _runs(s + suffix, a, b), margin)
            for name, s, a, b, p, margin in rows]


def _multi_scale_gain(label: str):
    """Table 4 against Table 3: dense at three test scales minus dense at one, per seed (paired)."""
    def evidence(results):
        e = X.evaluations(results, nets={label: {**X.EVALUATED, **X.EVALUATED_SHAPES}[label]})
        return stats.paired_difference(e["dense, single Q"], e["dense, three Q"])
    return evidence


def _table5(net: str, first: str, second: str):
    def evidence(results):
        t = _read(X.table5, X.TABLE5_NETS[net], results=results)
        return stats.paired_difference(t[first], t[second])
    return evidence


def _fusion(ensemble: str):
    def evidence(results):
        t6 = _read(X.fusion_table, results=results)
        return stats.paired_difference(t6.loc["best single net"], t6.loc[ensemble])
    return evidence


def _transfer(first: str, second: str):
    """``second - first`` in mean class recall of the best variant (higher is better)."""
    def evidence(results):
        s = _read(X.transfer_scores, results).sort_values("seed")
        variant = s.drop(columns=["source", "seed"]).mean().idxmax()
        a, b = (s[s.source == n][variant].to_numpy() for n in (first, second))
        # the untrained D takes each seed's trained net's architecture: a paired design
        return stats.paired_difference(a, b) if "random" in first + second else stats.difference(a, b)
    return evidence


def _localisation(label: str):
    def evidence(results):
        df = _read(X.localisation_table, results)
        better, base, value = X.LOCALISATION_COMPARISONS[label]
        a, b = (df[df.variant == v].set_index("seed")[value] for v in (base, better))
        seeds = sorted(set(a.index) & set(b.index))
        return stats.paired_difference(a.loc[seeds], b.loc[seeds])
    return evidence


def claims() -> list[Claim]:
    """Every claim the book tests, in the paper's order."""
    p5 = paper.table(5).set_index(["config", "method"]).top1_val_error
    submission, two_best = paper.table(6).query("evaluation == 'dense'").top1_val_error
    loc = X.LOCALISATION_COMPARISONS
    jitter_vs_256 = _table3("D", "256-512") - _table3("D")
    jitter_vs_384 = _table3("D", "256-512") - _table3("D", "384")
    return [
        *_set_claims("", False, ""),
        *_set_claims("_60K", True, " (all training data)"),
        *[Claim(f"scale ({where}): jittered vs {first}", "our control" if p is None else "Table 3, Sect. 3.1", "3",
                "training.html", p, _set(set_name, first, "S=[256,512]"), _runs(set_name, first, "S=[256,512]"))
          for set_name, where, first, p in (
              ("SCALE", "shapes", "S=256", jitter_vs_256), ("SCALE", "shapes", "S=384", jitter_vs_384),
              ("SCALE", "shapes", "S=256, trained on", None),  # the control the paper lacks
              ("SCALE_FASHION", "Fashion-MNIST", "S=256, trained on", None),
              ("SCALE_CENTRED", "centred objects", "S=256", jitter_vs_256),
              ("SCALE_CENTRED", "centred objects", "S=384", jitter_vs_384))],
        Claim("init: plain D from A's layers vs Glorot", "Sect. 3.1", "3", "training.html", None,
              _set("INIT", "D, Glorot", "D, from A"), _runs("INIT", "D, Glorot", "D, from A")),
        Claim("multi-scale test: C, three Q vs one", "Table 4", "4", "testing.html",
              X.paper_multi_scale_gain()["C"], _multi_scale_gain("C"), (X.EVALUATED["C"],)),
        Claim("multi-scale test: D jittered (shapes), three Q vs one", "Table 4", "4", "testing.html",
              X.paper_multi_scale_gain().get("D (shapes), S=[256,512]"),
              _multi_scale_gain("D (shapes), S=[256,512]"), (X.EVALUATED_SHAPES["D (shapes), S=[256,512]"],)),
        *[Claim(f"{b} vs {a}: {net}", "Table 5, Sect. 4.3", "5", "testing.html", p5["D", b] - p5["D", a],
                _table5(net, a, b), (X.TABLE5_NETS[net],))
          for net in X.TABLE5_NETS for a, b in [("dense", "multi-crop"), ("dense", "multi-crop & dense")]],
        Claim("fusion: D (jittered) + E vs the best single net", "Table 6, Sect. 4.4", "6", "fusion.html",
              two_best - p5["D", "dense"], _fusion("D (jittered) + E"), tuple(X.ENSEMBLES["D (jittered) + E"])),
        Claim("fusion: the seven-net submission vs the best single net", "Table 6, Sect. 4.4", "6", "fusion.html",
              submission - p5["D", "dense"], _fusion("C, D, E, D-S384, D jittered, B, A"),
              tuple(X.ENSEMBLES["C, D, E, D-S384, D jittered, B, A"])),
        Claim("transfer: E vs A (mean class recall)", "Appendix B", "B", "transfer.html", None,
              _transfer("A-full", "E-full"), ("A-full", "E-full"), lower_is_better=False),
        Claim("transfer: trained D vs the untrained D (mean class recall)", "Appendix B", "B", "transfer.html", None,
              _transfer("random D", "D-full"), ("D-full",), lower_is_better=False),
        *[Claim(f"localisation: {label}", "Table 8, Appendix A", "A", "localisation.html", paper_diff,
                _localisation(label), (X.LOC_SOURCE,))
          for label, paper_diff in _paper_localisation().items() if label in loc],
    ]


def _paper_localisation() -> dict[str, float]:
    """Table 8's differences (top-5 localisation error, protocol 1): PCR vs SCR with the fc layers
    fine-tuned, and all layers vs the fc layers for PCR."""
    t = paper.table(8)
    err = {(r.regression, "all" if r.fine_tuned_layers == "all" else "fc"): r.top5_loc_error for r in t.itertuples()}
    return {"PCR vs SCR, fc layers": err["PCR", "fc"] - err["SCR", "fc"],
            "all vs fc layers, PCR": err["PCR", "all"] - err["PCR", "fc"]}


PENDING = "pending: fewer than two seeds"


def scorecard(results=None):
    """One row per claim: the paper's number, ours with its 95% interval and MDE, the number of
    seeds, the verdict (``stats.verdict``), where the book shows it and which runs it reads."""
    import pandas as pd

    rows = []
    _READ.clear()
    try:
        evidence = {c.name: c.evidence(results) for c in claims()}
    finally:
        _READ.clear()
    for c in claims():
        d = evidence[c.name]
        row = {"claim": c.name, "paper": c.paper, "section": c.section, "table": c.table, "page": c.page,
               "runs": ", ".join(c.runs)}
        if d is None:
            rows.append({**row, "ours": np.nan, "low": np.nan, "high": np.nan, "mde": np.nan, "seeds": 0,
                         "verdict": PENDING, "sentence": ""})
            continue
        v = stats.verdict(d, c.paper, c.margin, lower_is_better=c.lower_is_better)
        rows.append({**row, "ours": d["diff"], "low": d["low"], "high": d["high"], "mde": d["mde"],
                     "seeds": int(np.min(d["n"])), "verdict": v.label, "sentence": v.sentence})
    return pd.DataFrame(rows).set_index("claim")


def formatted(card):
    """Rows of ``scorecard()`` as the book prints them: signed numbers, the interval as one
    string, and a dash (never "nan") where the paper has no number or no interval exists yet."""
    import pandas as pd

    def number(fmt):
        return lambda v: "—" if pd.isna(v) else format(v, fmt)

    return pd.DataFrame({
        "ours": card.ours.map(number("+.2f")),
        "95% CI": ["—" if pd.isna(lo) else f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in zip(card.low, card.high)],
        "MDE": card.mde.map(number(".2f")), "paper": card.paper.map(number("+.2f")),
        "verdict": card.verdict, "seeds": card.seeds}, index=card.index)
