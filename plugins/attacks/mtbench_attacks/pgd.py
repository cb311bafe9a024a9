"""One projected-gradient engine for PGD L-inf, PGD L2 and FGSM (its one-step L-inf case).

Per sample: random start inside the ball, steepest-ascent step for the norm, projection onto the
eps-ball and the [0, 1] box. Losses are summed over the batch before the gradient, so a sample's
perturbation never depends on the other samples.

``paper_compat`` swaps in the original attack (``PGD_attack_mtask`` in yamizi/taskaugment,
MTVulnerability/utils/art/attacks/mtask_attack.py, the one its experiments/attacks/adv_attack.py
runs), slips included, so that their effect can be measured. It changes the start point, the loss
reduction and the L2 step rule; the loop is the same. See :func:`paper_start` and
:func:`paper_l2_step` for the rule in the original's units and its derivation in ours.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import torch

from mtbench import AttackRequest, AttackResult, AttackSpec, frozen_eval


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """Uniform in the L-inf ball, or uniform in the L2 ball (direction Gaussian, radius eps * U^(1/d))."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=gen, dtype=x.dtype)
        return ((2 * u - 1) * eps).to(x.device)
    direction = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    direction /= _per_sample_norm(direction).clamp_min(1e-12)
    dims = x[0].numel()
    radius = eps * torch.rand((x.shape[0],), generator=gen, dtype=x.dtype) ** (1.0 / dims)
    return (direction * radius.view(-1, *([1] * (x.dim() - 1)))).to(x.device)


def ascent_step(grad: torch.Tensor, norm: str, paper_compat: bool) -> torch.Tensor:
    """The direction to add, times the step length: the sign for L-inf, the unit gradient for L2."""
    if norm == "linf":
        return grad.sign()
    if paper_compat:
        return grad  # the original L2 attack stepped without normalising
    return grad / _per_sample_norm(grad).clamp_min(1e-12)


def paper_start(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The original's start, for L-inf and L2 alike and whatever ``random_start`` says: min(1, x + eps) - x.

    In the original's [-1, 1] units u = 2x - 1, with eps_u = 2 eps, it draws noise in [-eps_u, eps_u] and
    clamps u + noise with ``clamp_tensor(image, upper, lower)`` called as ``(u + noise, lower, upper)``:
    min(u + noise, lower) is at most lower <= upper, so max(., upper) = upper = min(1, u + eps_u) for
    every draw. Back in [0, 1]: (min(1, u + eps_u) + 1) / 2 = min(1, x + eps).
    """
    return (x + eps).clamp(max=1.0) - x


def step_length(req: AttackRequest, norm: str) -> float:
    """The factor in front of :func:`ascent_step`: the request's step size, except the original L2 rule.

    The original L2 step, in [-1, 1] units with the batch-mean loss L and eps_u = 2 eps, delta_u = 2 delta:
    d_u = delta_u + eps_u * dL/du, then delta_u <- eps_u * d_u / ||d_u|| with the norm over the whole
    batch, no clip to the image range, and the step size never used. As u = 2x - 1, dL/du = (dL/dx) / 2,
    so d_u = 2 delta + eps * dL/dx = 2 d with d = delta + (eps / 2) * dL/dx, and the rescaling is the
    same in either unit: delta <- eps * d / ||d||. Hence a step of eps / 2 times the raw gradient in [0, 1]
    units, then :func:`project`'s batch-wide sphere. The L-inf rule needs no change: the sign of dL/du is
    the sign of dL/dx, and halving u's step, bounds and box gives x's alpha, eps and [0, 1].
    """
    if req.paper_compat and norm == "l2":
        return float(req.eps) / 2
    return float(req.step_size)


def project(x: torch.Tensor, delta: torch.Tensor, eps: float, norm: str, paper_compat: bool) -> torch.Tensor:
    """Onto the eps-ball of the norm, then so that x + delta stays in [0, 1]; the original L2 attack
    instead rescales the whole batch's delta onto the eps-sphere and never clips."""
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    elif paper_compat:  # batch-wide norm, onto the sphere, no image-range clip
        return delta * (eps / delta.norm().clamp_min(1e-12))
    else:
        delta = delta * (eps / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp(0, 1) - x


def evaluate_point(req: AttackRequest, x_adv: torch.Tensor, with_grad: bool, batch_mean: bool = False):
    """Per-sample losses of every task, the objective and (optionally) its input gradient: of the sum over
    the batch, or of the batch mean (the original's reduction, which scales an unnormalised L2 step)."""
    x_adv = x_adv.detach().requires_grad_(with_grad)
    with torch.set_grad_enabled(with_grad):
        outputs = req.model(x_adv)
        losses = {t: spec.loss(outputs[t], req.targets[t], req.masks[t]) for t, spec in req.tasks.items()}
        objective = req.objective(losses)
    if with_grad:
        total = objective.mean() if batch_mean else objective.sum()
        grad = torch.autograd.grad(total, x_adv)[0]
    else:
        grad = None
    return outputs, losses, objective.detach(), grad


def trace_point(req: AttackRequest, outputs, losses, objective) -> dict[str, dict[str, torch.Tensor]]:
    with torch.no_grad():
        point = {"objective": {"value": objective}}
        for t, spec in req.tasks.items():
            err = spec.metric(spec.error_metric).fn(outputs[t].detach(), req.targets[t], req.masks[t])
            point[t] = {"loss": losses[t].detach(), spec.error_metric: err}
    return point


def start_delta(req: AttackRequest, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Where a run begins: the original's fixed start, a random point of the ball, or x itself."""
    eps = float(req.eps)
    if req.paper_compat:
        return paper_start(x, eps)
    if req.random_start and eps > 0:
        return project(x, random_start(x, eps, norm, req.generator), eps, norm, False)
    return torch.zeros_like(x)


def pgd(req: AttackRequest, norm: str) -> AttackResult:
    x = req.images.detach()
    eps, alpha = float(req.eps), step_length(req, norm)
    best = x.clone()
    best_obj = torch.full((x.shape[0],), -math.inf, device=x.device)
    trace: list[dict] = []
    with frozen_eval(req.model):
        for restart in range(max(1, req.restarts)):
            delta = start_delta(req, x, norm)
            run_trace = []
            for _ in range(req.steps):
                outputs, losses, objective, grad = evaluate_point(req, x + delta, with_grad=True,
                                                                  batch_mean=req.paper_compat)
                if req.trace:
                    run_trace.append(trace_point(req, outputs, losses, objective))
                delta = project(x, delta + alpha * ascent_step(grad, norm, req.paper_compat), eps, norm,
                                req.paper_compat)
            if req.restarts <= 1 and not req.trace:
                return AttackResult(adversarial=(x + delta).detach(), trace=[])  # one run: no choice to make
            outputs, losses, objective, _ = evaluate_point(req, x + delta, with_grad=False)
            if req.trace:
                run_trace.append(trace_point(req, outputs, losses, objective))
            better = objective > best_obj
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x + delta, best)
            best_obj = torch.where(better, objective, best_obj)
            if restart == 0:
                trace = run_trace
    return AttackResult(adversarial=best.detach(), trace=trace)


def fgsm(req: AttackRequest) -> AttackResult:
    """One L-inf step of size eps (steps and step_size are ignored)."""
    one_step = replace(req, steps=1, step_size=req.eps)
    return pgd(one_step, "linf")


ATTACKS = (
    AttackSpec("pgd-linf", "linf", partial(pgd, norm="linf"),
               "projected gradient ascent, L-inf ball (Madry et al. 2018)"),
    AttackSpec("pgd-l2", "l2", partial(pgd, norm="l2"),
               "projected gradient ascent, L2 ball, per-sample normalised steps"),
    AttackSpec("fgsm", "linf", fgsm, "fast gradient sign method: one L-inf step of size eps"),
)
