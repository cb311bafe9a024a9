"""``paper_compat`` PGD and the ``wgd-original`` objective against the original code's rule, written out here.

The expected points are computed the way the original (yamizi/taskaugment,
MTVulnerability/utils/art/attacks/mtask_attack.py, ``PGD_attack_mtask``) computes them: in its
[-1, 1] image units, with its eps and step rescaled by 2/255 per pixel unit, its swapped clamp at
the start, the batch-mean L1 loss summed over the attacked tasks, and torch autograd on the same
tiny model. Only the final conversion back to [0, 1] is shared with mtbench's convention.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtbench.specs import AttackRequest

TASKS = ("depth_zbuffer", "normal")  # both plain L1 losses: one and three channels


class OneConv(nn.Module):
    """A one-layer multi-task model on [0, 1] images: a 3x3 conv, tanh, split into the two heads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(3 * self.conv(x))
        return {"depth_zbuffer": h[:, :1], "normal": h[:, 1:]}


@pytest.fixture
def setup(plugins):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 8, 8, generator=g)
    images[0, 0, :2] = 0.995  # some pixels within eps of 1, so that min(1, x + eps) bites
    targets = {"depth_zbuffer": torch.rand(3, 1, 8, 8, generator=g) * 2 - 1,
               "normal": torch.rand(3, 3, 8, 8, generator=g) * 2 - 1}
    masks = {t: torch.ones(3, 1, 8, 8) for t in TASKS}
    model = OneConv().eval()
    tasks = {t: plugins.tasks.get(t) for t in TASKS}
    with torch.no_grad():  # the task plugins' loss is the per-sample mean L1 here: the batch mean is MTRobust's
        out = model(images)
        for t in TASKS:
            hand = (out[t] - targets[t]).abs().flatten(1).mean(1)
            assert torch.allclose(tasks[t].loss(out[t], targets[t], masks[t]), hand)
    return model, images, targets, masks, tasks


def original_batch_loss(model: nn.Module, u: torch.Tensor, targets) -> torch.Tensor:
    """The original's ``grad_total_loss``: each task's L1 loss averaged over every element of the batch,
    summed over the tasks, for the model seen on [-1, 1] images."""
    out = model((u + 1) / 2)
    return sum((out[t] - targets[t]).abs().mean() for t in TASKS)


def clamp_tensor(image, upper_bound, lower_bound):
    """The original's helper, argument order included."""
    image = torch.where(image > upper_bound, upper_bound, image)
    return torch.where(image < lower_bound, lower_bound, image)


def original_points(model, x, targets, eps_px: float, step_px: float, steps: int, norm: str) -> list[torch.Tensor]:
    """The original's start and its first ``steps`` iterates, returned in [0, 1] units."""
    u = 2 * x - 1
    epsilon, step_size = eps_px * 2 / 255, step_px * 2 / 255
    upper = torch.min(torch.ones_like(u), u + epsilon)
    lower = torch.max(-torch.ones_like(u), u - epsilon)
    noise = torch.empty_like(u).uniform_(-epsilon, epsilon, generator=torch.Generator().manual_seed(5))
    u_adv = clamp_tensor(u + noise, lower, upper)  # swapped, as in the original
    points = [u_adv]
    for _ in range(steps):
        u_adv = u_adv.detach().requires_grad_(True)
        grad = torch.autograd.grad(original_batch_loss(model, u_adv, targets), u_adv)[0]
        if norm == "linf":
            u_adv = clamp_tensor(u_adv + step_size * grad.sign(), upper, lower)
        else:
            d = u_adv + grad * epsilon - u
            u_adv = u + d / torch.norm(d, 2) * epsilon
        points.append(u_adv.detach())
    return [(p + 1) / 2 for p in points]


def run_pgd(plugins, setup, norm: str, eps: float, step_size: float, steps: int, random_start: bool) -> torch.Tensor:
    model, images, targets, masks, tasks = setup
    req = AttackRequest(model=model, images=images, targets=targets, masks=masks, tasks=tasks, attacked=TASKS,
                        objective=plugins.objectives.get("sum").make(TASKS, None), eps=eps, steps=steps,
                        step_size=step_size, generator=torch.Generator().manual_seed(0),
                        random_start=random_start, paper_compat=True)
    return plugins.attacks.get(f"pgd-{norm}").run(req).adversarial


@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("norm, eps_px, step_px", [("linf", 8.0, 2.0), ("l2", 40.0, 10.0)])
def test_start_and_first_steps_follow_the_original(plugins, setup, norm, eps_px, step_px, random_start):
    """mtbench's eps and step are the original's pixel values / 255 ([0, 1] units)."""
    model, images, targets, _, _ = setup
    expected = original_points(model, images, targets, eps_px, step_px, 2, norm)
    assert torch.allclose(expected[0], (images + eps_px / 255).clamp(max=1))  # the hand rule's start, spelled out
    for steps, want in enumerate(expected):
        got = run_pgd(plugins, setup, norm, eps_px / 255, step_px / 255, steps, random_start)
        assert torch.allclose(got, want, atol=1e-6, rtol=0), (
            f"{norm} after {steps} steps: off by {(got - want).abs().max():.3g}")
    if norm == "l2":  # the slip that comes with it: one eps-sphere for the whole batch, not a ball per sample
        assert (expected[2] - images).norm().item() == pytest.approx(eps_px / 255, rel=1e-5)


def test_l2_step_uses_the_batch_mean_gradient_scaled_by_eps(plugins, setup):
    """The step rule separately: from the start, d = delta + (eps / 2) * grad of the batch-mean loss."""
    model, images, targets, _, _ = setup
    eps = 0.2
    start = (images + eps).clamp(max=1)
    x0 = start.clone().requires_grad_(True)
    out = model(x0)
    mean_loss = sum((out[t] - targets[t]).abs().mean() for t in TASKS)
    d = (start - images) + eps / 2 * torch.autograd.grad(mean_loss, x0)[0]
    want = images + eps * d / d.norm()
    got = run_pgd(plugins, setup, "l2", eps, 0.123, 1, False)  # the step size plays no part
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def _losses(values: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(v, requires_grad=True) for t, v in values.items()}


def _grads(value: torch.Tensor, losses: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    grads = torch.autograd.grad(value.sum(), list(losses.values()))
    return {t: [round(x, 6) for x in g.tolist()] for t, g in zip(losses, grads)}


def test_wgd_original_weights_by_hand(plugins):
    obj = plugins.objectives.get("wgd-original").make(("a", "b"), None)
    obj.start({"a": torch.tensor([100.0, 100.0]), "b": torch.tensor([100.0, 100.0])})  # clean losses: unused
    first = _losses({"a": [1.0, 3.0], "b": [4.0, 0.0]})  # batch means at the first step: a 2, b 2
    value = obj(first)
    assert value.tolist() == [5.0, 3.0]  # the first step ascends the plain sum
    assert _grads(value, first) == {"a": [1.0, 1.0], "b": [1.0, 1.0]}
    later = _losses({"a": [2.0, 6.0], "b": [1.0, 3.0]})
    value = obj(later)
    assert value.tolist() == [1.5, 4.5]  # 2/2 + 1/2, 6/2 + 3/2
    assert _grads(value, later) == {"a": [0.5, 0.5], "b": [0.5, 0.5]}  # one weight per task, for the whole batch
    obj.start({})  # a new batch records its own start
    again = _losses({"a": [4.0, 4.0], "b": [1.0, 1.0]})
    assert obj(again).tolist() == [5.0, 5.0]
    assert obj(_losses({"a": [8.0, 4.0], "b": [1.0, 1.0]})).tolist() == [3.0, 2.0]  # 8/4 + 1/1, 4/4 + 1/1


def test_wgd_original_without_gradients_does_not_record_a_start(plugins):
    obj = plugins.objectives.get("wgd-original").make(("a", "b"), None)
    obj.start({})
    with torch.no_grad():  # a check before the attack must not fix the weights
        assert obj({"a": torch.tensor([10.0]), "b": torch.tensor([10.0])}).tolist() == [20.0]
    obj(_losses({"a": [2.0], "b": [4.0]}))
    assert obj(_losses({"a": [4.0], "b": [4.0]})).tolist() == [3.0]  # 4/2 + 4/4


def test_relative_divides_each_sample_by_its_own_clean_loss(plugins):
    obj = plugins.objectives.get("relative").make(("a", "b"), None)
    obj.start({"a": torch.tensor([1.0, 4.0]), "b": torch.tensor([2.0, 8.0])})
    losses = _losses({"a": [2.0, 6.0], "b": [1.0, 3.0]})  # the same batch as above, other weights
    value = obj(losses)
    assert value.tolist() == [2.5, 1.875]  # 2/1 + 1/2, 6/4 + 3/8
    assert _grads(value, losses) == {"a": [1.0, 0.25], "b": [0.5, 0.125]}
