"""Auto-PGD (Croce & Hein, ICML 2020) for dense, multi-task models, L-inf and L2.

Per sample: step size 2*eps, a momentum step (alpha = 0.75) between the new gradient point and the
previous iterate, and at the checkpoints (22%, 41%, 57%, 70%, ... of the steps) the step size
halves, and the iterate restarts from the best point, when fewer than 75% of the
steps since the last checkpoint raised the objective, or when the step size was not reduced last time
and the best value has not moved. For dense and regression tasks there is no misclassification flag:
progress is judged by the attacked objective itself, per sample. Returns the best point found.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from mtbench import AttackRequest, AttackResult, AttackSpec
from mtbench_attacks.pgd import ascent_step, evaluate_point, frozen_eval, project, random_start, trace_point

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(steps: int) -> set[int]:
    """The iterations (1-based) after which the step size may halve: the first window is 22% of the
    steps, each next one 3% shorter, down to 6% (in whole steps, as in the reference code)."""
    window, shrink, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, k = set(), window
    while k < steps:
        marks.add(k)
        window = max(window - shrink, shortest)
        k += window
    return marks


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def apgd(req: AttackRequest, norm: str) -> AttackResult:
    x = req.images.detach()
    eps = float(req.eps)
    marks = checkpoints(req.steps)
    best_all, best_all_obj = x.clone(), torch.full((x.shape[0],), -math.inf, device=x.device)
    trace: list[dict] = []
    with frozen_eval(req.model):
        for restart in range(max(1, req.restarts)):
            start = random_start(x, eps, norm, req.generator) if req.random_start and eps > 0 else torch.zeros_like(x)
            delta = project(x, start, eps, norm, False)
            outputs, losses, obj, grad = evaluate_point(req, x + delta, with_grad=req.steps > 0)
            run_trace = [trace_point(req, outputs, losses, obj)] if req.trace else []
            best_delta, best_obj, best_grad = delta.clone(), obj.clone(), grad
            eta = torch.full((x.shape[0],), 2 * eps, device=x.device, dtype=x.dtype)
            previous_delta, previous_obj = delta, obj
            increases = torch.zeros_like(obj)
            checkpoint_best, reduced_last, last_mark = best_obj.clone(), torch.zeros_like(obj, dtype=torch.bool), 0
            for k in range(1, req.steps + 1):
                z = project(x, delta + _rows(eta, x) * ascent_step(grad, norm, False), eps, norm, False)
                if k > 1:
                    z = project(x, delta + MOMENTUM * (z - delta) + (1 - MOMENTUM) * (delta - previous_delta), eps,
                                norm, False)
                previous_delta, delta = delta, z
                # the gradient at the last iterate is never used: a forward pass is enough there
                outputs, losses, obj, new_grad = evaluate_point(req, x + delta, with_grad=k < req.steps)
                if req.trace:
                    run_trace.append(trace_point(req, outputs, losses, obj))
                grad = new_grad
                increases += (obj > previous_obj).to(increases.dtype)
                previous_obj = obj
                improved = obj > best_obj
                best_delta = torch.where(_rows(improved, x), delta, best_delta)
                best_obj = torch.where(improved, obj, best_obj)
                if grad is not None and best_grad is not None:
                    best_grad = torch.where(_rows(improved, x), grad, best_grad)
                if k in marks and k < req.steps:
                    too_few = increases < RHO * (k - last_mark)
                    stalled = ~reduced_last & (best_obj <= checkpoint_best)
                    reduce = too_few | stalled
                    eta = torch.where(reduce, eta / 2, eta)
                    delta = torch.where(_rows(reduce, x), best_delta, delta)
                    grad = torch.where(_rows(reduce, x), best_grad, grad)
                    previous_delta = torch.where(_rows(reduce, x), best_delta, previous_delta)
                    increases.zero_()
                    checkpoint_best, reduced_last, last_mark = best_obj.clone(), reduce, k
            better = best_obj > best_all_obj
            best_all = torch.where(_rows(better, x), x + best_delta, best_all)
            best_all_obj = torch.where(better, best_obj, best_all_obj)
            if restart == 0:
                trace = run_trace
    return AttackResult(adversarial=best_all.detach(), trace=trace)


ATTACKS = (
    AttackSpec("apgd-linf", "linf", partial(apgd, norm="linf"),
               "Auto-PGD (Croce & Hein 2020), L-inf, progress judged by the attacked objective per sample"),
    AttackSpec("apgd-l2", "l2", partial(apgd, norm="l2"),
               "Auto-PGD (Croce & Hein 2020), L2, progress judged by the attacked objective per sample"),
)
