"""Frozen dataclasses that plugins return from the collecting hooks, and the callables they carry.

Heavy objects (``nn.Module``) are never built at registration time: a spec carries a factory. The
callables a spec carries are typed by the protocols below, so the contract states what mtbench
passes and what it expects back rather than ``Callable[..., Any]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # keep `import mtbench` free of torch for the report command
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from mtbench.configs import DataConfig

Losses = Mapping[str, "torch.Tensor"]
"""Task name -> per-sample loss (B,), for every task of the model."""


class PerSample(Protocol):
    """A metric's per-sample form: one value per sample, shape (B,)."""

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class Statistics(Protocol):
    """Per-sample statistics, shape (B, K), that an ``Aggregate`` turns into a split's value
    (segmentation: each class's intersection and union pixel counts)."""

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class Aggregate(Protocol):
    """The split's value (a 0-dim tensor) from the statistics of all its samples, stacked (N, K)."""

    def __call__(self, statistics: torch.Tensor) -> torch.Tensor: ...


class Objective(Protocol):
    """What an attack ascends: the per-sample losses of every task in, one value per sample (B,) out."""

    def __call__(self, losses: Losses) -> torch.Tensor: ...


@runtime_checkable
class AdaptiveObjective(Objective, Protocol):
    """An objective that judges progress from the losses at the start of the attack (``relative`` = WGD).

    mtbench calls ``start(losses)`` with the clean losses of every task before an attack runs on a
    batch, and again with the whole split's clean losses before it measures the split's objective;
    each call replaces the previous start, so nothing carries over between batches. An objective
    without ``start`` is plain: a fixed function of the losses.
    """

    def start(self, losses: Losses) -> None: ...


def start_objective(objective: Objective, losses: Losses) -> None:
    """Give an adaptive objective the clean losses it measures progress from; a plain one needs nothing."""
    if isinstance(objective, AdaptiveObjective):
        objective.start(losses)


class MakeObjective(Protocol):
    """``make(attacked, weights)``: the objective for these attacked tasks and the grid's weights (or None)."""

    def __call__(self, attacked: tuple[str, ...], weights: Mapping[str, float] | None) -> Objective: ...


class PrepareData(Protocol):
    """Make sure the data of a ``[data]`` section exists (generating it once if it is synthetic) and
    return the folder that holds it; ``cache_dir`` is where generated data may go."""

    def __call__(self, data: DataConfig, cache_dir: Path) -> Path: ...


class OpenSplit(Protocol):
    """A ``torch.utils.data.Dataset`` of ``(image, {task: target}, {task: mask})`` for one split
    (``"train"``, ``"val"`` or ``"test"``) of the data under ``root``, decoded for ``tasks`` at
    ``image_size`` pixels, with at most ``limit`` samples (None: all)."""

    def __call__(self, root: Path, data: DataConfig, split: str, tasks: Mapping[str, TaskSpec],
                 image_size: int, limit: int | None) -> Dataset: ...


class CheckData(Protocol):
    """Raise ``MtbenchError`` for a ``[data]`` section that ``prepare`` would refuse."""

    def __call__(self, data: DataConfig) -> None: ...


@dataclass(frozen=True)
class Domain:
    """One on-disk Taskonomy domain folder and its PNG format."""

    name: str
    bits: Literal[8, 16]
    channels: int
    resample: Literal["nearest", "area", "bilinear"] = "nearest"
    """How the loader resizes it: nearest for labels, bilinear for continuous maps, area for the image."""


@dataclass(frozen=True)
class MetricSpec:
    """A metric: its per-sample form and how a split's value is made from it.

    ``fn(pred, target, mask)`` gives one value per sample: what per-sample tables, traces and
    per-sample ratios use. The split's value is the mean of these, unless the metric is not a mean
    of per-sample values (segmentation's dataset mIoU: the intersections of every sample summed,
    over the summed unions). Such a metric also gives ``statistics(pred, target, mask) -> (B, K)``
    and ``aggregate(stacked (N, K)) -> value``, and its ``fn`` of one sample is the ``aggregate``
    of that sample's statistics (``mtbench.testing.check_task`` checks it).
    """

    name: str
    fn: PerSample
    higher_is_better: bool = False
    description: str = ""
    statistics: Statistics | None = None
    aggregate: Aggregate | None = None

    def __post_init__(self) -> None:
        if (self.statistics is None) != (self.aggregate is None):
            raise ValueError(f"metric {self.name!r}: give both statistics and aggregate, or neither")


@dataclass(frozen=True)
class TaskSpec:
    """One dense prediction task: how its label is decoded, its head width, loss and metrics.

    ``decode(raw)`` gets the raw, already-resized arrays of ``domains`` (H x W or H x W x C, in
    their on-disk dtype) and returns ``(target C x H x W float32, mask 1 x H x W bool)``; the
    target is what the head's output is compared with. ``loss(pred, target, mask, **options)``
    returns one value per sample. ``error_metric`` names the paper's clean error metric.
    """

    name: str
    code: str
    channels: int
    domains: tuple[Domain, ...]
    decode: Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]
    loss: Callable[..., torch.Tensor]
    metrics: tuple[MetricSpec, ...]
    error_metric: str
    classification: bool = False
    """True if the target is a 1-channel map of class indices and the head outputs one logit per class."""
    description: str = ""

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"task {self.name!r} has no metric {name!r}")

    def with_loss_options(self, options: Mapping[str, Any] | None) -> TaskSpec:
        """This task with ``options`` (a grid's ``[train] loss_options`` for it) bound into ``loss``, so
        that whoever calls ``loss(pred, target, mask)`` gets the loss the model was trained with."""
        if not options:
            return self
        return dataclasses.replace(self, loss=functools.partial(self.loss, **options))


def with_loss_options(tasks: Mapping[str, TaskSpec], options: Mapping[str, Mapping[str, Any]]) -> dict[str, TaskSpec]:
    """Every task of a model with its training loss options bound (``options``: task name -> keyword
    arguments). The one place where loss options apply: training, attacks, E[dL] and the gradient
    analysis all take their tasks from here, so the loss attacked and analysed is the loss trained."""
    return {name: spec.with_loss_options(options.get(name)) for name, spec in tasks.items()}


@dataclass(frozen=True)
class EncoderSpec:
    """A shared backbone and the decoder family that goes with it."""

    name: str
    out_channels: int
    stride: int
    build: Callable[[], nn.Module]
    build_decoder: Callable[[int], nn.Module]
    """``build_decoder(task_channels)``: a head from the encoder's features to input resolution."""
    description: str = ""
    revision: str = ""
    """Change it whenever the encoder's or its decoders' layers change: it is part of a training trial's id,
    so models stored with other layers are never taken for these (nor their checkpoints loaded into them)."""


@dataclass(frozen=True)
class AttackRequest:
    """Everything an attack needs; built by the evaluator, read by attack plugins."""

    model: nn.Module
    images: torch.Tensor
    targets: Mapping[str, torch.Tensor]
    masks: Mapping[str, torch.Tensor]
    tasks: Mapping[str, TaskSpec]
    attacked: tuple[str, ...]
    objective: Objective
    """Per-task per-sample losses -> per-sample scalar to ascend; already started if adaptive."""
    eps: float
    steps: int
    step_size: float
    generator: torch.Generator
    random_start: bool = False
    restarts: int = 1
    paper_compat: bool = False
    trace: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackResult:
    """The adversarial batch and, if requested, per-step traces.

    ``trace[k][task][metric]`` is a per-sample tensor at iterate k (k = 0 is the start point);
    the special task ``"objective"`` holds the attacked objective.
    """

    adversarial: torch.Tensor
    trace: list[dict[str, dict[str, torch.Tensor]]] = field(default_factory=list)
    info: Mapping[str, Any] = field(default_factory=dict)
    """Anything else worth storing; ``info["winner"]`` (per-sample member index) with
    ``info["members"]`` (their names) is stored as each member's share of samples won."""


@dataclass(frozen=True)
class AttackSpec:
    """An attack algorithm: ``run(request) -> AttackResult``."""

    name: str
    norm: Literal["linf", "l2"]
    run: Callable[[AttackRequest], AttackResult]
    description: str = ""


@dataclass(frozen=True)
class ObjectiveSpec:
    """How attacked tasks' losses combine into the scalar an attack ascends.

    ``make(attacked, weights)`` returns an :class:`Objective`, ``f(losses) -> Tensor (B,)`` where
    ``losses`` maps every task of the model to its per-sample loss; a fresh one per trial, so it
    may keep state. An objective that measures progress from the clean point is an
    :class:`AdaptiveObjective`: it also has ``start(losses)``. ``exact_targets`` = number of
    attacked tasks the objective requires (``single`` wants 1), or None for any.
    """

    name: str
    make: MakeObjective
    exact_targets: int | None = None
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A source of samples in the Taskonomy layout.

    ``prepare(data, cache_dir) -> root`` makes sure the data of the ``[data]`` section ``data``
    exists (generating it if it is synthetic) and returns the folder that holds it;
    ``open(root, data, split, tasks, image_size, limit)`` returns a ``torch.utils.data.Dataset``
    of ``(image, {task: target}, {task: mask})``. ``check(data)``, if given, runs before any work
    or write of ``mtbench run`` and ``mtbench worker`` (not ``--dry-run``, whose grids may name
    folders of another machine): it raises ``MtbenchError`` for settings that ``prepare`` would
    refuse, such as a missing folder or a folder the dataset may not write into. Keep it cheap: a
    few file-system checks.
    """

    name: str
    prepare: PrepareData
    open: OpenSplit
    description: str = ""
    check: CheckData | None = None
    revision: str = ""  # changes when the same settings would give other samples (a generator's version):
    # part of every trial id (DataConfig.revision), so models of other data are other models


class Craft(Protocol):
    """A defence's attack handle (:attr:`DefenseRequest.craft`): run any registered attack and objective on
    the model being trained and return the adversarial images (detached, the shape of ``images``).

    It crafts in eval mode with every parameter frozen (``requires_grad`` off, so no parameter gradient
    accumulates and BatchNorm's running statistics stay as they are), then puts the model back in train
    mode with its ``requires_grad`` flags. ``attacked`` defaults to every task of the model, ``images``
    to the request's, ``step_size`` to ``eps / 4``; random starts draw from the request's generator."""

    def __call__(self, *, attack: str = "pgd-linf", eps: float, steps: int = 10, step_size: float | None = None,
                 attacked: Sequence[str] | None = None, objective: str = "sum",
                 weights: Mapping[str, float] | None = None, random_start: bool = True, restarts: int = 1,
                 images: torch.Tensor | None = None, options: Mapping[str, Any] | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class DefenseRequest:
    """One training step's batch and everything a defence may use to make its loss; built by the trainer
    (and by ``mtbench.testing.check_defense``), read by defence plugins.

    The model is in train mode. ``tasks`` are the model's tasks, main task first, with their training loss
    options bound; ``weights`` is the grid's weighting (task -> weight); ``options`` are the grid's options
    of this defence, as its ``validate`` resolved them."""

    model: nn.Module
    images: torch.Tensor
    targets: Mapping[str, torch.Tensor]
    masks: Mapping[str, torch.Tensor]
    tasks: Mapping[str, TaskSpec]
    weights: Mapping[str, float]
    options: Mapping[str, Any]
    craft: Craft
    generator: torch.Generator
    """Seeded per epoch and batch: draw any randomness from it, so that a resumed training is the same."""

    def losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample loss (B,) of every task at ``images``, the model in its current mode."""
        outputs = self.model(images)
        return {t: spec.loss(outputs[t], self.targets[t], self.masks[t]) for t, spec in self.tasks.items()}

    def weighted(self, losses: Losses) -> torch.Tensor:
        """The weighting's training loss: the weighted sum of each task's batch-mean loss."""
        return sum(self.weights[t] * losses[t].mean() for t in self.tasks)  # type: ignore[return-value]


@dataclass(frozen=True)
class DefenseStep:
    """What a defence's loss returns for one training step."""

    total: torch.Tensor
    """The 0-dim loss the trainer back-propagates."""
    losses: Losses
    """Per task, the per-sample loss (B,) the step trained on (logged as the epoch's training losses)."""


class DefenseLoss(Protocol):
    """The loss of one training step, from the batch, the model and the defence's options."""

    def __call__(self, request: DefenseRequest) -> DefenseStep: ...


class ResolveOptions(Protocol):
    """A grid's options of a defence for a model of these tasks (main task first) -> every option resolved
    (defaults filled in, task codes as names): what the training trial's id holds and its loss gets.
    Raises :class:`DefenseOptionError` (or ``ValueError``) for an option it refuses."""

    def __call__(self, options: Mapping[str, Any], tasks: Sequence[TaskSpec]) -> dict[str, Any]: ...


class DefenseOptionError(ValueError):
    """A defence refuses one of its options; the grid reports it at ``train.defense.<option>``."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(message)


@dataclass(frozen=True)
class DefenseSpec:
    """A training-time defence: ``loss(request) -> DefenseStep`` replaces a training step's weighted sum of
    the task losses. ``validate(options, tasks)`` resolves the grid's options for a model; a defence
    without it takes no options. Resolved options that name an ``attack`` or an ``objective`` are checked
    against the registries when the grid is read. Its loss may craft adversarial examples with the
    request's :class:`Craft` handle."""

    name: str
    loss: DefenseLoss
    description: str = ""
    validate: ResolveOptions | None = None
