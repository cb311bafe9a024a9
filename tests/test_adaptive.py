"""Auto-PGD, the adaptive objectives, the ensemble and transfer attacks."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch
from helpers import CPU_TINY_DATA, run_cli

from mtbench.testing import attack_request, check_attack, tiny_model
from mtbench_attacks.apgd import checkpoints
from mtbench_attacks.ensemble import worst_case

TASKS = ["segment_semantic", "depth_zbuffer"]


@pytest.fixture(scope="module")
def trained(plugins, synth_root):
    """A tiny two-task model trained on the synthetic split, and a test batch (real labels)."""
    from mtbench.data import TaskonomyDataset, load_splits

    tasks = {t: plugins.tasks.get(t) for t in TASKS}
    splits = load_splits(synth_root)

    def batch(split, n):
        ds = TaskonomyDataset(synth_root, splits[split], tasks, 32)
        items = [ds[i] for i in range(min(n, len(ds)))]
        return (torch.stack([i[0] for i in items]), {t: torch.stack([i[1][t] for i in items]) for t in tasks},
                {t: torch.stack([i[2][t] for i in items]) for t in tasks})

    model = tiny_model(TASKS, plugins).train()
    images, targets, masks = batch("train", 16)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(60):
        out = model(images)
        loss = sum(tasks[t].loss(out[t], targets[t], masks[t]).mean() for t in tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), batch("test", 8)


def objective_reached(plugins, model, batch, attack: str, seed: int) -> float:
    req = attack_request(model, batch, TASKS, eps=4 / 255, steps=10, seed=seed, random_start=True, trace=False,
                         plugins=plugins)
    adv = plugins.attacks.get(attack).run(req).adversarial
    with torch.no_grad():
        out = model(adv)
        losses = {t: req.tasks[t].loss(out[t], batch[1][t], batch[2][t]) for t in TASKS}
    return req.objective(losses).mean().item()


def test_apgd_at_least_as_strong_as_pgd(plugins, trained):
    model, batch = trained
    seeds = range(3)
    pgd = sum(objective_reached(plugins, model, batch, "pgd-linf", s) for s in seeds) / 3
    apgd = sum(objective_reached(plugins, model, batch, "apgd-linf", s) for s in seeds) / 3
    assert apgd >= pgd, f"APGD reached {apgd:.4f}, PGD {pgd:.4f}"


def test_apgd_checkpoints():
    assert sorted(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]  # p_j of Croce & Hein 2020
    assert max(checkpoints(10)) <= 10


@pytest.mark.parametrize("name", ["apgd-linf", "apgd-l2", "ensemble-linf", "ensemble-l2"])
def test_new_attacks_pass_the_contract(plugins, name):
    check_attack(plugins.attacks.get(name))


@pytest.mark.parametrize("objective", ["relative", "wgd-original", "gradnorm-progress", "gradnorm-lagging", "balanced",
                                       "cyclic"])
def test_objectives_work_inside_pgd_and_apgd(plugins, objective):
    model = tiny_model(TASKS, plugins)
    from mtbench.testing import fake_batch

    batch = fake_batch(TASKS, size=16, batch=3, plugins=plugins)
    for attack in ("pgd-linf", "apgd-linf"):
        req = attack_request(model, batch, TASKS, objective=objective, plugins=plugins)
        adv = plugins.attacks.get(attack).run(req).adversarial
        assert (adv - batch[0]).abs().max() <= 8 / 255 + 1e-6


def _losses(values: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(v, requires_grad=True) for t, v in values.items()}


def _grads(objective, losses) -> dict[str, list[float]]:
    value = objective(losses)
    grads = torch.autograd.grad(value.sum(), list(losses.values()), allow_unused=True)
    return {t: [round(x, 6) for x in (g if g is not None else torch.zeros_like(losses[t])).tolist()]
            for t, g in zip(losses, grads)}


def make(plugins, name, attacked=("a", "b")):
    return plugins.objectives.get(name).make(attacked, None)


def test_relative_objective_by_hand(plugins):
    obj = make(plugins, "relative")
    obj.start({"a": torch.tensor([2.0, 4.0]), "b": torch.tensor([1.0, 1.0])})
    losses = _losses({"a": [4.0, 4.0], "b": [3.0, 1.0]})
    assert obj(losses).tolist() == [5.0, 2.0]  # 4/2 + 3/1, 4/4 + 1/1
    assert _grads(obj, losses) == {"a": [0.5, 0.25], "b": [1.0, 1.0]}


def test_gradnorm_objectives_by_hand(plugins):
    start = {"a": torch.tensor([2.0]), "b": torch.tensor([1.0])}
    for name, expected in (("gradnorm-progress", {"a": [0.4], "b": [1.2]}),   # w ~ r = (2, 3) -> (0.8, 1.2)
                           ("gradnorm-lagging", {"a": [0.6], "b": [0.8]})):   # w ~ 1/r -> (1.2, 0.8)
        obj = make(plugins, name)
        obj.start(start)
        losses = _losses({"a": [4.0], "b": [3.0]})
        assert obj(losses).tolist() == pytest.approx([5.0])  # the value is the summed progress either way
        assert _grads(obj, losses) == expected, name


def test_balanced_objective_by_hand(plugins):
    obj = make(plugins, "balanced")
    losses = _losses({"a": [4.0, 0.5], "b": [2.0, 0.25]})
    assert obj(losses).tolist() == [6.0, 0.75]  # value: the sum of the losses
    assert _grads(obj, losses) == {"a": [0.25, 2.0], "b": [0.5, 4.0]}  # gradients divided by the losses


def test_cyclic_objective_takes_turns(plugins):
    obj = make(plugins, "cyclic")
    obj.start({})
    turns = []
    for _ in range(4):
        losses = _losses({"a": [1.0], "b": [2.0]})
        grads = _grads(obj, losses)
        turns.append("a" if grads["a"] == [1.0] else "b")
        assert grads["a"] != grads["b"]
    assert turns == ["a", "b", "a", "b"]
    with torch.no_grad():
        assert obj({"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}).tolist() == [3.0]  # does not advance
    assert obj.step == 4


def test_ensemble_keeps_the_worst_case_per_sample():
    a = torch.zeros(3, 1, 2, 2)
    b = torch.ones(3, 1, 2, 2)
    c = torch.full((3, 1, 2, 2), 2.0)
    scores = [torch.tensor([1.0, 5.0, 0.0]), torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0.5, 5.0, 0.0])]
    adversarial, winner = worst_case([a, b, c], scores)
    assert winner.tolist() == [1, 0, 0]  # ties go to the first member
    assert adversarial[:, 0, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_ensemble_is_at_least_as_strong_as_its_members(plugins, trained):
    model, batch = trained
    from mtbench_attacks.ensemble import attacked_error_ratio

    req = attack_request(model, batch, TASKS, eps=4 / 255, steps=5, trace=False, plugins=plugins)
    with torch.no_grad():
        out = model(batch[0])
        clean = {t: req.tasks[t].metric(req.tasks[t].error_metric).fn(out[t], batch[1][t], batch[2][t]) for t in TASKS}
    result = plugins.attacks.get("ensemble-linf").run(req)
    best = attacked_error_ratio(req, result.adversarial, clean)
    for member in result.info["members"]:
        adv = plugins.attacks.get(member).run(attack_request(model, batch, TASKS, eps=4 / 255, steps=5, trace=False,
                                                             plugins=plugins)).adversarial
        assert (best >= attacked_error_ratio(req, adv, clean) - 1e-6).all(), member
    assert result.info["winner"].shape == (batch[0].shape[0],)


TRANSFER_GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18", "xception"]
task_sets = ["sd"]
epochs = 1
batch_size = 4
[[attack]]
name = "ensemble-linf"
eps = ["8/255"]
steps = 2
targets = "all"
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
targets = "all"
objective = "relative"
source = {{encoder = "{source}"}}
"""


def _grid(tmp_path, source: str):
    path = tmp_path / "grid.toml"
    path.write_text(TRANSFER_GRID.format(source=source))
    return path


def test_transfer_and_ensemble_trials_end_to_end(tmp_path):
    out = tmp_path / "results"
    result = run_cli("run", str(_grid(tmp_path, "resnet18")), "--out", str(out))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(out / "mtbench.db") as c:
        configs = [json.loads(r[0]) for r in c.execute("select config from trials where kind='attack'")]
        transfer = [cfg for cfg in configs if cfg.get("source_model")]
        assert len(transfer) == 1  # crafted on the resnet18 model, measured on the xception one
        encoders = dict(c.execute("select id, json_extract(config, '$.encoder') from trials where kind='train'"))
        assert encoders[transfer[0]["source_model"]] == "resnet18" and encoders[transfer[0]["model"]] == "xception"
        shares = c.execute("select metric, value from metrics where phase='ensemble'").fetchall()
        assert {m for m, _ in shares} == {"pgd-linf", "apgd-linf"}
        assert sum(v for _, v in shares) == pytest.approx(2.0)  # per ensemble trial, the shares sum to 1
    report = run_cli("report", "--out", str(out), "--transfer", "--view", "attacks", "--format", "json")
    rows = next(iter(json.loads(report.stdout).values()))
    assert rows[0]["crafted on"] == "resnet18/sd/uniform" and rows[0]["model"] == "xception/sd/uniform"


def test_transfer_from_a_model_not_in_the_grid_is_refused(tmp_path):
    result = run_cli("run", str(_grid(tmp_path, "resnet50")), "--out", str(tmp_path), "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "source" in result.stderr and "resnet50" in result.stderr
