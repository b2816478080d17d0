"""Comparisons over seeds and their verdicts against the paper: the one owner of both.

A comparison is ``b - a`` over the seeds of two nets (or two test methods on the same nets),
reported as a dict ``{diff, low, high, se, dof, n, mde}``: the difference, its t confidence
interval, its standard error and degrees of freedom, the number of seeds, and the minimum
detectable effect (MDE) of the comparison. ``verdict`` turns such a dict and the paper's number
into a label for tables and one sentence for the prose, by the rules in its docstring.

The paper's numbers are single training runs on ImageNet, without intervals; ours are a few
seeds of a miniature on other data. Only the *direction* of a paper difference is comparable
here, never its size, and no test of "equal to the paper's number" is meaningful.
"""

from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

LEVEL = 0.95
POWER = 0.8
# Where the paper claims *no* difference (LRN "does not improve", depth "saturates" at 19 layers,
# Sect. 4.1), the margin in top-1 points within which our whole interval must lie to agree. Our
# choice, not the paper's: between the largest Table 3 step it calls no difference (E vs D, 0.3)
# and the smallest it calls an improvement (B vs A, 0.9).
NO_DIFFERENCE_MARGIN = 0.5


def _t(q: float, dof: float) -> float:
    return float(_scipy_stats.t.ppf(q, dof))


def mde(se: float, dof: float, level: float = LEVEL, power: float = POWER) -> float:
    """Minimum detectable effect: the true difference that a two-sided t test at ``level``
    detects with probability ``power``, ``(t_{1-alpha/2, dof} + t_{power, dof}) * se``
    (``alpha = 1 - level``). It is the usual approximation that ignores the far rejection tail
    and the randomness of the estimated ``se``: the exact power at the MDE (noncentral t) is 0.77
    at 2 dof (three paired seeds), 0.79 at 4 and 0.80 from about 10. NaN when ``se`` or ``dof`` is."""
    if not (np.isfinite(se) and np.isfinite(dof)) or dof <= 0:
        return float("nan")
    return (_t(0.5 + level / 2, dof) + _t(power, dof)) * float(se)


def _interval(diff: float, se: float, dof: float, n, level: float) -> dict:
    half = _t(0.5 + level / 2, dof) * se if np.isfinite(se) and np.isfinite(dof) and dof > 0 else float("nan")
    return {"diff": float(diff), "low": float(diff - half), "high": float(diff + half), "se": float(se),
            "dof": float(dof), "n": n, "mde": mde(se, dof, level)}


def mean_ci(values, level: float = LEVEL) -> dict:
    """Mean of ``values`` (one per seed) with its t confidence interval: ``{mean, low, high,
    seeds}`` (low and high NaN for a single seed)."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return {"mean": float(v.mean()), "low": float("nan"), "high": float("nan"), "seeds": len(v)}
    d = _interval(v.mean(), v.std(ddof=1) / np.sqrt(len(v)), len(v) - 1, len(v), level)
    return {"mean": d["diff"], "low": d["low"], "high": d["high"], "seeds": len(v)}


def difference(a, b, level: float = LEVEL) -> dict:
    """Mean of ``b`` minus mean of ``a`` for independent seeds (different nets trained with each
    seed), with Welch's t interval (no equal-variance assumption) and its Welch-Satterthwaite
    degrees of freedom. ``n`` is ``(len(a), len(b))``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    # Identical seeds on both sides (se 0) leave the dof undefined; any dof gives a zero-width interval.
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else 1.0
    return _interval(b.mean() - a.mean(), se, dof, (len(a), len(b)), level)


def paired_difference(a, b, level: float = LEVEL) -> dict:
    """Mean of ``b - a`` over seeds where ``a[i]`` and ``b[i]`` come from the same seed's nets
    (e.g. two test methods on one net, or two nets started from one parent), with the paired t
    interval on ``n - 1`` degrees of freedom. ``n`` is the number of pairs."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one of each per seed: {a.shape} and {b.shape}")
    return mean_difference(b - a, level)


def mean_difference(differences, level: float = LEVEL) -> dict:
    """The paired comparison from its per-seed differences (``b - a`` already taken): their mean
    with the one-sample t interval on ``n - 1`` degrees of freedom."""
    d = np.asarray(differences, float)
    if len(d) < 2:
        return _interval(d.mean(), float("nan"), float("nan"), len(d), level)
    return _interval(d.mean(), d.std(ddof=1) / np.sqrt(len(d)), len(d) - 1, len(d), level)


def compare_labels(df, base: str, other: str, value: str = "top1_err", paired: bool = False,
                   level: float = LEVEL) -> dict:
    """``other`` minus ``base`` on a per-seed table (columns ``label``, ``seed`` and ``value``,
    e.g. ``experiments.table``): paired by seed when the two nets of a seed share a parent,
    Welch's otherwise."""
    a = df[df.label == base].set_index("seed")[value]
    b = df[df.label == other].set_index("seed")[value]
    if not paired:
        return difference(a, b, level)
    if sorted(a.index) != sorted(b.index):
        raise ValueError(f"{base!r} and {other!r} do not have the same seeds to pair")
    return paired_difference(a.sort_index(), b.loc[a.sort_index().index], level)


# --- verdicts ------------------------------------------------------------------------------------

REPRODUCED, OPPOSITE, EQUIVALENT = "reproduced", "opposite", "equivalent"
UNDERPOWERED, NOT_REPRODUCED = "underpowered", "not reproduced"
NO_PAPER_LOWER, NO_PAPER_HIGHER, NO_PAPER_NONE = ("no paper number; ours lower", "no paper number; ours higher",
                                                  "no paper number; no difference")


@dataclass(frozen=True)
class Verdict:
    """``label``: a few words for a table column; ``sentence``: one Markdown-ready sentence
    with our difference, its interval and its MDE."""
    label: str
    sentence: str

    def __str__(self) -> str:
        return self.sentence


def describe(diff, unit: str = "points") -> str:
    """``-0.69 points [-2.09, +0.72], MDE 1.90``: a difference, its interval and its MDE."""
    text = f"{diff['diff']:+.2f} {unit} [{diff['low']:+.2f}, {diff['high']:+.2f}]"
    m = _mde_of(diff)
    return text + (f", MDE {m:.2f}" if np.isfinite(m) else "")


def _mde_of(diff) -> float:
    """The MDE of a comparison dict (or row): its ``mde``, else from its ``se`` and ``dof``."""
    m = diff.get("mde", None)
    if m is not None and np.isfinite(m):
        return float(m)
    se, dof = diff.get("se", float("nan")), diff.get("dof", float("nan"))
    return mde(se, dof)


def _missing(x) -> bool:
    return x is None or bool(np.isnan(float(x)))


def verdict(diff, paper: float | None, margin: float | None = None, lower_is_better: bool = True,
            unit: str = "points") -> Verdict:
    """Our difference ``diff`` (a dict or row with ``diff``, ``low``, ``high`` and ``mde``, or
    ``se`` and ``dof`` to compute it; ``b - a``) against the paper's difference ``paper`` of the
    same sign convention (None or NaN when the paper gives no number).

    The paper's numbers are single runs without intervals, so a verdict tests only the paper's
    claim, never its size: the *direction* of its difference, or, when ``margin`` is given, its
    claim that there is no difference larger than ``margin``. "Excludes 0" means the 95%
    interval (at the level the dict was made with) lies on one side of zero. The paper's size
    enters in one place only: as the effect worth detecting, against our MDE, to tell a
    comparison that could not have shown it (underpowered) from one that should have (not
    reproduced). The rules, in order:

    ================  ======================================================================
    label             when
    ================  ======================================================================
    equivalent        ``margin`` given and the interval lies inside ``(-margin, +margin)``
                      (the two one-sided tests of equivalence, each at 2.5%)
    not reproduced    ``margin`` given and the interval lies wholly beyond it: a difference
                      larger than the margin the paper says is absent
    underpowered      ``margin`` given, neither of the above: the interval straddles the
                      margin, too wide to decide
    no paper number   ``paper`` None/NaN: only our interval is described, "ours lower" /
                      "ours higher" when it excludes 0, "no difference" when it contains 0
    reproduced        the interval excludes 0 on the side of the paper's sign
    opposite          the interval excludes 0 on the other side
    not reproduced    the paper's difference is 0 and the interval excludes 0; or the
                      interval contains 0 although the MDE is at most |paper|: an effect of
                      the paper's size would have been seen 80% of the time, and was not
    underpowered      the interval contains 0 and the MDE exceeds |paper| (always when the
                      paper's difference is 0 and no margin is given): absence of evidence
    ================  ======================================================================

    ``lower_is_better`` only words the no-paper case (lower error is better; False for
    accuracies). Raises ``ValueError`` when the interval is NaN (one seed), or when the MDE is
    needed and cannot be computed."""
    d, lo, hi = float(diff["diff"]), float(diff["low"]), float(diff["high"])
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError("a verdict needs an interval: at least two seeds on each side")
    ours = describe(diff, unit)
    excludes_zero = hi < 0 or lo > 0
    better = lambda lower: "better" if lower == lower_is_better else "worse"  # noqa: E731
    if margin is not None:
        claim = f"the paper finds no difference (within ±{margin:.2f} {unit}" + (
            ")" if _missing(paper) else f"; its single run: {float(paper):+.2f})")
        if -margin < lo and hi < margin:
            return Verdict(EQUIVALENT, f"Equivalent: ours, {ours}, lies inside ±{margin:.2f}, as {claim}.")
        if lo >= margin or hi <= -margin:
            return Verdict(NOT_REPRODUCED, f"Not reproduced: ours, {ours}, lies beyond ±{margin:.2f}, "
                                           f"while {claim}.")
        return Verdict(UNDERPOWERED, f"Underpowered: ours, {ours}, straddles ±{margin:.2f}, too wide to "
                                     f"show or refute that {claim}.")
    if _missing(paper):
        if hi < 0:
            return Verdict(NO_PAPER_LOWER, f"The paper gives no number; ours is significantly lower "
                                           f"({better(True)}): {ours}.")
        if lo > 0:
            return Verdict(NO_PAPER_HIGHER, f"The paper gives no number; ours is significantly higher "
                                            f"({better(False)}): {ours}.")
        return Verdict(NO_PAPER_NONE, f"The paper gives no number; ours shows no significant difference: {ours}.")
    paper = float(paper)
    theirs = f"the paper's {paper:+.2f} (one run, no interval)"
    if excludes_zero and paper != 0:
        if (d < 0) == (paper < 0):
            return Verdict(REPRODUCED, f"Reproduced: ours, {ours}, excludes 0 on the side of {theirs}.")
        return Verdict(OPPOSITE, f"Opposite: ours, {ours}, excludes 0 on the other side from {theirs}.")
    if excludes_zero:
        return Verdict(NOT_REPRODUCED, f"Not reproduced: the paper finds no difference, ours, {ours}, excludes 0.")
    m = _mde_of(diff)
    if np.isnan(m):
        raise ValueError("a comparison whose interval contains 0 needs its MDE (or se and dof) for a verdict")
    if m > abs(paper):
        return Verdict(UNDERPOWERED, f"Underpowered: ours, {ours}, contains 0, and an effect of the size of "
                                     f"{theirs} is below the MDE, so these seeds could not have shown it.")
    return Verdict(NOT_REPRODUCED, f"Not reproduced: ours, {ours}, contains 0 although {theirs} is above the "
                                   f"MDE, so an effect of its size would likely have been seen.")
