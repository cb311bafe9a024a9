"""Gradient-analysis trials: the input-gradient geometry behind the paper's first-order theory.

For a trained model, per test sample and per task, the gradient g_i of the task's per-sample loss
with respect to the input (one forward, one backward per task), on clean points and on adversarial
points (the trial's attack on all tasks with the default objective, the sum of their losses).
Stored per sample (table ``samples``, columns clean / adv) and as means (phase ``analysis``):

- ``grad_l1``, ``grad_l2``, ``grad_linf`` of every task: the dual norms of the L-inf, L2 and L1
  attacks, so that eps * E||g||_q is the first-order prediction of E[dL];
- ``cosine`` and ``cov`` = E[g_i . g_j] for every pair of tasks (task ``"a|b"``), the matrix of
  Mao et al. (2020);
- ``sum_grad_sq`` = E||sum_i g_i||^2 against ``sum_sq_grad`` = E sum_i ||g_i||^2 (task ``"*"``), the
  same with the model's training weights (``wsum_grad_sq``, ``wsum_sq_grad``), and
  ``sum_grad_l1`` / ``sum_grad_l2`` = E||sum_i g_i||_q, the first-order prediction of the all-task
  attack's E[d sum L] per eps.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping

import torch
from torch.utils.data import DataLoader

from mtbench.configs import AnalysisConfig
from mtbench.context import TrialContext
from mtbench.defaults import DEFAULT_OBJECTIVE
from mtbench.evaluate import load_trained_model, prepare_for_attack
from mtbench.records import MetricRow, Phase, SampleRow, TrialResult
from mtbench.specs import AttackRequest, TaskSpec, with_loss_options

NORMS = {"grad_l1": 1, "grad_l2": 2, "grad_linf": float("inf")}


def input_gradients(model: torch.nn.Module, images: torch.Tensor, targets: Mapping[str, torch.Tensor],
                    masks: Mapping[str, torch.Tensor], tasks: Mapping[str, TaskSpec]) -> dict[str, torch.Tensor]:
    """Per task, the (B, C*H*W) input gradient of each sample's own loss: one forward pass, one
    backward pass per task. Losses are summed over the batch, so each row is its sample's gradient."""
    x = images.detach().requires_grad_(True)
    outputs = model(x)
    names = list(tasks)
    grads = {}
    for k, t in enumerate(names):
        loss = tasks[t].loss(outputs[t], targets[t], masks[t]).sum()
        g, = torch.autograd.grad(loss, x, retain_graph=k < len(names) - 1)
        grads[t] = g.flatten(1)
    return grads


def gradient_statistics(grads: Mapping[str, torch.Tensor],
                        weights: Mapping[str, float] | None = None) -> dict[tuple[str, str], torch.Tensor]:
    """Per-sample statistics keyed by (task, metric): norms per task, cosine and dot product per pair,
    the norms of the summed gradient against the summed squared norms, and (given the model's
    training weights w) ||sum_i w_i g_i||^2 against sum_i w_i^2 ||g_i||^2."""
    out: dict[tuple[str, str], torch.Tensor] = {}
    for t, g in grads.items():
        for name, p in NORMS.items():
            out[(t, name)] = g.norm(p=p, dim=1)
    for a, b in itertools.combinations(grads, 2):
        dot = (grads[a] * grads[b]).sum(1)
        out[(f"{a}|{b}", "cov")] = dot
        out[(f"{a}|{b}", "cosine")] = dot / (grads[a].norm(dim=1) * grads[b].norm(dim=1)).clamp_min(1e-30)
    total = sum(grads.values())
    out[("*", "sum_grad_sq")] = (total * total).sum(1)
    out[("*", "sum_sq_grad")] = sum((g * g).sum(1) for g in grads.values())
    out[("*", "sum_grad_l1")] = total.norm(p=1, dim=1)
    out[("*", "sum_grad_l2")] = total.norm(p=2, dim=1)
    if weights:
        weighted = sum(weights[t] * g for t, g in grads.items())
        out[("*", "wsum_grad_sq")] = (weighted * weighted).sum(1)
        out[("*", "wsum_sq_grad")] = sum(weights[t] ** 2 * (g * g).sum(1) for t, g in grads.items())
    return out


def run_analysis(config: AnalysisConfig, trial_id: str, ctx: TrialContext) -> TrialResult:
    """Gradient statistics of the trial's model on the test split, clean and adversarial."""
    device = ctx.device
    model = load_trained_model(ctx, config.model, device, config.epoch)
    weights = ctx.store.trial_config(config.model).weights
    fast, _ = prepare_for_attack(model)
    for p in fast.parameters():
        p.requires_grad_(False)
    tasks = with_loss_options({t: ctx.plugins.tasks.get(t) for t in model.tasks}, config.loss_options)
    attack = ctx.plugins.attacks.get(config.attack)
    attacked = tuple(tasks)
    objective = ctx.plugins.objectives.get(DEFAULT_OBJECTIVE).make(attacked, None)
    loader = DataLoader(ctx.open_split(config.data, "test", tasks, config.data.test_samples),
                        batch_size=config.batch_size)
    generator = torch.Generator().manual_seed(config.seed)
    clean_all: dict[tuple[str, str], list[torch.Tensor]] = defaultdict(list)
    adv_all: dict[tuple[str, str], list[torch.Tensor]] = defaultdict(list)
    advance = ctx.progress("batches", len(loader))
    for images, targets, masks in loader:
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        targets = {t: v.to(device) for t, v in targets.items()}
        masks = {t: v.to(device) for t, v in masks.items()}
        request = AttackRequest(model=fast, images=images, targets=targets, masks=masks, tasks=tasks,
                                attacked=attacked, objective=objective, eps=config.eps, steps=config.steps,
                                step_size=config.step_size, generator=generator, trace=False)
        adversarial = attack.run(request).adversarial.detach()
        for point, store in ((images, clean_all), (adversarial, adv_all)):
            stats = gradient_statistics(input_gradients(fast, point, targets, masks, tasks), weights)
            for key, value in stats.items():
                store[key].append(value.detach().cpu())
        advance(1)
    metrics, samples = [], []
    for (task, metric), chunks in clean_all.items():
        clean, adv = torch.cat(chunks), torch.cat(adv_all[(task, metric)])
        metrics.append(MetricRow(Phase.ANALYSIS, task, metric, clean.mean().item()))
        metrics.append(MetricRow(Phase.ANALYSIS_ADV, task, metric, adv.mean().item()))
        samples += [SampleRow(i, task, metric, c, a) for i, (c, a) in enumerate(zip(clean.tolist(), adv.tolist()))]
    return TrialResult(metrics=metrics, samples=samples)
