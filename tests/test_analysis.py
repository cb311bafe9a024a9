"""Gradient analysis: gradients against finite differences, the covariance maths, the first-order
prediction exact on a linear model, and analysis trials end to end with the theory report."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import CPU_TINY_DATA, run_cli
from torch import nn

from mtbench.analysis import gradient_statistics, input_gradients
from mtbench.models import MultiTaskModel
from mtbench.testing import attack_request, fake_batch, tiny_model

TASKS = ["segment_semantic", "depth_zbuffer"]


def test_input_gradients_match_finite_differences(plugins):
    model = tiny_model(TASKS, plugins).double()
    images, targets, masks = fake_batch(TASKS, size=16, batch=2, plugins=plugins)
    images, targets = images.double(), {t: v.double() for t, v in targets.items()}
    tasks = {t: plugins.tasks.get(t) for t in TASKS}
    grads = input_gradients(model, images, targets, masks, tasks)
    direction = torch.randn(images.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-5
    for t in TASKS:
        with torch.no_grad():
            up = tasks[t].loss(model(images + h * direction)[t], targets[t], masks[t])
            down = tasks[t].loss(model(images - h * direction)[t], targets[t], masks[t])
        numeric = (up - down) / (2 * h)
        analytic = (grads[t] * direction.flatten(1)).sum(1)
        assert torch.allclose(numeric, analytic, rtol=1e-4, atol=1e-9), t


def test_covariance_maths_on_constructed_gradients():
    orthogonal = gradient_statistics({"a": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([[0.0, 2.0]])})
    assert orthogonal[("a|b", "cov")].item() == 0 and orthogonal[("a|b", "cosine")].item() == 0
    assert orthogonal[("*", "sum_grad_sq")].item() == orthogonal[("*", "sum_sq_grad")].item() == 5.0
    aligned = gradient_statistics({"a": torch.tensor([[1.0, -1.0]]), "b": torch.tensor([[2.0, -2.0]])})
    assert aligned[("a|b", "cosine")].item() == pytest.approx(1.0) and aligned[("a|b", "cov")].item() == 4.0
    assert aligned[("*", "sum_grad_sq")].item() == 18.0 and aligned[("*", "sum_sq_grad")].item() == 10.0
    assert aligned[("a", "grad_l1")].item() == 2.0 and aligned[("b", "grad_linf")].item() == 2.0
    assert aligned[("*", "sum_grad_l1")].item() == 6.0
    weighted = gradient_statistics({"a": torch.tensor([[1.0, -1.0]]), "b": torch.tensor([[2.0, -2.0]])},
                                   {"a": 0.5, "b": 0.25})
    assert weighted[("*", "wsum_grad_sq")].item() == 2.0  # ||(1, -1)||^2
    assert weighted[("*", "wsum_sq_grad")].item() == 1.0  # 0.25 * 2 + 0.0625 * 8


def test_first_order_prediction_is_exact_on_a_linear_model(plugins):
    torch.manual_seed(0)
    model = MultiTaskModel(nn.Conv2d(3, 4, 1), {"depth_zbuffer": nn.Conv2d(4, 1, 1)}, stride=1).double().eval()
    images = torch.full((3, 3, 8, 8), 0.5, dtype=torch.float64) + 0.01 * torch.rand(3, 3, 8, 8, dtype=torch.float64)
    targets = {"depth_zbuffer": torch.full((3, 1, 8, 8), -100.0, dtype=torch.float64)}  # |pred - target| is linear
    masks = {"depth_zbuffer": torch.ones(3, 1, 8, 8, dtype=torch.bool)}
    tasks = {"depth_zbuffer": plugins.tasks.get("depth_zbuffer")}
    eps = 1e-3
    g = input_gradients(model, images, targets, masks, tasks)["depth_zbuffer"]
    predicted = eps * g.norm(p=1, dim=1)
    req = attack_request(model, (images, targets, masks), ["depth_zbuffer"], eps=eps, steps=1, step_size=eps,
                         plugins=plugins, trace=False)
    adv = plugins.attacks.get("pgd-linf").run(req).adversarial
    with torch.no_grad():
        loss = tasks["depth_zbuffer"].loss
        measured = loss(model(adv)["depth_zbuffer"], targets["depth_zbuffer"], masks["depth_zbuffer"]) \
            - loss(model(images)["depth_zbuffer"], targets["depth_zbuffer"], masks["depth_zbuffer"])
    assert torch.allclose(measured, predicted, rtol=1e-9)


GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["d", "dD"]
epochs = 1
batch_size = 4
[[attack]]
name = "pgd-linf"
eps = ["1/255", "8/255"]
steps = 2
targets = "all"
[[analysis]]
eps = "8/255"
steps = 2
"""


def test_analysis_trials_and_theory_report(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    out = tmp_path / "results"
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = run_cli("report", "--out", str(out), "--view", "theory", "--format", "json")
    assert report.returncode == 0, report.stderr
    sections = json.loads(report.stdout)
    first = next(v for k, v in sections.items() if k.startswith("First-order"))
    assert {r["eps"] for r in first} == {"1/255", "8/255"} and all(r["predicted"] > 0 for r in first)
    marginal = next(v for k, v in sections.items() if k.startswith("Marginal"))
    assert {(r["base"], r["added"]) for r in marginal} == {("resnet18/d/uniform", "D")}
    assert all(isinstance(r["bound"], float) for r in marginal)
