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
    weighted = seg.loss(logits, labels, full, class_weights="paper")
    assert weighted.item() == pytest.approx(0.54 * math.log(17), rel=1e-5)  # background prior 0.54
    ones = torch.ones(1, 1, 2, 2)
    assert seg.loss(logits, ones, full, class_weights="paper").item() == pytest.approx(8 * math.log(17), rel=1e-5)


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
    assert aggregated_values(batches, tasks) == {seg.name: {"miou_dataset": pytest.approx(7 / 12)}}


def test_metric_with_statistics_needs_an_aggregate():
    with pytest.raises(ValueError, match="both statistics and aggregate"):
        MetricSpec("half", lambda p, t, m: p.sum((1, 2, 3)), statistics=lambda p, t, m: p.flatten(1))
