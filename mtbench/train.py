"""A training trial: fit one multi-task model, log per-epoch losses and clean metrics, save it."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mtbench.baseline import evaluate_constants, fit_constants, fit_label_stats
from mtbench.configs import TrainConfig
from mtbench.context import TrialContext
from mtbench.defaults import DEFAULT_DEFENSE
from mtbench.defend import batch_generator, defense_request
from mtbench.errors import TrainingError
from mtbench.external import build_external
from mtbench.measure import aggregated_values, statistics_of
from mtbench.models import (
    build_model,
    count_macs,
    count_parameters,
    file_sha256,
    init_heads_at_prior,
    save_checkpoint,
)
from mtbench.records import MetricRow, Phase, TrialResult
from mtbench.resume import BadState, clear_state, load_state, save_state, set_aside
from mtbench.snapshots import snapshot_path
from mtbench.specs import with_loss_options
from mtbench.threads import loader_workers

READ_EACH_BATCH = frozenset({"cpu"})
"""Device types whose training losses are read (and checked finite) after each batch. Elsewhere (CUDA)
reading a value waits for the device to finish, so they are read once at the epoch's end, and the
host queues the next batches' work while the device computes."""


def make_optimizer(config: TrainConfig, params) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam or SGD with the config's momentum and weight decay (a config stored before momentum was a key
    says None: those ran with 0.9 and 1e-4); the lr drops x0.1 after each of ``lr_drop_epochs``, or at
    the ``lr_milestones`` fractions of the epochs."""
    weight_decay = getattr(config, "weight_decay", 0.0)
    params = list(params)
    fused = can_fuse(params)
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=weight_decay, fused=fused)
    else:
        momentum = getattr(config, "momentum", None)
        if momentum is None:
            momentum, weight_decay = 0.9, 1e-4
        opt = torch.optim.SGD(params, lr=config.lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    epochs = config.epochs
    drops = getattr(config, "lr_drop_epochs", ()) or {max(1, math.floor(f * epochs)) for f in config.lr_milestones}
    milestones = sorted(e for e in set(drops) if e < epochs)
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)


FUSED_DEVICES = ("cpu", "cuda")
"""Devices where torch's Adam and SGD have a fused kernel: one pass over every weight per step instead of
one per operation. The update is the same formula; on the main job's model on a 2-core CPU Adam's step
took 147 ms with the per-tensor loop and 67 ms fused, the epoch 1.11x less (benchmarks/bench_optimizer.py)."""


def can_fuse(params: list[torch.Tensor]) -> bool | None:
    """True where every parameter is a floating-point tensor on a device with fused kernels; None (torch's
    default loop) elsewhere."""
    return True if params and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params) else None


def to_device(batch, device) -> tuple:
    """A batch's images, targets and masks on ``device``; the copies are asynchronous from a loader's
    pinned memory on CUDA (``pin_memory``), and the batch itself where it is already there (a CPU)."""
    images, targets, masks = batch
    return (images.to(device, non_blocking=True), {t: v.to(device, non_blocking=True) for t, v in targets.items()},
            {t: v.to(device, non_blocking=True) for t, v in masks.items()})


def per_task_losses(model, batch, tasks, device) -> tuple[dict, dict]:
    """Outputs and per-sample losses; ``tasks`` carry the loss options (``specs.with_loss_options``)."""
    images, targets, masks = to_device(batch, device)
    outputs = model(images)
    losses = {t: spec.loss(outputs[t], targets[t], masks[t]) for t, spec in tasks.items()}
    return outputs, losses


@torch.no_grad()
def evaluate_clean(model, loader, tasks, device, valid: dict[str, int] | None = None) -> dict[str, dict[str, float]]:
    """Mean loss and every metric of every task over a split (aggregated metrics by their aggregate);
    ``valid``, if given, gets each task's count of valid (masked-in) pixels.

    An aggregated metric's per-sample ``fn`` is not computed: its split value is its aggregate of
    ``statistics`` (segmentation's error, miou_dataset and miou_batch32_paper: three confusion counts
    a batch fewer; a validation pass of the quickstart's s+d model took 11% less time on a CPU)."""
    model.eval()
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    statistics = []
    n = 0
    for batch in loader:
        batch = to_device(batch, device)
        outputs, losses = per_task_losses(model, batch, tasks, device)
        _, targets, masks = batch
        for t, spec in tasks.items():
            if valid is not None:
                valid[t] = valid.get(t, 0) + int(torch.count_nonzero(masks[t]))
            sums[t]["loss"] += losses[t].sum().item()
            for m in spec.metrics:
                if m.aggregate is None:
                    sums[t][m.name] += m.fn(outputs[t], targets[t], masks[t]).sum().item()
        statistics.append(statistics_of(outputs, targets, masks, tasks))
        n += batch[0].shape[0]
    aggregated = aggregated_values(statistics, tasks)
    return {t: {"loss": sums[t]["loss"] / n, **{m.name: aggregated[t][m.name] if m.aggregate is not None
                                                else sums[t][m.name] / n for m in spec.metrics}}
            for t, spec in tasks.items()}


def run_train(config: TrainConfig, trial_id: str, ctx: TrialContext) -> TrialResult:
    """Train one model (resuming after a kill), then store its clean metrics, baseline and checkpoint."""
    device = ctx.device
    torch.manual_seed(config.seed)  # module init draws from the global RNG; seeded per trial
    tasks = with_loss_options({t: ctx.plugins.tasks.get(t) for t in config.tasks}, config.loss_options)
    data = config.data
    train_set = ctx.open_split(data, "train", tasks, data.train_samples)
    val_split = "val" if data.val_samples else "test"
    val_set = ctx.open_split(data, val_split, tasks, data.val_samples or data.test_samples)
    test_set = ctx.open_split(data, "test", tasks, data.test_samples)
    gen = torch.Generator().manual_seed(config.seed)
    # loader workers from this process's share of the cores (mtbench.threads); never persistent: a persistent
    # loader draws its seed from `gen` once, not every epoch, and the shuffle order would depend on the machine
    pin = device.type == "cuda"  # page-locked batches: asynchronous host-to-GPU copies (to_device)
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=gen,
                              num_workers=loader_workers(), pin_memory=pin)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, pin_memory=pin)
    test_loader = DataLoader(test_set, batch_size=config.batch_size, pin_memory=pin)

    if config.external:  # a [[model]]: measured as it comes, nothing trained
        model, rows, snapshots = _external(config, device), [], {}
    else:
        model, rows, snapshots = _fit(config, trial_id, ctx, tasks, train_set, train_loader, val_loader, val_split)
    valid: dict[str, int] = {}
    for t, values in evaluate_clean(model, test_loader, tasks, device, valid).items():
        values.setdefault("error", values[tasks[t].error_metric])  # the paper's clean error, by one name
        rows += [MetricRow(Phase.CLEAN, t, metric, v, config.epochs) for metric, v in values.items()]

    constants = fit_constants(train_loader, tasks)
    for t, values in evaluate_constants(constants, test_loader, tasks).items():
        values.setdefault("error", values[tasks[t].error_metric])
        rows += [MetricRow(Phase.BASELINE, t, metric, v, config.epochs) for metric, v in values.items()]

    model = model.to(memory_format=torch.contiguous_format).eval()
    path = ctx.checkpoints / f"{trial_id}.safetensors"
    sha = save_checkpoint(model, path, {"encoder": config.encoder, "tasks": list(config.tasks), "trial": trial_id,
                                        "snapshots": {str(e): snapshots[e] for e in sorted(snapshots)},
                                        **_sidecar_facts(config, device)})
    model_row = {
        "encoder": config.encoder, "tasks": ",".join(config.tasks), "weighting": config.weighting,
        "epochs": config.epochs, "checkpoint": _relative(path, ctx.out), "sha256": sha,
        "parameters": count_parameters(model), "macs": count_macs(model, data.image_size),
        "image_size": data.image_size,
    }
    clear_state(ctx.checkpoints, trial_id)
    # a task without one valid test pixel has no clean error (it would read 0): the trial is suspect
    checks = {"valid_test_pixels": valid, "every_task_has_valid_pixels": all(valid.get(t, 0) > 0 for t in tasks)}
    return TrialResult(metrics=rows, model=model_row, checks=checks, suspect=not checks["every_task_has_valid_pixels"])


def _fit(config: TrainConfig, trial_id: str, ctx: TrialContext, tasks, train_set, train_loader, val_loader,
         val_split: str) -> tuple[torch.nn.Module, list[MetricRow], dict[int, str]]:
    """Train the model (resuming after a kill): the model, its per-epoch rows, its snapshots' SHA-256s."""
    device = ctx.device
    gen = train_loader.generator
    model = build_model(config.encoder, list(config.tasks), ctx.plugins)
    if config.head_init in ("prior", "scaled"):  # read in order, not from train_loader: its shuffle must not move
        priors, stds = fit_label_stats(DataLoader(train_set, batch_size=config.batch_size), tasks)
        init_heads_at_prior(model, priors, stds if config.head_init == "scaled" else None)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, sched = make_optimizer(config, model.parameters())
    weights = config.weights
    defense = ctx.plugins.defenses.get(config.defense.name)  # none: the weighted sum of the task losses
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    rows: list[MetricRow] = []
    first_epoch = 1
    resumed = _resume(ctx, trial_id, config.epochs, model, opt, sched, gen)
    if resumed is not None:  # a kill interrupted this trial: go on after its last finished epoch
        first_epoch, rows = resumed[0] + 1, [MetricRow.from_record(r) for r in resumed[1]]
    snapshots = {e: file_sha256(snapshot_path(ctx.checkpoints / f"{trial_id}.safetensors", e))
                 for e in config.snapshots if e < first_epoch}  # kept before the kill
    advance = ctx.progress("epochs", config.epochs)
    advance(first_epoch - 1)
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        sums: dict[str, float] = defaultdict(float)
        seen = 0
        pending: list[tuple[int, int, torch.Tensor, dict[str, torch.Tensor]]] = []
        for batch_index, batch in enumerate(train_loader):
            with torch.autocast(device.type, enabled=use_amp):
                request = defense_request(model, to_device(batch, device), tasks, weights, config.defense.options,
                                          ctx.plugins, batch_generator(config.seed, epoch, batch_index))
                step = defense.loss(request)
                total, losses = step.total, step.losses
            pending.append((batch_index, batch[0].shape[0], total.detach(), {t: v.detach() for t, v in losses.items()}))
            if device.type in READ_EACH_BATCH:
                seen += _tally(pending, sums, epoch, config.lr)  # a non-finite loss stops before its step
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
        seen += _tally(pending, sums, epoch, config.lr)
        sched.step()
        for t, v in sums.items():
            rows.append(MetricRow(Phase.TRAIN, t, "loss", v / seen, epoch, split="train"))
        if epoch % config.val_every == 0 or epoch == config.epochs:  # the last epoch is always validated
            for t, values in evaluate_clean(model, val_loader, tasks, device).items():
                rows += [MetricRow(Phase.VAL, t, metric, v, epoch, split=val_split) for metric, v in values.items()]
        if epoch in config.snapshots:
            snapshots[epoch] = _save_snapshot(ctx, trial_id, config, model, epoch)
        if epoch < config.epochs:
            save_state(ctx.checkpoints, trial_id, epoch, model, opt, sched, gen, [r.record() for r in rows])
        advance(1)
    return model, rows, snapshots


def _external(config: TrainConfig, device: torch.device) -> torch.nn.Module:
    """A [[model]] as its factory builds it, with its weights, refused if they changed since the grid
    was read (its id holds their SHA-256)."""
    from mtbench.errors import CheckpointError

    weights = Path(config.weights_path) if config.weights_path else None
    if weights is not None and file_sha256(weights) != config.weights_sha256:
        raise CheckpointError(f"{weights}: changed since the grid was read (its SHA-256 differs); run the grid "
                              "again to measure the new weights as another model")
    return build_external(config.factory, config.tasks, weights).to(device)


def _sidecar_facts(config: TrainConfig, device: torch.device) -> dict:
    """What a checkpoint's JSON records besides the architecture, so that a file copied away from its
    database still says what it is: image size, weighting, epochs, head init and the versions it was made with."""
    from mtbench.provenance import current

    return {"image_size": config.data.image_size, "weighting": config.weighting, "weights": dict(config.weights),
            "epochs": config.epochs, "seed": config.seed, "head_init": config.head_init,
            **({"defense": config.defense.record()} if config.defense.name != DEFAULT_DEFENSE else {}),
            "versions": current(device),
            **({"factory": config.factory, "weights_sha256": config.weights_sha256} if config.external else {})}


def _tally(pending: list, sums: dict[str, float], epoch: int, lr: float) -> int:
    """Add the pending batches' losses to the epoch's sums, in batch order and as Python floats (the
    stored train losses do not depend on when they are read), and empty ``pending``; returns the
    samples added. Raises TrainingError at the first non-finite loss, naming its batch."""
    seen = 0
    for batch_index, b, total, losses in pending:
        if not torch.isfinite(total):
            values = ", ".join(f"{t} {v.mean().item():.4g}" for t, v in losses.items())
            raise TrainingError(f"the training loss became {total.item()} at epoch {epoch}, batch {batch_index} "
                                f"(task losses: {values}); lower the lr ({lr}) or check the data")
        seen += b
        sums["total"] += total.item() * b
        for t, v in losses.items():
            sums[t] += v.sum().item()
    pending.clear()
    return seen


def _save_snapshot(ctx: TrialContext, trial_id: str, config: TrainConfig, model, epoch: int) -> str:
    """The weights at ``epoch``, beside the final checkpoint; returns their SHA-256."""
    return save_checkpoint(model, snapshot_path(ctx.checkpoints / f"{trial_id}.safetensors", epoch),
                           {"encoder": config.encoder, "tasks": list(config.tasks), "trial": trial_id, "epoch": epoch,
                            **_sidecar_facts(config, ctx.device)})


def _resume(ctx: TrialContext, trial_id: str, epochs: int, model, opt, sched, gen) -> tuple[int, list] | None:
    """The resume state, if any; one that cannot be used is set aside with a warning and the trial
    starts from epoch 1 (see mtbench.resume), rather than failing the same way on every run."""
    try:
        return load_state(ctx.checkpoints, trial_id, epochs, model, opt, sched, gen)
    except BadState as exc:
        kept = set_aside(ctx.checkpoints, trial_id, exc.label)
        ctx.warn(f"resume state {exc.path} {exc.reason}; set aside as {', '.join(map(str, kept))}; "
                 f"trial {trial_id} trains again from epoch 1")
        return None


def _relative(path: Path, out: Path) -> str:
    """Checkpoints are stored relative to the results folder, so the folder can be moved or copied."""
    try:
        return str(Path(path).resolve().relative_to(Path(out).resolve()))
    except ValueError:
        return str(path)

