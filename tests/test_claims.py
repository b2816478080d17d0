"""The scorecard: every claim the book tests, its evidence and its verdict (vgg_lib.claims)."""
import json
from pathlib import Path

from vgg_lib import claims, stats
from vgg_lib import experiments as X

REPO = Path(__file__).resolve().parents[1]
EXPECTED = REPO / "results" / "expected_verdicts.json"


def test_every_claim_reads_runs_of_the_grid_and_is_shown_on_a_page_of_the_book():
    toc = (REPO / "_toc.yml").read_text()
    names = [c.name for c in claims.claims()]
    assert len(names) == len(set(names)) >= 25
    for c in claims.claims():
        assert c.runs and all(r in X.RUNS for r in c.runs), c
        assert f"book/{c.page.split('#')[0].removesuffix('.html')}" in toc, c.page
        assert c.paper is None or isinstance(c.paper, float), c
    # the claims of "no difference" (Sect. 4.1) are tested for equivalence, the others for direction
    margins = {c.name for c in claims.claims() if c.margin is not None}
    assert {n.split(" (")[0] for n in margins} == {"depth: E vs D", "LRN: A-LRN vs A"}


def test_a_claim_whose_runs_have_not_landed_is_pending_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(X, "landed_seeds", lambda set_name, results=None: (0,))
    row = next(c for c in claims.claims() if c.name == "depth: D vs A (all training data)")
    assert row.evidence(None) is None


def test_the_committed_verdicts_change_only_with_the_expected_verdicts_file():
    expected = json.loads(EXPECTED.read_text())["verdicts"]
    card = claims.scorecard()
    assert set(card.index) == set(expected), "claims were added or removed: update results/expected_verdicts.json"
    changed = {name: (expected[name], v) for name, v in card.verdict.items() if expected[name] != v}
    assert not changed, ("verdicts changed (expected, now): " + json.dumps(changed)
                         + "; update results/expected_verdicts.json in the commit that changes the results")
    # the two rows the Reproduction chapter once mislabelled: the paper's direction, reproduced
    assert card.loc["multi-scale test: C, three Q vs one", "verdict"] == stats.REPRODUCED
    assert card.loc["multi-crop & dense vs dense: D jittered (shapes)", "verdict"] == stats.REPRODUCED
    assert card.loc["transfer: E vs A (mean class recall)", "paper"] != card.loc["transfer: E vs A (mean class recall)", "paper"]  # NaN: no paper number
