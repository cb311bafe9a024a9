"""Helpers for testing mtbench and its plugins without training anything.

``tiny_encoder_spec()`` is a two-layer encoder small enough for unit tests; ``tiny_model`` builds
a multi-task model on it; ``fake_batch`` makes a random batch with targets and masks shaped for
any task set; ``attack_request`` wraps them for an attack, as the evaluator does. The contract
checks ``check_task``, ``check_attack``, ``check_objective``, ``check_encoder`` and ``check_defense`` raise
``AssertionError`` with a message saying what a plugin got wrong. ``mtbench.pytest_plugin`` offers
the same as pytest fixtures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mtbench.defaults import DEFAULT_OBJECTIVE, KIT_TASKS
from mtbench.defend import defense_request
from mtbench.models import MultiTaskModel
from mtbench.plugins import Plugins, get_plugins
from mtbench.specs import (
    AdaptiveObjective,
    AttackRequest,
    AttackSpec,
    DefenseSpec,
    DefenseStep,
    EncoderSpec,
    MetricSpec,
    ObjectiveSpec,
    TaskSpec,
    start_objective,
)


class TinyEncoder(nn.Sequential):
    def __init__(self, width: int = 8):
        super().__init__(
            nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
        )


class TinyDecoder(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 4):
        layers: list[nn.Module] = []
        c = in_channels
        while stride > 1:
            layers += [nn.ConvTranspose2d(c, 8, 2, 2), nn.ReLU()]
            c, stride = 8, stride // 2
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        super().__init__(*layers)


def tiny_encoder_spec(width: int = 8) -> EncoderSpec:
    return EncoderSpec("tiny", width, 4, lambda: TinyEncoder(width), lambda ch: TinyDecoder(width, ch, 4),
                       "a 2-layer encoder for tests")


def tiny_model(tasks: Sequence[str], plugins: Plugins | None = None, seed: int = 0) -> MultiTaskModel:
    plugins = plugins or get_plugins()
    torch.manual_seed(seed)
    spec = tiny_encoder_spec()
    return MultiTaskModel(spec.build(), {t: spec.build_decoder(plugins.tasks.get(t).channels) for t in tasks},
                          spec.stride).eval()


def fake_targets(spec: TaskSpec, batch: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random target and mask for one task: class indices or values in [-1, 1]."""
    if spec.classification:
        target = torch.randint(0, spec.channels, (batch, 1, size, size), generator=g).float()
    else:
        target = torch.rand(batch, spec.channels, size, size, generator=g) * 2 - 1
    return target, torch.rand(batch, 1, size, size, generator=g) > 0.1


def fake_batch(tasks: Sequence[str], size: int = 16, batch: int = 2, plugins: Plugins | None = None,
               seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Images in [0, 1] with random targets and masks for every task."""
    plugins = plugins or get_plugins()
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    pairs = {t: fake_targets(plugins.tasks.get(t), batch, size, g) for t in tasks}
    return images, {t: p[0] for t, p in pairs.items()}, {t: p[1] for t, p in pairs.items()}


def check_task(spec: TaskSpec, batch: int = 2, size: int = 16) -> None:
    """Assert a task spec's contract: loss and metrics per sample (B,), floating point and finite,
    the error metric among the metrics, a perfect prediction scoring zero loss (regression) and
    every metric at least as good as for a random prediction, in its declared direction; an
    aggregated metric's statistics per sample (B, K) and its per-sample value the aggregate of
    that sample's statistics."""
    g = torch.Generator().manual_seed(0)
    target, mask = fake_targets(spec, batch, size, g)
    pred = torch.randn(batch, spec.channels, size, size, generator=g)
    loss = spec.loss(pred, target, mask)
    assert loss.shape == (batch,), f"{spec.name}: loss must be per sample (B,), got {tuple(loss.shape)}"
    assert loss.dtype.is_floating_point, f"{spec.name}: loss must be floating point, got {loss.dtype}"
    assert torch.isfinite(loss).all(), f"{spec.name}: loss is not finite"
    pred.requires_grad_(True)
    spec.loss(pred, target, mask).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all(), f"{spec.name}: loss has no finite gradient"
    perfect = _perfect_prediction(spec, target)
    for m in spec.metrics:
        v = m.fn(pred.detach(), target, mask)
        assert v.shape == (batch,), f"{spec.name}.{m.name}: metric must be per sample (B,), got {tuple(v.shape)}"
        assert torch.isfinite(v).all(), f"{spec.name}.{m.name}: metric is not finite"
        best = m.fn(perfect, target, mask)
        better = best >= v - 1e-6 if m.higher_is_better else best <= v + 1e-6
        assert better.all(), (f"{spec.name}.{m.name}: a perfect prediction scores worse than a random one; "
                              f"is higher_is_better={m.higher_is_better} right?")
        if m.statistics is not None:
            _check_aggregate(f"{spec.name}.{m.name}", m, (pred.detach(), target, mask), v)
    assert spec.error_metric in {m.name for m in spec.metrics}, f"{spec.name}: error_metric is not a metric"
    if not spec.classification:
        assert torch.allclose(spec.loss(target, target, mask), torch.zeros(batch)), f"{spec.name}: perfect != 0"


def _check_aggregate(name: str, metric: MetricSpec, args: tuple[torch.Tensor, ...], values: torch.Tensor) -> None:
    """Statistics (B, K); the aggregate of one sample's statistics is that sample's ``fn`` value, so that
    per-sample tables and the split's value measure the same thing."""
    stats = metric.statistics(*args)
    batch = values.shape[0]
    assert stats.ndim == 2 and stats.shape[0] == batch, (
        f"{name}: statistics must be per sample (B, K) = ({batch}, K), got {tuple(stats.shape)}")
    total = metric.aggregate(stats)
    assert total.ndim == 0 and torch.isfinite(total), f"{name}: aggregate must give one finite value, got {total}"
    alone = torch.stack([metric.aggregate(stats[i:i + 1]) for i in range(batch)]).to(values.dtype)
    assert torch.allclose(alone, values, atol=1e-5), (
        f"{name}: fn gives {values.tolist()} per sample but the aggregate of each sample's statistics gives "
        f"{alone.tolist()}; fn must be the one-sample case of the aggregate")


def _perfect_prediction(spec: TaskSpec, target: torch.Tensor) -> torch.Tensor:
    if spec.classification:
        return torch.nn.functional.one_hot(target[:, 0].long(), spec.channels).permute(0, 3, 1, 2).float() * 20
    return target.clone()


def losses_at(model: MultiTaskModel, images: torch.Tensor, targets, masks,
              tasks: Mapping[str, TaskSpec]) -> dict[str, torch.Tensor]:
    """Per-sample loss of every task at these images, without gradients."""
    with torch.no_grad():
        outputs = model(images)
    return {t: spec.loss(outputs[t], targets[t], masks[t]) for t, spec in tasks.items()}


def attack_request(model: MultiTaskModel, batch, attacked: Sequence[str], eps: float = 8 / 255, steps: int = 3,
                   step_size: float | None = None, seed: int = 0, objective: str = DEFAULT_OBJECTIVE,
                   plugins: Plugins | None = None, **options) -> AttackRequest:
    """An :class:`AttackRequest` as the evaluator builds it, for a model and a ``fake_batch``: an
    adaptive objective is already started from the clean losses."""
    plugins = plugins or get_plugins()
    images, targets, masks = batch
    tasks = {t: plugins.tasks.get(t) for t in model.tasks}
    made = plugins.objectives.get(objective).make(tuple(attacked), None)
    start_objective(made, losses_at(model.eval(), images, targets, masks, tasks))
    return AttackRequest(model=model, images=images, targets=targets, masks=masks, tasks=tasks,
                         attacked=tuple(attacked), objective=made, eps=eps, steps=steps,
                         step_size=step_size if step_size is not None else eps / 4,
                         generator=torch.Generator().manual_seed(seed), **options)


def check_attack(spec: AttackSpec, tasks: Sequence[str] = KIT_TASKS, eps: float | None = None, steps: int = 3,
                 plugins: Plugins | None = None, objective: str = DEFAULT_OBJECTIVE) -> None:
    """Assert an attack's contract on a tiny model: same shape and dtype, inside the eps-ball of its
    norm and the [0, 1] box, eps = 0 gives the clean images, the same seed gives the same result,
    the objective (started from the clean losses if adaptive) does not go down on average, and the
    model's parameters are untouched."""
    plugins = plugins or get_plugins()
    eps = eps if eps is not None else (8 / 255 if spec.norm == "linf" else 0.5)
    model = tiny_model(list(tasks), plugins)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = fake_batch(list(tasks), size=16, batch=3, plugins=plugins)
    images = batch[0]
    attacked = tuple(tasks)

    def request(eps: float) -> AttackRequest:
        return attack_request(model, batch, attacked, eps=eps, steps=steps, objective=objective, plugins=plugins)

    first = request(eps)
    adv = spec.run(first).adversarial
    name = spec.name
    assert adv.shape == images.shape and adv.dtype == images.dtype, (
        f"{name}: adversarial batch is {tuple(adv.shape)} {adv.dtype}, expected {tuple(images.shape)} {images.dtype}")
    delta = (adv - images).flatten(1)
    size = delta.abs().amax(1) if spec.norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), f"{name}: perturbation {size.max():.4g} exceeds eps {eps:.4g}"
    assert adv.min() >= 0 and adv.max() <= 1, f"{name}: adversarial images leave the [0, 1] box"
    again = spec.run(request(eps)).adversarial
    assert torch.equal(adv, again), f"{name}: the same seed gave different adversarial images"
    zero = spec.run(request(0.0)).adversarial
    assert torch.allclose(zero, images, atol=1e-7), f"{name}: eps = 0 changed the images"
    clean = losses_at(model, *batch, first.tasks)
    start_objective(first.objective, clean)  # from the same clean losses, as the evaluator does after the attack
    with torch.no_grad():
        clean_value = first.objective(clean).mean()
        adv_value = first.objective(losses_at(model, adv, *batch[1:], first.tasks)).mean()
    assert adv_value >= clean_value - 1e-6, (
        f"{name}: the attacked objective ({objective}) went down: {clean_value:.4g} -> {adv_value:.4g}")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{name}: the attack changed the model's {k}"


def check_objective(spec: ObjectiveSpec, batch: int = 4) -> None:
    """Assert an objective's contract on random losses of three tasks, the first ones attacked: one
    finite value per sample (B,), a gradient reaching an attacked task's loss, a sample's value
    independent of the other samples, not lower when the attacked losses rise; an adaptive one's
    ``start`` returns nothing and replaces the previous start, so nothing carries over between batches."""
    tasks = ("t0", "t1", "t2")
    attacked = tasks[:spec.exact_targets or 2]
    weights = {t: 1.0 + i for i, t in enumerate(tasks)}
    objective = spec.make(attacked, weights)
    name = spec.name
    g = torch.Generator().manual_seed(0)
    clean = {t: torch.rand(batch, generator=g) + 0.5 for t in tasks}
    losses = {t: (v * (1 + torch.rand(batch, generator=g))).requires_grad_(True) for t, v in clean.items()}

    def value(at: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The objective at these losses, started from the clean ones as the evaluator does."""
        if isinstance(objective, AdaptiveObjective):
            assert objective.start(clean) is None, f"{name}: start(losses) must return None"
        return objective(at)

    out = value(losses)
    assert out.shape == (batch,), f"{name}: the objective must be per sample (B,) = ({batch},), got {tuple(out.shape)}"
    assert out.dtype.is_floating_point and torch.isfinite(out).all(), f"{name}: the objective is not finite"
    grads = torch.autograd.grad(out.sum(), [losses[t] for t in attacked], allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), (
        f"{name}: no gradient reaches the attacked tasks' losses")
    with torch.no_grad():
        first = value(losses)
        others = {t: torch.cat([v[:1], v[1:] * 3]) for t, v in losses.items()}
        assert torch.allclose(value(others)[:1], first[:1]), (
            f"{name}: sample 0's value changed with the other samples' losses; it must be per sample")
        higher = {t: v * 2 if t in attacked else v for t, v in losses.items()}
        assert (value(higher) >= first - 1e-6).all(), f"{name}: raising the attacked losses lowered the objective"
    if isinstance(objective, AdaptiveObjective):  # a batch attacked after another must not depend on it
        after, fresh = spec.make(attacked, weights), spec.make(attacked, weights)
        after.start({t: v * 4 for t, v in clean.items()})
        after(losses)  # with gradients, so that state such as a step counter moves on
        after.start(clean)
        fresh.start(clean)
        outcomes = []
        for made in (after, fresh):
            out = made(losses)
            grads = torch.autograd.grad(out.sum(), [losses[t] for t in attacked], allow_unused=True)
            outcomes.append([out.detach()] + [gr if gr is not None else torch.zeros(batch) for gr in grads])
        assert all(torch.allclose(x, y) for x, y in zip(*outcomes)), (
            f"{name}: start(losses) did not replace the previous start; a batch would depend on the one before")


def check_encoder(spec: EncoderSpec, size: int | None = None, channels: int = 3) -> None:
    """Assert an encoder's contract: a (B, out_channels, size/stride, size/stride) feature map, a
    decoder back to (B, channels, size, size), and deterministic outputs in eval mode."""
    size = size or spec.stride * 2
    torch.manual_seed(0)
    encoder, decoder = spec.build().eval(), spec.build_decoder(channels).eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        features = encoder(x)
        expected = (2, spec.out_channels, size // spec.stride, size // spec.stride)
        assert tuple(features.shape) == expected, (
            f"{spec.name}: features are {tuple(features.shape)}, expected {expected} (out_channels, stride)")
        out = MultiTaskModel(encoder, {"t": decoder}, spec.stride)(x)["t"]
        assert tuple(out.shape) == (2, channels, size, size), (
            f"{spec.name}: its decoder gives {tuple(out.shape)}, expected {(2, channels, size, size)}")
        assert torch.equal(out, MultiTaskModel(encoder, {"t": decoder}, spec.stride)(x)["t"]), (
            f"{spec.name}: outputs differ between two calls in eval mode")


def defense_options(spec: DefenseSpec, tasks: Sequence[str], options: Mapping[str, Any] | None = None,
                    plugins: Plugins | None = None) -> dict[str, Any]:
    """A defence's options resolved for a model of ``tasks``, as a grid resolves them (none without ``validate``)."""
    plugins = plugins or get_plugins()
    if spec.validate is None:
        assert not options, f"{spec.name}: takes no options (it has no validate), got {dict(options or {})}"
        return {}
    return dict(spec.validate(dict(options or {}), [plugins.tasks.get(t) for t in tasks]))


def check_defense(spec: DefenseSpec, tasks: Sequence[str] = KIT_TASKS, options: Mapping[str, Any] | None = None,
                  plugins: Plugins | None = None) -> DefenseStep:
    """Assert a defence's contract on a tiny model in train mode and a ``fake_batch``, with ``options``
    resolved by its ``validate``: a :class:`DefenseStep` whose total is a finite 0-dim tensor that gives
    every parameter a finite gradient (some of them non-zero), per-sample losses (B,) of every task, the
    model in train mode afterwards; and at every call of the attack handle: the model in eval mode with
    no parameter requiring a gradient while it crafts, its BatchNorm statistics unchanged and no parameter
    gradient accumulated by crafting, train mode and ``requires_grad`` restored after. Returns the step."""
    plugins = plugins or get_plugins()
    resolved = defense_options(spec, tasks, options, plugins)
    model = tiny_model(list(tasks), plugins).train()
    batch = fake_batch(list(tasks), size=16, batch=3, plugins=plugins)
    specs = {t: plugins.tasks.get(t) for t in tasks}
    request = defense_request(model, batch, specs, {t: 1.0 / len(tasks) for t in tasks}, resolved, plugins,
                              torch.Generator().manual_seed(0))
    name = spec.name
    seen: list[tuple[bool, bool]] = []  # (training, any parameter requiring a gradient) at each crafting forward

    def spy(module: nn.Module, args: Any) -> None:
        if crafting:
            seen.append((module.training, any(p.requires_grad for p in module.parameters())))

    def craft(**kwargs: Any) -> torch.Tensor:
        nonlocal crafting
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        grads = {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}
        crafting = True
        try:
            adversarial = request.craft(**kwargs)
        finally:
            crafting = False
        assert model.training, f"{name}: the model is not in train mode after crafting"
        assert all(p.requires_grad for p in model.parameters()), f"{name}: crafting left parameters frozen"
        for k, v in model.named_buffers():
            assert torch.equal(v, buffers[k]), f"{name}: crafting changed the model's {k} (BatchNorm statistics)"
        for k, p in model.named_parameters():
            same = p.grad is None if grads[k] is None else p.grad is not None and torch.equal(p.grad, grads[k])
            assert same, f"{name}: crafting gave the parameter {k} a gradient"
        assert adversarial.shape == batch[0].shape, f"{name}: crafted {tuple(adversarial.shape)} images"
        return adversarial

    crafting = False
    hook = model.register_forward_pre_hook(spy)
    try:
        step = spec.loss(dataclasses.replace(request, craft=craft))
    finally:
        hook.remove()
    assert not any(training or unfrozen for training, unfrozen in seen), (
        f"{name}: crafting ran the model in train mode or with parameters requiring gradients")
    assert isinstance(step, DefenseStep), f"{name}: the loss must return a DefenseStep, got {type(step).__name__}"
    total = step.total
    assert isinstance(total, torch.Tensor) and total.ndim == 0, f"{name}: total must be a 0-dim tensor, got {total!r}"
    assert torch.isfinite(total), f"{name}: total is not finite ({total})"
    assert total.requires_grad, f"{name}: total has no gradient for the parameters"
    assert set(step.losses) == set(tasks), f"{name}: losses are for {sorted(step.losses)}, expected {sorted(tasks)}"
    for t, v in step.losses.items():
        assert v.shape == (3,), f"{name}: the loss of {t} must be per sample (B,) = (3,), got {tuple(v.shape)}"
    assert model.training, f"{name}: the model is not in train mode after the loss"
    total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is None or torch.isfinite(g).all() for g in grads), f"{name}: a parameter's gradient is not finite"
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no parameter gets a gradient"
    return step
