"""The best constant predictor of each task, fitted on the training split.

A trained model that does not beat it has learnt nothing about the image; reports show the margin
so that robustness numbers of such a model are not taken seriously.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from mtbench.measure import aggregated_values, statistics_of
from mtbench.specs import TaskSpec


def fit_constants(batches: Iterable, tasks: Mapping[str, TaskSpec]) -> dict[str, torch.Tensor]:
    """Per task, a (C,) prediction: the majority class as one-hot logits for a classification task,
    the mean of the valid label pixels per channel otherwise (the MSE-optimal constant)."""
    sums, _, counts = _label_sums(batches, tasks)
    constants = {}
    for t, spec in tasks.items():
        if spec.classification:
            constants[t] = torch.nn.functional.one_hot(sums[t].argmax(), spec.channels).float()
        else:
            constants[t] = (sums[t] / counts[t].clamp_min(1)).float()
    return constants


def fit_priors(batches: Iterable, tasks: Mapping[str, TaskSpec]) -> dict[str, torch.Tensor]:
    """Per task, the (C,) output a head starts from under ``head_init = "prior"``: the log class
    frequencies (add-one smoothed: no class at minus infinity) for a classification task, whose
    softmax is the class prior, and the mean label per channel otherwise (the constant predictor)."""
    return fit_label_stats(batches, tasks)[0]


def fit_label_stats(batches: Iterable, tasks: Mapping[str, TaskSpec]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """In one pass over the split: every task's prior (see :func:`fit_priors`) and, per regression task,
    the (C,) standard deviation of its valid label pixels (``head_init = "scaled"``)."""
    sums, squares, counts = _label_sums(batches, tasks)
    priors, stds = {}, {}
    for t, spec in tasks.items():
        if spec.classification:
            priors[t] = ((sums[t] + 1) / (sums[t] + 1).sum()).log().float()
        else:
            n = counts[t].clamp_min(1)
            priors[t] = (sums[t] / n).float()
            stds[t] = (squares[t] / n - (sums[t] / n) ** 2).clamp_min(0).sqrt().float()
    return priors, stds


def _label_sums(batches: Iterable, tasks: Mapping[str, TaskSpec]) -> tuple[dict, dict, dict]:
    """Per task, the valid pixels' label counts per class (classification) or label sums, sums of squares
    and valid pixel counts per channel (regression), over every batch."""
    sums = {t: torch.zeros(spec.channels, dtype=torch.float64) for t, spec in tasks.items()}
    squares = {t: torch.zeros(spec.channels, dtype=torch.float64) for t, spec in tasks.items()}
    counts = {t: torch.zeros(spec.channels, dtype=torch.float64) for t, spec in tasks.items()}
    for _, targets, masks in batches:
        for t, spec in tasks.items():
            target, mask = targets[t], masks[t]
            if spec.classification:
                labels = target[:, 0][mask[:, 0].bool()].long().clamp(0, spec.channels - 1)
                sums[t] += torch.bincount(labels, minlength=spec.channels).double()
            else:
                m = mask.expand_as(target).double()
                sums[t] += (target.double() * m).sum((0, 2, 3))
                squares[t] += (target.double() ** 2 * m).sum((0, 2, 3))
                counts[t] += m.sum((0, 2, 3))
    return sums, squares, counts


@torch.no_grad()
def evaluate_constants(constants: Mapping[str, torch.Tensor], batches: Iterable,
                       tasks: Mapping[str, TaskSpec]) -> dict[str, dict[str, float]]:
    """Every metric of every task over the split when each task predicts its constant everywhere."""
    sums: dict[str, dict[str, float]] = {t: {m.name: 0.0 for m in spec.metrics} for t, spec in tasks.items()}
    statistics = []
    n = 0
    for images, targets, masks in batches:
        b, _, h, w = images.shape
        preds = {t: constants[t].view(1, -1, 1, 1).expand(b, -1, h, w) for t in tasks}
        for t, spec in tasks.items():
            for m in spec.metrics:
                sums[t][m.name] += m.fn(preds[t], targets[t], masks[t]).sum().item()
        statistics.append(statistics_of(preds, targets, masks, tasks))
        n += b
    values = {t: {k: v / max(n, 1) for k, v in d.items()} for t, d in sums.items()}
    for t, aggregated in aggregated_values(statistics, tasks).items():
        values[t].update(aggregated)  # e.g. the dataset mIoU: not a mean of per-sample values
    return values
