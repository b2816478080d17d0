"""vgg_lib.evaluate: the paper's test-time methods (Sect. 3.2, 4.1-4.4)."""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import top_k_accuracy_score

from vgg_lib import evaluate as E
from vgg_lib.models import TORCHVISION_MEAN, TORCHVISION_STD, fully_convolutional, vgg


@pytest.fixture(scope="module")
def full():
    """The paper's geometry (224 crops, 7x7 pool5), width 1/16 to stay cheap."""
    torch.manual_seed(1)
    return vgg("D", num_classes=10, width=1 / 16, init="kaiming").eval()


def softmax(model, x):
    with torch.no_grad():
        return F.softmax(model(x), dim=1)


# --- dense evaluation (Sect. 3.2) ---------------------------------------------------------------

@pytest.mark.parametrize("geometry", ["small", "full"])
def test_dense_at_crop_size_is_one_forward_pass(geometry, request):
    model = request.getfixturevalue(geometry)
    s = model.input_size
    x = torch.randn(3, 3, s, s)
    fcn = fully_convolutional(model).eval()
    with torch.no_grad():
        scores = fcn(x)
    assert scores.shape == (3, 10, 1, 1)
    p = E.dense(model, x, s, flip=False)
    torch.testing.assert_close(p, F.softmax(scores[:, :, 0, 0], dim=1))
    torch.testing.assert_close(p, softmax(model, x))
    # with the flip: the mean of the two soft-max posteriors
    torch.testing.assert_close(E.dense(model, x, s), (softmax(model, x) + softmax(model, x.flip(-1))) / 2)


def test_class_score_map_shape_at_larger_scales(full):
    # 384 / 32 = 12 after pool5, minus the 7x7 "fc6" convolution: 6x6 (Sect. 3.2)
    assert E.score_map(full, torch.randn(1, 3, 384, 384), 384).shape == (1, 10, 6, 6)
    # a 3:4 image at Q = 384 is 384x512: 12x16 after pool5 -> 6x10
    assert E.score_map(full, torch.randn(2, 3, 300, 400), 384).shape == (2, 10, 6, 10)


def test_dense_averages_raw_scores_then_softmax(small):
    x = torch.randn(2, 3, 48, 64)
    q = 96  # 96x128 -> 3x4 after pool5 (1x1 "fc6" for 32 crops)
    with torch.no_grad():
        maps = fully_convolutional(small).eval()(E.rescale(x, q))
    assert maps.shape == (2, 10, 3, 4)
    torch.testing.assert_close(E.dense(small, x, q, flip=False), F.softmax(maps.mean((2, 3)), dim=1))


def test_dense_posteriors_average_each_windows_softmax(small):
    x = torch.randn(2, 3, 48, 64)
    q = 96
    with torch.no_grad():
        maps = fully_convolutional(small).eval()(E.rescale(x, q))
    p = E.dense_posteriors(small, x, q, flip=False)
    torch.testing.assert_close(p, F.softmax(maps, dim=1).mean((2, 3)))
    # the mean of posteriors is not the soft-max of the mean score once there are several windows
    assert not torch.allclose(p, E.dense(small, x, q, flip=False), atol=1e-4)
    # with one window (Q = crop) the two are the same
    s = small.input_size
    y = torch.randn(3, 3, s, s)
    torch.testing.assert_close(E.dense_posteriors(small, y, s), E.dense(small, y, s))


def test_dense_features_are_the_spatial_means_per_image_and_scale(small):
    """The public building block of ``dense`` and of ``vgg_lib.transfer``: (N, len(Q), D) rows
    of spatially averaged maps; ``dense`` is its soft-max version averaged over scales."""
    x = [torch.randn(3, 48, 64), torch.randn(3, 40, 40)]
    fcn = fully_convolutional(small).eval()
    f = E.dense_features(fcn, x, [40, 96], flip=False)
    assert f.shape == (2, 2, 10)
    with torch.no_grad():
        torch.testing.assert_close(f[0, 1], fcn(E.rescale(x[0][None], 96)).mean((2, 3))[0])
        mirrored = fcn(E.rescale(x[1][None], 40).flip(-1)).mean((2, 3))[0]
    flipped = E.dense_features(fcn, x, 40)
    torch.testing.assert_close(flipped[1, 0], (f[1, 0] + mirrored) / 2)
    softmax_rows = E.dense_features(fcn, x, [40, 96], head=lambda s: F.softmax(s, dim=1))
    torch.testing.assert_close(E.dense(small, x, [40, 96]), softmax_rows.mean(1))


def test_scales_list_checks_the_test_scales():
    assert E.scales_list(256) == [256]
    assert E.scales_list((256, 384, np.int64(512))) == [256, 384, 512]
    assert E.scales_list(range(32, 35)) == [32, 33, 34]
    for bad in ([], 0, [256, 38.5], "256"):
        with pytest.raises(ValueError):
            E.scales_list(bad)


def test_evaluate_rescale_is_the_data_pipelines_rescale():
    """One rescale and one size rule: rescaling the normalised floats (here) or the uint8
    image (the data pipeline) gives the same size and the same pixels up to one grey level (the
    uint8 kernel rounds to integers, with fixed-point weights)."""
    from vgg_lib import data

    assert E.rescale is data.rescale and E.rescaled_size is data.rescaled_size
    pixels = torch.randint(0, 256, (3, 40, 53), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    mean = (120.0, 110.0, 100.0)
    floats = E.rescale(E.preprocess(pixels[None], mean), 48)
    uint8 = E.preprocess(data.rescale(pixels, 48), mean)
    assert floats.shape[-2:] == uint8.shape[-2:] == (48, 64)
    assert (floats[0] - uint8).abs().max() <= 1.0


def test_fully_convolutional_copy_is_cached_until_weights_change():
    model = vgg("A", num_classes=10, width=1 / 16, input_size=32).eval()
    fcn = E.fcn_of(model)
    assert E.fcn_of(model) is fcn
    x = torch.randn(1, 3, 32, 32)
    before = E.dense(model, x, 32, flip=False)
    with torch.no_grad():
        model.classifier.fc8.bias.add_(torch.arange(10.0))  # e.g. an optimiser step
    assert E.fcn_of(model) is not fcn
    after = E.dense(model, x, 32, flip=False)
    torch.testing.assert_close(after, softmax(model, x))
    assert not torch.allclose(before, after)


def test_a_float64_model_gives_the_float32_results(small):
    # float64 stands in for a CUDA or bf16 model: its fully-convolutional copy and its inputs
    # must follow the model's dtype (they used to be float32 and crashed in dense)
    x = torch.randn(2, 3, 40, 52)
    wide = vgg("A", num_classes=10, width=1 / 16, input_size=32, init="kaiming").eval()
    wide.load_state_dict(small.state_dict())
    wide = wide.double()
    for method in ("dense", "multi_crop", "single_scale"):
        p64 = getattr(E, method)(wide, x, [32, 48])
        assert p64.dtype == torch.float32  # posteriors always come back as float32 on the CPU
        torch.testing.assert_close(p64, getattr(E, method)(small, x, [32, 48]), atol=1e-5, rtol=1e-4)
    assert next(E.fcn_of(wide).parameters()).dtype == torch.float64


# --- multi-crop evaluation (Sect. 3.2, 4.3) -----------------------------------------------------

def test_crop_positions_5x5_grid_with_corners_and_centre():
    h, w, c = 256, 341, 224  # a 3:4 image at Q = 256
    pos = E.crop_positions(h, w, c)
    assert len(pos) == 25 and len(set(pos)) == 25
    assert {(0, 0), (0, w - c), (h - c, 0), (h - c, w - c)} <= set(pos)
    centre = (round((h - c) / 2), round((w - c) / 2))
    assert pos[12] == centre
    tops, lefts = sorted({t for t, _ in pos}), sorted({l for _, l in pos})
    assert tops == [0, 8, 16, 24, 32] and lefts == [0, 29, 58, 88, 117]
    # a square image at the crop size: every crop is the image itself
    assert set(E.crop_positions(224, 224, 224)) == {(0, 0)}


def test_grid_crops_are_the_crops_then_their_flips():
    x = torch.randn(2, 3, 40, 50)
    crops = E.grid_crops(x, 32)
    assert crops.shape == (2, 50, 3, 32, 32)
    for k, (t, l) in enumerate(E.crop_positions(40, 50, 32)):
        torch.testing.assert_close(crops[:, k], x[:, :, t:t + 32, l:l + 32], rtol=0, atol=0)
        torch.testing.assert_close(crops[:, 25 + k], x[:, :, t:t + 32, l:l + 32].flip(-1), rtol=0, atol=0)
    assert E.grid_crops(x, 32, flip=False).shape == (2, 25, 3, 32, 32)


def test_multi_crop_is_the_mean_over_50_crops_per_scale(small):
    x = torch.randn(2, 3, 36, 44)
    ps = []
    for q in (32, 40):
        r = E.rescale(x, q)
        h, w = r.shape[-2:]
        for t, l in E.crop_positions(h, w, 32):
            c = r[:, :, t:t + 32, l:l + 32]
            ps += [softmax(small, c), softmax(small, c.flip(-1))]
    assert len(ps) == 100  # 50 per scale
    torch.testing.assert_close(E.multi_crop(small, x, [32, 40]), torch.stack(ps).mean(0))


def test_multi_scale_is_the_mean_over_scales_for_every_method(small):
    x = torch.randn(2, 3, 40, 40)
    for method in E.METHODS:
        fn = getattr(E, method)
        per_q = torch.stack([fn(small, x, q) for q in (32, 37, 45)]).mean(0)
        torch.testing.assert_close(E.multi_scale(method, small, x, [32, 37, 45]), per_q)
    torch.testing.assert_close(E.dense_multi_crop(small, x, 40),
                               (E.dense(small, x, 40) + E.multi_crop(small, x, 40)) / 2)


def test_single_scale_is_the_centre_crop(small):
    x = torch.randn(1, 3, 40, 60)
    r = E.rescale(x, 36)
    assert r.shape[-2:] == (36, 54)
    torch.testing.assert_close(E.single_scale(small, x, 36), softmax(small, r[:, :, 2:34, 11:43]))


def test_images_of_different_sizes_keep_their_order(small):
    imgs = [torch.randn(3, 40, 50), torch.randn(3, 60, 36), torch.randn(3, 40, 50)]
    for method in E.METHODS:
        fn = getattr(E, method)
        batched = fn(small, imgs, [32, 40])
        one_by_one = torch.cat([fn(small, x[None], [32, 40]) for x in imgs])
        torch.testing.assert_close(batched, one_by_one)
        torch.testing.assert_close(batched.sum(1), torch.ones(3))


def test_paper_test_scales():
    # Table 4's test scales
    assert E.paper_test_scales(256) == (224, 256, 288)
    assert E.paper_test_scales(384) == (352, 384, 416)
    assert E.paper_test_scales((256, 512)) == (256, 384, 512)
    # small data: the step 32 becomes round(32 * 32 / 224) = 5
    assert E.paper_test_scales(40, crop=32) == (35, 40, 45)
    assert E.paper_test_scales((32, 64), crop=32) == (32, 48, 64)


# --- scoring and fusion (Sect. 4, 4.4) ----------------------------------------------------------

def test_topk_error_matches_scikit_learn():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(300, 10, generator=g).softmax(1)
    y = torch.randint(0, 10, (300,), generator=g)
    for k in (1, 2, 5, 9):
        expected = 100 * (1 - top_k_accuracy_score(y.numpy(), p.numpy(), k=k, labels=range(10)))
        assert E.topk_error(p, y, k) == pytest.approx(expected, abs=1e-9)
    assert E.topk_error(p, y, 10) == 0.0


def test_fuse_is_the_mean_of_posteriors():
    a, b, c = (torch.rand(4, 6).softmax(1) for _ in range(3))
    torch.testing.assert_close(E.fuse([a, b, c]), (a + b + c) / 3)
    torch.testing.assert_close(E.fuse([a.numpy(), b.numpy()]), (a + b) / 2)


def test_evaluate_on_a_dataset_of_uint8_images(small):
    g = torch.Generator().manual_seed(2)
    sizes = [(40, 48), (48, 40), (40, 48), (36, 36), (40, 48)]
    data = [(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), i % 3)
            for i, (h, w) in enumerate(sizes)]
    mean = (120.0, 110.0, 100.0)
    r = E.evaluate(small, data, "dense", [32, 40], mean=mean, pixel_scale=1 / 64, batch_size=2)
    images = [E.preprocess(x, mean, 1 / 64) for x, _ in data]
    p = E.dense(small, images, [32, 40])
    torch.testing.assert_close(r.posteriors, p)
    y = torch.tensor([i % 3 for i in range(5)])
    assert r.top1 == E.topk_error(p, y, 1) and r.top5 == E.topk_error(p, y, 5)
    wrong = (p.argmax(1) != y).float()
    expected = [100 * wrong[y == c].mean().item() for c in range(3)]
    np.testing.assert_allclose(r.per_class[:3], expected, rtol=1e-6)
    assert np.isnan(r.per_class[3:]).all()  # classes without images
    s = r.summary()
    assert (s["method"], s["scales"], s["images"]) == ("dense", "32;40", 5)
    fused = E.Evaluation.of(E.fuse([r.posteriors, r.posteriors]), r.labels, "fused", r.scales)
    assert fused.top1 == r.top1


def test_evaluate_at_scale_loader_workers_amp_and_dtype(small):
    """evaluate's DataLoader (workers), device-side preprocessing and autocast: with amp off
    the posteriors equal the plain method's exactly, whatever the workers; bf16 and a float64
    model stay close."""
    g = torch.Generator().manual_seed(3)
    sizes = [(40, 48), (48, 40), (40, 48), (36, 36), (40, 48), (44, 52)]
    data = [(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), i % 3)
            for i, (h, w) in enumerate(sizes)]
    mean = (120.0, 110.0, 100.0)
    for method in ("dense", "multi_crop"):
        today = getattr(E, method)(small, [E.preprocess(x, mean, 1 / 64) for x, _ in data], [32, 40])
        for workers in (0, 2):
            r = E.evaluate(small, data, method, [32, 40], mean=mean, pixel_scale=1 / 64, batch_size=4,
                           workers=workers)
            assert torch.equal(r.posteriors, today), (method, workers)
        bf16 = E.evaluate(small, data, method, [32, 40], mean=mean, pixel_scale=1 / 64, amp="bf16")
        torch.testing.assert_close(bf16.posteriors, today, atol=2e-2, rtol=0)
    wide = vgg("A", num_classes=10, width=1 / 16, input_size=32, init=None)
    wide.load_state_dict(small.state_dict())
    r64 = E.evaluate(wide.double().eval(), data, "dense", [32, 40], mean=mean, pixel_scale=1 / 64)
    torch.testing.assert_close(r64.posteriors, E.evaluate(small, data, "dense", [32, 40], mean=mean,
                                                          pixel_scale=1 / 64).posteriors, atol=1e-5, rtol=1e-4)
    assert E._AMP.get() == "off"  # evaluate's autocast setting does not leak
    with pytest.raises(ValueError, match=r"amp='fp32' is not allowed: one of bf16, fp16, off"):
        E.evaluate(small, data, "dense", [32], mean=mean, amp="fp32")
    with pytest.raises(ValueError, match=r"workers must be an int >= 0, got -1"):
        E.evaluate(small, data, "dense", [32], mean=mean, workers=-1)


def test_torchvision_preprocessing_matches_torchvision_normalize():
    from torchvision.transforms.v2 import functional as TF
    x = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    ours = E.preprocess(x, **E.TORCHVISION_PREPROCESSING)
    theirs = TF.normalize(x.float() / 255, TORCHVISION_MEAN, TORCHVISION_STD)
    torch.testing.assert_close(ours, theirs)


# --- bad input: one clear message each, before any work ----------------------------------------

def raises(match, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=re.escape(match)):
        fn(*args, **kwargs)


def test_bad_input_messages(small):
    x = torch.randn(1, 3, 40, 40)
    raises("multi_crop: test scale Q=28 is smaller than the crop 32; allowed: Q >= 32",
           E.multi_crop, small, x, [32, 28])
    raises("dense: test scale Q=16 is smaller than the crop 32; allowed: Q >= 32", E.dense, small, x, 16)
    raises("scales is empty; give at least one test scale Q", E.dense, small, x, [])
    raises("scales is empty", E.evaluate, small, [(x[0], 0)], "dense", [])
    raises("fuse: posteriors must all have the same shape (N, classes); got (4, 6) at index 0 "
           "and (4, 5) at index 1", E.fuse, [torch.rand(4, 6), torch.rand(4, 5)])
    raises("fuse expects a non-empty list", E.fuse, [])
    raises("k=6 is not valid for 5 classes; allowed: 1 <= k <= 5",
           E.topk_error, torch.rand(3, 5), torch.zeros(3), 6)
    raises("method 'crops' is unknown; allowed: single_scale, dense, dense_posteriors, multi_crop, dense_multi_crop",
           E.evaluate, small, [(x[0], 0)], "crops", [32])
    raises("method 'crops' is unknown", E.multi_scale, "crops", small, x, [32])
    raises("images must be float tensors normalised by preprocess", E.dense, small,
           torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 32)
    raises("dataset yields uint8 images: pass mean=", E.evaluate, small,
           [(torch.zeros(3, 32, 32, dtype=torch.uint8), 0)], "dense", [32])
    raises("S=240 gives test scale 208 below the crop 224; allowed: S >= 256", E.paper_test_scales, 240)
    raises("S=34 gives test scale 29 below the crop 32; allowed: S >= 37", E.paper_test_scales, 34, crop=32)
    raises("a jittered training scale must be (Smin, Smax) ints with Smin < Smax, got (512, 256)",
           E.paper_test_scales, (512, 256))
    raises("multi_crop: grid must be an int >= 1", E.multi_crop, small, x, 32, grid=0)


# --- the evaluate job (book/jobs/evaluate.ipynb) through papermill -------------------------------

EVAL_NOTEBOOK = __import__("pathlib").Path(__file__).resolve().parents[1] / "book" / "jobs" / "evaluate.ipynb"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny finished training runs (nets A and B, one epoch on 64 shapes)."""
    from vgg_lib.options import TrainConfig
    from vgg_lib.train import train
    root = tmp_path_factory.mktemp("runs")
    return root, [train(TrainConfig(config=c, dataset="shapes", train_size=64, val_size=32, epochs=1,
                                    batch_size=32, width=1 / 16, device="cpu", progress=False,
                                    run_dir=str(root / c))) for c in ("A", "B")]


def test_evaluate_job_lists_its_parameters_with_their_meaning():
    import papermill
    params = papermill.inspect_notebook(str(EVAL_NOTEBOOK))
    for name in ("run_dirs", "method", "scales", "dataset", "data_root", "split", "size", "device",
                 "workers", "amp"):
        assert params[name]["help"], name


@pytest.mark.slow
def test_evaluate_job_writes_results_into_run_folders_and_fuses(two_runs):
    from vgg_lib import data, jobs, runs
    from vgg_lib.runs import load_run
    root, (a, b) = two_runs
    job = jobs.run(EVAL_NOTEBOOK, {"run_dirs": f"{a},{b}", "method": "dense,multi_crop,dense_multi_crop",
                                   "size": 12, "workers": 1}, root=root / "jobs")
    assert (job / "evaluate.ipynb").is_file()
    # the paper's scales for S = 37 (256 scaled to 32 crops): 37 -/+ round(32 * 32 / 224)
    tag = "32-37-42_n12"
    test_set = data.build_dataset("shapes", "val", size=12)
    posteriors = {}
    for run_dir in (a, b):
        run = load_run(run_dir)
        expected = E.evaluate(run.model, test_set, "dense", (32, 37, 42), mean=run.mean,
                              pixel_scale=run.pixel_scale)
        got = json.loads((run_dir / f"results_dense_{tag}.json").read_text())
        assert got["top1_error"] == pytest.approx(expected.top1)
        assert (got["scales"], got["images"], got["split"], got["error_unit"]) == ("32;37;42", 12, "val", "percent")
        saved = torch.load(run_dir / f"posteriors_dense_multi_crop_{tag}.pt")
        d = torch.load(run_dir / f"posteriors_dense_{tag}.pt")["posteriors"]
        m = torch.load(run_dir / f"posteriors_multi_crop_{tag}.pt")["posteriors"]
        torch.testing.assert_close(saved["posteriors"], (d + m) / 2)
        posteriors[run_dir] = d
        torch.testing.assert_close(d, expected.posteriors)
    [fusion] = root.glob("fusion-A+B-*")
    fused = json.loads((fusion / f"results_dense_{tag}.json").read_text())
    assert fused["top1_error"] == pytest.approx(E.topk_error(E.fuse(list(posteriors.values())), saved["labels"], 1))
    table = runs.collect(root)
    row = table.set_index("run").loc["A"]
    assert row[f"results_dense_{tag}.top1_error"] == pytest.approx(
        json.loads((a / f"results_dense_{tag}.json").read_text())["top1_error"])
    assert f"results_dense_multi_crop_{tag}.top5_error" in table.set_index("run").loc[fusion.name]


@pytest.mark.slow
def test_evaluate_job_bad_values_fail_in_one_line(two_runs, tmp_path):
    from vgg_lib import jobs
    root, (a, _) = two_runs
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    cases = [({"run_dirs": str(unfinished)}, f"run_dir={str(unfinished)!r} has no finished checkpoint"),
             ({"run_dirs": str(a), "method": "crops"},
              "method='crops' is not allowed: one of single_scale, dense, dense_posteriors, multi_crop, dense_multi_crop"),
             ({"run_dirs": str(a), "scales": "24,32"},
              "scales='24,32' gives Q=24 for A, smaller than its crop 32: every test scale must be >= 32"),
             ({"run_dirs": str(a), "amp": "fp32"}, "amp='fp32' is not allowed: one of bf16, fp16, off or None")]
    for params, message in cases:
        with pytest.raises(jobs.JobError, match=re.escape(f"evaluate.ipynb failed: ConfigError: {message}")):
            jobs.run(EVAL_NOTEBOOK, params, root=tmp_path / "jobs")
