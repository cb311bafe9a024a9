"""Per-sample losses and metrics for dense tasks. Every function returns a tensor of shape (B,), except
the statistics of an aggregated metric (B, K) and their aggregate (one value for the whole split)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEPTH_LOG_SCALE = math.log(65536.0)


def _valid(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.to(like.dtype).expand_as(like)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid elements of each sample (0 where a sample has none)."""
    m = _valid(mask, values)
    return (values * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, reduction: str = "paper") -> torch.Tensor:
    """Masked L1. ``paper``: mean over all elements, masked ones counting as zero (MTRobust);
    ``valid``: mean over the valid elements only."""
    return l1_reduce((pred - target).abs(), mask, reduction)


# The class prior of the MTRobust segmentation loss, exactly: columbia/MTRobust at commit
# 99d17939161fd7425cba5f32472ca85db0cace64, dataloaders/new/data/semseg_prior_factor.npy (float64, 17
# values; the same file, blob 125076cc, is in yamizi/taskaugment 1791d7c7, the paper's code, under
# MTVulnerability/ and MTRobust/). Its loader (load_ops.semantic_segment_rebalanced) maps raw labels 0 and 1
# to index 0 and raw label k >= 2 to k - 1, then multiplies the loss mask by prior[index]: index 0 is
# background and 1..16 the objects, exactly mtbench's 17 classes (the 18th output of MTRobust's heads
# never has a label, so it has no weight). Raw label 0 (uncertain) is masked out there and here.
MTROBUST_CLASS_WEIGHTS = (
    0.54241015, 9.16744426, 7.33098964, 7.16203488, 8.72288504, 7.61330311, 8.23692385, 9.14858036, 8.82202253,
    9.08579179, 8.91407327, 9.17723224, 9.03539023, 8.60391777, 9.16991691, 9.14673021, 9.13736169,
)
# A rounded stand-in that earlier mtbench versions called "paper": background 0.54, every object 8.
FLAT_CLASS_WEIGHTS = (0.54,) + (8.0,) * 16
CLASS_WEIGHTS = {
    "mtrobust": MTROBUST_CLASS_WEIGHTS,
    "paper": MTROBUST_CLASS_WEIGHTS,  # the paper's code (taskaugment) trains with MTRobust's loader and prior
    "flat": FLAT_CLASS_WEIGHTS,
}


def cross_entropy_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                       reduction: str = "paper", class_weights: str | None = None) -> torch.Tensor:
    """Per-pixel cross-entropy averaged per sample; uncertain pixels (mask false) count as zero.

    ``class_weights`` multiplies each pixel's loss by the weight of its labelled class, as MTRobust's
    rebalanced mask does: ``"mtrobust"`` (alias ``"paper"``) is its exact prior, ``"flat"`` the rounded
    0.54 / 8 stand-in; None weighs every class 1.
    """
    weight = None
    if class_weights is not None:
        if class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights must be one of {sorted(CLASS_WEIGHTS)} or None, got {class_weights!r}")
        weight = torch.tensor(CLASS_WEIGHTS[class_weights], device=pred.device, dtype=pred.dtype)
    ce = F.cross_entropy(pred, target[:, 0].long(), weight=weight, reduction="none").unsqueeze(1)
    return l1_reduce(ce, mask, reduction)


def l1_reduce(err: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample mean of an elementwise error under one of the two reductions above."""
    if reduction not in ("paper", "valid"):
        raise ValueError(f"reduction must be 'paper' or 'valid', got {reduction!r}")
    err = err * _valid(mask, err)
    return err.flatten(1).mean(1) if reduction == "paper" else masked_mean(err, mask)


def mse(pred, target, mask):
    return masked_mean((pred - target) ** 2, mask)


def l1(pred, target, mask):
    return masked_mean((pred - target).abs(), mask)


# --- segmentation -----------------------------------------------------------------------------


def _confusion(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None):
    """Per sample and class, intersection and union pixel counts, each (B, classes), over the pixels
    of ``mask`` (None: every pixel)."""
    classes = pred.shape[1]
    p = pred.argmax(1)
    t = target[:, 0].long()
    pred_1h = F.one_hot(p, classes).bool()
    true_1h = F.one_hot(t.clamp(0, classes - 1), classes).bool()
    if mask is not None:
        pred_1h, true_1h = pred_1h & mask[:, 0, ..., None], true_1h & mask[:, 0, ..., None]
    inter = (pred_1h & true_1h).flatten(1, 2).sum(1).float()
    union = (pred_1h | true_1h).flatten(1, 2).sum(1).float()
    return inter, union


def _mean_iou(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis of IoU, over the classes whose union is not empty (numpy's nanmean of
    MTRobust's per_class_iu); 0 where no class is present."""
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter))
    return iou.sum(-1) / present.sum(-1).clamp_min(1)


def miou(pred, target, mask):
    """Mean IoU over the classes present in the sample's prediction or label (valid pixels)."""
    return _mean_iou(*_confusion(pred, target, mask))


def confusion_counts(pred, target, mask):
    """Per sample, each class's intersection then union pixel counts over the valid pixels: (B, 2 * classes)."""
    return torch.cat(_confusion(pred, target, mask), 1)


def miou_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes present anywhere in the split, from its samples' ``confusion_counts``
    (N, 2 * classes): every intersection summed over the summed union, not a mean of per-sample mIoUs.
    Of one sample, this is its ``miou``."""
    inter, union = counts.double().sum(0).chunk(2)
    return _mean_iou(inter, union)


def seg_error(pred, target, mask):
    """1 - mIoU of each sample: the per-sample form of ``error`` (per-sample tables and ratios)."""
    return 1 - miou(pred, target, mask)


def error_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """The split's segmentation error, 1 - dataset mIoU: the standard, and what the original code's
    validation reports (its confusion matrix is summed over every batch before the IoUs)."""
    return 1 - miou_of_counts(counts)


PAPER_BATCH = 32


def miou_all_pixels(pred, target, mask):
    """mIoU of each sample over every pixel, uncertain ones as background (MTRobust's fast_hist takes
    no mask, and its loader turns label 0 into background): the per-sample form of ``miou_batch32_paper``."""
    return _mean_iou(*_confusion(pred, target, None))


def confusion_counts_all_pixels(pred, target, mask):
    """``confusion_counts`` over every pixel, as the original code's per-batch histogram."""
    return torch.cat(_confusion(pred, target, None), 1)


def miou_per_batch_of_counts(counts: torch.Tensor, batch: int = PAPER_BATCH) -> torch.Tensor:
    """The paper code's segmentation score: consecutive batches of 32 samples in split order (the last
    may be shorter), each batch's mIoU from its summed confusion, then the mean over batches
    (yamizi/taskaugment MTVulnerability/utils/art/attacks/mtask_attack.py logs ``mIoU Segment_<batch>``
    from ``fast_hist`` of one batch). Depends on the order and the batch size, unlike ``miou_dataset``."""
    per_batch = [_mean_iou(*c.double().sum(0).chunk(2)) for c in counts.split(batch)]
    return torch.stack(per_batch).mean()


def pixel_accuracy(pred, target, mask):
    correct = (pred.argmax(1, keepdim=True) == target.long()).float()
    return masked_mean(correct, mask)


# --- depth (targets are log(1 + v) / log(65536), v in 1/512 m) --------------------------------------


def _metres(x: torch.Tensor) -> torch.Tensor:
    return (torch.exp(x.clamp(0, 1) * DEPTH_LOG_SCALE) - 1) / 512.0


def abs_rel(pred, target, mask):
    gt, pr = _metres(target), _metres(pred)
    valid = mask & (gt > 1e-3)
    return masked_mean((pr - gt).abs() / gt.clamp_min(1e-3), valid)


def rmse_metres(pred, target, mask):
    return masked_mean((_metres(pred) - _metres(target)) ** 2, mask).sqrt()


def delta1(pred, target, mask):
    gt, pr = _metres(target).clamp_min(1e-3), _metres(pred).clamp_min(1e-3)
    ratio = torch.maximum(gt / pr, pr / gt)
    return masked_mean((ratio < 1.25).float(), mask)


# --- surface normals ---------------------------------------------------------------------------


def _angles_deg(pred, target):
    cos = F.cosine_similarity(pred, target, dim=1, eps=1e-6).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos)).unsqueeze(1)


def angle_mean(pred, target, mask):
    return masked_mean(_angles_deg(pred, target), mask)


def angle_median(pred, target, mask):
    ang = _angles_deg(pred, target).flatten(1)
    m = mask.flatten(1)
    out = []
    for a, v in zip(ang, m):
        out.append(a[v].median() if v.any() else a.new_zeros(()))
    return torch.stack(out)


def within_11_25(pred, target, mask):
    return masked_mean((_angles_deg(pred, target) < 11.25).float(), mask)
