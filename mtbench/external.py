"""Models trained elsewhere (a grid's ``[[model]]``): built by an importable factory, loaded with their
weights, checked on one batch, and wrapped to look like mtbench's own models to every trial."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from mtbench.errors import MtbenchError


class ExternalModel(nn.Module):
    """A model trained elsewhere (a grid's ``[[model]]``) as mtbench's own look: ``tasks`` and
    ``forward(x) -> {task: prediction}`` for images in [0, 1]. The module's outputs for other tasks
    are dropped; its state dict is the module's under ``module.``."""

    def __init__(self, module: nn.Module, tasks: Sequence[str], factory: str):
        super().__init__()
        self.module = module
        self.task_names = list(tasks)
        self.factory = factory

    @property
    def tasks(self) -> list[str]:
        return self.task_names

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.module(x)
        return {task: out[task] for task in self.task_names}


def build_external(factory: str, tasks: Sequence[str], weights: Path | None = None) -> ExternalModel:
    """Call ``package.module:function`` and load ``weights`` (safetensors, strict) into what it returns.
    Raises :class:`ExternalModelError` saying what went wrong (import, call, type, weights)."""
    import importlib

    module_name, _, attribute = factory.partition(":")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExternalModelError("factory", f"cannot import {module_name!r} ({exc}): install its package, or "
                                            "put the folder that holds it on PYTHONPATH") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ExternalModelError("factory", f"module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ExternalModelError("factory", f"{factory} is not callable")
    try:
        module = target()
    except Exception as exc:  # the user's code may raise anything
        raise ExternalModelError("factory", f"{factory}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ExternalModelError("factory", f"{factory}() returned a {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(module, Path(weights))
    return ExternalModel(module, tasks, factory)


def _load_weights(module: nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ExternalModelError("weights", f"{path}: not a readable safetensors file ({exc}); mtbench never "
                                            "loads pickles") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ExternalModelError("weights", f"{path}: the weights do not fit the module ({' '.join(first[:3])})") \
            from None


@torch.no_grad()
def check_outputs(model: ExternalModel, channels: Mapping[str, int], image_size: int) -> list[str]:
    """What is wrong with the model's outputs on a batch of two blank images (empty: nothing): each task
    must be in the dict its module returns, as a float tensor (2, channels, image_size, image_size)."""
    was_training = model.training
    model.eval()
    try:
        out = model.module(torch.zeros(2, 3, image_size, image_size))
    except Exception as exc:  # the user's forward may raise anything
        return [f"the module's forward on a (2, 3, {image_size}, {image_size}) batch raised "
                f"{type(exc).__name__}: {exc}"]
    finally:
        model.train(was_training)
    if not isinstance(out, Mapping):
        return [f"the module returned a {type(out).__name__}; expected a dict from task name to output"]
    problems = []
    for task, c in channels.items():
        expected = (2, c, image_size, image_size)
        if task not in out:
            problems.append(f"its outputs lack task {task!r} (it returned {sorted(map(str, out))})")
        elif not isinstance(out[task], torch.Tensor) or not out[task].is_floating_point():
            problems.append(f"its output for {task!r} is not a float tensor")
        elif tuple(out[task].shape) != expected:
            problems.append(f"its output for {task!r} has shape {tuple(out[task].shape)}; expected {expected} "
                            "(batch, the task's channels, height, width of the input)")
    return problems


class ExternalModelError(MtbenchError):
    """A ``[[model]]`` that cannot be built: ``key`` is the grid key at fault (factory or weights)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
