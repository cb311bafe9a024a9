"""Task decoding on hand-made PNGs with known values, masks, losses and metrics on known tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from mtbench import MetricSpec
from mtbench.data import DOMAINS, read_png
from mtbench.measure import SplitRecord, aggregated_values, measure
from mtbench.testing import check_task


def png(tmp_path, name, arr):
    path = tmp_path / f"{name}.png"
    Image.fromarray(arr).save(path)
    return path


def raw_sample(tmp_path, **domains):
    """Write each array as a PNG and read it back through the loader's reader."""
    return {d: read_png(png(tmp_path, d, a), DOMAINS[d]) for d, a in domains.items()}


DEPTH = np.array([[0, 512], [64499, 65535]], dtype=np.uint16)  # 0 m, 1 m, last valid, sky
RGB = np.zeros((2, 2, 3), dtype=np.uint8)


@pytest.mark.parametrize("code", list("sdDnkKeEprA"))
def test_contract(plugins, code):
    check_task(plugins.tasks.get(plugins.tasks.resolve(code)))


def test_depth_log_and_mask(plugins, tmp_path):
    raw = raw_sample(tmp_path, depth_euclidean=DEPTH, depth_zbuffer=DEPTH, rgb=RGB)
    for name in ("depth_euclidean", "depth_zbuffer"):
        target, mask = plugins.tasks.get(name).decode(raw)
        assert target.shape == (1, 2, 2) and mask.shape == (1, 2, 2)
        assert target[0, 0, 1] == pytest.approx(math.log(513) / math.log(65536))
        assert target[0, 0, 0] == 0
        assert mask.tolist() == [[[True, True], [True, False]]]


def test_segmentation_labels(plugins, tmp_path):
    labels = np.array([[0, 1], [2, 17]], dtype=np.uint8)
    target, mask = plugins.tasks.get("segment_semantic").decode(raw_sample(tmp_path, segment_semantic=labels, rgb=RGB))
    assert target.tolist() == [[[0, 0], [1, 16]]]
    assert mask.tolist() == [[[False, True], [True, True]]]


def test_normal_and_reshading(plugins, tmp_path):
    normal = np.full((2, 2, 3), 255, dtype=np.uint8)
    normal[0, 0] = 0
    raw = raw_sample(tmp_path, normal=normal, depth_euclidean=DEPTH, reshading=np.full((2, 2), 51, np.uint8), rgb=RGB)
    target, mask = plugins.tasks.get("normal").decode(raw)
    assert target.shape == (3, 2, 2) and target[:, 0, 0].tolist() == [-1, -1, -1] and target[0, 1, 1] == 1
    assert mask[0, 1, 1] == False  # noqa: E712  sky depth
    target, _ = plugins.tasks.get("reshading").decode(raw)
    assert target[0, 0, 0] == pytest.approx(51 / 255 * 2 - 1)


def test_keypoints_and_edges_clip(plugins, tmp_path):
    big = np.array([[0, 65535], [int(0.0025 * 65535), int(0.04 * 65535)]], dtype=np.uint16)
    raw = raw_sample(tmp_path, keypoints2d=big, keypoints3d=big, edge_texture=big, depth_euclidean=DEPTH, rgb=RGB)
    k, kmask = plugins.tasks.get("keypoints2d").decode(raw)
    assert k[0, 0, 0] == -1 and k[0, 0, 1] == 1 and k[0, 1, 0] == pytest.approx(0.0, abs=1e-2)
    assert kmask.all()
    e, _ = plugins.tasks.get("edge_texture").decode(raw)
    assert e[0, 0, 1] == 1 and e[0, 1, 1] == pytest.approx(0.0, abs=1e-2)
    K, Kmask = plugins.tasks.get("keypoints3d").decode(raw)
    assert K[0, 0, 1] == 1 and K[0, 0, 0] == -1 and not Kmask[0, 1, 1]


def test_edge_occlusion_no_clip_then_blur(plugins, tmp_path):
    occ = np.zeros((64, 64), dtype=np.uint16)
    occ[32, 32] = 65535
    depth = np.zeros((64, 64), dtype=np.uint16)
    raw = raw_sample(tmp_path, edge_occlusion=occ, depth_euclidean=depth, rgb=np.zeros((64, 64, 3), np.uint8))
    target, _ = plugins.tasks.get("edge_occlusion").decode(raw)
    # one pixel of 1/0.00625*2-1 = 319 on a background of -1, blurred with sigma 4 * 64/256 = 1
    assert target[0, 0, 0] == pytest.approx(-1, abs=1e-5)
    assert target[0, 32, 32] == pytest.approx(-1 + 320 / (2 * math.pi), rel=0.02)
    assert target.sum() == pytest.approx(-64 * 64 + 320, rel=1e-3)


def test_curvature_read_in_colour(plugins, tmp_path):
    curv = np.zeros((2, 2, 3), dtype=np.uint8)
    curv[..., 0], curv[..., 1], curv[..., 2] = 155, 100, 7
    raw = raw_sample(tmp_path, principal_curvature=curv, depth_euclidean=DEPTH, rgb=RGB)
    target, _ = plugins.tasks.get("principal_curvature").decode(raw)
    assert target.shape == (2, 2, 2)
    assert target[0, 0, 0] == pytest.approx((155 - 123.572) / 31.922)
    assert target[1, 0, 0] == pytest.approx((100 - 120.1) / 21.658)


def test_perfect_predictions(plugins):
    target = torch.randint(0, 17, (2, 1, 8, 8)).float()
    logits = torch.nn.functional.one_hot(target[:, 0].long(), 17).permute(0, 3, 1, 2).float() * 20
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    seg = plugins.tasks.get("segment_semantic")
    assert seg.metric("miou").fn(logits, target, mask).tolist() == [1.0, 1.0]
    assert seg.metric("error").fn(logits, target, mask).tolist() == [0.0, 0.0]
    assert seg.metric("pixel_acc").fn(logits, target, mask).tolist() == [1.0, 1.0]
    depth = plugins.tasks.get("depth_zbuffer")
    t = torch.rand(2, 1, 8, 8) * 0.8 + 0.1
    assert depth.metric("abs_rel").fn(t, t, mask).abs().max() < 1e-5
    assert depth.metric("delta1").fn(t, t, mask).tolist() == [1.0, 1.0]
    n = plugins.tasks.get("normal")
    v = torch.randn(2, 3, 8, 8)
    assert n.metric("angle_mean").fn(v, v, mask).max() < 0.1
    assert n.metric("within_11_25").fn(v, v, mask).tolist() == [1.0, 1.0]
    assert n.metric("angle_mean").fn(v, -v, mask).min() > 179


def test_masked_losses_and_reductions(plugins):
    l1 = plugins.tasks.get("depth_zbuffer").loss
    pred, target = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[True, False], [False, False]]]])
    assert l1(pred, target, mask).item() == pytest.approx(0.25)  # the paper's: masked pixels count as 0
    assert l1(pred, target, mask, reduction="valid").item() == pytest.approx(1.0)
    seg = plugins.tasks.get("segment_semantic")
    logits = torch.zeros(1, 17, 2, 2)
    labels = torch.zeros(1, 1, 2, 2)
    base = seg.loss(logits, labels, torch.ones(1, 1, 2, 2, dtype=torch.bool))
    assert base.item() == pytest.approx(math.log(17), rel=1e-5)
    full = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    weighted = seg.loss(logits, labels, full, class_weights="flat")
    assert weighted.item() == pytest.approx(0.54 * math.log(17), rel=1e-5)  # the rounded background prior
    ones = torch.ones(1, 1, 2, 2)
    assert seg.loss(logits, ones, full, class_weights="flat").item() == pytest.approx(8 * math.log(17), rel=1e-5)


# columbia/MTRobust 99d17939, dataloaders/new/data/semseg_prior_factor.npy, read with numpy
MTROBUST_PRIOR = [0.54241015, 9.16744426, 7.33098964, 7.16203488, 8.72288504, 7.61330311, 8.23692385, 9.14858036,
                  8.82202253, 9.08579179, 8.91407327, 9.17723224, 9.03539023, 8.60391777, 9.16991691, 9.14673021,
                  9.13736169]


@pytest.mark.parametrize("name", ["mtrobust", "paper"])
def test_class_weights_are_mtrobusts_prior_per_class(plugins, name):
    """Each class's pixels weigh its prior value: one image per class, uniform logits (CE = log 17)."""
    seg = plugins.tasks.get("segment_semantic")
    labels = torch.arange(17, dtype=torch.float32).view(17, 1, 1, 1).expand(17, 1, 2, 2)
    full = torch.ones(17, 1, 2, 2, dtype=torch.bool)
    loss = seg.loss(torch.zeros(17, 17, 2, 2), labels, full, class_weights=name)
    assert loss.tolist() == pytest.approx([w * math.log(17) for w in MTROBUST_PRIOR], rel=1e-6)
    bound = seg.with_loss_options({"class_weights": name})  # what training, attacks and analysis call
    assert bound.loss(torch.zeros(17, 17, 2, 2), labels, full).tolist() == loss.tolist()
    with pytest.raises(ValueError, match="mtrobust"):
        seg.loss(torch.zeros(1, 17, 2, 2), labels[:1], full[:1], class_weights="papr")


def _logits(classes: list[list[int]]) -> torch.Tensor:
    """(B, 17, 1, W) logits that predict the given class of each pixel."""
    return torch.nn.functional.one_hot(torch.tensor(classes), 17).permute(0, 2, 1).unsqueeze(2).float() * 20


def test_dataset_miou_sums_intersections_and_unions_over_the_split(plugins):
    """Sample A: class 1 right everywhere (IoU 1). Sample B: class 2 labelled, half predicted as 1 (IoUs 0
    and 1/2). Per-sample mIoUs 1 and 1/4 average to 5/8; over the split, class 1 has 4 / 6 and class 2
    has 2 / 4, so the dataset mIoU is 7/12. The split is measured in two batches, as the evaluator does."""
    seg = plugins.tasks.get("segment_semantic")
    target = torch.tensor([[1, 1, 1, 1], [2, 2, 2, 2]]).float().view(2, 1, 1, 4)
    logits = _logits([[1, 1, 1, 1], [1, 1, 2, 2]])
    mask = torch.ones(2, 1, 1, 4, dtype=torch.bool)
    dataset = seg.metric("miou_dataset")
    assert dataset.fn(logits, target, mask).tolist() == [1.0, 0.25]  # per sample it is the sample's mIoU
    tasks, identity = {seg.name: seg}, lambda x: {seg.name: x}  # a "model" whose output is the logits
    record, batches = SplitRecord(), []
    for i in range(2):
        measured = measure(identity, logits[i:i + 1], {seg.name: target[i:i + 1]}, {seg.name: mask[i:i + 1]}, tasks)
        record.add(measured)
        batches.append(measured.statistics)
    assert record.split_value(seg.name, dataset).item() == pytest.approx(7 / 12)
    assert record.split_value(seg.name, seg.metric("miou")).item() == pytest.approx(5 / 8)  # unchanged: a mean
    assert aggregated_values(batches, tasks)[seg.name]["miou_dataset"] == pytest.approx(7 / 12)


def test_metric_with_statistics_needs_an_aggregate():
    with pytest.raises(ValueError, match="both statistics and aggregate"):
        MetricSpec("half", lambda p, t, m: p.sum((1, 2, 3)), statistics=lambda p, t, m: p.flatten(1))


def _measure_split(seg, logits, target, mask, batch):
    """The split measured in batches of ``batch`` samples, as the evaluator does."""
    tasks, identity = {seg.name: seg}, lambda x: {seg.name: x}
    record = SplitRecord()
    for i in range(0, len(logits), batch):
        record.add(measure(identity, logits[i:i + batch], {seg.name: target[i:i + batch]},
                           {seg.name: mask[i:i + batch]}, tasks))
    return record


def test_segmentation_error_is_one_minus_the_dataset_miou(plugins):
    """Sample A: class 1 right everywhere. Sample B: class 2 labelled, half predicted as 1. Over the split,
    class 1 has intersection 4 and union 4 + 2 = 6, class 2 has 2 / 4: the error is 1 - (4/6 + 2/4) / 2 =
    5/12, not the mean of the per-sample errors (0 and 3/4: 3/8)."""
    seg = plugins.tasks.get("segment_semantic")
    target = torch.tensor([[1, 1, 1, 1], [2, 2, 2, 2]]).float().view(2, 1, 1, 4)
    logits = _logits([[1, 1, 1, 1], [1, 1, 2, 2]])
    mask = torch.ones(2, 1, 1, 4, dtype=torch.bool)
    error = seg.metric(seg.error_metric)
    assert error.fn(logits, target, mask).tolist() == [0.0, 0.75]  # per sample: each sample's 1 - mIoU
    for batch in (1, 2):
        record = _measure_split(seg, logits, target, mask, batch)
        assert record.split_value(seg.name, error).item() == pytest.approx(5 / 12)


def test_paper_per_batch_miou_and_dataset_error_by_hand(plugins):
    """33 samples of 4 pixels, measured in batches of 5 (the metric batches by 32 itself).
    Samples 0-15: label 1111, predicted 1111. Samples 16-31: label 2222, predicted 1122.
    Sample 32: label 0333 with pixel 0 uncertain (masked), predicted 0331.
    Paper batch 1 (samples 0-31), every pixel: class 1 I = 64, U = 64 + 32 = 96; class 2 I = 32, U = 64:
    mIoU (2/3 + 1/2) / 2 = 7/12. Batch 2 (sample 32), every pixel, the uncertain one as background:
    class 0 I = 1, U = 1; class 3 I = 2, U = 3; class 1 I = 0, U = 1: mIoU (1 + 2/3 + 0) / 3 = 5/9.
    Mean over batches: (7/12 + 5/9) / 2 = 41/72.
    Dataset error, valid pixels only: class 1 I = 64, U = 96 + 1 = 97; class 2 I = 32, U = 64; class 3 I = 2,
    U = 3 (class 0 only on the masked pixel): 1 - (64/97 + 1/2 + 2/3) / 3."""
    seg = plugins.tasks.get("segment_semantic")
    labels = [[1] * 4] * 16 + [[2] * 4] * 16 + [[0, 3, 3, 3]]
    preds = [[1] * 4] * 16 + [[1, 1, 2, 2]] * 16 + [[0, 3, 3, 1]]
    target = torch.tensor(labels).float().view(33, 1, 1, 4)
    logits = _logits(preds)
    mask = target > 0
    record = _measure_split(seg, logits, target, mask, 5)
    paper = seg.metric("miou_batch32_paper")
    assert record.split_value(seg.name, paper).item() == pytest.approx(41 / 72)
    assert record.split_value(seg.name, seg.metric("error")).item() == pytest.approx(1 - (64 / 97 + 1 / 2 + 2 / 3) / 3)
    assert paper.fn(logits[32:], target[32:], mask[32:]).item() == pytest.approx(5 / 9)  # per sample, every pixel


def test_edge_occlusion_blur_equals_scipy_gaussian_filter():
    """Truncated at 4 sigma with scipy's 'reflect' border (edge pixel repeated), also when the kernel is
    wider than the image."""
    ndimage = pytest.importorskip("scipy.ndimage")
    from mtbench_tasks.tasks import gaussian_blur

    img = np.random.default_rng(0).normal(size=(12, 9)).astype(np.float32)
    img[0, :] += 5  # a bright border row: the border rule shows
    for sigma in (0.5, 1.0, 4.0):
        expected = ndimage.gaussian_filter(img.astype(np.float64), sigma)
        assert np.allclose(gaussian_blur(img, sigma), expected, atol=1e-5), sigma


def test_autoencoder_target_in_minus_one_one(plugins, tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = 255
    target, _ = plugins.tasks.get("autoencoder").decode(raw_sample(tmp_path, rgb=rgb))
    assert target[:, 0, 0].tolist() == [1, 1, 1] and target[:, 1, 1].tolist() == [-1, -1, -1]
