"""An attack trial: attack a trained model on the test split and measure every task, attacked or not.

Stores clean and adversarial values over the split (``clean`` / ``adv`` phases: the mean of each
metric's per-sample values, or its aggregate of per-sample statistics), per-step traces, per-sample
values (so means of ratios and ratios of means can both be computed) and the derived
vulnerabilities: relative task vulnerability both ways and E[dL] = mean |L_adv - L_clean|. Sanity
checks run on every trial; a failed one marks the trial suspect.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from mtbench.configs import AttackConfig
from mtbench.context import TrialContext
from mtbench.errors import MtbenchError
from mtbench.fold import fold_batchnorm
from mtbench.measure import SplitRecord, measure
from mtbench.models import load_checkpoint
from mtbench.records import MetricRow, Phase, SampleRow, TrialResult
from mtbench.snapshots import snapshot_path, stored_snapshots
from mtbench.specs import AdaptiveObjective, AttackRequest, start_objective, with_loss_options

TOLERANCE = 1e-5

def prepare_for_attack(model: nn.Module, images: torch.Tensor | None = None):
    """The model the attack differentiates: a frozen copy with BatchNorms folded into their convolutions
    and a channels-last layout. The same function to float rounding, and faster gradients on CPU and
    GPU. Metrics are still measured on the original model. Returns ``(model, images)`` with the images
    in the matching layout when given."""
    fast = fold_batchnorm(model).to(memory_format=torch.channels_last)
    return fast, None if images is None else images.contiguous(memory_format=torch.channels_last)


def load_trained_model(ctx: TrialContext, train_trial: str, device: torch.device,
                       epoch: int | None = None) -> nn.Module:
    """The trained model of a training trial, or its weight snapshot at ``epoch`` (see ``snapshot_path``)."""
    row = ctx.store.model(train_trial)
    if row is None:
        raise MtbenchError(f"the model of training trial {train_trial} is not in the database; run its grid")
    path = Path(row["checkpoint"])
    path = path if path.is_absolute() else ctx.out / path  # relative to the results folder
    if epoch is None or epoch == row["epochs"]:
        return load_checkpoint(path, row["sha256"], ctx.plugins, device).eval()
    snapshots = stored_snapshots(path)
    if epoch not in snapshots:
        raise MtbenchError(f"training trial {train_trial} kept no snapshot at epoch {epoch} (it has "
                           f"{sorted(snapshots) or 'none'}); add {epoch} to train.snapshots and train it again")
    return load_checkpoint(snapshot_path(path, epoch), snapshots[epoch], ctx.plugins, device).eval()


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def run_attack(config: AttackConfig, trial_id: str, ctx: TrialContext) -> TrialResult:
    """Attack the trial's model (or a surrogate, for transfer) on the test split; measure every task."""
    device = ctx.device
    model = load_trained_model(ctx, config.model, device, config.epoch)
    source = load_trained_model(ctx, config.source_model, device, config.epoch) if config.source_model else model
    attack_model, _ = prepare_for_attack(source)  # once, not per batch; a surrogate for transfer attacks
    # the losses measured, attacked and started from are the losses each model was trained with
    tasks = with_loss_options({t: ctx.plugins.tasks.get(t) for t in model.tasks}, config.loss_options)
    source_options = ctx.store.trial_config(config.source_model).loss_options if config.source_model else None
    source_tasks = with_loss_options({t: ctx.plugins.tasks.get(t) for t in source.tasks},
                                     config.loss_options if source_options is None else source_options)
    attacked = tuple(config.targets)
    attack = ctx.plugins.attacks.get(config.attack)
    objective = ctx.plugins.objectives.get(config.objective).make(attacked, config.weights)
    data = config.data
    loader = DataLoader(ctx.open_split(data, "test", {**tasks, **source_tasks}, data.test_samples),
                        batch_size=config.batch_size)
    generator = torch.Generator().manual_seed(config.seed)

    clean_all, adv_all = SplitRecord(), SplitRecord()
    trace_sums: dict[tuple[int, str, str], float] = defaultdict(float)
    checks = {"in_ball": True, "in_box": True, "finite": True, "objective_not_lower": True, "eval_mode": True,
              "eps0_is_clean": True, "max_norm": 0.0, "objective_lower_samples": 0}
    n = 0
    valid_pixels: dict[str, int] = defaultdict(int)
    winners: list[torch.Tensor] = []
    members: list[str] = []
    advance = ctx.progress("batches", len(loader))
    for batch_index, (images, targets, masks) in enumerate(loader):
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        targets = {t: v.to(device) for t, v in targets.items()}
        masks = {t: v.to(device) for t, v in masks.items()}
        request = AttackRequest(
            model=attack_model, images=images, targets=targets, masks=masks, tasks=source_tasks,
            attacked=attacked, objective=objective, eps=config.eps, steps=config.steps,
            step_size=config.step_size, generator=generator, random_start=config.random_start,
            restarts=config.restarts, paper_compat=config.paper_compat, trace=config.trace, options=config.options,
        )
        clean = measure(model, images, targets, masks, tasks)
        if isinstance(objective, AdaptiveObjective):  # it measures progress from the clean losses
            start = clean if source is model else measure(source, images, targets, masks, source_tasks)
            objective.start(start.losses())
        result = attack.run(request)
        x_adv = result.adversarial.detach()
        if x_adv.shape != images.shape or not x_adv.dtype.is_floating_point:
            raise MtbenchError(f"attack {config.attack!r} ({ctx.plugins.attacks.provider(config.attack)}) "
                               f"returned a {tuple(x_adv.shape)} {x_adv.dtype} batch; expected "
                               f"{tuple(images.shape)} float, the shape of its input")
        checks["eval_mode"] &= not model.training
        if "winner" in result.info:
            winners.append(result.info["winner"].cpu())
            members = result.info["members"]
        adv = measure(model, x_adv, targets, masks, tasks)
        clean_all.add(clean)
        adv_all.add(adv)
        for step, point in enumerate(result.trace):
            for t, values in point.items():
                for metric, v in values.items():
                    trace_sums[(step, t, metric)] += v.sum().item()
                    if t in tasks and metric == tasks[t].error_metric != "error":  # one name across tasks
                        trace_sums[(step, t, "error")] += v.sum().item()
        _check(checks, images, x_adv, config, objective, clean.values, adv.values)
        for t in tasks:
            valid_pixels[t] += int(torch.count_nonzero(masks[t]))
        if batch_index == 0:
            _check_eps0(checks, attack, request, images)
        n += images.shape[0]
        advance(1)

    _check_valid_pixels(checks, valid_pixels, tasks)
    if config.source_model:
        checks.pop("objective_not_lower")  # a transferred example need not raise the target's loss
    metrics = _metric_rows(config, tasks, attacked, clean_all, adv_all, trace_sums, n, objective)
    samples = _sample_rows(tasks, attacked, clean_all, adv_all)
    if winners:  # an ensemble: which member won, overall and per sample
        won = torch.cat(winners)
        metrics += [MetricRow(Phase.ENSEMBLE, "winner", name, float((won == i).float().mean()), config.steps)
                    for i, name in enumerate(members)]
        samples += [SampleRow(i, "ensemble", f"winner:{members[w]}", None, float(w))
                    for i, w in enumerate(won.tolist())]
    return TrialResult(
        metrics=metrics,
        samples=samples,
        checks=checks,
        suspect=not all(v for k, v in checks.items() if isinstance(v, bool)),
    )


def _check(checks, images, x_adv, config: AttackConfig, objective, clean, adv) -> None:
    norms = perturbation_norms(x_adv - images, "l2" if config.norm == "l2" else "linf")
    checks["max_norm"] = max(checks["max_norm"], norms.max().item())
    ball_ok = bool((norms <= config.eps * (1 + TOLERANCE) + TOLERANCE).all())
    batch_wide_l2 = config.paper_compat and config.norm == "l2"  # the original L2 attack bounds the whole batch
    checks["in_ball"] &= ball_ok or batch_wide_l2
    if not batch_wide_l2:
        checks["in_box"] &= bool(((x_adv >= 0) & (x_adv <= 1)).all())
    checks["finite"] &= bool(torch.isfinite(x_adv).all()) and all(
        bool(torch.isfinite(v).all()) for d in adv.values() for v in d.values())
    obj_clean = objective({t: d["loss"] for t, d in clean.items()})
    obj_adv = objective({t: d["loss"] for t, d in adv.items()})
    lower = int((obj_adv < obj_clean - 1e-4 * obj_clean.abs().clamp_min(1)).sum())
    checks["objective_lower_samples"] += lower
    checks["objective_not_lower"] &= bool(obj_adv.mean() >= obj_clean.mean() - 1e-6)


def _check_valid_pixels(checks: dict, valid_pixels: dict[str, int], tasks) -> None:
    """A task without one valid test pixel has no error to measure (its mean would read 0, the best
    score there is): the trial is suspect rather than a silent zero at the top of a ranking."""
    checks["valid_test_pixels"] = {t: valid_pixels.get(t, 0) for t in tasks}
    checks["every_task_has_valid_pixels"] = all(valid_pixels.get(t, 0) > 0 for t in tasks)


def _check_eps0(checks, attack, request: AttackRequest, images) -> None:
    """The same attack with eps = 0 must return the clean images (one step is enough to tell)."""
    zero = replace(request, eps=0.0, steps=1, restarts=1, trace=False, paper_compat=False,
                   generator=torch.Generator().manual_seed(0))
    x0 = attack.run(zero).adversarial
    checks["eps0_is_clean"] = bool(torch.allclose(x0, images, atol=1e-7))


def _metric_rows(config: AttackConfig, tasks, attacked, clean_all: SplitRecord, adv_all: SplitRecord, trace_sums,
                 n, objective) -> list[MetricRow]:
    rows: list[MetricRow] = []
    steps = config.steps

    def row(phase: Phase, task: str, metric: str, step: int, value) -> None:
        rows.append(MetricRow(phase, task, metric, float(value), step, attacked=task in attacked))

    for t, spec in tasks.items():
        lc, la = clean_all.per_sample(t, "loss"), adv_all.per_sample(t, "loss")
        row(Phase.CLEAN, t, "loss", 0, lc.mean())
        row(Phase.ADV, t, "loss", steps, la.mean())
        for m in spec.metrics:
            row(Phase.CLEAN, t, m.name, 0, clean_all.split_value(t, m))
            row(Phase.ADV, t, m.name, steps, adv_all.split_value(t, m))
        err = spec.metric(spec.error_metric)
        c, a = clean_all.per_sample(t, err.name), adv_all.per_sample(t, err.name)
        c_split, a_split = clean_all.split_value(t, err), adv_all.split_value(t, err)
        sign = -1.0 if err.higher_is_better else 1.0
        row(Phase.VULNERABILITY, t, "error_clean", 0, c_split)
        row(Phase.VULNERABILITY, t, "error_adv", steps, a_split)
        row(Phase.VULNERABILITY, t, "rel_vuln_ratio_of_means", steps,
            sign * (a_split - c_split) / c_split.clamp_min(1e-12))
        valid = c.abs() > 1e-12
        row(Phase.VULNERABILITY, t, "rel_vuln_mean_of_ratios", steps,
            (sign * (a[valid] - c[valid]) / c[valid]).mean() if valid.any() else float("nan"))
        row(Phase.VULNERABILITY, t, "delta_loss", steps, (la - lc).abs().mean())
    clean_losses = {t: clean_all.per_sample(t, "loss") for t in tasks}
    start_objective(objective, clean_losses)  # progress over the whole split, from its clean losses
    obj_c = objective(clean_losses)
    obj_a = objective({t: adv_all.per_sample(t, "loss") for t in tasks})
    rows.append(MetricRow(Phase.VULNERABILITY, "objective", "delta_loss", float((obj_a - obj_c).abs().mean()), steps,
                          attacked=True))
    rows += [MetricRow(Phase.TRACE, t, metric, total / n, step, attacked=t in attacked or t == "objective")
             for (step, t, metric), total in sorted(trace_sums.items())]
    return rows


def _sample_rows(tasks, attacked, clean_all: SplitRecord, adv_all: SplitRecord) -> list[SampleRow]:
    """Per-sample clean and adversarial values of every metric; the error metric also as ``error``."""
    rows = []
    for t, spec in tasks.items():
        for metric in clean_all.names(t):
            c = clean_all.per_sample(t, metric).tolist()
            a = adv_all.per_sample(t, metric).tolist()
            names = [metric] + (["error"] if metric == spec.error_metric != "error" else [])
            rows.extend(SampleRow(i, t, name, ci, ai, attacked=t in attacked)
                        for name in names for i, (ci, ai) in enumerate(zip(c, a)))
    return rows
