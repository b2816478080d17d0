"""Write tests/fixtures/grid_snapshot.json: today's grid as the code derives it (every run's
training parameters per seed, the evaluations, the sets, the schedule, the localisers and the
tables the chapters read). Generated once, before the grid became data; ``test_grid_snapshot``
checks that the code still derives exactly this.

    python tests/make_grid_snapshot.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SNAPSHOT = HERE / "fixtures" / "grid_snapshot.json"
WORK = "/fixed/runs"  # train_params(work=...): a path of no machine


def jsonable(value):
    return json.loads(json.dumps(value))


def snapshot() -> dict:
    from vgg_lib import experiments as X

    runs = list(X.RUNS)
    loc = [*X.LOCALISERS, *X.LOCALISER_UNIONS]
    return jsonable({
        "runs": sorted(runs),  # the schedule order is that of "tasks"
        "seeds_of": {n: list(X.seeds_of(n)) for n in runs},
        "train_params": {n: {str(s): X.train_params(n, s, work=WORK) for s in X.seeds_of(n)} for n in runs},
        "train_command": {n: X.train_command(n, 1, work=WORK)[1:] for n in runs},
        "needs_runs": {n: sorted(X.dependencies(n)) for n in runs},
        "evals": {n: [list(e) for e in specs] for n, specs in X.EVALS.items()},
        "sets": X.SETS,
        "set_tests": X.SET_TESTS,
        "paired_sets": sorted(X.PAIRED_SETS),  # only ever asked "is a set paired?"
        "tasks": [list(t[:3]) + [list(t[3]) if t[3] else None] for t in X.tasks()],
        "needs": [[list(t[:3]), sorted(map(list, X.needs(t)))] for t in X.tasks()],
        "localise_tasks": [list(t[:3]) for t in X.tasks(X._with_dependencies([X.LOC_SOURCE]), (0, 1, 2),
                                                        parts=("train", "localise"))],
        "transfer_sources": list(X.TRANSFER_SOURCES),
        "transfer_target": X.TRANSFER_TARGET,
        "loc_source": X.LOC_SOURCE,
        "localisers": loc,
        "localiser_seeds": {n: list(X.localiser_seeds(n)) for n in loc},
        "localisation_params": {n: {str(s): X.localisation_params(n, s) for s in X.localiser_seeds(n)} for n in loc},
        "table8": list(X.TABLE8),
        "localisation_comparisons": X.LOCALISATION_COMPARISONS,
        "evaluated": {**X.EVALUATED, **X.EVALUATED_SHAPES, **X.EVALUATED_CENTRED},
        "paper_of": X.PAPER_OF,
        "table5_nets": X.TABLE5_NETS,
        "fusion_members": list(X.FUSION_MEMBERS),
        "ensembles": X.ENSEMBLES,
        "cross_scales": list(X.CROSS_SCALES),
        "verify": list(X.VERIFY),
        "eval_images": X.EVAL_IMAGES,
        "multi_crop_images": X.MULTI_CROP_IMAGES,
        "seeds": list(X.SEEDS),
    })


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
