"""What a defence gets for one training step: the :class:`~mtbench.specs.DefenseRequest`, with its attack
handle, built the same way by the trainer, the plugin kit (``check_defense``) and the benchmark.

The handle crafts on the live model (no folded BatchNorm, unlike an attack trial's copy: the weights
change every step), in eval mode with the parameters frozen, and gives the model back as it found it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mtbench.defaults import DEFAULT_OBJECTIVE
from mtbench.errors import MtbenchError
from mtbench.plugins import Plugins
from mtbench.specs import AdaptiveObjective, AttackRequest, Craft, DefenseRequest, TaskSpec


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm uses, and keeps, its running statistics) and no parameter gradients, for
    crafting; the model's mode and ``requires_grad`` flags are restored after, whatever happens."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


def make_craft(model: nn.Module, images: torch.Tensor, targets: Mapping[str, torch.Tensor],
               masks: Mapping[str, torch.Tensor], tasks: Mapping[str, TaskSpec], plugins: Plugins,
               generator: torch.Generator) -> Craft:
    """The attack handle of one batch: builds an :class:`AttackRequest` as ``evaluate.run_attack`` does
    (the objective made for the attacked tasks and started from the clean losses if adaptive) and runs
    the attack in :func:`frozen_eval`."""

    def craft(*, attack: str = "pgd-linf", eps: float, steps: int = 10, step_size: float | None = None,
              attacked: Sequence[str] | None = None, objective: str = DEFAULT_OBJECTIVE,
              weights: Mapping[str, float] | None = None, random_start: bool = True, restarts: int = 1,
              images: torch.Tensor | None = None, options: Mapping[str, Any] | None = None) -> torch.Tensor:
        x = (base if images is None else images).detach()
        chosen = tuple(tasks) if attacked is None else tuple(attacked)
        unknown = [t for t in chosen if t not in tasks]
        if unknown:
            raise MtbenchError(f"a defence asked to attack {unknown}, which the model does not have "
                               f"(its tasks: {', '.join(tasks)})")
        made = plugins.objectives.get(objective).make(chosen, weights)
        with frozen_eval(model), torch.enable_grad():
            if isinstance(made, AdaptiveObjective):  # it measures progress from the clean losses
                with torch.no_grad():
                    outputs = model(x)
                    made.start({t: spec.loss(outputs[t], targets[t], masks[t]) for t, spec in tasks.items()})
            request = AttackRequest(
                model=model, images=x, targets=targets, masks=masks, tasks=tasks, attacked=chosen, objective=made,
                eps=float(eps), steps=int(steps), step_size=float(step_size if step_size is not None else eps / 4),
                generator=generator, random_start=random_start, restarts=restarts, trace=False,
                options=dict(options or {}))
            adversarial = plugins.attacks.get(attack).run(request).adversarial
        return adversarial.detach()

    base = images
    return craft


def batch_generator(seed: int, epoch: int, batch_index: int) -> torch.Generator:
    """The generator of one training batch's defence: a function of the trial's seed, the epoch and the
    batch, so that a training resumed after a kill draws what an uninterrupted one draws."""
    digest = hashlib.sha256(f"defense:{seed}:{epoch}:{batch_index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def defense_request(model: nn.Module, batch: tuple, tasks: Mapping[str, TaskSpec], weights: Mapping[str, float],
                    options: Mapping[str, Any], plugins: Plugins, generator: torch.Generator) -> DefenseRequest:
    """The request of one training batch (images, targets, masks already on the model's device)."""
    images, targets, masks = batch
    return DefenseRequest(model=model, images=images, targets=targets, masks=masks, tasks=tasks, weights=weights,
                          options=options, craft=make_craft(model, images, targets, masks, tasks, plugins, generator),
                          generator=generator)
