"""Frozen dataclasses that plugins return from the collecting hooks.

Heavy objects (``nn.Module``) are never built at registration time: a spec carries a factory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # keep `import mtbench` free of torch for the report command
    import numpy as np
    import torch
    from torch import nn

PerSample = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
"""``f(pred, target, mask) -> Tensor (B,)``: one value per sample."""


@dataclass(frozen=True)
class Domain:
    """One on-disk Taskonomy domain folder and its PNG format."""

    name: str
    bits: Literal[8, 16]
    channels: int
    resample: Literal["nearest", "area"] = "nearest"


@dataclass(frozen=True)
class MetricSpec:
    """A per-sample metric; the dataset value is the mean over samples."""

    name: str
    fn: PerSample
    higher_is_better: bool = False
    description: str = ""


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
    decode: Callable[[Mapping[str, "np.ndarray"]], tuple["np.ndarray", "np.ndarray"]]
    loss: Callable[..., "torch.Tensor"]
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


@dataclass(frozen=True)
class EncoderSpec:
    """A shared backbone and the decoder family that goes with it."""

    name: str
    out_channels: int
    stride: int
    build: Callable[[], "nn.Module"]
    build_decoder: Callable[[int], "nn.Module"]
    """``build_decoder(task_channels)``: a head from the encoder's features to input resolution."""
    description: str = ""


@dataclass(frozen=True)
class AttackRequest:
    """Everything an attack needs; built by the evaluator, read by attack plugins."""

    model: "nn.Module"
    images: "torch.Tensor"
    targets: Mapping[str, "torch.Tensor"]
    masks: Mapping[str, "torch.Tensor"]
    tasks: Mapping[str, TaskSpec]
    attacked: tuple[str, ...]
    objective: Callable[[Mapping[str, "torch.Tensor"]], "torch.Tensor"]
    """Per-task per-sample losses -> per-sample scalar to ascend."""
    eps: float
    steps: int
    step_size: float
    generator: "torch.Generator"
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

    adversarial: "torch.Tensor"
    trace: list[dict[str, dict[str, "torch.Tensor"]]] = field(default_factory=list)
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

    ``make(attacked, weights)`` returns ``f(losses) -> Tensor (B,)`` where ``losses`` maps every
    task of the model to its per-sample loss. ``exact_targets`` = number of attacked tasks the
    objective requires (``single`` wants 1), or None for any.
    """

    name: str
    make: Callable[[tuple[str, ...], Mapping[str, float] | None], Callable[[Mapping[str, "torch.Tensor"]], "torch.Tensor"]]
    exact_targets: int | None = None
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A source of samples in the Taskonomy layout.

    ``prepare(data_config, cache_dir) -> root`` makes sure the data exists (generating it if it
    is synthetic) and returns the folder that holds it; ``open(root, split, tasks, image_size,
    limit)`` returns a ``torch.utils.data.Dataset`` of ``(image, {task: target}, {task: mask})``.
    ``check(data_config)``, if given, runs before any work or write of ``mtbench run`` and
    ``mtbench worker`` (not ``--dry-run``, whose grids may name folders of another machine): it
    raises ``MtbenchError`` for settings that ``prepare`` would refuse, such as a missing folder
    or a folder the dataset may not write into. Keep it cheap: a few file-system checks.
    """

    name: str
    prepare: Callable[[Mapping[str, Any], Any], Any]
    open: Callable[..., Any]
    description: str = ""
    check: Callable[[Mapping[str, Any]], None] | None = None
