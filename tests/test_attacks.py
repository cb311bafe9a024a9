"""PGD against torchattacks, and the invariants every attack must keep."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtbench.specs import AttackRequest
from mtbench.testing import fake_batch, tiny_model

TASKS = ["segment_semantic", "depth_zbuffer"]


def request(plugins, model, images, targets, masks, attacked=("segment_semantic",), **kw) -> AttackRequest:
    tasks = {t: plugins.tasks.get(t) for t in model.tasks}
    defaults = dict(eps=8 / 255, steps=5, step_size=2 / 255, generator=torch.Generator().manual_seed(0))
    defaults.update(kw)
    objective = plugins.objectives.get("sum").make(tuple(attacked), None)
    return AttackRequest(model=model, images=images, targets=targets, masks=masks, tasks=tasks,
                         attacked=tuple(attacked), objective=objective, **defaults)


@pytest.fixture
def setup(plugins):
    model = tiny_model(TASKS, plugins)
    images, targets, masks = fake_batch(TASKS, size=16, batch=4, plugins=plugins)
    masks = {t: torch.ones_like(m) for t, m in masks.items()}  # torchattacks' CE has no mask
    return model, images, targets, masks


def test_linf_equals_torchattacks_step_for_step(plugins, setup):
    torchattacks = pytest.importorskip("torchattacks")
    model, images, targets, masks = setup

    class SegmentationOnly(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)["segment_semantic"]

    for steps in (1, 3, 7):
        ours = plugins.attacks.get("pgd-linf").run(
            request(plugins, model, images, targets, masks, steps=steps, trace=False)).adversarial
        ref = torchattacks.PGD(SegmentationOnly(model).eval(), eps=8 / 255, alpha=2 / 255, steps=steps,
                               random_start=False)(images, targets["segment_semantic"][:, 0].long())
        assert torch.allclose(ours, ref, atol=1e-6), f"differs from torchattacks after {steps} steps"


@settings(max_examples=15, deadline=None)
@given(
    norm=st.sampled_from(["pgd-linf", "pgd-l2", "fgsm"]),
    eps=st.floats(1 / 255, 0.5),
    batch=st.integers(1, 3),
    size=st.sampled_from([8, 16]),
    random_start=st.booleans(),
    restarts=st.integers(1, 2),
)
def test_invariants(plugins, norm, eps, batch, size, random_start, restarts):
    model = tiny_model(TASKS, plugins)
    images, targets, masks = fake_batch(TASKS, size=size, batch=batch, plugins=plugins, seed=batch)
    req = request(plugins, model, images, targets, masks, attacked=TASKS, eps=eps, steps=3, step_size=eps / 3,
                  random_start=random_start, restarts=restarts)
    result = plugins.attacks.get(norm).run(req)
    x = result.adversarial
    delta = (x - images).flatten(1)
    bound = delta.abs().amax(1) if plugins.attacks.get(norm).norm == "linf" else delta.norm(dim=1)
    assert bool((bound <= eps * (1 + 1e-5) + 1e-6).all())
    assert x.min() >= 0 and x.max() <= 1 and torch.isfinite(x).all()
    assert not model.training and all(p.requires_grad for p in model.parameters())
    losses = lambda z: {t: plugins.tasks.get(t).loss(o, targets[t], masks[t]) for t, o in model(z).items()}  # noqa
    with torch.no_grad():
        assert req.objective(losses(x)).sum() >= req.objective(losses(images)).sum() - 1e-6


@pytest.mark.parametrize("name", ["pgd-linf", "pgd-l2", "fgsm"])
def test_eps_zero_is_clean(plugins, setup, name):
    model, images, targets, masks = setup
    req = request(plugins, model, images, targets, masks, eps=0.0, random_start=True)
    x = plugins.attacks.get(name).run(req).adversarial
    assert torch.equal(x, images)


@pytest.mark.parametrize("name", ["pgd-linf", "pgd-l2"])
def test_same_seed_same_numbers(plugins, setup, name):
    model, images, targets, masks = setup
    run = lambda seed: plugins.attacks.get(name).run(request(  # noqa: E731
        plugins, model, images, targets, masks, random_start=True, eps=0.1 if name == "pgd-l2" else 8 / 255,
        generator=torch.Generator().manual_seed(seed))).adversarial
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


@pytest.mark.parametrize("name", ["pgd-linf", "pgd-l2"])
def test_samples_are_independent(plugins, setup, name):
    model, images, targets, masks = setup
    eps = 0.5 if name == "pgd-l2" else 8 / 255
    full = plugins.attacks.get(name).run(request(plugins, model, images, targets, masks, eps=eps)).adversarial
    changed = images.clone()
    changed[1:] = torch.rand_like(changed[1:])
    other = plugins.attacks.get(name).run(request(plugins, model, changed, targets, masks, eps=eps)).adversarial
    assert torch.allclose(full[0], other[0], atol=1e-6)


def test_loss_goes_up_along_trace(plugins, setup):
    model, images, targets, masks = setup
    result = plugins.attacks.get("pgd-linf").run(request(plugins, model, images, targets, masks, steps=6))
    objective = [p["objective"]["value"].sum().item() for p in result.trace]
    assert len(result.trace) == 7 and objective[-1] > objective[0]
    assert set(result.trace[0]) == {"objective", *TASKS}  # every task measured, attacked or not
    assert "error" in result.trace[0]["segment_semantic"] and "mse" in result.trace[0]["depth_zbuffer"]


def test_l2_random_start_is_uniform_in_ball():
    from mtbench_attacks.pgd import random_start

    x = torch.zeros(4000, 1, 2, 2)
    delta = random_start(x, 1.0, "l2", torch.Generator().manual_seed(0))
    r = delta.flatten(1).norm(dim=1)
    assert r.max() <= 1.0 + 1e-6
    # uniform in a 4-d ball: P(r <= t) = t^4
    assert (r <= 0.5).float().mean().item() == pytest.approx(0.5 ** 4, abs=0.02)


def test_paper_compat_reproduces_upstream_slips(plugins, setup):
    model, images, targets, masks = setup
    eps = 8 / 255
    x = plugins.attacks.get("pgd-linf").run(request(plugins, model, images, targets, masks, steps=0, eps=eps,
                                                    random_start=True, paper_compat=True)).adversarial
    assert torch.allclose(x, (images + eps).clamp(0, 1))  # the start is x + eps, not random
    x2 = plugins.attacks.get("pgd-l2").run(request(plugins, model, images, targets, masks, steps=3, eps=2.0,
                                                   step_size=0.5, paper_compat=True)).adversarial
    assert (x2 - images).norm().item() == pytest.approx(2.0, rel=1e-4)  # batch-wide sphere
    assert x2.min() < 0 or x2.max() > 1 or math.isclose((x2 - images).norm().item(), 2.0, rel_tol=1e-4)
