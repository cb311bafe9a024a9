"""Defences (issue #23): the attack handle's invariants, the built-in defences' losses, the kit's
check_defense, and defended models in grids (trained, attacked, refused with the key named)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
from helpers import CPU_TINY_DATA, run_cli

from mtbench.configs import TrialKind
from mtbench.defaults import MASKING_ATTACKS
from mtbench.defend import batch_generator, defense_request
from mtbench.errors import ConfigError
from mtbench.grid import load_grid_text
from mtbench.specs import DefenseSpec, DefenseStep
from mtbench.testing import check_defense, defense_options, fake_batch, tiny_model
from mtbench.train import per_task_losses
from mtbench_attacks.defenses import curvature_penalty

TASKS = ["segment_semantic", "depth_zbuffer"]
EPS = 8 / 255


def request_for(plugins, defense: str = "none", options=None, seed: int = 0, model=None):
    """A training step's request on a tiny model in train mode, as the trainer builds it."""
    model = model if model is not None else tiny_model(TASKS, plugins).train()
    resolved = defense_options(plugins.defenses.get(defense), TASKS, options, plugins)
    specs = {t: plugins.tasks.get(t) for t in TASKS}
    batch = fake_batch(TASKS, size=16, batch=3, plugins=plugins)
    return defense_request(model, batch, specs, {"segment_semantic": 1.0, "depth_zbuffer": 0.5}, resolved, plugins,
                           torch.Generator().manual_seed(seed))


def test_the_handle_crafts_in_eval_mode_frozen_and_gives_the_model_back(plugins):
    model = tiny_model(TASKS, plugins).train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)  # a parameter frozen by the user stays frozen; the others train again
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(
        (m.training, [p.requires_grad for p in m.parameters()])))
    request = request_for(plugins, model=model)
    adversarial = request.craft(attack="pgd-linf", eps=EPS, steps=3, attacked=["depth_zbuffer"])
    assert seen and all(not training and not any(flags) for training, flags in seen)
    assert model.training
    assert not frozen.requires_grad and all(p.requires_grad for p in list(model.parameters())[1:])
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.num_batches_tracked, before[1])
    assert all(p.grad is None for p in model.parameters())
    assert not adversarial.requires_grad and not torch.equal(adversarial, request.images)


def test_a_training_forward_moves_the_statistics_that_crafting_leaves(plugins):
    """The check above can fail: a forward in train mode does change running_mean."""
    request = request_for(plugins)
    bn = next(m for m in request.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    request.losses(request.images)
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("attack, norm", [("pgd-linf", "linf"), ("pgd-l2", "l2")])
def test_crafted_images_stay_in_the_ball_and_the_box(plugins, attack, norm):
    request = request_for(plugins)
    eps = EPS if norm == "linf" else 0.5
    adversarial = request.craft(attack=attack, eps=eps, steps=4, objective="mean")
    delta = (adversarial - request.images).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all() and (size > eps / 4).all()
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_none_is_exactly_the_inline_weighted_sum(plugins):
    """The trainer's loss before defences, on the same model and batch: bit for bit."""
    request = request_for(plugins)
    step = plugins.defenses.get("none").loss(request)
    batch = (request.images, request.targets, request.masks)
    _, losses = per_task_losses(request.model, batch, request.tasks, torch.device("cpu"))
    inline = sum(request.weights[t] * losses[t].mean() for t in request.tasks)
    assert torch.equal(step.total, inline)
    assert all(torch.equal(step.losses[t], losses[t]) for t in TASKS)


def test_pgd_at_at_adv_weight_0_is_none_and_at_1_trains_on_a_higher_loss(plugins):
    none = plugins.defenses.get("none").loss(request_for(plugins)).total
    pgd_at = plugins.defenses.get("pgd-at")
    clean = pgd_at.loss(request_for(plugins, "pgd-at", {"adv_weight": 0.0})).total
    adversarial = pgd_at.loss(request_for(plugins, "pgd-at", {"adv_weight": 1.0, "targets": "all", "steps": 3})).total
    assert torch.equal(clean, none)
    assert adversarial > none


def test_pgd_at_resolves_its_options_for_each_model(plugins):
    spec = plugins.defenses.get("pgd-at")
    resolved = defense_options(spec, TASKS, {"eps": "4/255", "targets": "main"}, plugins)
    assert resolved["eps"] == pytest.approx(4 / 255) and resolved["step_size"] == pytest.approx(1 / 255)
    assert resolved["targets"] == ["segment_semantic"] and resolved["adv_weight"] == 1.0
    assert defense_options(spec, TASKS[::-1], {"targets": "main"}, plugins)["targets"] == ["depth_zbuffer"]
    assert defense_options(spec, TASKS, {"targets": ["d", "s"]}, plugins)["targets"] == sorted(TASKS)


def test_the_curvature_penalty_is_zero_for_equal_gradients_and_positive_otherwise():
    g = torch.randn(4, 3, 8, 8)
    assert torch.allclose(curvature_penalty(g, g.clone()), torch.zeros(4))
    other = torch.randn(4, 3, 8, 8)
    assert (curvature_penalty(g, other) > 0).all()
    assert (curvature_penalty(g, 2 * g) < 1e-6).all()  # parallel: cos^2 = 1, whatever the lengths


def test_gat_adds_the_regulariser_and_it_trains(plugins):
    gat = plugins.defenses.get("gat")
    plain = gat.loss(request_for(plugins, "gat", {"steps": 2})).total
    request = request_for(plugins, "gat", {"steps": 2, "curvature": 10.0})
    regularised = gat.loss(request).total
    assert regularised > plain
    regularised.backward()  # create_graph: the penalty reaches the parameters
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in request.model.parameters())


@pytest.mark.parametrize("name, options", [("none", None), ("pgd-at", {"steps": 2, "adv_weight": 0.5}),
                                           ("gat", {"steps": 2, "curvature": 1.0})])
def test_the_built_in_defences_pass_the_kit(plugins, name, options):
    assert isinstance(check_defense(plugins.defenses.get(name), options=options), DefenseStep)


def test_the_kit_refuses_a_defence_that_breaks_the_contract(plugins):
    def returns_a_tensor(req):
        return req.weighted(req.losses(req.images))

    def leaves_eval_mode(req):
        req.model.eval()
        losses = req.losses(req.images)
        return DefenseStep(req.weighted(losses), losses)

    with pytest.raises(AssertionError, match="must return a DefenseStep"):
        check_defense(DefenseSpec("bad", returns_a_tensor))
    with pytest.raises(AssertionError, match="not in train mode"):
        check_defense(DefenseSpec("bad", leaves_eval_mode))


def test_the_batch_generator_depends_only_on_seed_epoch_and_batch():
    def draw(*key):
        return torch.rand(3, generator=batch_generator(*key))

    assert torch.equal(draw(0, 1, 2), draw(0, 1, 2))
    assert len({tuple(draw(*k).tolist()) for k in [(0, 1, 2), (0, 2, 1), (1, 1, 2), (0, 1, 3)]}) == 4


GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = {task_sets}
epochs = 1
batch_size = 4
{defense}
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
targets = "each"
"""


def grid(plugins, defense: str, task_sets: str = '["sd"]'):
    return load_grid_text(GRID.format(defense=defense, task_sets=task_sets), Path("g.toml"),
                          plugins)


def test_a_list_of_defences_expands_into_models_labelled_by_their_defence(plugins):
    g = grid(plugins, 'defense = ["none", {name = "pgd-at", eps = "4/255", steps = 3, targets = "main"}]',
             '["sd", "ds"]')
    models = g.train_trials
    labels = [t.label() for t in models]
    # none merges sd and ds (one loss); pgd-at against the main task does not: ds attacks d
    assert labels == ["train resnet18 [s+d] uniform, also [d+s]", "train resnet18 [s+d] uniform, pgd-at eps=4/255 "
                      "steps=3", "train resnet18 [d+s] uniform, pgd-at eps=4/255 steps=3"]
    assert models[1].config.defense.options["targets"] == ["segment_semantic"]
    # each model: PGD on each of its 2 tasks, and the masking check's APGD and ensemble on its main task
    assert sum(t.kind is TrialKind.ATTACK for t in g.trials) == 3 * 2 + 3 * len(MASKING_ATTACKS)


@pytest.mark.parametrize("defense, key, words", [
    ('defense = {name = "pgd-att"}', "train.defense.name", "did you mean 'pgd-at'"),
    ('defense = ["none", "gatt"]', "train.defense[1]", "did you mean 'gat'"),
    ('defense = {name = "pgd-at", eps = "x"}', "train.defense.eps", "fraction like '4/255'"),
    ('defense = {name = "pgd-at", eps = 2}', "train.defense.eps", "(0, 1]"),
    ('defense = {name = "pgd-at", epsilon = 0.1}', "train.defense.epsilon", "has no option 'epsilon'"),
    ('defense = {name = "pgd-at", attack = "pgd-lnf"}', "train.defense.attack", "did you mean 'pgd-linf'"),
    ('defense = {name = "pgd-at", targets = "x"}', "train.defense.targets", "not tasks of the model"),
    ('defense = {name = "none", eps = 0.1}', "train.defense.eps", "takes no options"),
    ('defense = [{name = "none"}, {name = "gat", targets = "all"}]', "train.defense[1].targets", "main task"),
])
def test_a_bad_defence_is_refused_naming_its_key(plugins, defense, key, words):
    with pytest.raises(ConfigError) as info:
        grid(plugins, defense)
    assert any(loc == f"g.toml: {key}" and words in msg for loc, msg in info.value.problems), info.value.problems


def test_the_cli_refuses_a_bad_defence_with_exit_2(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(defense='defense = {name = "pgd-at", steps = 0}', task_sets='["d"]'))
    result = run_cli("run", str(path), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "grid.toml: train.defense.steps" in result.stderr


def test_a_defended_grid_trains_and_its_attacks_run(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(defense='defense = {name = "pgd-at", eps = "4/255", steps = 2, targets = "all"}',
                                task_sets='["sd"]'))
    out = tmp_path / "r"
    result = run_cli("run", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(out / "mtbench.db") as c:
        trials = c.execute("select kind, status, config from trials").fetchall()
        train_losses = c.execute("select count(*) from metrics where phase = 'train'").fetchone()[0]
    # the grid's attack on each task, and the masking check's APGD and ensemble on the main task
    assert sorted(k for k, _, _ in trials) == ["attack"] * (2 + len(MASKING_ATTACKS)) + ["train"]
    assert all(status == "done" for _, status, _ in trials)
    config = next(cfg for k, _, cfg in trials if k == "train")
    assert '"defense": {"name": "pgd-at"' in config and '"targets": ["depth_zbuffer", "segment_semantic"]' in config
    assert train_losses == 3  # total, s and d
