"""The paper's training recipes: Appendix B's optimal weights for every pair, the named schedules, and
what a grid may combine with them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import REPO

from mtbench.errors import ConfigError
from mtbench.grid import load_grid, load_grid_text
from mtbench.train import make_optimizer

FIVE = "sdDnE"


def appendix_b_weight(main: str, aux: str) -> float:
    """Appendix B's 'List of weights for the weighted models', written out as the text says it."""
    rules = {"s": ("d", 0.01, 0.1), "d": ("n", 0.01, 0.1), "n": ("d", 0.01, 0.1), "D": ("s", 0.1, 0.01)}
    if main == "E":
        return 0.1
    partner, with_partner, otherwise = rules[main]
    return with_partner if aux == partner else otherwise


def grid(train: str, attack: str = "") -> str:
    return f"""[run]
device = "cpu"
[data]
image_size = 32
[train]
encoders = ["resnet18"]
{train}
{attack}"""


def test_s4_preset_trains_every_pair_with_appendix_b_weights(plugins):
    g = load_grid(REPO / "examples" / "paper" / "s4.toml", plugins)
    weights = {"".join(t.config.codes): t.config for t in g.train_trials}
    pairs = [a + b for a in FIVE for b in FIVE if a != b]
    assert len(pairs) == 20 and set(pairs) <= set(weights)
    for pair in pairs:
        config = weights[pair]
        main, aux = (plugins.tasks.resolve(c) for c in pair)
        assert config.weighting == "optimal"
        assert config.weights == {main: 1.0, aux: appendix_b_weight(*pair)}, pair
    for single in FIVE:
        assert list(weights[single].weights.values()) == [1.0]
    tenfold = [p for p in pairs if appendix_b_weight(*p) == 0.01]
    assert sorted(tenfold) == sorted(["sd", "dn", "nd", "Dd", "Dn", "DE"])


def test_optimal_outside_the_table_asks_for_weights(plugins):
    with pytest.raises(ConfigError) as exc:
        load_grid_text(grid('task_sets = ["sd", "sk"]\nweighting = ["optimal"]'), Path("g.toml"), plugins)
    (key, message), = exc.value.problems
    assert key == "g.toml: train.weighting[0]"
    assert "'sk'" in message and "explicit weights" in message and "main-aux" in message


def test_main_aux_keeps_one_auxiliary_weight_for_every_pair(plugins):
    g = load_grid_text(grid('task_sets = ["sk", "s"]\nweighting = ["main-aux"]\naux_weight = 0.5'), Path("g"),
                       plugins)
    sk, s = (t.config for t in g.train_trials)
    assert (sk.weighting, sk.weights) == ("main-aux", {"segment_semantic": 1.0, "keypoints2d": 0.5})
    assert (s.weighting, s.weights) == ("uniform", {"segment_semantic": 1.0})


def lr_by_epoch(config, epochs: int) -> list[float]:
    """The lr each epoch trains with, stepping the scheduler once per epoch as training does."""
    opt, sched = make_optimizer(config, [torch.nn.Parameter(torch.zeros(1))])
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("name, optimizer, lr, momentum, decay, drops", [
    ("appendix-b", torch.optim.SGD, 0.01, 0.99, 0.0, [100, 120, 140]),
    ("mtrobust", torch.optim.SGD, 0.01, 0.9, 1e-4, [140]),
    ("as-coded", torch.optim.Adam, 1e-3, None, 0.0, [120, 140]),
])
def test_named_schedules(plugins, name, optimizer, lr, momentum, decay, drops):
    g = load_grid_text(grid(f'task_sets = ["s"]\nepochs = 150\nschedule = "{name}"'), Path("g"), plugins)
    config = g.train_trials[0].config
    assert config.schedule == name
    opt, _ = make_optimizer(config, [torch.nn.Parameter(torch.zeros(1))])
    group = opt.param_groups[0]
    assert type(opt) is optimizer and group["weight_decay"] == decay
    assert group.get("momentum") == momentum if momentum is not None else "momentum" not in group
    lrs = lr_by_epoch(config, 150)
    expected = [lr * 0.1 ** sum(epoch > d for d in drops) for epoch in range(1, 151)]  # drops after those epochs
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_a_schedule_and_the_keys_it_sets_are_not_both_given(plugins):
    with pytest.raises(ConfigError) as exc:
        load_grid_text(grid('task_sets = ["s"]\nschedule = "appendix-b"\nlr = 0.1\nmomentum = 0.5'), Path("g"),
                       plugins)
    assert sorted(k for k, _ in exc.value.problems) == ["g: train.lr", "g: train.momentum"]
    assert all("appendix-b" in m for _, m in exc.value.problems)


def test_momentum_is_refused_with_adam(plugins):
    with pytest.raises(ConfigError) as exc:
        load_grid_text(grid('task_sets = ["s"]\nmomentum = 0.5'), Path("g"), plugins)
    assert exc.value.problems == [("g: train.momentum", "momentum is sgd's; the optimizer is 'adam'")]


def test_sgd_keys_and_a_config_stored_before_them():
    stored = SimpleNamespace(optimizer="sgd", lr=0.1, epochs=10, lr_milestones=(0.5,))  # no momentum key yet
    opt, _ = make_optimizer(stored, [torch.nn.Parameter(torch.zeros(1))])
    assert (opt.param_groups[0]["momentum"], opt.param_groups[0]["weight_decay"]) == (0.9, 1e-4)
    assert lr_by_epoch(stored, 10) == pytest.approx([0.1] * 5 + [0.01] * 5)


def test_new_keys_leave_an_adam_trial_id_alone(plugins):
    """Adam trials stored before the schedule keys keep their ids: the keys hold their defaults."""
    config = load_grid_text(grid('task_sets = ["s"]'), Path("g"), plugins).train_trials[0].config
    identity = config.identity()
    assert not {"momentum", "weight_decay", "lr_drop_epochs", "schedule", "snapshots"} & set(identity)
    with_snapshots = load_grid_text(grid('task_sets = ["s"]\nepochs = 3\nsnapshots = [1]'), Path("g"), plugins)
    assert with_snapshots.train_trials[0].id == load_grid_text(grid('task_sets = ["s"]\nepochs = 3'), Path("g"),
                                                               plugins).train_trials[0].id


def test_presets_are_generated_from_one_table():
    """examples/paper/*.toml and docs/presets.md are what examples/paper/generate.py writes."""
    import runpy

    outputs = runpy.run_path(str(REPO / "examples" / "paper" / "generate.py"))["outputs"]()
    stale = [str(path.relative_to(REPO)) for path, text in outputs.items() if path.read_text() != text]
    assert not stale, f"run `python examples/paper/generate.py`: {stale} differ"
    assert len(outputs) == 17
