"""Objectives: how the attacked tasks' per-sample losses combine into the scalar an attack ascends.

The plain ones (``single``, ``sum``, ``mean``, ``weighted``) are fixed weighted sums. The adaptive
ones judge each task by its progress r_i = L_i / L_i(start), so they keep the losses at the start
of the attack: they are :class:`mtbench.AdaptiveObjective`, whose ``start(clean_losses)`` the
evaluator calls before every batch is attacked (without it, the first call is taken as the start).
``wgd-original`` is the exception that reproduces the original code: its start is the attack's first
gradient step, one number per task for the whole batch.
Where the direction an adaptive objective pushes differs
from the value worth tracking, the value (what restarts and Auto-PGD compare) and the gradient are
set separately: ``_value_with_gradient_of``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mtbench import AdaptiveObjective, ObjectiveSpec


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


def _value_with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Numerically ``value``; its gradient is the gradient of ``surrogate``."""
    return value.detach() + surrogate - surrogate.detach()


class ProgressObjective(AdaptiveObjective):
    """Base of the adaptive objectives: remembers each attacked task's loss at the start."""

    floor = 1e-8  # a task already at zero loss counts as progressing from this

    def __init__(self, attacked: tuple[str, ...]):
        self.attacked = attacked
        self.initial: dict[str, torch.Tensor] | None = None

    def start(self, losses: Mapping[str, torch.Tensor]) -> None:
        self.initial = {t: losses[t].detach().clamp_min(self.floor) for t in self.attacked}

    def ratios(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """r_i = L_i / L_i(start), per sample."""
        first = losses[self.attacked[0]]
        if self.initial is None or self.initial[self.attacked[0]].shape != first.shape:
            self.start(losses)
        return {t: losses[t] / self.initial[t] for t in self.attacked}


class Relative(ProgressObjective):
    """Sum over tasks of L_i / L_i(start), per sample: each sample's loss divided by its own loss at
    ``start`` (the clean loss, in a trial). Not the original code's WGD, which divides by one number per
    task for the whole batch, taken at its x + eps start: that is :class:`WgdOriginal`."""

    def __call__(self, losses):
        return sum(self.ratios(losses).values())


class WgdOriginal(AdaptiveObjective):
    """WGD as the original code computes it (``RELATIVE_WEIGHT`` in yamizi/taskaugment's
    MTVulnerability/utils/art/attacks/mtask_attack.py): the first gradient step ascends the plain sum of
    the attacked losses and records each task's loss B_i over the whole batch at that point (the
    original's batch-mean loss, a number without gradient); every later call returns
    sum_i L_i / B_i per sample. ``start`` forgets B, so the next gradient call records it again, at the
    attack's own start (x + eps under ``paper_compat``), never at the clean point. Calls without
    gradients before that (checks, traces) return the plain sum. Unlike the per-sample objectives, a
    sample's value after the first step depends on the batch it came in: so did the original's."""

    def __init__(self, attacked: tuple[str, ...]):
        self.attacked = attacked
        self.base: dict[str, torch.Tensor] | None = None

    def start(self, losses: Mapping[str, torch.Tensor]) -> None:
        self.base = None

    def __call__(self, losses):
        if self.base is None:
            total = sum(losses[t] for t in self.attacked)
            if torch.is_grad_enabled() and total.requires_grad:
                self.base = {t: losses[t].detach().mean().clamp_min(ProgressObjective.floor) for t in self.attacked}
            return total
        return sum(losses[t] / self.base[t] for t in self.attacked)


class GradNorm(ProgressObjective):
    """GradNorm-style re-weighting by progress. Value: sum of r_i. Gradient: sum of w_i * grad r_i with
    w (no gradient) proportional to r_i (``towards="progress"``: push the tasks already moving) or to
    1/r_i (``towards="lagging"``: push the tasks left behind), normalised to sum to the number of tasks.
    The paper's text allows both readings."""

    def __init__(self, attacked, towards: str):
        super().__init__(attacked)
        self.towards = towards

    def __call__(self, losses):
        r = self.ratios(losses)
        stacked = torch.stack([r[t] for t in self.attacked])  # (T, B)
        w = stacked.detach() if self.towards == "progress" else 1.0 / stacked.detach().clamp_min(self.floor)
        w = w * (len(self.attacked) / w.sum(0, keepdim=True).clamp_min(self.floor))
        return _value_with_gradient_of(stacked.sum(0), (w * stacked).sum(0))


def make_balanced(attacked, weights=None):
    """Dynamic gradient balancing (Zhang et al. 2023): each task's input gradient divided by its
    current loss before summing, i.e. the gradient of sum(log L_i). Value: sum of the losses."""
    def objective(losses):
        total = sum(losses[t] for t in attacked)
        balanced = sum(losses[t] / losses[t].detach().clamp_min(ProgressObjective.floor) for t in attacked)
        return _value_with_gradient_of(total, balanced)
    return objective


class Cyclic(AdaptiveObjective):
    """One attacked task per gradient step, in turn (value: the sum, for tracking). Counts only the
    calls made with gradients, so traces and checks do not advance the cycle."""

    def __init__(self, attacked: tuple[str, ...]):
        self.attacked, self.step = attacked, 0

    def start(self, losses) -> None:
        self.step = 0

    def __call__(self, losses):
        total = sum(losses[t] for t in self.attacked)
        if not (torch.is_grad_enabled() and total.requires_grad):
            return total
        task = self.attacked[self.step % len(self.attacked)]
        self.step += 1
        return _value_with_gradient_of(total, losses[task])


OBJECTIVES = (
    ObjectiveSpec("single", make_sum, exact_targets=1, description="the loss of the one attacked task"),
    ObjectiveSpec("sum", make_sum, description="sum of the attacked tasks' losses (the paper's multi-task attack)"),
    ObjectiveSpec("mean", make_mean, description="mean of the attacked tasks' losses"),
    ObjectiveSpec("weighted", make_weighted, description="sum of the attacked tasks' losses times explicit weights"),
    ObjectiveSpec("relative", lambda attacked, weights=None: Relative(attacked),
                  description="per sample, sum of L_i / L_i(clean): each sample's loss over its own clean loss"),
    ObjectiveSpec("wgd-original", lambda attacked, weights=None: WgdOriginal(attacked),
                  description="WGD as the original code computes it: first step the plain sum; then sum of "
                              "L_i / B_i, B_i task i's loss averaged over the batch at the attack's first step"),
    ObjectiveSpec("gradnorm-progress", lambda attacked, weights=None: GradNorm(attacked, "progress"),
                  description="re-weight tasks by progress r_i = L_i / L_i(start): w_i proportional to r_i"),
    ObjectiveSpec("gradnorm-lagging", lambda attacked, weights=None: GradNorm(attacked, "lagging"),
                  description="re-weight tasks by progress r_i = L_i / L_i(start): w_i proportional to 1 / r_i"),
    ObjectiveSpec("balanced", make_balanced,
                  description="gradient balancing (Zhang et al. 2023): task gradients divided by their losses"),
    ObjectiveSpec("cyclic", lambda attacked, weights=None: Cyclic(attacked),
                  description="one attacked task per step, in turn"),
)
