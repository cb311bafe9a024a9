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


# Class prior weights of the MTRobust segmentation loss: background 0.54, objects ~7-9.
PAPER_CLASS_WEIGHTS = (0.54,) + (8.0,) * 16


def cross_entropy_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                       reduction: str = "paper", class_weights: str | None = None) -> torch.Tensor:
    """Per-pixel cross-entropy averaged per sample; uncertain pixels (mask false) count as zero.

    ``class_weights="paper"`` applies the MTRobust class prior.
    """
    weight = None
    if class_weights == "paper":
        weight = torch.tensor(PAPER_CLASS_WEIGHTS, device=pred.device, dtype=pred.dtype)
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


def _confusion(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
    classes = pred.shape[1]
    p = pred.argmax(1)
    t = target[:, 0].long()
    m = mask[:, 0]
    pred_1h = F.one_hot(p, classes).bool() & m[..., None]
    true_1h = F.one_hot(t.clamp(0, classes - 1), classes).bool() & m[..., None]
    inter = (pred_1h & true_1h).flatten(1, 2).sum(1).float()
    union = (pred_1h | true_1h).flatten(1, 2).sum(1).float()
    return inter, union


def miou(pred, target, mask):
    """Mean IoU over the classes present in the sample's prediction or label (valid pixels)."""
    inter, union = _confusion(pred, target, mask)
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter))
    return iou.sum(1) / present.sum(1).clamp_min(1)


def confusion_counts(pred, target, mask):
    """Per sample, each class's intersection then union pixel counts over the valid pixels: (B, 2 * classes)."""
    return torch.cat(_confusion(pred, target, mask), 1)


def miou_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes present anywhere in the split, from its samples' ``confusion_counts``
    (N, 2 * classes): every intersection summed over the summed union, not a mean of per-sample mIoUs.
    Of one sample, this is its ``miou``."""
    inter, union = counts.double().sum(0).chunk(2)
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter))
    return iou.sum() / present.sum().clamp_min(1)


def seg_error(pred, target, mask):
    """The paper's clean error for segmentation: 1 - mIoU."""
    return 1 - miou(pred, target, mask)


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
