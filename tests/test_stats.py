"""vgg_lib.stats: intervals and MDEs against scipy and a power calculation, and every branch of
the verdict pinned with numbers (among them two rows the Reproduction chapter once mislabelled)."""

import numpy as np
import pytest
from scipy import stats as sp

from vgg_lib import stats

A = [31.2, 30.4, 32.0]
B = [29.1, 30.2, 28.7, 29.6]


# --- intervals --------------------------------------------------------------------------------

def test_mean_ci_is_the_t_interval_over_seeds():
    ci = stats.mean_ci(A)
    low, high = sp.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=sp.sem(A))
    assert set(ci) == {"mean", "low", "high", "seeds"}
    assert ci["seeds"] == 3 and ci["mean"] == pytest.approx(np.mean(A))
    assert (ci["low"], ci["high"]) == pytest.approx((low, high))
    one = stats.mean_ci([30.0])
    assert one["mean"] == 30.0 and np.isnan(one["low"]) and np.isnan(one["high"])


def test_difference_is_welch_as_scipy_computes_it():
    d = stats.difference(A, B)
    res = sp.ttest_ind(B, A, equal_var=False)
    low, high = res.confidence_interval(0.95)
    assert d["diff"] == pytest.approx(np.mean(B) - np.mean(A))
    assert (d["low"], d["high"]) == pytest.approx((low, high))
    assert d["dof"] == pytest.approx(res.df)
    assert d["se"] == pytest.approx(d["diff"] / res.statistic)
    assert d["n"] == (3, 4)
    assert d["mde"] == pytest.approx(stats.mde(d["se"], d["dof"]))


def test_paired_difference_is_the_paired_t_as_scipy_computes_it():
    a, b = A, [30.1, 29.9, 30.3]
    d = stats.paired_difference(a, b)
    res = sp.ttest_rel(b, a)
    low, high = res.confidence_interval(0.95)
    assert (d["diff"], d["low"], d["high"]) == pytest.approx((np.mean(np.subtract(b, a)), low, high))
    assert d["dof"] == 2 and d["n"] == 3
    assert d["se"] == pytest.approx(d["diff"] / res.statistic)
    with pytest.raises(ValueError):
        stats.paired_difference(A, B)


def test_compare_labels_pairs_by_seed_not_by_row_order():
    import pandas as pd

    df = pd.DataFrame({"label": ["x"] * 3 + ["y"] * 3, "seed": [0, 1, 2, 2, 0, 1],
                       "top1_err": [10.0, 20.0, 30.0, 31.0, 11.0, 21.0]})
    d = stats.compare_labels(df, "x", "y", paired=True)
    assert d["diff"] == pytest.approx(1.0) and d["high"] - d["low"] == pytest.approx(0.0)
    assert stats.compare_labels(df, "x", "y")["diff"] == pytest.approx(1.0)  # Welch: no pairing needed
    with pytest.raises(ValueError):
        stats.compare_labels(df[df.seed != 2].iloc[:-1], "x", "y", paired=True)


# --- the minimum detectable effect ------------------------------------------------------------

def test_mde_tends_to_the_normal_formula():
    # Large samples: (z_0.975 + z_0.8) * se = 2.8016 se, the textbook 80%-power effect.
    assert stats.mde(1.0, 1e6) == pytest.approx(sp.norm.ppf(0.975) + sp.norm.ppf(0.8), rel=1e-4)
    assert stats.mde(0.5, 2) == pytest.approx((sp.t.ppf(0.975, 2) + sp.t.ppf(0.8, 2)) * 0.5)
    assert np.isnan(stats.mde(float("nan"), 2))


@pytest.mark.parametrize("dof", [2, 4, 10])
def test_power_at_the_mde_is_about_80_percent_by_the_noncentral_t(dof):
    """The exact power of a two-sided t test at a true effect ``delta`` is a noncentral-t tail
    probability with non-centrality ``delta / se``; at ``delta = mde`` it is close to 0.8 (the MDE
    formula ignores the far tail and the randomness of ``se``: 0.77 at 2 dof)."""
    se = 1.0
    crit = sp.t.ppf(0.975, dof)
    nc = stats.mde(se, dof) / se
    power = sp.nct.sf(crit, dof, nc) + sp.nct.cdf(-crit, dof, nc)
    assert power == pytest.approx(0.8, abs=0.04)


def test_power_at_the_mde_by_simulation():
    """Seeds simulated with a true paired effect equal to the MDE are detected about 80% of the
    time (0.79 by the noncentral t for 5 seeds)."""
    rng = np.random.default_rng(0)
    n, sigma, sims = 5, 1.0, 20_000
    effect = stats.mde(sigma / np.sqrt(n), n - 1)
    a = rng.normal(0.0, sigma, (sims, n))
    b = a + rng.normal(effect, sigma, (sims, n))  # per-seed differences: sd sigma, mean the MDE
    p = sp.ttest_rel(b, a, axis=1).pvalue
    assert (p < 0.05).mean() == pytest.approx(0.79, abs=0.02)


# --- the verdict, branch by branch ------------------------------------------------------------

def row(diff, low, high, mde=1.0):
    return {"diff": diff, "low": low, "high": high, "mde": mde}


def test_the_two_rows_the_reproduction_chapter_mislabelled_reproduce_the_papers_direction():
    # C's multi-scale gain and multi-crop & dense on shapes: the paper's -0.4 is small, but a
    # single run's difference says nothing about a margin; both our intervals exclude 0 below it.
    c_gain = stats.verdict(row(-1.54, -2.95, -0.13, 1.9), -0.4)
    shapes = stats.verdict(row(-5.24, -7.39, -3.09, 2.9), -0.4)
    assert c_gain.label == shapes.label == "reproduced"
    assert "-1.54 points [-2.95, -0.13], MDE 1.90" in c_gain.sentence
    assert "-0.40" in c_gain.sentence


def test_opposite():
    v = stats.verdict(row(1.2, 0.3, 2.1), -2.6)
    assert v.label == "opposite" and "+1.20 points [+0.30, +2.10]" in v.sentence


def test_contains_zero_underpowered_or_not_reproduced_by_the_mde():
    assert stats.verdict(row(-0.69, -2.09, 0.72, 1.9), -1.0).label == "underpowered"
    assert stats.verdict(row(-0.69, -2.09, 0.72, 1.9), -2.6).label == "not reproduced"
    assert stats.verdict(row(0.1, -0.2, 0.4, 0.5), 0.5).label == "not reproduced"  # MDE equal: could see it


def test_the_mde_is_computed_from_se_and_dof_when_absent_and_required_when_needed():
    d = {"diff": -0.5, "low": -1.5, "high": 0.5, "se": 0.3, "dof": 4}
    m = stats.mde(0.3, 4)
    assert stats.verdict(d, -(m + 0.01)).label == "not reproduced"
    assert stats.verdict(d, -(m - 0.01)).label == "underpowered"
    assert f"MDE {m:.2f}" in stats.verdict(d, -1.0).sentence
    with pytest.raises(ValueError):
        stats.verdict({"diff": -0.5, "low": -1.5, "high": 0.5}, -1.0)
    # an interval that excludes 0 does not need the MDE
    assert stats.verdict({"diff": -1.0, "low": -1.5, "high": -0.5}, -1.0).label == "reproduced"


@pytest.mark.parametrize("paper", [None, float("nan"), np.float64("nan")])
def test_no_paper_number(paper):
    lower = stats.verdict(row(-1.0, -1.8, -0.2), paper)
    assert lower.label == "no paper number; ours lower"
    assert lower.sentence.startswith("The paper gives no number") and "(better)" in lower.sentence
    assert stats.verdict(row(1.0, 0.2, 1.8), paper).label == "no paper number; ours higher"
    assert "(better)" in stats.verdict(row(1.0, 0.2, 1.8), paper, lower_is_better=False).sentence
    none = stats.verdict(row(0.1, -0.6, 0.8), paper)
    assert none.label == "no paper number; no difference" and "MDE 1.00" in none.sentence


def test_equivalence_needs_a_margin():
    assert stats.verdict(row(0.1, -0.2, 0.4), 0.1, margin=0.5).label == "equivalent"
    assert stats.verdict(row(0.2, 0.05, 0.35), 0.1, margin=0.5).label == "equivalent"  # tiny but real: inside
    assert stats.verdict(row(1.2, 0.6, 1.8), 0.1, margin=0.5).label == "not reproduced"
    assert stats.verdict(row(0.3, -0.4, 1.0), 0.1, margin=0.5).label == "underpowered"
    assert stats.verdict(row(0.1, -0.2, 0.4), None, margin=0.5).label == "equivalent"
    # without a margin, a paper difference of exactly 0 can only be refuted, never confirmed
    assert stats.verdict(row(0.1, -0.2, 0.4, 0.5), 0.0).label == "underpowered"
    assert stats.verdict(row(0.6, 0.2, 1.0), 0.0).label == "not reproduced"


def test_a_verdict_needs_an_interval():
    with pytest.raises(ValueError):
        stats.verdict(stats.paired_difference([1.0], [2.0]), -1.0)


def test_verdicts_of_real_comparisons_agree_with_scipys_test():
    """The label follows scipy's p value: reproduced exactly when p < 0.05 with the paper's sign."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        a, b = rng.normal(30, 1, 3), rng.normal(30 + rng.normal(0, 1.5), 1, 3)
        v = stats.verdict(stats.difference(a, b), -1.0)
        p = sp.ttest_ind(b, a, equal_var=False).pvalue
        significant_below = p < 0.05 and b.mean() < a.mean()
        assert (v.label == "reproduced") == significant_below


def test_mean_difference_is_the_paired_comparison_of_its_differences():
    a, b = np.array(A), np.array([30.1, 29.9, 30.3])
    assert stats.mean_difference(b - a) == pytest.approx(stats.paired_difference(a, b))
    low, high = sp.ttest_1samp(b - a, 0.0).confidence_interval(0.95)
    assert (stats.mean_difference(b - a)["low"], stats.mean_difference(b - a)["high"]) == pytest.approx((low, high))
