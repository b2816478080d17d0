"""The book's reference experiments: Tables 3-6 of the paper, re-run in miniature.

The grid is data: every run of it is one record of ``grid.yaml`` (this folder), read and
checked by ``grid.py``; the chapters read the results from ``results/`` (committed, with
provenance) through ``readers.py`` and never train a grid themselves::

    python -m vgg_lib.experiments reproduce           # the whole grid (make reproduce), resumable
    python -m vgg_lib.experiments verify              # re-run the cheapest run, compare
    python -m vgg_lib.experiments localise            # only Appendix A's localisers (make localise)

    from vgg_lib import experiments as X
    X.table("DEPTH")                 # one row per run and seed: errors in percent, epochs, ...
    X.compare("DEPTH", "A (11)", "E (19)")  # difference of the means with a 95% confidence interval

The names below are those of the package's grid file (``grid.RUNS`` and so on are the ones the
functions read: a test that swaps the grid does it there, ``grid.use(path)``).
"""

from __future__ import annotations

from . import grid, readers, runner  # noqa: F401
from .grid import (CROP, CROSS_SCALES, ENSEMBLES, EVAL_IMAGES, EVALS, EVALUATED,  # noqa: F401
                   EVALUATED_SHAPES, FUSION_MEMBERS, LOC_SOURCE, LOCALISATION, LOCALISER_UNIONS, LOCALISERS,
                   MULTI_CROP_IMAGES, PAIRED_SETS, PARTS, RECIPES, RUNS, S_256, S_384, S_512, SEEDS, SEEDS_OF,
                   SET_TESTS, SETS, TABLE5_NETS, TABLE8, TRANSFER_SOURCES, TRANSFER_TARGET, VERIFY,
                   GridError, dependencies, folder_name, localiser_seeds, needs, repo_root, results_root,
                   seeds_of, tasks, train_params, with_dependencies, work_root)
from .readers import (DENSE_AVERAGES, LOCALISATION_COMPARISONS, PAPER_OF, TABLE5_METHODS,  # noqa: F401
                      beside_paper, compare, cross_scale, dense_averaging,
                      evaluated_centred, evaluations, fusion_table, grid_wall_time, landed_seeds, load, localisation_comparisons,
                      localisation_examples, localisation_metrics, localisation_table,
                      paired_table, paper_multi_scale_gain, paper_table3, posteriors, summarise, table, table5,
                      trained, transfer_scores, verification_model)
from .runner import (LIGHT_FILES, LOCALISATION_FILES, _display, _stale, eval_tag, evaluate_run,  # noqa: F401
                     is_done, localisation_folder, localisation_params, localise_run, localise_union_run,
                     pending, provenance, reproduce, test_scales, train_command, train_run, transfer_data,
                     transfer_run, verify)

# The recipes by name (RECIPE, FULL, FULL_60K, PLAIN, SHAPES, SHAPES_TUNE, CENTRED_TUNE): each a
# dict of TrainConfig fields (SHAPES_TUNE's init_run names the run it starts from).
globals().update(RECIPES)
EVALUATED_CENTRED = evaluated_centred()
ORDER = tuple(RUNS)  # the scheduling order: the grid file's
_with_dependencies = with_dependencies


def main(argv=None) -> int:
    from .__main__ import main as cli

    return cli(argv)
