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
    cross = next(v for k, v in sections.items() if k.startswith("Across models"))  # not the paper's quantity
    assert {(r["base"], r["added"]) for r in cross} == {("resnet18/d/uniform", "D")}
    assert all(isinstance(r["change"], float) for r in cross)
    missing = next(v for k, v in sections.items() if k.startswith("Marginal vulnerability on one model"))
    assert "run an attack on T_N of this model" in missing[0]["needs"]  # the grid attacks all tasks only


WEIGHTED_GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["s"]
epochs = 1
batch_size = 4
loss_options = {s = {class_weights = "mtrobust"}}
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 1
targets = "all"
[[analysis]]
eps = "8/255"
steps = 1
"""


def test_attacks_and_analysis_use_the_loss_the_model_was_trained_with(tmp_path, plugins):
    """With class weights on, the loss an attack trial measures and ascends (its clean loss, the attack's
    trace at the start point, where the objective is that loss) and the loss whose gradient the analysis
    takes are the training loss with the weights, not the unweighted cross-entropy."""
    import sqlite3

    from mtbench.data import TaskonomyDataset, load_splits
    from mtbench.models import load_checkpoint
    from mtbench.specs import with_loss_options

    (tmp_path / "grid.toml").write_text(WEIGHTED_GRID)
    out = tmp_path / "results"
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    seg = "segment_semantic"
    with sqlite3.connect(out / "mtbench.db") as c:
        trained = c.execute("select value from metrics where phase = 'clean' and task = ? and metric = 'loss' "
                            "and trial_id in (select id from trials where kind = 'train')", (seg,)).fetchone()[0]
        checkpoint = c.execute("select checkpoint from models").fetchone()[0]
        attack_clean = c.execute("select value from metrics where phase = 'clean' and task = ? and metric = 'loss' "
                                 "and trial_id in (select id from trials where kind = 'attack')", (seg,)).fetchone()[0]
        start = c.execute("select value from metrics where phase = 'trace' and step = 0 and task = 'objective' "
                          "and metric = 'value'").fetchone()[0]
        analysed = c.execute("select value from metrics where phase = 'analysis' and task = ? and metric = "
                             "'grad_l2'", (seg,)).fetchone()[0]
    assert attack_clean == pytest.approx(trained, rel=1e-5)
    assert start == pytest.approx(trained, rel=1e-4)  # the objective the attack ascends, at the clean point

    model = load_checkpoint(out / checkpoint, None, plugins).eval()
    root = next(p for p in (out / "data").iterdir() if p.is_dir())
    registered = {seg: plugins.tasks.get(seg)}
    weighted = with_loss_options(registered, {seg: {"class_weights": "mtrobust"}})
    data = TaskonomyDataset(root, load_splits(root)["test"], registered, 32)
    images = torch.stack([data[i][0] for i in range(len(data))])
    targets = {seg: torch.stack([data[i][1][seg] for i in range(len(data))])}
    masks = {seg: torch.stack([data[i][2][seg] for i in range(len(data))])}
    with torch.no_grad():
        out_seg = model(images)[seg]
        unweighted = registered[seg].loss(out_seg, targets[seg], masks[seg]).mean().item()
        assert weighted[seg].loss(out_seg, targets[seg], masks[seg]).mean().item() == pytest.approx(trained, rel=1e-5)
    assert abs(unweighted - trained) > 0.05 * trained  # the weights matter: the checks above can tell
    grads = input_gradients(model, images, targets, masks, weighted)[seg].norm(dim=1).mean().item()
    plain = input_gradients(model, images, targets, masks, registered)[seg].norm(dim=1).mean().item()
    assert analysed == pytest.approx(grads, rel=1e-3) and abs(plain - grads) > 0.05 * grads
