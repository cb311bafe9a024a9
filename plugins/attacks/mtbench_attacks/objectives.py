"""Objectives: how the attacked tasks' per-sample losses combine into the scalar PGD ascends."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mtbench import ObjectiveSpec


def _weighted_sum(attacked: tuple[str, ...], weights: Mapping[str, float]):
    def objective(losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(weights[t] * losses[t] for t in attacked)
    return objective


def make_sum(attacked, weights=None):
    """The paper's multi-task attack: the sum of the attacked tasks' losses."""
    return _weighted_sum(attacked, {t: 1.0 for t in attacked})


def make_mean(attacked, weights=None):
    return _weighted_sum(attacked, {t: 1.0 / len(attacked) for t in attacked})


def make_weighted(attacked, weights=None):
    if not weights:
        raise ValueError("the 'weighted' objective needs weights = {task = w, ...}")
    missing = [t for t in attacked if t not in weights]
    if missing:
        raise ValueError(f"the 'weighted' objective has no weight for {missing}")
    return _weighted_sum(attacked, {t: float(weights[t]) for t in attacked})


OBJECTIVES = (
    ObjectiveSpec("single", make_sum, exact_targets=1, description="the loss of the one attacked task"),
    ObjectiveSpec("sum", make_sum, description="sum of the attacked tasks' losses (the paper's multi-task attack)"),
    ObjectiveSpec("mean", make_mean, description="mean of the attacked tasks' losses"),
    ObjectiveSpec("weighted", make_weighted, description="sum of the attacked tasks' losses times explicit weights"),
)
