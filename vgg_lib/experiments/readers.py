"""What the chapters read: the committed results of the reference grid (``results/``), as tables,
comparisons with confidence intervals, and the paper's numbers beside them::

    from vgg_lib import experiments as X
    X.table("DEPTH")                 # one row per run and seed: errors in percent, epochs, ...
    X.compare("DEPTH", "A (11)", "E (19)")  # difference of the means with a 95% confidence interval
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np

from ..runs import diverged, load_run, read_summary, status
from ..stats import difference, paired_difference
from . import grid as G
from .grid import folder_name, results_root, work_root
from .runner import eval_tag, localisation_folder, test_scales


# --- one run's results, a set's table -------------------------------------------------------------

def load(name: str, seed: int, results=None) -> dict:
    """params, summary, metrics (DataFrame), provenance and evaluations of one reference run."""
    import pandas as pd

    folder = results_root(results) / folder_name(name, seed)
    if status(folder) != "finished" and not diverged(folder):  # a diverged run is a result too
        raise FileNotFoundError(f"reference run {folder_name(name, seed)} is not in "
                                f"{results_root(results)}: run `make reproduce` (or "
                                f"python -m vgg_lib.experiments reproduce --runs {name})")
    read = lambda f: json.loads((folder / f).read_text())  # noqa: E731
    evals = {p.stem[len("eval_"):]: json.loads(p.read_text()) for p in sorted(folder.glob("eval_*.json"))}
    return {"params": read("params.json"), "summary": read_summary(folder),
            "metrics": pd.read_csv(folder / "metrics.csv"), "provenance": read("provenance.json"),
            "evals": evals, "folder": folder}


def _landed(name: str, seed: int, results=None) -> bool:
    """Whether run ``name``/``seed`` is in ``results/``: trained, with every evaluation of the grid."""
    from .runner import is_done

    return is_done(("train", name, seed, None), results) and all(
        is_done(("eval", name, seed, spec), results) for spec in G.EVALS.get(name, []))


def trained(results=None) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The grid's trainings as ``(name, seed)`` in schedule order: those whose results are in
    ``results/`` with all their evaluations, and those still to come (a grid being produced over
    several sittings, e.g. the 60,000-image runs, lands seed by seed)."""
    done, missing = [], []
    for name in G.RUNS:
        for seed in G.seeds_of(name):
            (done if _landed(name, seed, results) else missing).append((name, seed))
    return done, missing


def _set_seeds(set_name: str) -> list[int]:
    """The seeds every run of set ``set_name`` has in the grid."""
    return sorted(set.intersection(*(set(G.seeds_of(name)) for name in G.SETS[set_name].values())))


def landed_seeds(set_name: str, results=None) -> tuple[int, ...]:
    """The seeds for which every run of set ``set_name`` is in ``results/`` (trained and evaluated);
    only the set's own runs are read."""
    runs = G.SETS[set_name].values()
    return tuple(s for s in _set_seeds(set_name) if all(_landed(name, s, results) for name in runs))


def posteriors(name: str, seed: int, tag: str, results=None):
    """(posteriors float32 (N, classes), labels) saved by ``evaluate_run``."""
    f = np.load(results_root(results) / folder_name(name, seed) / f"posteriors_{tag}.npz")
    return f["posteriors"].astype(np.float32), f["labels"].astype(np.int64)


def table(set_name: str, seeds=None, results=None):
    """One row per (label, seed) of a named set: final validation errors in percent (centre
    crop at Q = S, the single-scale test of Sect. 4.1; for a set of ``SET_TESTS``, that
    evaluation), epochs, lr decreases, stop reason. ``seeds``: default those of the set's runs."""
    import pandas as pd

    if seeds is None:
        seeds = _set_seeds(set_name)
    rows = []
    tag = G.SET_TESTS.get(set_name)
    for label, name in G.SETS[set_name].items():
        for seed in seeds:
            r = load(name, seed, results)
            s, m = r["summary"], r["metrics"]
            nan = float("nan")  # a run that diverged before its first epoch has no error to report
            err = r["evals"][tag] if tag else {"top1_error": s.get("val_top1_err", nan),
                                               "top5_error": s.get("val_top5_err", nan)}
            rows.append({"label": label, "run": name, "seed": seed, "config": r["params"]["config"],
                         "top1_err": err["top1_error"], "top5_err": err["top5_error"],
                         "epochs": int(s["epochs_done"]), "lr_decreases": s.get("lr_decreases"),
                         "stop": s.get("stop_reason"),
                         "first_epoch_top1": m.val_top1_err.iloc[0] if len(m) else nan,
                         "minutes": s.get("seconds", 0.0) / 60})
    return pd.DataFrame(rows)


def summarise(df, by: str = "label", value: str = "top1_err"):
    """Mean, standard deviation and number of seeds of ``value`` per ``by``."""
    g = df.groupby(by, sort=False)[value]
    return g.agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})


# --- the comparisons of a set, and the paper beside them -------------------------------------------

def compare(set_name: str, base: str, other: str, value: str = "top1_err", results=None) -> dict:
    """``other`` minus ``base`` (labels of a set) over seeds: the error difference with its CI and
    MDE (``vgg_lib.stats``), paired by seed in a set of ``PAIRED_SETS`` (Welch's otherwise)."""
    df = table(set_name, results=results).sort_values("seed")
    a = df[df.label == base][value]
    b = df[df.label == other][value]
    if set_name in G.PAIRED_SETS:
        if a.index.size != b.index.size or list(df.loc[a.index].seed) != list(df.loc[b.index].seed):
            raise ValueError(f"{set_name}: {base!r} and {other!r} do not have the same seeds to pair")
        return paired_difference(a, b)
    return difference(a, b)


def _paper_errors(table: int, config: str, train_S: str) -> tuple[float, float]:
    """(top-1, top-5) validation error of Table 3 or 4 for a config and training scale (NaN if absent)."""
    from .. import paper

    t = paper.table(table)
    row = t[(t.config == config) & (t.train_S.astype(str) == train_S)]
    return (float("nan"), float("nan")) if row.empty else tuple(float(v) for v in row.iloc[0][["top1_val_error", "top5_val_error"]])


def paper_table3(config: str, train_S: str = "256") -> tuple[float, float]:
    """(top-1, top-5) validation error of Table 3 for a config and training scale."""
    return _paper_errors(3, config, train_S)


def beside_paper(set_name: str, paper_top1: dict, results=None):
    """Mean, std and seeds of our top-1 error per label of a set, beside the paper's top-1."""
    out = summarise(table(set_name, results=results)).round(2)
    out.columns = ["top-1 mean (%)", "top-1 std", "seeds"]
    out["paper top-1 (%)"] = [paper_top1.get(k, float("nan")) for k in out.index]
    return out


# --- Tables 4-6 from the committed evaluations (shared by Testing, Fusion and Reproduction) ------

def evaluated_centred() -> dict[str, str]:
    """The scale set's control on centred objects (all three fine-tuned from D-shapes at the same
    budget), by the label the chapters show."""
    return {f"D (centred), {label}": name for label, name in G.SETS["SCALE_CENTRED"].items()}


# The paper's (config, training scale) of each label, where Tables 3-4 have it.
PAPER_OF = {"A": ("A", "256"), "A-LRN": ("A-LRN", "256"), "B": ("B", "256"), "C": ("C", "256"),
            "D": ("D", "256"), "E": ("E", "256"), "D, S=384": ("D", "384"),
            "D (shapes), S=256": ("D", "256"), "D (shapes), S=384": ("D", "384"),
            "D (shapes), S=[256,512]": ("D", "256-512"), "D (centred), S=384": ("D", "384"),
            "D (centred), S=[256,512]": ("D", "256-512")}


def evaluations(results=None, nets=None):
    """One row per evaluated net and seed: top-1 error (%) of the centre crop at the training
    scale (from training), dense at that scale (Sect. 4.1) and dense at three scales (4.2).
    ``nets``: label -> run (default: ``EVALUATED``, ``EVALUATED_SHAPES``, ``EVALUATED_CENTRED``)."""
    import pandas as pd

    rows = []
    default = {**G.EVALUATED, **G.EVALUATED_SHAPES, **evaluated_centred()}
    for label, name in (default if nets is None else nets).items():
        for seed in G.SEEDS:
            r = load(name, seed, results)
            S = r["params"]["S"]
            ev = {k: v["top1_error"] for k, v in r["evals"].items()}
            rows.append({"net": label, "run": name, "seed": seed, "S": str(S),
                         "three Q": ",".join(map(str, test_scales(S, G.CROP, "paper"))),
                         "centre crop, single Q": r["summary"]["val_top1_err"],
                         "dense, single Q": ev[eval_tag("dense", "train")],
                         "dense, three Q": ev[eval_tag("dense", "paper")]})
    return pd.DataFrame(rows)


def paired_table(df, before: str, after: str, paper_diff: dict | None = None):
    """Per net, ``after - before`` over seeds (paired), with the 95% interval and the paper's."""
    import pandas as pd

    rows = []
    for label, e in df.groupby("net", sort=False):
        d = paired_difference(e[before], e[after])
        rows.append({"net": label, "ours": d["diff"], "95% CI low": d["low"], "95% CI high": d["high"],
                     "paper": (paper_diff or {}).get(label, float("nan"))})
    return pd.DataFrame(rows).set_index("net")


def paper_multi_scale_gain() -> dict:
    """Table 4 minus Table 3 (top-1, dense) per label of ``EVALUATED`` where both exist."""
    out = {}
    for label, (config, S) in PAPER_OF.items():
        gain = _paper_errors(4, config, S)[0] - _paper_errors(3, config, S)[0]
        if not np.isnan(gain):
            out[label] = gain
    return out


TABLE5_METHODS = ("dense", "multi-crop", "multi-crop & dense")


def _posteriors_by_method(name: str, methods: dict, results=None):
    """Per seed: ``(seed, {label: posteriors}, labels)`` of ``name``'s evaluations by each method
    (``label -> method``) at the three scales on the same ``MULTI_CROP_IMAGES`` images."""
    for seed in G.SEEDS:
        post, y = {}, None
        for label, method in methods.items():
            p, labels = posteriors(name, seed, eval_tag(method, "paper", G.MULTI_CROP_IMAGES), results)
            if y is not None and not (y == labels).all():
                raise ValueError(f"{folder_name(name, seed)}: {method} scored other images")
            post[label], y = p, labels
        yield seed, post, y


def table5(name: str = "D-shapes-S256-512", results=None):
    """Top-1 error (%) per seed of dense, multi-crop and both (Sect. 4.3) at the three scales,
    on the same ``MULTI_CROP_IMAGES`` validation images."""
    import pandas as pd

    from ..evaluate import topk_error

    rows = []
    for seed, post, y in _posteriors_by_method(name, {"dense": "dense", "multi-crop": "multi_crop"}, results):
        post["multi-crop & dense"] = (post["dense"] + post["multi-crop"]) / 2
        rows += [{"seed": seed, "method": m, "top1_err": topk_error(post[m], y, 1)} for m in TABLE5_METHODS]
    return pd.DataFrame(rows).pivot(index="seed", columns="method", values="top1_err")[list(TABLE5_METHODS)]


def cross_scale(set_name: str, results=None):
    """Top-1 error (%) of every net of a scale set, dense, at each of ``CROSS_SCALES`` (one Q at a
    time): one row per net and seed, one column per Q."""
    import pandas as pd

    rows = []
    for label, name in G.SETS[set_name].items():
        for seed in G.SEEDS:
            ev = load(name, seed, results)["evals"]
            rows.append({"net": label, "seed": seed,
                         **{f"Q={q}": ev[eval_tag("dense", (q,))]["top1_error"] for q in G.CROSS_SCALES}})
    return pd.DataFrame(rows).set_index(["net", "seed"])


DENSE_AVERAGES = {"dense (scores averaged)": "dense", "dense (posteriors averaged)": "dense_posteriors",
                  "multi-crop": "multi_crop"}


def dense_averaging(name: str = "D-shapes-S256-512", results=None):
    """Top-1 error (%) per seed of dense as in the paper (raw scores averaged over the map), of
    dense with each window's posteriors averaged, and of multi-crop, at the three test scales on
    the same ``MULTI_CROP_IMAGES`` validation images: how much of dense's gap to multi-crop is
    the averaging."""
    import pandas as pd

    from ..evaluate import topk_error

    rows = [{"seed": seed, "method": m, "top1_err": topk_error(p, y, 1)}
            for seed, post, y in _posteriors_by_method(name, DENSE_AVERAGES, results) for m, p in post.items()]
    return pd.DataFrame(rows).pivot(index="seed", columns="method", values="top1_err")[list(DENSE_AVERAGES)]


def fusion_table(ensembles=None, results=None):
    """Top-1 error (%) per ensemble (rows) and seed (columns) of the fused dense three-scale
    posteriors (Sect. 4.4); the first row is the best single net of each seed."""
    import pandas as pd

    from ..evaluate import fuse, topk_error

    ensembles = G.ENSEMBLES if ensembles is None else ensembles
    tag = eval_tag("dense", "paper")
    out = {}
    for seed in G.SEEDS:
        post = {n: posteriors(n, seed, tag, results) for n in G.FUSION_MEMBERS}
        y = post[G.FUSION_MEMBERS[0]][1]
        col = {"best single net": min(topk_error(p, y, 1) for p, _ in post.values())}
        for name, members in ensembles.items():
            col[name] = topk_error(fuse([post[m][0] for m in members]), y, 1)
        out[seed] = col
    return pd.DataFrame(out)


def transfer_scores(results=None):
    """Mean class recall (%) on the transfer target per source and seed: one row each, one column
    per descriptor variant (``results/transfer/``)."""
    import pandas as pd

    rows = []
    for source in G.TRANSFER_SOURCES:
        for seed in G.seeds_of(source.split()[-1]):
            f = results_root(results) / "transfer" / f"{source.replace(' ', '-')}-s{seed}.json"
            rows.append({"source": source, "seed": seed, **json.loads(f.read_text())["mean_class_recall"]})
    return pd.DataFrame(rows)


# --- Appendix A: the localisers ---------------------------------------------------------------------

def localisation_table(results=None, seeds=G.SEEDS):
    """One row per localiser or union and seed: protocol 1 error, protocol 2 top-1 and top-5
    errors (percent), how many images each used, epochs of fine-tuning and minutes."""
    import pandas as pd

    rows = []
    for name in [*G.LOCALISERS, *G.LOCALISER_UNIONS]:
        for seed in G.localiser_seeds(name, seeds):
            folder = localisation_folder(name, seed, results_root(results))
            if status(folder) != "finished":
                raise FileNotFoundError(f"localisation result {folder_name(name, seed)} is not in "
                                        f"{results_root(results)}: run `make localise` (or python -m "
                                        f"vgg_lib.experiments localise --variants {name} --seeds {seed})")
            s, p = read_summary(folder), json.loads((folder / "params.json").read_text())
            nan = float("nan")
            rows.append({"variant": name, "seed": seed, "lr": p.get("lr"),
                         "regression": "PCR" if p.get("per_class") else ("SCR" if "per_class" in p else "union"),
                         "layers": p.get("layers", "+".join(p.get("members", []))),
                         "protocol1_error": s.get("protocol1_error", nan), "protocol1_images": s.get("protocol1_images"),
                         "top1_loc_error": s.get("top1_loc_error", nan), "top5_loc_error": s.get("top5_loc_error", nan),
                         "protocol2_images": s.get("protocol2_images"), "epochs": s.get("epochs_done"),
                         "minutes": json.loads((folder / "provenance.json").read_text())["wall_seconds"] / 60})
    return pd.DataFrame(rows)


# Table 8's two questions, each (better-by-the-paper, baseline, value): per-class regression
# against single-class at the same layers (fc only: the paper's pair; all layers: ours), and
# all layers against fc only for PCR (the paper's pair) and SCR (ours). Then the full system:
# each union of localisers against its members alone.
LOCALISATION_COMPARISONS = {
    "PCR vs SCR, fc layers": ("PCR-fc", "SCR-fc", "protocol1_error"),
    "PCR vs SCR, all layers": ("PCR-all", "SCR-all", "protocol1_error"),
    "all vs fc layers, PCR": ("PCR-all", "PCR-fc", "protocol1_error"),
    "all vs fc layers, SCR": ("SCR-all", "SCR-fc", "protocol1_error"),
    "PCR-fc+PCR-all vs PCR-all, protocol 2 top-5": ("PCR-fc+PCR-all", "PCR-all", "top5_loc_error"),
    "SCR-all+PCR-all vs PCR-all, protocol 2 top-5": ("SCR-all+PCR-all", "PCR-all", "top5_loc_error"),
    "SCR-all+PCR-all vs SCR-all, protocol 2 top-5": ("SCR-all+PCR-all", "SCR-all", "top5_loc_error"),
}


def localisation_comparisons(df, comparisons=None):
    """Per comparison of ``LOCALISATION_COMPARISONS``: ``better - baseline`` (error points,
    negative = ``better`` wins) paired over seeds (the variants of a seed share their source
    net), with its 95% interval, on a ``localisation_table``."""
    import pandas as pd

    rows = []
    for label, (better, base, value) in (comparisons or LOCALISATION_COMPARISONS).items():
        a = df[df.variant == base].set_index("seed")[value]
        b = df[df.variant == better].set_index("seed")[value]
        seeds = sorted(set(a.index) & set(b.index))
        if len(seeds) < 2:
            raise ValueError(f"{label}: {better} and {base} share {len(seeds)} seed(s); a paired interval needs 2 or more")
        d = paired_difference(a.loc[seeds], b.loc[seeds])
        rows.append({"comparison": label, "better": better, "baseline": base, "value": value,
                     "diff": d["diff"], "low": d["low"], "high": d["high"], "seeds": len(seeds)})
    return pd.DataFrame(rows).set_index("comparison")


def localisation_metrics(name: str, seed: int, results=None):
    """Per-epoch training history (metrics.csv) of localiser ``name``/``seed``."""
    import pandas as pd

    return pd.read_csv(localisation_folder(name, seed, results_root(results)) / "metrics.csv")


def localisation_examples(name: str, seed: int, results=None) -> dict:
    """The saved boxes of a few validation images (``localisation.dense_examples``): raw
    ``(n, K, C, 4)`` boxes and scores before merging, the top-5 guesses after it, the ground
    truth, and ``val_size``/``image_size``/``pixels_per_image_pixel`` to rebuild the images."""
    with np.load(localisation_folder(name, seed, results_root(results)) / "examples.npz") as f:
        return {k: f[k] for k in f.files}


def grid_wall_time(results=None) -> dict:
    """Wall hours (the union of the records' intervals) and CPU hours of the grid, from every
    provenance record."""
    spans = []
    root = results_root(results)
    for f in (list(root.glob("*/provenance.json")) + list(root.glob("*/eval_*.json")) + list(root.glob("transfer/*.json"))
              + list(root.glob("localisation/*/provenance.json"))):
        p = json.loads(f.read_text())
        p = p.get("provenance", p)
        end = datetime.fromisoformat(p["date"])
        spans.append((end.timestamp() - p["wall_seconds"], end.timestamp(), p["wall_seconds"]))
    if not spans:
        raise FileNotFoundError(f"no provenance records under {root}")
    # the union of the records' intervals: the time something of the grid was running, also
    # when it ran in several sittings (days apart)
    busy, end = 0.0, float("-inf")
    for start, stop, _ in sorted(spans):
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return {"records": len(spans), "wall_hours": busy / 3600, "cpu_hours": sum(w for _, _, w in spans) / 3600}


def verification_model(results=None, work=None):
    """The re-trained cheapest run (``verify``), loaded: a trained net the book build has
    without committed checkpoints (``runs.load_run`` result)."""

    from .runner import verify

    verify(results=results, work=work)
    return load_run(work_root(work).parent / "verify" / "reference" / folder_name(*G.VERIFY))
