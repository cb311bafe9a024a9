"""Grid files: validation reports every problem at once; expansion; trial ids."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from helpers import REPO, TINY_GRID, run_cli

from mtbench.errors import ConfigError
from mtbench.grid import load_grid

TEN_MISTAKES = """
[run]
name = "bad"
seed = "zero"                      # 1 wrong type
colour = "blue"                    # 2 unknown key

[data]
dataset = "synthetik"              # 3 unknown dataset plugin
image_size = -32                   # 4 negative size

[train]
encoders = ["resnet181"]           # 5 unknown encoder
task_sets = ["sx", []]             # 6 unknown task code, 7 empty task set
epochs = 0                         # 8 epochs must be >= 1

[[attack]]
name = "pgd-linf"
eps = ["-8/255"]                   # 9 negative eps
objective = "summ"                 # 10 unknown objective
"""


def test_ten_mistakes_reported_together(write_grid, plugins):
    with pytest.raises(ConfigError) as info:
        load_grid(write_grid(TEN_MISTAKES), plugins)
    problems = info.value.problems
    locations = [loc for loc, _ in problems]
    msgs = dict(problems)
    for key in ("run.seed", "run.colour", "data.image_size", "train.epochs", "attack[0].eps[0]"):
        assert f"grid.toml: {key}" in locations
    assert msgs["grid.toml: run.colour"] == "unknown key"
    assert "did you mean 'synthetic'" in msgs["grid.toml: data.dataset"]
    assert "did you mean 'resnet18'" in msgs["grid.toml: train.encoders[0]"]
    assert ("grid.toml: train.task_sets[1]", "empty task set") in problems
    assert any("'x'" in m for loc, m in problems if loc == "grid.toml: train.task_sets[0]")
    assert "did you mean 'sum'" in msgs["grid.toml: attack[0].objective"]
    assert len(problems) >= 10


def test_cli_lists_all_mistakes_exit_2_and_db_unchanged(write_grid, tmp_path):
    out = tmp_path / "results"
    good = run_cli("run", str(write_grid(name="good.toml", task_sets='["d"]')), "--out", str(out))
    assert good.returncode == 0, good.stderr
    db = out / "mtbench.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    bad = run_cli("run", str(write_grid(TEN_MISTAKES, name="bad.toml")), "--out", str(out))
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr + bad.stdout
    assert "bad.toml: run.seed" in bad.stderr and "bad.toml: attack[0].eps[0]" in bad.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    with sqlite3.connect(db) as c:
        assert c.execute("select count(*) from runs").fetchone()[0] == 1


def test_toml_syntax_error_names_file_and_line(write_grid, plugins):
    with pytest.raises(ConfigError, match=r"grid.toml.*not valid TOML.*line 2"):
        load_grid(write_grid("[run]\nname = \n"), plugins)


def test_expansion(write_grid, plugins):
    grid = load_grid(write_grid(task_sets='["s", "sd", ["depth_zbuffer", "normal"]]'), plugins)
    train = grid.train_trials
    assert [list(t.config.tasks) for t in train] == [
        ["segment_semantic"], ["segment_semantic", "depth_zbuffer"], ["depth_zbuffer", "normal"]]
    attacks = [t for t in grid.trials if t.kind == "attack"]
    assert len(attacks) == 1 + 2 + 2  # "each": one trial per task of each model
    assert all(a.parent in {t.id for t in train} for a in attacks)
    assert grid.trials.index(attacks[0]) > max(grid.trials.index(t) for t in train)
    eps = attacks[0].config.eps
    assert eps == pytest.approx(8 / 255) and attacks[0].config.step_size == pytest.approx(eps / 4)


def test_targets_all_and_explicit(write_grid, plugins):
    text = TINY_GRID.replace('targets = "each"', 'targets = [["s"], ["s", "d"]]')
    grid = load_grid(write_grid(text, task_sets='["s", "sd"]'), plugins)
    targets = sorted(tuple(t.config.targets) for t in grid.trials if t.kind == "attack")
    assert targets == [("segment_semantic",), ("segment_semantic",), ("segment_semantic", "depth_zbuffer")]
    bad = TINY_GRID.replace('targets = "each"', 'targets = [["n"]]')
    with pytest.raises(ConfigError, match="'n' is in no task set"):
        load_grid(write_grid(bad, name="bad.toml"), plugins)


def test_trial_id_is_a_hash_of_the_identity(write_grid, plugins):
    train = load_grid(write_grid(), plugins).train_trials[0]
    assert train.id == train.config.id and len(train.id) == 16
    reordered = type(train.config).model_validate(dict(reversed(list(train.config.record().items()))))
    assert reordered.id == train.id  # key order never matters


def test_weightings(write_grid, plugins):
    text = TINY_GRID.replace("epochs = 1",
                             'epochs = 1\nweighting = ["uniform", "sum", "optimal", "main-aux", {{s = 1.0, d = 0.5}}]')
    grid = load_grid(write_grid(text, task_sets='["sd"]'), plugins)
    weights = {t.config.weighting: t.config.weights for t in grid.train_trials}
    assert weights["uniform"] == {"segment_semantic": 0.5, "depth_zbuffer": 0.5}
    assert weights["sum"] == {"segment_semantic": 1.0, "depth_zbuffer": 1.0}
    assert weights["optimal"] == {"segment_semantic": 1.0, "depth_zbuffer": 0.01}  # Appendix B: s with d
    assert weights["main-aux"] == {"segment_semantic": 1.0, "depth_zbuffer": 0.1}  # train.aux_weight
    assert weights["explicit"] == {"segment_semantic": 1.0, "depth_zbuffer": 0.5}


def test_dry_run_prints_trials(write_grid, tmp_path):
    result = run_cli("run", str(write_grid()), "--out", str(tmp_path / "r"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "0 of 5 trials already done; 5 to run" in result.stdout


def test_dry_run_checks_the_grid_not_the_data_folders(write_grid, tmp_path):
    """The paper presets name folders of another machine: --dry-run lists their trials all the same."""
    text = TINY_GRID.replace('dataset = "synthetic"', 'dataset = "taskonomy"\nroot = "/nonexistent/taskonomy"')
    result = run_cli("run", str(write_grid(text)), "--out", str(tmp_path / "r"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "5 to run" in result.stdout


@pytest.mark.parametrize("grid", sorted((REPO / "examples").glob("**/*.toml")), ids=lambda p: p.name)
def test_example_grids_are_within_bounds(grid, plugins):
    if "mtbench-extras" in grid.parts:
        pytest.skip("needs the example plugin distribution")
    if grid.name == "external-model.toml":
        pytest.skip("needs the weights its header's first two commands make (tests/test_external.py runs them)")
    assert load_grid(grid, plugins).trials


def test_bounds_are_inclusive(write_grid, plugins):
    edges = TINY_GRID.replace("image_size = 32", "image_size = 4096").replace("epochs = 1", "epochs = 100000") \
        .replace("batch_size = 4", f"batch_size = 65536\nlr = 10\nseeds = [0, {2**32 - 1}]") \
        .replace('eps = ["8/255"]', "eps = [1]\nstep_size = 1").replace("steps = 2", "steps = 100000")
    trials = load_grid(write_grid(edges), plugins).trials
    assert {t.config.seed for t in trials} == {0, 2**32 - 1}
