"""vgg_lib.transfer: very deep features on other data sets (Appendix B)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, balanced_accuracy_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from vgg_lib import evaluate as E
from vgg_lib import transfer as T
from vgg_lib.models import vgg

TRANSFER_NOTEBOOK = Path(__file__).resolve().parents[1] / "book" / "jobs" / "transfer.ipynb"


@pytest.fixture(scope="module")
def images():
    """Five uint8 RGB images of 32x32 with labels, as a data set yields them."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    return [(x[i], i % 3) for i in range(5)]


MEAN = (120.0, 110.0, 100.0)


def direct(model, batch, q, flip):
    """The descriptor at scale q computed without the fully-convolutional copy: the plain
    net's conv stack on the whole rescaled image (a 2x2 pool5 map at q = 64 for a 32-pixel
    net), then its fc6..relu7 *Linear* layers on every pool5 position, averaged."""
    x = E.rescale(batch, q)
    views = [x, x.flip(-1)] if flip else [x]
    out = []
    with torch.no_grad():
        for v in views:
            pool5 = model.features(v)                                  # (n, C, h, w)
            positions = pool5.flatten(2).transpose(1, 2)               # (n, h*w, C)
            out.append(model.classifier[:5](positions).mean(1))        # fc6, relu6, drop6, fc7, relu7
    return torch.stack(out).mean(0)


# --- features -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, aggregate, scales, dim", [
    ("fc7", "average", [32], 256), ("fc7", "average", [32, 48, 64], 256),
    ("fc7", "stack", [32, 48, 64], 3 * 256), ("fc6", "average", [40], 256), ("pool5", "stack", [32, 64], 2 * 32)])
def test_feature_shape_and_unit_l2_norm(small, images, layer, aggregate, scales, dim):
    X = T.extract_features(small, images, scales, aggregate=aggregate, layer=layer, mean=MEAN,
                           batch_size=2, progress=False)
    assert X.shape == (5, dim) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)


def test_flip_and_scale_aggregation_match_a_direct_computation(small, images):
    batch = E.preprocess(torch.stack([x for x, _ in images]), MEAN)
    f32, f64 = direct(small, batch, 32, True), direct(small, batch, 64, True)
    kw = dict(mean=MEAN, progress=False, batch_size=3)
    average = T.extract_features(small, images, [32, 64], aggregate="average", **kw)
    stack = T.extract_features(small, images, [32, 64], aggregate="stack", **kw)
    np.testing.assert_allclose(average, F.normalize((f32 + f64) / 2, dim=1).numpy(), atol=2e-6)
    np.testing.assert_allclose(stack, F.normalize(torch.cat([f32, f64], 1), dim=1).numpy(), atol=2e-6)
    no_flip = T.extract_features(small, images, [64], flip=False, **kw)
    np.testing.assert_allclose(no_flip, F.normalize(direct(small, batch, 64, False), dim=1).numpy(), atol=2e-6)
    assert not np.allclose(no_flip, T.extract_features(small, images, [64], flip=True, **kw), atol=1e-3)


def test_a_float64_model_gives_the_float32_features(small, images):
    # float64 stands in for a CUDA model: conversions must keep the model's dtype and device
    wide = vgg("A", num_classes=10, width=1 / 16, input_size=32, init=None)
    wide.load_state_dict(small.state_dict())
    wide = wide.double().eval()
    for layer in ("fc7", "pool5"):
        kw = dict(scales=[32, 48], layer=layer, mean=MEAN, batch_size=2, progress=False)
        np.testing.assert_allclose(T.extract_features(wide, images, **kw),
                                   T.extract_features(small, images, **kw), atol=1e-5, rtol=1e-4)
    tuned = T.fine_tune(wide, images, num_classes=3, epochs=1, lr=0.1, batch_size=4, mean=MEAN, S=36,
                        progress=False)
    assert {p.dtype for p in tuned.parameters()} == {torch.float64}


def test_images_of_several_sizes_keep_their_order_and_labels(small, images):
    from vgg_lib.data import rescale
    mixed = [images[0], (rescale(images[1][0][:, :, :24], 40), 7), images[2]]  # 53x40
    X, y = T.extract_features(small, mixed, [32], mean=MEAN, progress=False, return_labels=True)
    assert mixed[1][0].shape == (3, 53, 40)
    alone = T.extract_features(small, mixed[1:2], [32], mean=MEAN, progress=False)
    np.testing.assert_allclose(X[1], alone[0], atol=1e-6)
    assert y.tolist() == [0, 7, 2]


def test_paper_scales_are_rescaled_to_the_input_size(small):
    assert T.paper_scales(small) == [37, 55, 73]
    assert T.paper_scales(vgg("A", width=1 / 16, init=None), multi=False) == [256]


def test_torchvision_layout_state_dict_loads_as_the_same_net(small, images, tmp_path):
    path = tmp_path / "vgg11_small.pth"
    torch.save(small.state_dict(), path)
    source = T.load_source(path)
    assert (source.model.config, source.model.width, source.model.input_size) == ("A", 1 / 16, 32)
    assert source.preprocessing == E.TORCHVISION_PREPROCESSING
    kw = dict(scales=[32], progress=False, **E.TORCHVISION_PREPROCESSING)
    np.testing.assert_array_equal(T.extract_features(source.model, images, **kw),
                                  T.extract_features(small, images, **kw))


def test_per_class_subset():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    idx = T.per_class_subset(labels, 2, seed=1)
    assert np.bincount(labels[idx]).tolist() == [2, 2, 2]
    assert np.array_equal(idx, T.per_class_subset(labels, 2, seed=1))
    assert len(T.per_class_subset(labels, 3)) == 8  # class 1 has only two


def test_fine_tune_trains_every_layer_of_a_copy_with_a_new_last_layer(small, images):
    before = {k: v.clone() for k, v in small.state_dict().items()}
    net = T.fine_tune(small, images, num_classes=3, epochs=1, lr=0.1, batch_size=4, mean=MEAN, S=36,
                      progress=False)
    assert net.num_classes == 3 and small.num_classes == 10 and not net.training
    for k, v in small.state_dict().items():
        assert torch.equal(v, before[k]), k  # the source net is untouched
    assert not torch.equal(net.features.conv1_1.weight, small.features.conv1_1.weight)
    assert not torch.equal(net.classifier.fc7.weight, small.classifier.fc7.weight)


# --- the linear SVM -----------------------------------------------------------------------------

def clusters(seed=0):
    """Three well separated classes in 2-D; test class 0 has one image inside class 1."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    ytr = np.repeat([0, 1, 2], 20)
    xtr = centres[ytr] + rng.normal(0, 0.5, (60, 2))
    yte = np.array([0, 0, 0, 0, 1, 2])
    xte = centres[[0, 0, 0, 1, 1, 2]] + rng.normal(0, 0.5, (6, 2))
    return xtr, ytr, xte, yte


def test_metrics_match_scikit_learn_on_known_inputs():
    xtr, ytr, xte, yte = clusters()
    r = T.linear_svm(xtr, ytr, xte, yte, C=0.5)
    assert r.predictions.tolist() == [0, 0, 0, 1, 1, 2]
    # recall: class 0 3/4, classes 1 and 2 1/1 -> mean 11/12; accuracy 5/6
    assert r.mean_class_recall == pytest.approx(100 * 11 / 12)
    assert r.accuracy == pytest.approx(100 * 5 / 6)
    assert r.per_class_recall.tolist() == pytest.approx([75.0, 100.0, 100.0])
    assert r.mean_class_recall == pytest.approx(100 * balanced_accuracy_score(yte, r.predictions))
    svm = LinearSVC(C=0.5, max_iter=10_000).fit(xtr, ytr)
    np.testing.assert_allclose(r.scores, svm.decision_function(xte))
    onehot = np.eye(3)[yte]
    assert r.mAP == pytest.approx(100 * average_precision_score(onehot, svm.decision_function(xte)))
    assert r.summary()["C"] == 0.5 and not r.multilabel


def test_multilabel_map_matches_scikit_learn():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6))
    y = (x[:, :3] + 0.5 * rng.normal(size=(80, 3)) > 0).astype(int)  # 3 labels, several per image
    r = T.linear_svm(x[:60], y[:60], x[60:], y[60:], C=2.0)
    scores = OneVsRestClassifier(LinearSVC(C=2.0, max_iter=10_000)).fit(x[:60], y[:60]).decision_function(x[60:])
    np.testing.assert_allclose(r.scores, scores)
    assert r.multilabel
    assert r.mAP == pytest.approx(100 * average_precision_score(y[60:], scores, average="macro"))
    assert r.predictions.shape == (20, 3)


def test_two_classes():
    xtr, ytr, xte, yte = clusters()
    keep, keep_te = ytr < 2, yte < 2
    r = T.linear_svm(xtr[keep], ytr[keep], xte[keep_te], yte[keep_te])
    assert r.predictions.tolist() == [0, 0, 0, 1, 1]
    assert r.scores.shape == (5, 2)


# --- bad input ----------------------------------------------------------------------------------

def test_bad_input_messages(small, images, tmp_path):
    xtr, ytr, xte, yte = clusters()
    bad = [
        (lambda: T.linear_svm(xtr, ytr, np.c_[xte, xte], yte),
         "feature lengths differ: train_features have 2 values per image, test_features 4"),
        (lambda: T.linear_svm(xtr, ytr[:-1], xte, yte),
         "train_labels must have one entry (or indicator row) per image: train_features has 60 rows "
         "but train_labels has shape (59,)"),
        (lambda: T.linear_svm(xtr, np.zeros(60, int), xte, yte),
         "train_labels has a single class (np.int64(0)); a linear SVM needs at least 2 classes"),
        (lambda: T.linear_svm(xtr, ytr, xte, yte, C=0), "C=0 is not allowed: the SVM penalty must be a number > 0"),
        (lambda: T.linear_svm(xtr, ytr, xte, yte, C=-1.0), "C=-1.0 is not allowed"),
        (lambda: T.linear_svm(xtr, np.eye(3, dtype=int)[ytr] * [1, 1, 0], xte, np.eye(3, dtype=int)[yte]),
         "train_labels: class columns [2] have a single value in every training image"),
        (lambda: T.extract_features(small, images, [32], layer="fc8", mean=MEAN),
         "layer='fc8' is unknown; allowed: pool5, fc6, fc7"),
        (lambda: T.extract_features(small, images, [32], aggregate="max", mean=MEAN),
         "aggregate='max' is unknown; allowed: average, stack"),
        (lambda: T.extract_features(small, images, [24], mean=MEAN),
         "scales: Q=24 is smaller than the net's input size 32; allowed: Q >= 32"),
        (lambda: T.extract_features(small, images, [32]), "dataset yields uint8 images: pass mean=..."),
        (lambda: T.fine_tune(small, images, epochs=0, mean=MEAN), "epochs=0 is not allowed: a positive int"),
        (lambda: T.load_source(tmp_path / "nothing"), f"source={str(tmp_path / 'nothing')!r} does not exist"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "summary.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(ValueError, match=re.escape(
            f"source={str(unfinished)!r} is a run that has not finished (status 'running'); allowed: a finished run")):
        T.load_source(unfinished)


# --- the transfer job (book/jobs/transfer.ipynb) through papermill ------------------------------

def test_transfer_job_lists_its_parameters_with_their_meaning():
    import papermill
    params = papermill.inspect_notebook(str(TRANSFER_NOTEBOOK))
    for name in ("source", "dataset", "data_root", "scales", "aggregate", "layer", "C", "train_size",
                 "test_size", "device", "run_dir"):
        assert params[name]["help"], name


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished training run: net A, one epoch on 64 shapes."""
    from vgg_lib.options import TrainConfig
    from vgg_lib.train import train
    root = tmp_path_factory.mktemp("runs")
    return train(TrainConfig(config="A", dataset="shapes", train_size=64, val_size=32, epochs=1, batch_size=32,
                             width=1 / 16, device="cpu", progress=False, run_dir=str(root / "A")))


@pytest.mark.slow
def test_transfer_job_writes_the_svm_results_into_its_run_folder(finished_run, tmp_path):
    from vgg_lib import data, jobs, runs
    params = {"source": str(finished_run), "dataset": "digits", "train_size": 60, "test_size": 40,
              "scales": "37,55", "aggregate": "stack", "C": 0.5}
    job = jobs.run(TRANSFER_NOTEBOOK, params, root=tmp_path)
    assert job.name.startswith("transfer-digits-") and (job / "transfer.ipynb").is_file()
    got = json.loads((job / "results_transfer.json").read_text())
    source = T.load_source(finished_run)
    sets = [data.build_dataset("digits", s, size=n) for s, n in (("train", 60), ("test", 40))]
    (X, y), (Xt, yt) = [T.extract_features(source.model, s, [37, 55], aggregate="stack", progress=False,
                                           return_labels=True, **source.preprocessing) for s in sets]
    expected = T.linear_svm(X, y, Xt, yt, C=0.5)
    assert got["mean_class_recall"] == pytest.approx(expected.mean_class_recall)
    assert got["mAP"] == pytest.approx(expected.mAP)
    assert (got["feature_dim"], got["train_images"], got["test_images"]) == (2 * 256, 60, 40)
    row = runs.collect(tmp_path).set_index("run").loc[job.name]
    assert row["results_transfer.mean_class_recall"] == pytest.approx(expected.mean_class_recall)
    assert jobs.run(TRANSFER_NOTEBOOK, params, root=tmp_path) == job  # finished: reused


@pytest.mark.slow
def test_transfer_job_bad_values_fail_in_one_line(finished_run, tmp_path):
    from vgg_lib import jobs
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "summary.json").write_text(json.dumps({"status": "failed"}))
    cases = [({"source": str(unfinished)}, f"source={str(unfinished)!r} is a run that has not finished"),
             ({"source": str(finished_run), "C": 0.0}, "C=0.0 is not allowed: the SVM penalty must be a number > 0"),
             ({"source": str(finished_run), "layer": "conv5_3"}, "layer='conv5_3' is unknown; allowed: pool5, fc6, fc7")]
    for params, message in cases:
        with pytest.raises(jobs.JobError, match=re.escape(f"transfer.ipynb failed: ConfigError: {message}")):
            jobs.run(TRANSFER_NOTEBOOK, params, root=tmp_path / "jobs")
