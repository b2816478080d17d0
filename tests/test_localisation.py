"""Appendix A (localisation): ground-truth boxes, the box head, its loss and the two test protocols."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vgg_lib.data import shapes, test_transform, train_transform
from vgg_lib.data.transforms import transform_box

MEAN = [120.0, 110.0, 100.0]


# ------------------------------------------------------------------------------ boxes of shapes

def _object_only(scenes):
    """The same scenes with a white, unshaded object on black: pixel value = coverage * 255."""
    s = {k: v.copy() for k, v in scenes.items()}
    s["fg"][:] = 1.0
    s["bg"][:] = 0.0
    s["clutter_colour"][:] = 0.0
    s["shade"][:, 1] = 0.0
    return s


def _assert_box_fits(box, coverage, tol=0.05):
    """The box holds every pixel centre inside the object (coverage >= 1/2) and lies within
    the pixels the object touches (coverage > 0), give or take 3/4 pixel: a sharp tip between
    two pixel centres may reach up to sqrt(2)/2 pixel past the centres it leaves untouched."""
    ys, xs = np.nonzero(coverage >= 128)
    inner = np.array([xs.min() + 0.5, ys.min() + 0.5, xs.max() + 0.5, ys.max() + 0.5])
    ys, xs = np.nonzero(coverage > 0)
    outer = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    box = np.asarray(box, dtype=float)
    assert (box[:2] <= inner[:2] + tol).all() and (box[2:] >= inner[2:] - tol).all(), (box, inner)
    assert (box[:2] >= outer[:2] - 0.75 - tol).all() and (box[2:] <= outer[2:] + 0.75 + tol).all(), (box, outer)


@pytest.mark.parametrize("size", [64, 200])
def test_shapes_boxes_match_the_rendered_objects(size):
    scenes = shapes.sample_scenes(60, seed=3, split="val")
    boxes = shapes.boxes(scenes) * size
    drawn = shapes.render(_object_only(scenes), size)[:, 0]
    for box, cov in zip(boxes, drawn):
        _assert_box_fits(box, cov)
    # and tight: within a pixel of the inside pixels' extent on average (sharp tips cover no centre)
    assert np.mean([abs(b[2] - b[0] - (np.ptp(np.nonzero(c.max(0) >= 128)[0]) + 1))
                    for b, c in zip(boxes, drawn)]) < 1.0


def test_shapes_dataset_gives_its_boxes(tmp_path):
    from vgg_lib.data import build_dataset

    ds = build_dataset("shapes", "val", root=tmp_path, size=8, image_size=48)
    assert np.allclose(ds.boxes(), shapes.boxes(shapes.sample_scenes(8, 0, "val")) * 48)
    assert ds.boxes().shape == (8, 4) and (ds.boxes() >= 0).all() and (ds.boxes() <= 48).all()


def _through_transform(scenes, base, S, params, crop):
    """Box of the ``base``-pixel image mapped by the training transform's geometry, and the
    object drawn directly at the rescaled size ``S``, cropped and flipped as the draw says."""
    t = train_transform(S, crop, MEAN)
    box = shapes.boxes(scenes)[0] * base
    mapped = transform_box(box, t.geometry(base, base, params))
    cov = shapes.render(_object_only(scenes), S)[0, 0]
    cov = cov[params["top"]:params["top"] + crop, params["left"]:params["left"] + crop]
    return mapped, (cov[:, ::-1] if params["flip"] else cov)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("index", range(6))
def test_box_follows_rescale_crop_and_flip(index, flip):
    """Crops placed anywhere that keeps the whole object (a cut box is clipped: next test)."""
    scenes = shapes.take(shapes.sample_scenes(6, seed=1, split="train"), [index])
    scenes["radius"][:] = np.minimum(scenes["radius"], 0.2)  # fits in the crop: 0.2 * 1.3 * 2 * 96 < 64
    S, crop = 96, 64
    x0, y0, x1, y1 = shapes.boxes(scenes)[0] * S
    lo_x, hi_x = max(0, int(np.ceil(x1)) - crop), min(S - crop, int(x0))
    lo_y, hi_y = max(0, int(np.ceil(y1)) - crop), min(S - crop, int(y0))
    p = dict(S=S, top=lo_y + index * (hi_y - lo_y) // 5, left=hi_x - index * (hi_x - lo_x) // 5, flip=flip,
             alpha=torch.zeros(3, dtype=torch.float64))
    mapped, cov = _through_transform(scenes, 64, S, p, crop)
    _assert_box_fits(mapped, cov)


def test_box_through_a_crop_that_cuts_it():
    scenes = shapes.take(shapes.sample_scenes(1, seed=0, split="train"), [0])
    scenes["shape"][:], scenes["centre"][:], scenes["radius"][:] = 0, 0.5, 0.3  # a circle: the crop
    # cuts it through its centre, where its visible quarter reaches as far left and up as it does
    S, crop = 128, 64
    p = dict(S=S, top=0, left=0, flip=False, alpha=torch.zeros(3, dtype=torch.float64))
    mapped, cov = _through_transform(scenes, 64, S, p, crop)
    assert mapped[2] == crop and mapped[3] == crop  # cut at the crop's right and bottom edges
    _assert_box_fits(mapped, cov)


def test_box_follows_the_fused_path_of_large_images():
    """Large images take the fused resized crop (one window of the original resized): the
    geometry replays that window, rounding included."""
    scenes = shapes.take(shapes.sample_scenes(3, seed=2, split="train"), [2])
    base, S, crop = 512, 160, 128
    t = train_transform(S, crop, MEAN)
    assert t._fused(base, base, S)
    p = dict(S=S, top=13, left=29, flip=True, alpha=torch.zeros(3, dtype=torch.float64))
    mapped, cov = _through_transform(scenes, base, S, p, crop)
    _assert_box_fits(mapped, cov, tol=0.6)  # the fused window rounds to half an original pixel


def test_box_through_the_test_transform_and_a_random_draw():
    scenes = shapes.take(shapes.sample_scenes(4, seed=5, split="test"), [3])
    img = torch.from_numpy(shapes.render(_object_only(scenes), 64)[0])
    box = shapes.boxes(scenes)[0] * 64
    for t in (test_transform(80, MEAN, crop=56), train_transform((64, 96), 56, MEAN)):
        params = t.sample(64, 64, torch.Generator().manual_seed(4)) if hasattr(t, "sample") else None
        geometry = t.geometry(64, 64, params) if params else t.geometry(64, 64)
        crop = t.apply_split(img, params)[0] if params else t.split(img)[0]
        # the uint8 crop of a rescaled rendering: blurred by the resize, so a looser bracket
        _assert_box_fits(transform_box(box, geometry), crop[0].numpy(), tol=1.0)


def test_transform_box_rejects_a_box_outside_the_image():
    g = test_transform(64, MEAN).geometry(64, 64)
    with pytest.raises(ValueError, match=r"is not inside the 64x64 image; allowed: 0 <= x0 <= x1 <= 64"):
        transform_box([10, 10, 70, 20], g)
    with pytest.raises(ValueError, match="is not inside"):
        transform_box([[30, 10, 20, 20]], g)  # x1 < x0


# ------------------------------------------------------------------------------ the net and its loss

from torchvision.ops import box_iou  # noqa: E402

from vgg_lib import localisation as loc  # noqa: E402
from vgg_lib import stats as stats_lib  # noqa: E402
from vgg_lib.models import vgg  # noqa: E402


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return vgg("A", num_classes=10, width=1 / 16, input_size=32, pools=3, init="kaiming").eval()


class _Data:
    def __init__(self, name="shapes", num_classes=10):
        self.name, self.num_classes = name, num_classes


class _Run:
    def __init__(self, model, dataset):
        self.model, self.params = model, {"dataset": dataset}


def test_scr_has_4_outputs_and_pcr_4_per_class(classifier):
    x = torch.randn(2, 3, 32, 32)
    scr = loc.localisation_net(classifier, per_class=False, data=_Data())
    pcr = loc.localisation_net(_Run(classifier, "shapes"), per_class=True, data=_Data())
    assert scr.eval()(x).shape == (2, 4) and pcr.eval()(x).shape == (2, 40)
    assert (scr.per_class, pcr.per_class, pcr.box_classes) == (False, True, 10)
    assert classifier.classifier.fc8.out_features == 10  # the source is untouched
    assert torch.equal(scr.classifier.fc7.weight, classifier.classifier.fc7.weight)
    assert torch.equal(pcr.features.conv1_1.weight, classifier.features.conv1_1.weight)
    assert 0 < pcr.classifier.fc8.weight.std() < 0.02  # new and random, N(0, 0.01^2)


def test_localisation_net_rejects_other_data(classifier):
    with pytest.raises(ValueError, match="source run was trained on 'cifar10' but the localisation data "
                                         "is 'shapes'; allowed: a classification run of the same data set"):
        loc.localisation_net(_Run(classifier, "cifar10"), per_class=False, data=_Data())
    with pytest.raises(ValueError, match=r"one box per class of the classification net \(10\) but the "
                                         r"localisation data has 5 classes; allowed: data with 10"):
        loc.localisation_net(classifier, per_class=True, data=_Data(num_classes=5))
    assert loc.localisation_net(classifier, per_class=False, data=_Data(num_classes=5))  # SCR: any classes
    with pytest.raises(ValueError, match="per_class must be True"):
        loc.localisation_net(classifier, per_class="yes")


def test_fine_tuned_parameters(classifier):
    net = loc.localisation_net(classifier, per_class=False)
    fc = loc.fine_tune_parameters(net, "fc")
    assert len(fc) == 6 and fc[-1] is net.classifier.fc8.bias
    assert len(loc.fine_tune_parameters(net, "all")) == len(list(net.parameters()))
    with pytest.raises(ValueError, match="layers='conv'; allowed: 'all', 'fc'"):
        loc.fine_tune_parameters(net, "conv")


def test_iou_agrees_with_torchvision():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 50
    a = torch.cat([xy, xy + 1 + torch.rand(200, 2, generator=g) * 30], 1)
    b = a[torch.randperm(200, generator=g)] + torch.randn(200, 4, generator=g).clamp(-2, 2)
    b = torch.cat([b[:, :2], torch.maximum(b[:, 2:], b[:, :2] + 0.5)], 1)
    assert torch.allclose(loc.matched_iou(a, b), torch.stack([box_iou(x[None], y[None])[0, 0] for x, y in zip(a, b)]))
    assert loc.matched_iou(a, a).eq(1).all()


def test_box_encoding_round_trip_and_loss():
    boxes = torch.tensor([[0.0, 8.0, 32.0, 24.0], [4.0, 4.0, 12.0, 20.0]])
    enc = loc.encode_boxes(boxes, 32)
    assert torch.allclose(enc[0], torch.tensor([0.5, 0.5, 1.0, 0.5]))
    assert torch.allclose(loc.decode_boxes(enc, 32), boxes)
    target = torch.cat([enc, torch.tensor([[2.0], [0.0]])], 1)
    scr = enc + torch.tensor([0.1, 0.0, 0.0, 0.0])
    assert loc.box_loss(scr, target).item() == pytest.approx(0.01)
    pcr = torch.zeros(2, 3, 4)
    pcr[0, 2], pcr[1, 0] = enc[0], enc[1] + torch.tensor([0.0, 0.2, 0.0, 0.0])  # only the true class counts
    assert loc.box_loss(pcr.view(2, 12), target).item() == pytest.approx(0.5 * 0.04)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        loc.box_loss(pcr.view(2, 12), torch.cat([enc, torch.tensor([[3.0], [0.0]])], 1))


class _Fixed(torch.nn.Module):
    """A hand-made 'net': returns the given outputs in turn, one row per image, whatever the images."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.seen, self.p = outputs, 0, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.seen += len(x)
        return self.outputs[self.seen - len(x):self.seen]


def test_protocol1_counts_boxes_with_iou_at_most_half():
    truth = loc.encode_boxes(torch.tensor([[8.0, 8.0, 24.0, 24.0]] * 4), 32)
    target = torch.cat([truth, torch.tensor([[0.0], [1.0], [1.0], [0.0]])], 1)
    shifted = lambda dx: loc.encode_boxes(torch.tensor([8.0 + dx, 8.0, 24.0 + dx, 24.0]), 32)  # noqa: E731
    out = torch.zeros(4, 2, 4)
    out[0, 0] = shifted(0)        # exact: right
    out[1, 1] = shifted(4)        # IoU 12/20 = 0.6: right
    out[2, 1] = loc.encode_boxes(torch.tensor([0.0, 8.0, 32.0, 24.0]), 32)  # IoU exactly 0.5: wrong
    out[3, 1] = shifted(0)        # the right box for the wrong class (label 0's box is empty): wrong
    net = _Fixed(out.view(4, 8))
    batches = [(torch.zeros(2, 3, 32, 32), target[:2]), (torch.zeros(2, 3, 32, 32), target[2:])]
    assert loc.protocol1(net, batches) == 50.0


def test_localisation_data_targets(tmp_path):
    from vgg_lib.data import build_dataset

    ds = build_dataset("shapes", "val", root=tmp_path, size=4, image_size=48)
    data = loc.LocalisationData(ds, test_transform(48, MEAN, crop=32))
    x, target = data[1]
    assert x.shape == (3, 32, 32) and target[4] == ds.labels[1]
    box = torch.tensor(ds.boxes()[1]) - 8  # the centre 32-crop of a 48 image starts at (8, 8)
    assert torch.allclose(loc.decode_boxes(target[:4], 32).double(), box.clamp(0, 32), atol=1e-4)
    with pytest.raises(ValueError, match="TestTransform with a crop"):
        loc.LocalisationData(ds, test_transform(48, MEAN))
    with pytest.raises(ValueError, match=r"box \[0.0, 0.0, 49.0, 3.0\] is not inside the 48x48 image"):
        loc.LocalisationData(ds, test_transform(48, MEAN, crop=32), boxes=[[0, 0, 49, 3]] * 4)


def test_training_batches_feed_the_loss(tmp_path, classifier):
    from vgg_lib.data import build_dataset

    ds = build_dataset("shapes", "train", root=tmp_path, size=6, image_size=48)
    data = loc.LocalisationData(ds, train_transform((40, 56), 32, MEAN, flip=True))
    x, target = next(iter(torch.utils.data.DataLoader(data, batch_size=6)))
    assert x.shape == (6, 3, 32, 32) and target.shape == (6, 5)
    assert ((target[:, :4] >= 0) & (target[:, :4] <= 1)).all() and target[:, 4].tolist() == ds.labels.tolist()
    net = loc.localisation_net(classifier, per_class=True).train()
    loss = loc.box_loss(net(x), target)
    loss.backward()
    assert torch.isfinite(loss) and net.classifier.fc8.weight.grad.abs().sum() > 0
    assert 0 <= loc.box_errors(net(x), target) <= 6


def test_fine_tune_localiser_trains_through_the_shared_loop(tmp_path, classifier):
    """The localiser trains with loop.fit: a loss that falls on a fixed batch, localisation
    errors in percent per epoch, and "fc" leaves the convolutions as they were (Table 8)."""
    from vgg_lib.data import build_dataset

    ds = build_dataset("shapes", "train", root=tmp_path, size=16, image_size=48)
    data = loc.LocalisationData(ds, test_transform(48, MEAN, crop=32, pixel_scale=1 / 64))  # an untrained net: small inputs
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    x, target = next(iter(loader))
    for layers in ("fc", "all"):
        torch.manual_seed(0)
        net = loc.localisation_net(classifier, per_class=False)
        conv = net.features.conv1_1.weight.detach().clone()
        with torch.no_grad():
            before = float(loc.box_loss(net.eval()(x), target))
        history = loc.fine_tune_localiser(net, loader, loader, layers=layers, epochs=3, lr=1e-3)
        assert [r["epoch"] for r in history] == [1, 2, 3]
        assert all(0 <= r["val_top1_err"] <= 100 for r in history)
        with torch.no_grad():
            assert float(loc.box_loss(net.eval()(x), target)) < before
        assert torch.equal(net.features.conv1_1.weight, conv) == (layers == "fc")
    with torch.no_grad():
        assert int(loc.box_correct(net(x), target)) == len(x) - loc.box_errors(net(x), target)


def test_a_diverging_fine_tuning_is_one_line_error(tmp_path, classifier):
    from vgg_lib.data import build_dataset

    ds = build_dataset("shapes", "train", root=tmp_path, size=16, image_size=48)
    loader = torch.utils.data.DataLoader(loc.LocalisationData(ds, test_transform(48, MEAN, crop=32)), batch_size=8)
    net = loc.localisation_net(classifier, per_class=False)
    with pytest.raises(RuntimeError, match=r"localiser diverged \(non-finite loss at epoch 1.*at lr 1e\+12; allowed: a lower"):
        loc.fine_tune_localiser(net, loader, loader, layers="all", epochs=2, lr=1e12)


# ------------------------------------------------------------------------------ protocol 2

def test_merging_two_overlapping_boxes_gives_their_average():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0], [12.0, 14.0, 52.0, 54.0]])
    merged, score, label = loc.merge_boxes(boxes, torch.tensor([0.5, 0.25]), torch.tensor([3, 3]))
    assert merged.tolist() == [[11.0, 12.0, 51.0, 52.0]] and score.tolist() == [0.75] and label.tolist() == [3]


def test_far_apart_boxes_and_other_classes_never_merge():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0], [0.0, 0.0, 10.0, 10.0]])
    merged, score, label = loc.merge_boxes(boxes, torch.tensor([0.2, 0.3, 0.9]), torch.tensor([1, 1, 2]))
    assert len(merged) == 3 and label.tolist() == [2, 1, 1] and merged[0].tolist() == [0.0, 0.0, 10.0, 10.0]
    # three boxes in a row: the closest pair merges first, then the third joins their mean
    row = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [3.0, 0, 13, 10]])
    merged, score, _ = loc.merge_boxes(row, torch.ones(3), torch.zeros(3))
    assert torch.allclose(merged, torch.tensor([[4 / 3, 0, 34 / 3, 10]], dtype=torch.float64)) and score.item() == 3


def _constant_localiser(classifier, boxes_by_class, per_class):
    """A localisation net whose every window predicts the given encoded box(es)."""
    net = loc.localisation_net(classifier, per_class=per_class)
    with torch.no_grad():
        net.classifier.fc8.weight.zero_()
        net.classifier.fc8.bias.copy_(torch.as_tensor(boxes_by_class).reshape(-1))
    return net.eval()


def _favouring(classifier, c):
    net = vgg("A", num_classes=10, width=1 / 16, input_size=32, pools=3, init=None)
    net.load_state_dict(classifier.state_dict())
    with torch.no_grad():
        net.classifier.fc8.weight.zero_()
        net.classifier.fc8.bias.copy_(-torch.arange(10.0))  # classes ranked 0, 1, 2, ...
        net.classifier.fc8.bias[c] = 5.0
    return net.eval()


def test_protocol2_on_hand_made_nets(classifier):
    cls = _favouring(classifier, 3)
    image = torch.randn(3, 64, 96)
    # at Q = 32 the image is 32x48: three 32-pixel windows, 8 pixels apart, each predicting the
    # middle half of itself (scr) or that moved right by 0.05 (shifted)
    scr = _constant_localiser(classifier, [0.5, 0.5, 0.5, 0.5], per_class=False)
    shifted = _constant_localiser(classifier, [0.55, 0.5, 0.5, 0.5], per_class=False)
    boxes, scores = loc.dense_boxes(scr, cls, image, 32)
    assert boxes.shape == (3, 10, 4) and scores.shape == (3, 10)  # 32x48: windows at x = 0, 8, 16
    assert torch.allclose(boxes[0, 0], torch.tensor([16.0, 16.0, 48.0, 48.0]))  # (8, 8, 24, 24) x 2
    assert torch.allclose(boxes[2, 7], torch.tensor([48.0, 16.0, 80.0, 48.0]))
    guesses = loc.localise([scr, shifted], cls, image, scales=[32], k=5)
    assert [c for c, _, _ in guesses] == [3, 0, 1, 2, 4]
    # the union of both nets' boxes: each window's two boxes (IoU 0.82) merge, neighbouring
    # windows' do not (IoU 0.33 and 0.43); equal scores everywhere, so the first window's pair
    # comes first, and it matches the first image's ground truth, not the second's
    gt = [[[16.0, 16.0, 48.0, 48.0]], [[60.0, 0.0, 90.0, 20.0]]]
    err = loc.protocol2([scr, shifted], cls, [image, image], gt, [3, 3], scales=[32])
    assert err == {"top1_loc_error": 50.0, "top5_loc_error": 50.0}
    err = loc.protocol2([scr], cls, [image], gt[:1], [1], scales=[32])
    assert err == {"top1_loc_error": 100.0, "top5_loc_error": 0.0}  # class 1 is the third guess


def test_protocol2_pcr_uses_each_class_box_and_checks_input(classifier):
    cls = _favouring(classifier, 3)
    per_class = torch.full((10, 4), 0.25)
    per_class[3] = torch.tensor([0.5, 0.5, 1.0, 1.0])
    pcr = _constant_localiser(classifier, per_class, per_class=True)
    image = torch.randn(3, 32, 32)
    (c, box, _), *_ = loc.localise([pcr], cls, image, scales=[32])
    assert c == 3 and box.tolist() == [0.0, 0.0, 32.0, 32.0]
    with pytest.raises(ValueError, match=r"box \[0.0, 0.0, 40.0, 10.0\] is not inside the 32x32 image"):
        loc.protocol2([pcr], cls, [image], [[[0, 0, 40, 10]]], [3], scales=[32])
    other = vgg("A", num_classes=5, width=1 / 16, input_size=32, pools=3)
    with pytest.raises(ValueError, match="made for 10 classes but the classification net has 5"):
        loc.protocol2([pcr], other, [image], [[[0, 0, 20, 10]]], [3], scales=[32])


# ------------------------------------------------------------------------------ ILSVRC annotations

from vgg_lib.data.annotations import read_annotation, read_annotations  # noqa: E402


def _xml(objects, size="<size><width>500</width><height>375</height><depth>3</depth></size>"):
    body = "".join(f"<object><name>{n}</name><pose>Unspecified</pose><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for n, b in objects)
    return f"<annotation><folder>n01440764</folder><filename>x</filename>{size}{body}</annotation>"


def test_read_ilsvrc_annotations(tmp_path):
    (tmp_path / "n01440764").mkdir()
    a = tmp_path / "n01440764" / "n01440764_18.xml"
    a.write_text(_xml([("n01440764", (12, 40, 300, 360)), ("n01440764", (0, 0, 500, 375)),
                       ("n02102040", (5, 6, 7, 8))]))
    (tmp_path / "n01440764" / "n01440764_36.xml").write_text(_xml([]))
    ann = read_annotation(a)
    assert (ann.width, ann.height) == (500, 375)
    assert ann.names == ["n01440764", "n01440764", "n02102040"]
    assert ann.boxes.tolist() == [[12, 40, 300, 360], [0, 0, 500, 375], [5, 6, 7, 8]]
    assert ann.boxes_of("n02102040").tolist() == [[5, 6, 7, 8]] and ann.boxes_of("n0").shape == (0, 4)
    both = read_annotations(tmp_path)
    assert sorted(both) == ["n01440764_18", "n01440764_36"] and both["n01440764_36"].boxes.shape == (0, 4)


@pytest.mark.parametrize("text, message", [
    ("<annotation><size>", "is not well-formed XML"),
    ("<image/>", "the root element is <image>, expected <annotation>"),
    ("<annotation/>", "has no <size>"),
    (_xml([("n01", (1, 2, "x", 4))]), r"object 0 \(n01\) <xmax> is 'x', not a number"),
    (_xml([("", (1, 2, 3, 4))]), "object 0 has no <name>"),
    (_xml([("n01", (1, 2, 3, 4))]).replace("<ymax>4</ymax>", ""), r"object 0 \(n01\) has no <ymax>"),
    (_xml([("n01", (1, 2, 501, 4))]), r"box \(1, 2, 501, 4\) is not inside the 500x375 image"),
])
def test_bad_annotation_files(tmp_path, text, message):
    path = tmp_path / "a.xml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_annotation(path)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file .*nope.xml' does not exist"):
        read_annotation(tmp_path / "nope.xml")


# ------------------------------------------------------------------------------ the papermill job

@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    from vgg_lib.options import TrainConfig
    from vgg_lib.train import train

    root = tmp_path_factory.mktemp("loc_runs")
    return train(TrainConfig(config="A", dataset="shapes", width=1 / 16, pools=3, epochs=1, batch_size=32,
                             train_size=64, val_size=32, image_size=40, device="cpu", progress=False,
                             root=str(root)))


def _job_env(monkeypatch, tmp_path):
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    for var, sub in [("JUPYTER_CONFIG_DIR", "jupyter/config"), ("JUPYTER_DATA_DIR", "jupyter/data"),
                     ("JUPYTER_RUNTIME_DIR", "jupyter/runtime"), ("IPYTHONDIR", "ipython"),
                     ("MPLCONFIGDIR", "matplotlib")]:
        monkeypatch.setenv(var, os.environ.get(var, str(repo / ".state" / sub)))
    monkeypatch.setenv("VGG_LIB_RUNS", str(tmp_path))
    return repo / "book" / "jobs" / "localise.ipynb"


@pytest.mark.slow
def test_localise_job_writes_a_run_folder_with_both_protocols_and_is_reused(shapes_run, tmp_path, monkeypatch):
    import json

    from vgg_lib import jobs, runs

    notebook = _job_env(monkeypatch, tmp_path)
    params = dict(source=str(shapes_run), per_class=True, layers="fc", epochs=2, batch_size=16, train_size=64,
                  val_size=32, protocol2_size=4, protocol2_scales=[32, 40], examples=2)
    folder = jobs.run(notebook, params, root=tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "examples.npz", "localise.ipynb", "metrics.csv",
                                                        "params.json", "results_localisation.json", "summary.json"]
    with np.load(folder / "examples.npz") as ex:  # the boxes of 2 images at 2 scales, before and after merging
        assert ex["raw_boxes"].shape[0] == 2 and ex["raw_boxes"].shape[2:] == (10, 4) and ex["guess_boxes"].shape == (2, 5, 4)
    summary = runs.read_summary(folder)
    assert summary["status"] == "finished" and summary["epochs_done"] == 2 and summary["protocol2_images"] == 4
    assert summary["protocol2_scales"] == [32, 40]
    for key in ("protocol1_error", "top1_loc_error", "top5_loc_error"):
        assert 0 <= summary[key] <= 100, key
    assert summary["top5_loc_error"] <= summary["top1_loc_error"]
    assert json.loads((folder / "params.json").read_text())["kind"] == "localise"
    before = (folder / "summary.json").stat().st_mtime_ns
    assert jobs.run(notebook, params, root=tmp_path) == folder  # finished: reused, not run again
    assert (folder / "summary.json").stat().st_mtime_ns == before
    row = runs.collect(tmp_path).set_index("run").loc[folder.name]
    assert row["results_localisation.protocol1_error"] == summary["protocol1_error"]


@pytest.mark.slow
def test_localise_job_refuses_bad_input_in_one_line_before_work(shapes_run, tmp_path, monkeypatch):
    from vgg_lib import jobs
    from vgg_lib.options import TrainConfig
    from vgg_lib.train import train

    notebook = _job_env(monkeypatch, tmp_path)
    digits = train(TrainConfig(config="A", dataset="digits", width=1 / 16, pools=3, epochs=1, batch_size=32,
                               train_size=64, val_size=32, device="cpu", progress=False, root=str(tmp_path / "d")))
    cases = [({"source": str(digits)}, "a classification run on shapes (the data with ground-truth boxes); "
                                       "this one was trained on 'digits'"),
             ({"source": str(shapes_run), "layers": "conv"}, "layers='conv' is not allowed: all or fc"),
             ({"source": str(shapes_run), "epochs": 0}, "epochs=0 is not allowed: an integer >= 1"),
             ({"source": str(shapes_run), "protocol2_scales": [16]}, "protocol2_scales=[16] is not allowed: "
                                                                     "integers >= the source's crop 32, or empty"),
             ({"source": str(shapes_run), "protocol2_scales": "32,x"}, "protocol2_scales='32,x' is not allowed"),
             ({"source": str(shapes_run), "examples": -1}, "examples=-1 is not allowed: an integer from 0 to val_size"),
             ({"source": str(tmp_path / "nothing")}, "has no finished checkpoint")]
    for params, message in cases:
        with pytest.raises(jobs.JobError, match=re.escape(message)):
            jobs.run(notebook, params, root=tmp_path / "jobs")
    assert not list((tmp_path / "jobs").glob("localise-*"))  # nothing written for a refused job


# ------------------------------------------------------------------------------ the reference grid

from vgg_lib import experiments as X  # noqa: E402

RESULT_FILES = ["examples.npz", "metrics.csv", "params.json", "provenance.json", "summary.json"]
UNION_FILES = ["examples.npz", "params.json", "provenance.json", "summary.json"]


def test_grid_localises_every_variant_and_seed_after_its_source():
    order = X.tasks()
    loc_tasks = [t for t in order if t[0].startswith("localise")]
    assert sorted((t[1], t[2]) for t in loc_tasks) == sorted(
        (v, s) for v in [*X.LOCALISERS, *X.LOCALISER_UNIONS] for s in X.localiser_seeds(v))
    assert {(t[1], t[2]) for t in loc_tasks} >= {(v, s) for v in X.TABLE8 for s in X.SEEDS}  # the 2x2 design, every seed
    assert X.localiser_seeds("PCR-all-lr0.001") == (0,)  # the learning-rate check: one seed
    position = {t[:3]: i for i, t in enumerate(order)}
    for t in loc_tasks:
        kind, name, seed, _ = t
        if kind == "localise":
            assert X.needs(t) == {("train", "D-shapes", seed)}
        else:  # a union waits for its members' checkpoints
            assert X.needs(t) == {("localise", m, seed) for m in X.LOCALISER_UNIONS[name]}
        assert all(position[n] < position[t[:3]] for n in X.needs(t)), t
    # `make localise`: D-shapes, what it starts from and the localisers; no evaluation or transfer
    only = X.tasks(X._with_dependencies([X.LOC_SOURCE]), parts=("train", "localise"))
    assert {t[0] for t in only} == {"train", "localise", "localise-union"}
    assert {t[1] for t in only if t[0] == "train"} == {"A-shapes", "D-shapes"}
    # a union asked for alone brings its members
    picked = X.tasks(["D-shapes"], seeds=(1,), parts=("localise",), localisers=["PCR-fc+PCR-all"])
    assert [(t[0], t[1]) for t in picked] == [("train", "D-shapes"), ("localise", "PCR-fc"),
                                              ("localise", "PCR-all"), ("localise-union", "PCR-fc+PCR-all")]
    assert not [t for t in X.tasks(["A-shapes"]) if t[0].startswith("localise")]


def test_localisation_parameters_follow_appendix_a():
    for name, kind in X.LOCALISERS.items():
        p = X.localisation_params(name, 2)
        assert (p["per_class"], p["layers"]) == (kind["per_class"], kind["layers"]) and "seeds" not in p
        assert p["lr"] == kind.get("lr", X.LOCALISATION["lr"]) and p["val_size"] >= 5_000 and p["seed"] == 2
        assert p["S"] == 37 and p["protocol2_scales"] == [32, 37, 42]  # the paper's 256; 224, 256, 288
        assert p["source"] == "runs/reference/D-shapes-s2"  # no machine path in results
        assert set(loc.PARAMS) <= set(p)
    union = X.localisation_params("PCR-fc+PCR-all", 0)
    assert union["kind"] == "localise-union" and union["members"] == ["PCR-fc", "PCR-all"]
    assert union["protocol2_size"] == X.LOCALISATION["protocol2_size"]


def test_unknown_localisation_variants_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^localisation variant 'SCR-conv' is unknown; allowed: SCR-fc, SCR-all"):
        X.localisation_params("SCR-conv", 0)
    with pytest.raises(ValueError, match="is a union of localisers, not one"):
        X.localise_run("PCR-fc+PCR-all", 0, results=tmp_path, work=tmp_path)
    with pytest.raises(ValueError, match="localisation union 'PCR-fc' is unknown"):
        X.localise_union_run("PCR-fc", 0, results=tmp_path, work=tmp_path)
    with pytest.raises(ValueError, match="has no finished checkpoint"):  # no D-shapes net yet: before work
        X.localise_run("PCR-fc", 0, results=tmp_path / "r", work=tmp_path / "w")
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):
        X.main(["localise", "--variants", "PCR-conv"])


class _FakeRun:
    def __init__(self, dataset):
        self.params, self.path = {"dataset": dataset}, Path("runs/reference/x")


def test_train_localiser_refuses_bad_input_before_work(tmp_path):
    p = X.localisation_params("SCR-fc", 0)
    with pytest.raises(ValueError, match=r"this one was trained on 'fashion_mnist'"):
        loc.train_localiser(_FakeRun("fashion_mnist"), p, tmp_path / "out")
    with pytest.raises(ValueError, match="localiser parameters miss layers"):
        loc.train_localiser(_FakeRun("shapes"), {k: v for k, v in p.items() if k != "layers"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the chapter's readers, on a fabricated results folder

def _fabricate(root, seeds=(0, 1, 2)):
    """Result folders as the grid writes them, with made-up numbers: PCR better than SCR by
    about 4 points, all layers better than fc by 1, the union 2 points under PCR-all."""
    from vgg_lib.atomic import write_json

    base = {"SCR-fc": 40.0, "SCR-all": 39.0, "PCR-fc": 36.0, "PCR-all": 35.0, "PCR-all-lr0.001": 60.0}
    for name in [*X.LOCALISERS, *X.LOCALISER_UNIONS]:
        for seed in X.localiser_seeds(name, seeds):
            folder = root / "localisation" / f"{name}-s{seed}"
            folder.mkdir(parents=True)
            p = X.localisation_params(name, seed)
            e = base.get(name, 35.0) + 0.3 * seed
            summary = {"status": "finished", "units": "percent", "top1_loc_error": e + 10,
                       "top5_loc_error": e - (2.0 if name in X.LOCALISER_UNIONS else 0.0) - 0.1 * seed,
                       "protocol2_images": 20}
            if name in X.LOCALISERS:
                summary.update(protocol1_error=e, protocol1_images=50, epochs_done=3, seconds=1.0)
                (folder / "metrics.csv").write_text("epoch,train_loss,val_top1_err,lr\n1,0.5,50.0,0.001\n")
            write_json(folder / "params.json", p)
            write_json(folder / "summary.json", summary)
            write_json(folder / "provenance.json", X.provenance("fabricated", 60.0, commit="0" * 40))
            np.savez(folder / "examples.npz", raw_boxes=np.zeros((2, 6, 10, 4), np.float32),
                     raw_scores=np.full((2, 6, 10), 0.1, np.float32), guess_classes=np.zeros((2, 5), int),
                     guess_boxes=np.zeros((2, 5, 4), np.float32), guess_scores=np.ones((2, 5)),
                     gt_boxes=np.ones((2, 4)), labels=np.zeros(2, int), val_size=np.int64(50),
                     image_size=np.int64(64), pixels_per_image_pixel=np.float64(37 / 64))
    return root


def test_chapter_reads_a_results_folder_and_computes_its_comparisons(tmp_path):
    df = X.localisation_table(_fabricate(tmp_path))
    assert len(df) == 3 * (len(X.TABLE8) + len(X.LOCALISER_UNIONS)) + 1  # + the learning-rate check, seed 0
    assert df[df.variant == "PCR-all-lr0.001"].lr.tolist() == [0.001]
    pcr = df[df.variant == "PCR-all"].set_index("seed")
    assert pcr.protocol1_error.tolist() == pytest.approx([35.0, 35.3, 35.6])
    assert (pcr.regression == "PCR").all() and (pcr.layers == "all").all() and (pcr.minutes == 1.0).all()
    union = df[df.variant == "PCR-fc+PCR-all"]
    assert (union.regression == "union").all() and union.protocol1_error.isna().all()
    c = X.localisation_comparisons(df)
    assert c.loc["PCR vs SCR, fc layers", "diff"] == pytest.approx(-4.0)
    assert c.loc["all vs fc layers, PCR", "diff"] == pytest.approx(-1.0)
    assert c.loc["PCR-fc+PCR-all vs PCR-all, protocol 2 top-5", "diff"] == pytest.approx(-2.0)
    assert c.loc["SCR-all+PCR-all vs SCR-all, protocol 2 top-5", "diff"] == pytest.approx(35.0 - 39.0 - 2.0)
    assert (c.seeds == 3).all() and (c.low <= c["diff"]).all() and (c["diff"] <= c.high).all()
    ci = stats_lib.mean_ci(pcr.protocol1_error)
    assert ci["mean"] == pytest.approx(35.3) and ci["low"] < 35.3 < ci["high"]
    ex = X.localisation_examples("PCR-all", 1, tmp_path)
    assert ex["raw_boxes"].shape == (2, 6, 10, 4) and int(ex["val_size"]) == 50
    assert X.localisation_metrics("SCR-fc", 0, tmp_path).epoch.tolist() == [1]


def test_chapter_says_how_to_make_missing_results(tmp_path):
    _fabricate(tmp_path, seeds=(0, 1))
    with pytest.raises(FileNotFoundError, match=r"localisation result SCR-fc-s2 is not in .*make localise"):
        X.localisation_table(tmp_path)
    df = X.localisation_table(tmp_path, seeds=(0,))
    with pytest.raises(ValueError, match="share 1 seed"):
        X.localisation_comparisons(df)


# --- one tiny grid, end to end

@pytest.mark.slow
def test_a_tiny_localisation_grid_writes_its_result_folders_and_reuses_them(tmp_path, monkeypatch):
    # the functions read the grid of X.grid (the package's names are copies made at import)
    monkeypatch.setattr(X.grid, "RUNS", {"tiny": dict(config="A", dataset="shapes", train_size=64, val_size=32,
                                                      epochs=1, batch_size=32, width=0.0625)})
    monkeypatch.setattr(X.grid, "LOC_SOURCE", "tiny")
    monkeypatch.setattr(X.grid, "LOCALISATION", dict(lr=1e-3, epochs=2, batch_size=16, train_size=64, val_size=40,
                                                protocol2_size=6, examples=3))
    results, work = tmp_path / "results", tmp_path / "runs"
    assert X.reproduce(seeds=(0,), jobs=1, results=results, work=work, parts=("train", "localise")) == []
    for name in X.LOCALISERS:
        folder = results / "localisation" / f"{name}-s0"
        assert sorted(p.name for p in folder.iterdir()) == RESULT_FILES  # no checkpoint in results
        assert (work / "reference" / "localisation" / f"{name}-s0" / "checkpoint.pt").is_file()
        s = json.loads((folder / "summary.json").read_text())
        assert s["status"] == "finished" and s["units"] == "percent" and s["epochs_done"] == 2
        assert s["protocol1_images"] == 40 and s["protocol2_images"] == 6 and s["protocol2_scales"] == [32, 37, 42]
        assert 0 <= s["top5_loc_error"] <= s["top1_loc_error"] <= 100 and 0 <= s["protocol1_error"] <= 100
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["command"] == f"python -m vgg_lib.experiments localise --variants {name} --seeds 0"
        assert prov["threads"] == 1 and prov["wall_seconds"] > 0 and prov["git_commit"] and prov["cpu"]
        assert json.loads((folder / "params.json").read_text()) == X.localisation_params(name, 0)
        for p in folder.iterdir():
            assert p.stat().st_size < 2 ** 21
            if p.suffix in (".json", ".csv"):
                assert str(tmp_path) not in p.read_text(), p
    union = results / "localisation" / "PCR-fc+PCR-all-s0"
    assert sorted(p.name for p in union.iterdir()) == UNION_FILES
    ex = X.localisation_examples("PCR-fc+PCR-all", 0, results)
    one = X.localisation_examples("PCR-all", 0, results)
    assert ex["raw_boxes"].shape[0] == 3 and ex["raw_boxes"].shape[1] == 2 * one["raw_boxes"].shape[1]  # both nets' boxes
    assert (ex["guess_classes"][:, 0] == one["guess_classes"][:, 0]).all()  # the same classifier ranks the classes
    assert np.allclose(ex["gt_boxes"], one["gt_boxes"]) and ex["raw_boxes"].shape[2] == 10
    before = {p: p.stat().st_mtime_ns for p in (results / "localisation").rglob("*")}
    assert X.reproduce(seeds=(0,), jobs=1, results=results, work=work, parts=("train", "localise")) == []
    assert before == {p: p.stat().st_mtime_ns for p in (results / "localisation").rglob("*")}  # all reused


# --- the committed localisation results

LOC_RESULTS = X.results_root() / "localisation"


@pytest.mark.skipif(not LOC_RESULTS.is_dir(), reason="no results/localisation folder (make localise)")
def test_every_committed_localisation_result_is_finished_with_its_provenance():
    df = X.localisation_table()  # every variant and seed of the grid is there
    assert set(df.variant) == {*X.LOCALISERS, *X.LOCALISER_UNIONS}
    for name in [*X.LOCALISERS, *X.LOCALISER_UNIONS]:
        for seed in X.localiser_seeds(name):
            folder = X.localisation_folder(name, seed, X.results_root())
            assert sorted(p.name for p in folder.iterdir()) == (RESULT_FILES if name in X.LOCALISERS else UNION_FILES)
            assert json.loads((folder / "params.json").read_text()) == X.localisation_params(name, seed)
            prov = json.loads((folder / "provenance.json").read_text())
            for key in ("git_commit", "command", "cpu", "threads", "wall_seconds", "date"):
                assert prov[key] not in (None, ""), (name, seed, key)
            s = json.loads((folder / "summary.json").read_text())
            assert s["units"] == "percent" and s["protocol2_images"] == X.LOCALISATION["protocol2_size"]
    assert (df[df.variant.isin(X.TABLE8)].protocol1_images == X.LOCALISATION["val_size"]).all()
