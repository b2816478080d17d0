"""vgg_lib.train: the recipe of Sect. 3.1, resume, DDP (Sect. 3.3), divergence, bad inputs.

Tiny nets (width 1/16, 32-pixel crops, a few hundred ``shapes`` images) keep this quick.
"""

import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("VGG_LIB_CACHE", str(REPO / ".cache" / "vgg_lib"))

import torch.nn.functional as F  # noqa: E402

from vgg_lib import loop, runs  # noqa: E402
from vgg_lib import train as T  # noqa: E402
from vgg_lib.checks import ConfigError  # noqa: E402
from vgg_lib.data import loaders  # noqa: E402
from vgg_lib.loop import Schedule  # noqa: E402
from vgg_lib.models import init_from, vgg  # noqa: E402
from vgg_lib.options import TrainConfig  # noqa: E402
from vgg_lib.runs import load_checkpoint, load_run  # noqa: E402
from vgg_lib.train import train  # noqa: E402

TINY = dict(width=1 / 16, train_size=128, val_size=64, batch_size=32, image_size=40, progress=False)


def tiny(tmp, name, **kw):
    return TrainConfig(**{**TINY, "run_dir": str(Path(tmp) / name), **kw})


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """A finished two-epoch run of net A."""
    return train(tiny(tmp_path_factory.mktemp("runs"), "A", config="A", epochs=2))


def weights(run_dir):
    return load_checkpoint(Path(run_dir) / "checkpoint.pt")["model"]


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


# --- the recipe ----------------------------------------------------------------------------

def test_recipe_defaults_are_the_papers():
    cfg = TrainConfig()
    assert (cfg.batch_size, cfg.momentum, cfg.weight_decay, cfg.lr, cfg.dropout) == (256, 0.9, 5e-4, 1e-2, 0.5)
    assert (cfg.lr_factor, cfg.max_decreases, cfg.init, cfg.init_std) == (0.1, 3, "normal", 0.01)
    assert cfg.epochs == 74  # 370K iterations of 256 images on 1.28M images
    # the paper's geometry scaled to a 32-pixel crop: 224 -> 32, S = 256 -> 37, pool5 is 1x1
    assert (cfg.crop, cfg.S, cfg.test_scale) == (32, 37, 37)
    assert TrainConfig(crop=224).S == 256
    assert TrainConfig(crop=224, S=[256, 512]).test_scale == 384  # Q = (Smin + Smax) / 2
    assert TrainConfig(S="256,512", crop=224).S == [256, 512]


def test_jittered_nets_are_validated_in_training_at_the_scale_evaluation_tests():
    """One middle of a jittered scale, Q = 0.5 (Smin + Smax) rounded half up: training validates
    and evaluation tests at the same Q (an odd Smin + Smax used to give 383 here, 384 there)."""
    from vgg_lib import evaluate as E
    from vgg_lib.data import jitter_middle

    assert jitter_middle([255, 512]) == 384 and jitter_middle(300) == 300
    assert TrainConfig(crop=224, S=[255, 512]).test_scale == 384 == E.paper_test_scales([255, 512])[1]
    cfg = TrainConfig(S=[37, 73])  # the committed jittered runs: unchanged
    assert cfg.test_scale == 55 == E.paper_test_scales(cfg.S, crop=cfg.crop)[1]


def test_schedule_divides_lr_three_times_then_stops():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    schedule = Schedule(opt, factor=0.1, patience=1, max_decreases=3)
    accuracies = [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    lrs, stops = [], []
    for acc in accuracies:
        stops.append(schedule.step(acc))
        lrs.append(opt.param_groups[0]["lr"])
    # improving keeps the lr; two epochs without improvement (patience 1) divide it by 10
    expected = [1e-2, 1e-2, 1e-2, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-5, 1e-5]
    assert lrs == pytest.approx(expected)
    assert stops.index(True) == 10 and schedule.decreases == 3  # the fourth plateau stops training
    state = schedule.state_dict()
    other = Schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-5), patience=1)
    other.load_state_dict(state)
    assert other.decreases == 3 and other.plateau.best == pytest.approx(0.3)


def test_epoch_batches_split_one_global_batch():
    full = loaders.epoch_batches(100, 32, seed=3, epoch=1)
    assert len(full) == 3 and all(len(b) == 32 for b in full)  # the incomplete batch is dropped
    r0, r1 = (loaders.epoch_batches(100, 32, seed=3, epoch=1, rank=r, world=2) for r in (0, 1))
    assert [sorted(a + b) for a, b in zip(r0, r1)] == [sorted(b) for b in full]
    assert loaders.epoch_batches(100, 32, seed=3, epoch=2) != full  # a new order each epoch
    assert loaders.epoch_batches(100, 32, seed=3, epoch=1) == full  # ... from (seed, epoch) only


def test_cli_lists_every_option_and_rejects_bad_ones(capsys):
    text = T.parser().format_help()
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name}" in text, f.name
    with pytest.raises(SystemExit) as e:
        T.main(["--lr", "-1"])
    assert str(e.value) == "error: lr=-1.0 is not allowed: a number > 0 (the paper: 1e-2)"
    assert T.parser().parse_args(["--S", "256", "512", "--no-flip"]).S == [256, 512]


# --- bad inputs: clear errors before any data is loaded --------------------------------------

@pytest.fixture
def no_data(monkeypatch):
    import vgg_lib.data as data

    def refuse(*a, **k):
        raise AssertionError("data were loaded")
    monkeypatch.setattr(data, "build_dataset", refuse)


@pytest.mark.parametrize("kwargs, message", [
    (dict(config="F"), "config: config name 'F' is unknown; allowed: A, A-LRN, B, C, D, E, B-5x5"),
    (dict(dataset="imagenet"), "dataset='imagenet' is not allowed: one of shapes, shapes_centred, digits, fashion_mnist, cifar10, imagefolder"),
    (dict(S=30), "S=30 is not allowed: an integer >= crop=32 or [Smin, Smax]"),
    (dict(S=[64, 48]), "S=[64, 48] has Smin > Smax"),
    (dict(S=[24, 48]), "S=[24, 48]: Smin is smaller than the crop"),
    (dict(lr=0), "lr=0 is not allowed: a number > 0"),
    (dict(lr=-0.1), "lr=-0.1 is not allowed: a number > 0"),
    (dict(epochs=0), "epochs=0 is not allowed: an integer >= 1"),
    (dict(batch_size=0), "batch_size=0 is not allowed: an integer >= 1"),
    (dict(micro_batch=512), "micro_batch=512 is not allowed: an integer in [1, batch_size=256]"),
    (dict(init="xavier"), "init='xavier' is not allowed: one of normal, glorot, from_run"),
    (dict(init="from_run"), "init_source=None is not allowed: the run folder of a trained net A"),
    (dict(device="tpu"), "device='tpu' is not allowed: one of cpu, cuda, auto"),
])
def test_bad_parameters(no_data, kwargs, message):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kwargs)
    assert message in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no GPU exists")
def test_cuda_without_gpu(no_data):
    with pytest.raises(ValueError, match=r"device='cuda' is not allowed: cpu or auto: no CUDA GPU"):
        TrainConfig(device="cuda")


def test_bad_data_root(no_data, tmp_path):
    with pytest.raises(ValueError, match=r"data_root=None is not allowed: imagefolder needs root="):
        TrainConfig(dataset="imagefolder")
    with pytest.raises(ValueError, match=r"does not exist or is not a directory"):
        TrainConfig(dataset="imagefolder", data_root=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"is empty: expected train/<class>/ images"):
        TrainConfig(dataset="imagefolder", data_root=str(tmp_path))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "readme.txt").write_text("no class folders")
    with pytest.raises(ValueError, match=r"has no class folders"):
        TrainConfig(dataset="imagefolder", data_root=str(tmp_path))
    (tmp_path / "train" / "cat").mkdir()
    with pytest.raises(ValueError, match=r"has no class folders in val/"):
        TrainConfig(dataset="imagefolder", data_root=str(tmp_path))


def test_bad_init_run(no_data, run_a, tmp_path):
    with pytest.raises(ValueError, match=r"init_run='.*nowhere' is not allowed: no checkpoint.pt"):
        TrainConfig(**TINY, init_run=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"is a run of config A, but config='D'"):
        TrainConfig(**{**TINY, "config": "D"}, init_run=str(run_a))
    with pytest.raises(ValueError, match=r"was trained with width=0.0625 but this run has width=0.125"):
        TrainConfig(**{**TINY, "width": 0.125}, init_run=str(run_a))
    TrainConfig(**TINY, init_run=str(run_a), lr=1e-3)  # S=384 from S=256, as the paper did
    # the centred framing of shapes has the same ten classes: the weights fit (the scale control)
    TrainConfig(**TINY, dataset="shapes_centred", init_run=str(run_a), lr=1e-3)
    with pytest.raises(ValueError, match=r"was trained with dataset='shapes' but this run has dataset='digits'"):
        TrainConfig(**TINY, dataset="digits", init_run=str(run_a))


# --- run folders ----------------------------------------------------------------------------

def test_run_folder_is_complete(run_a):
    assert sorted(p.name for p in run_a.iterdir()) == ["checkpoint.pt", "metrics.csv", "params.json",
                                                       "summary.json"]
    metrics = pd.read_csv(run_a / "metrics.csv")
    assert list(metrics.columns) == runs.METRICS and list(metrics.epoch) == [1, 2]
    assert metrics.val_top1_err.between(0, 100).all() and (metrics.lr == 1e-2).all()
    summary = json.loads((run_a / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["stop_reason"] == "epochs"
    assert summary["steps"] == 2 * (128 // 32) and summary["val_top1_err"] == metrics.val_top1_err.iloc[-1]
    assert summary["best_epoch"] == int(metrics.epoch[metrics.val_top1_err.idxmin()])
    params = json.loads((run_a / "params.json").read_text())
    assert params["config"] == "A" and params["S"] == 37 and params["num_classes"] == 10
    ckpt = load_checkpoint(run_a / "checkpoint.pt")
    assert {"model", "optimizer", "schedule", "rng", "epoch", "mean", "preprocess"} <= set(ckpt)
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python", "loader"}
    # a finished run is reused, not trained again
    mtime = (run_a / "checkpoint.pt").stat().st_mtime_ns
    assert train(TrainConfig(**{**TINY, "config": "A", "epochs": 2, "run_dir": str(run_a)})) == run_a
    assert (run_a / "checkpoint.pt").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match=r"holds a run with other parameters \(lr: 0.01 there, 0.02 here\)"):
        train(TrainConfig(**{**TINY, "config": "A", "epochs": 2, "lr": 0.02, "run_dir": str(run_a)}))


def test_load_run_rebuilds_the_net(run_a, tmp_path):
    run = load_run(run_a)
    assert not run.model.training and run.model.config == "A" and run.crop == 32 and run.S == 37
    assert run.mean.shape == (3,) and 60 < float(run.mean.mean()) < 200 and run.pixel_scale == 1.0
    assert_same_weights(run.model.state_dict(), weights(run_a))
    assert run.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="has no finished checkpoint"):
        load_run(tmp_path)


def test_pickled_checkpoint_is_refused(run_a, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(run_a, bad)
    ckpt = torch.load(bad / "checkpoint.pt", weights_only=True)
    ckpt["extra"] = Path("arbitrary object")  # needs unpickling of a class: could be any code
    torch.save(ckpt, bad / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"refusing to load checkpoint .*needs arbitrary unpickling"):
        load_run(bad)


def test_from_run_copies_net_a_first_four_convs_and_fcs(run_a):
    a = load_run(run_a).model
    d = init_from(vgg("D", num_classes=10, width=1 / 16, input_size=32), a)
    for name in ("conv1_1", "conv2_1", "conv3_1", "conv3_2"):
        assert torch.equal(getattr(d.features, name).weight, getattr(a.features, name).weight)
    for name in ("fc6", "fc7", "fc8"):
        assert torch.equal(getattr(d.classifier, name).weight, getattr(a.classifier, name).weight)
    assert not torch.equal(d.features.conv4_1.weight, a.features.conv4_1.weight)  # stays random
    TrainConfig(**TINY, config="D", init="from_run", init_source=str(run_a))  # accepted


def test_gradient_accumulation_equals_full_batch(tmp_path):
    # float32: bf16 rounds each micro-batch's products differently (its agreement is a seed-spread
    # statement, tested with the reference runs)
    full = train(tiny(tmp_path, "full", dropout=0.0, max_steps=3, amp="off"))
    micro = train(tiny(tmp_path, "micro", dropout=0.0, max_steps=3, micro_batch=8, amp="off"))
    assert json.loads((full / "summary.json").read_text())["stop_reason"] == "max_steps"
    assert_same_weights(weights(full), weights(micro), atol=1e-5)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = F.cross_entropy

    def nan_in_epoch_2(*a, **k):  # epoch 1 has 4 steps; the second step of epoch 2 diverges
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 6 else loss
    monkeypatch.setattr(F, "cross_entropy", nan_in_epoch_2)
    path = train(tiny(tmp_path, "nan", epochs=3))
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stop_reason"] == "diverged"
    assert (summary["failure"]["epoch"], summary["failure"]["step"]) == (2, 2)
    assert "non-finite loss at epoch 2, step 2" in summary["failure"]["reason"]
    ckpt = load_checkpoint(path / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert len(pd.read_csv(path / "metrics.csv")) == 1


def test_huge_lr_diverges(tmp_path):
    path = train(tiny(tmp_path, "huge", lr=1e6, epochs=1))
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite loss" in summary["failure"]["reason"]
    assert not (path / "checkpoint.pt").exists()  # no good epoch ever finished


def test_a_run_stopped_by_its_epoch_cap_goes_on_to_a_larger_cap(tmp_path):
    # Training on from the 2-epoch checkpoint is the 4-epoch run, bit for bit.
    kw = dict(seed=3, patience=0, max_decreases=20)
    reference = train(tiny(tmp_path, "reference", epochs=4, **kw))
    short = train(tiny(tmp_path, "extended", epochs=2, **kw))
    extended = train(tiny(tmp_path, "extended", epochs=4, **kw))
    assert_same_weights(weights(reference), weights(extended))
    cols = [c for c in runs.METRICS if c not in ("images_per_s", "seconds")]
    pd.testing.assert_frame_equal(pd.read_csv(reference / "metrics.csv")[cols],
                                  pd.read_csv(extended / "metrics.csv")[cols])
    assert json.loads((short / "params.json").read_text())["epochs"] == 4
    # a smaller cap, or a run the schedule stopped, is another run: refused, nothing written
    with pytest.raises(ConfigError, match="epochs: 4 there, 3 here"):
        train(tiny(tmp_path, "extended", epochs=3, **kw))
    stopped = train(tiny(tmp_path, "stopped", epochs=30, seed=3, patience=0, max_decreases=0))
    assert json.loads((stopped / "summary.json").read_text())["stop_reason"] == "lr_schedule"
    with pytest.raises(ConfigError, match="only if its epoch cap stopped it"):
        train(tiny(tmp_path, "stopped", epochs=40, seed=3, patience=0, max_decreases=0))


# --- resume after SIGKILL and DDP equivalence: real processes --------------------------------

def _env(threads=1):
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    # Enough epochs that the kill, shortly after the first checkpoint, lands before the last one
    # (with 4 the tiny run sometimes finished within the random delay).
    kw = dict(epochs=10, seed=1, patience=0, max_decreases=20)
    reference = train(tiny(tmp_path, "reference", **kw))
    victim = tiny(tmp_path, "victim", **kw)
    args = [sys.executable, "-m", "vgg_lib.train"] + [
        f"--{k}={v}" for k, v in victim.to_dict().items()
        if v is not None and k not in ("S", "progress") and not isinstance(v, bool)] + ["--no-progress"]
    # the same number of threads as this process: the same summation order, bit for bit
    proc = subprocess.Popen(args, env=_env(torch.get_num_threads()), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = Path(victim.run_dir) / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.05))  # somewhere after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = load_checkpoint(ckpt)["epoch"]
    assert killed_at < kw["epochs"] and json.loads((Path(victim.run_dir) / "summary.json").read_text())["status"] == "running"
    resumed = train(victim)
    assert_same_weights(weights(reference), weights(resumed))
    cols = [c for c in runs.METRICS if c not in ("images_per_s", "seconds")]
    pd.testing.assert_frame_equal(pd.read_csv(reference / "metrics.csv")[cols],
                                  pd.read_csv(resumed / "metrics.csv")[cols])
    assert json.loads((resumed / "summary.json").read_text())["status"] == "finished"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path):
    """Sect. 3.3: synchronous data parallelism computes exactly the single-device gradient."""
    kw = dict(dropout=0.0, max_steps=3, micro_batch=8, seed=2)
    single = train(tiny(tmp_path, "single", **kw))
    ddp = tiny(tmp_path, "ddp", **kw)
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}", "-m", "vgg_lib.train", "--device=cpu", "--no-progress"] + [
        f"--{k}={v}" for k, v in ddp.to_dict().items()
        if v is not None and k not in ("S", "progress", "device") and not isinstance(v, bool)]
    out = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    params = json.loads((Path(ddp.run_dir) / "params.json").read_text())
    assert params["world_size"] == 2
    assert_same_weights(weights(single), weights(ddp.run_dir), atol=1e-5)
    a, b = (pd.read_csv(Path(p) / "metrics.csv") for p in (single, ddp.run_dir))
    assert a.val_top1_err.tolist() == b.val_top1_err.tolist()
    assert a.train_loss.tolist() == pytest.approx(b.train_loss.tolist(), abs=1e-5)


# --- GPU readiness, tested on the CPU ------------------------------------------------------------

def test_uint8_batches_normalised_on_the_device_give_todays_loss():
    """Batches cross to the device as uint8 crops plus per-image offsets (mean minus colour
    shift) and are normalised there: the same floats, hence the same loss, as the float32
    transform applied image by image in the loader."""
    from vgg_lib.data import build_dataset, rgb_statistics, train_transform
    base = build_dataset("shapes", "train", size=16, image_size=40)
    stats = rgb_statistics(base)
    for pixel_scale in (1.0, 1 / 255):
        t = train_transform((32, 48), 32, **stats, colour_std=0.1, pixel_scale=pixel_scale)
        items = loaders._Augmented(base, t, seed=5)
        keys = [(2, i) for i in range(16)]
        images, offsets, labels = torch.utils.data.default_collate([items[k] for k in keys])
        assert images.dtype == torch.uint8 and offsets.shape == (16, 3)
        # what the DataLoader really calls: the whole batch at once, rescaled in one call
        for a, b in zip(loaders._collate(items.__getitems__(keys)), (images, offsets, labels)):
            assert torch.equal(a, b)
        x = loop._to_device(images, offsets, torch.device("cpu"), pixel_scale)
        # today's path: the whole transform per image, float32 out of the loader
        old = torch.stack([t(base[i][0], generator=torch.Generator().manual_seed(loaders.derived_seed(5, 2, i)))
                           for _, i in keys])
        assert torch.equal(x, old)
        torch.manual_seed(0)
        net = vgg("A", num_classes=10, width=1 / 16, input_size=32).eval()
        with torch.no_grad():
            assert torch.equal(F.cross_entropy(net(x), labels), F.cross_entropy(net(old), labels))


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_amp_modes_train_on_the_cpu(tmp_path, amp):
    path = train(tiny(tmp_path, amp, amp=amp, max_steps=2))
    assert json.loads((path / "summary.json").read_text())["status"] == "finished"
    assert json.loads((path / "params.json").read_text())["amp"] == amp
    assert all(torch.isfinite(v).all() for v in weights(path).values())
    if amp == "fp16":  # the gradient scaler's state is part of the checkpoint
        assert load_checkpoint(path / "checkpoint.pt")["scaler"]["scale"] > 0


def test_amp_and_workers_defaults_and_bad_values(no_data, monkeypatch):
    cfg = TrainConfig()
    assert cfg.amp is None and cfg.workers is None
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert loop.resolved_amp(cfg, cuda) == "bf16"
    # on the CPU: bf16 only where it is native (emulated bf16 is slower than float32)
    monkeypatch.setattr(loop, "native_bf16", lambda: True)
    assert loop.resolved_amp(cfg, cpu) == "bf16"
    monkeypatch.setattr(loop, "native_bf16", lambda: False)
    assert loop.resolved_amp(cfg, cpu) == "off"
    assert loop.resolved_amp(TrainConfig(amp="fp16"), cuda) == "fp16"
    assert loop.resolved_amp(TrainConfig(amp="off"), cpu) == "off"
    with pytest.raises(ConfigError) as e:
        TrainConfig(amp="fp32")
    assert str(e.value) == ("amp='fp32' is not allowed: one of bf16, fp16, off or None (bf16 on cuda and on "
                            "a CPU with native bf16, off on other CPUs)")
    with pytest.raises(ConfigError, match=r"^workers=-1 is not allowed: an integer >= 0 or None$"):
        TrainConfig(workers=-1)
    # workers=None: none on the CPU; on CUDA the CPUs shared among the machine's GPUs, at most 8
    assert loaders.default_workers(cpu) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(96)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert loaders.default_workers(cuda) == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(24)), raising=False)
    assert loaders.default_workers(cuda) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loaders.default_workers(cuda) == 1
    assert T.parser().parse_args(["--amp", "fp16"]).amp == "fp16"
    assert T.parser().parse_args([]).workers is None


def test_a_skipped_step_changes_no_weight_and_no_momentum():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True)
    w.grad = torch.ones(5)
    loop._sgd_step(opt, None, torch.tensor(0.0))  # a good step
    before, momentum = w.detach().clone(), opt.state[w]["momentum_buffer"].clone()
    w.grad = torch.full((5,), float("nan"))
    loop._sgd_step(opt, None, torch.tensor(1.0))  # a non-finite loss: skipped on the device
    assert torch.equal(w.detach(), before) and torch.equal(opt.state[w]["momentum_buffer"], momentum)
    w.grad = torch.ones(5)
    loop._sgd_step(opt, None, torch.tensor(0.0))
    assert not torch.equal(w.detach(), before)
    # fp16: a non-finite loss with finite gradients is skipped too (its gradients are poisoned)
    scaler = torch.amp.GradScaler("cpu")
    before = w.detach().clone()
    loss = (w * 1e38).sum() * torch.tensor(float("inf"))
    opt.zero_grad()
    scaler.scale((w * 2).sum() * loop._poison(loss)).backward()
    loop._sgd_step(opt, scaler, torch.tensor(1.0))
    assert torch.equal(w.detach(), before)


def test_host_reads_do_not_grow_with_the_number_of_steps(tmp_path, monkeypatch):
    """No .item() or tensor construction per step or micro-batch: values are read from the
    device once per SYNC_EVERY steps and once per epoch (counted in the frames of the training's
    own modules: the loop, its loaders, the run folder, train)."""
    reads = []
    own_files = {loop.__file__, loaders.__file__, runs.__file__, T.__file__}

    def counting(name):
        real = getattr(torch.Tensor, name)

        def read(self, *a, **k):
            if sys._getframe(1).f_code.co_filename in own_files:
                reads.append(name)
            return real(self, *a, **k)
        return read
    for name in ("item", "tolist", "__int__", "__float__", "__bool__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    counts = {}
    for steps in (2, 8):
        reads.clear()
        train(tiny(tmp_path, f"reads{steps}", train_size=32 * steps, micro_batch=8, epochs=1))
        counts[steps] = len(reads)
    assert counts[2] == counts[8] and counts[8] < 8, counts


def test_old_checkpoints_rng_lists_with_cuda_states_are_read():
    g = torch.Generator().manual_seed(3)
    state = loop._rng_state(g)
    old = [dict(state, cuda=[torch.zeros(16, dtype=torch.uint8)] * 8), dict(state)]  # 2 ranks, 8 GPUs
    other = torch.Generator().manual_seed(4)
    loop._set_rng_state(old, other)
    assert torch.equal(other.get_state(), g.get_state())


def _first_epoch_then_exit(rank, world, port, cfg):
    """A torchrun-like process of a gloo run that dies right after the first checkpoint."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    real = loaders.EpochBatches.set_epoch

    def set_epoch(self, epoch):
        if epoch == 1:  # every process stops between epochs, as if the job were killed
            os._exit(0)
        real(self, epoch)
    loaders.EpochBatches.set_epoch = set_epoch
    train(TrainConfig(**cfg))


def _torchrun(nproc, cfg, timeout=300):
    args = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "vgg_lib.train",
            "--device=cpu", "--no-progress"] + [
        f"--{k}={v}" for k, v in cfg.to_dict().items()
        if v is not None and k not in ("S", "progress", "device") and not isinstance(v, bool)]
    return subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_two_process_run_resumes_with_three_processes_and_with_one(tmp_path):
    """The checkpoint holds nothing per process or per GPU: a gloo run of 2 processes, stopped
    after its first checkpoint, resumes with 3 processes and with 1 (no IndexError at rng[rank])
    and, without dropout, ends where an uninterrupted run ends."""
    import shutil

    import torch.multiprocessing as mp
    kw = dict(dropout=0.0, epochs=2, seed=3, patience=5, amp="off")  # float32: sums split across processes
    reference = train(tiny(tmp_path, "reference", **kw))
    stopped = tiny(tmp_path, "stopped", **kw)
    mp.spawn(_first_epoch_then_exit, args=(2, _free_port(), {**stopped.to_dict(), "device": "cpu"}),
             nprocs=2)
    ckpt = load_checkpoint(Path(stopped.run_dir) / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["world_size"]) == (1, 2)
    assert json.loads((Path(stopped.run_dir) / "summary.json").read_text())["status"] == "running"
    first = pd.read_csv(Path(stopped.run_dir) / "metrics.csv")
    three, one = (tiny(tmp_path, name, **kw) for name in ("three", "one"))
    for cfg in (three, one):
        shutil.copytree(stopped.run_dir, cfg.run_dir)
    out = _torchrun(3, three)
    assert out.returncode == 0, out.stderr[-3000:]
    train(one)
    for cfg in (three, one):
        path = Path(cfg.run_dir)
        assert json.loads((path / "summary.json").read_text())["status"] == "finished"
        metrics = pd.read_csv(path / "metrics.csv")
        assert metrics.epoch.tolist() == [1, 2]
        pd.testing.assert_frame_equal(metrics.iloc[:1], first)  # the first epoch is the saved one
        assert_same_weights(weights(reference), weights(path), atol=1e-5)
    assert json.loads((Path(three.run_dir) / "params.json").read_text())["world_size"] == 3


@pytest.mark.slow
def test_torch_compile_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache" / "torchinductor"))  # not /tmp
    path = train(tiny(tmp_path, "compiled", compile=True, max_steps=2, micro_batch=16))
    assert json.loads((path / "summary.json").read_text())["status"] == "finished"
    assert all(torch.isfinite(v).all() for v in weights(path).values())


def test_a_run_does_not_go_on_in_another_precision(tmp_path):
    # bf16 and float32 steps differ in their last bits: a run resumed in the other one would be
    # neither, so it is refused before anything is written
    kw = dict(epochs=2, seed=0, amp="off")
    first = train(tiny(tmp_path, "run", **{**kw, "epochs": 1}))
    before = (first / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"was trained with amp='off' and would go on with amp='bf16'; "
                                          r"pass amp='off' to resume it"):
        train(tiny(tmp_path, "run", **{**kw, "amp": "bf16"}))
    assert (first / "checkpoint.pt").read_bytes() == before
    params = json.loads((train(tiny(tmp_path, "run", **kw)) / "params.json").read_text())
    assert params["amp"] == "off" and params["channels_last"] is True  # the CPU's layout, recorded
