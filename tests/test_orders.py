"""One model for sd and ds (``train.ordered_pairs``): the grid trains it once, the report ranks it
under each main task and says so (mtbench.grid.merge_orders, mtbench.report.orders)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from helpers import run_cli

from mtbench.grid import load_grid, load_grid_text
from mtbench.report import Filters, paper
from mtbench.report.frames import load_frames

GRID = """
[run]
name = "orders"
seed = 0
device = "cpu"

[data]
dataset = "synthetic"
image_size = 32
train_samples = 8
test_samples = 4

[train]
encoders = ["resnet18"]
task_sets = {task_sets}
weighting = [{weighting}]
epochs = 1
batch_size = 4
lr = 0.01
{extra}

[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
step_size = "8/255"
targets = "each"

[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
step_size = "8/255"
targets = "all"
"""


def grid_text(task_sets: str = '["d", "ds", "sd"]', weighting: str = '"uniform"', extra: str = "") -> str:
    return GRID.format(task_sets=task_sets, weighting=weighting, extra=extra)


def trained(plugins, **kw) -> list:
    return load_grid_text(grid_text(**kw), Path("grid.toml"), plugins).train_trials


@pytest.mark.parametrize("weighting", ['"uniform"', '"sum"', '{s = 1, d = 0.5}'])
def test_orders_of_one_task_set_are_one_model_where_the_weights_ignore_the_main_task(plugins, weighting):
    models = trained(plugins, weighting=weighting)
    assert [list(m.config.codes) for m in models] == [["d"], ["d", "s"]]
    assert models[1].config.also_ranked_as == (("segment_semantic", "depth_zbuffer"),)
    assert "also [s+d]" in models[1].label()
    ordered = trained(plugins, weighting=weighting, extra="ordered_pairs = true")
    assert [list(m.config.codes) for m in ordered] == [["d"], ["d", "s"], ["s", "d"]]
    assert ordered[1].id == models[1].id  # which orders a model stands for does not change its id


def test_orders_whose_weights_follow_the_main_task_stay_two_models(plugins):
    for weighting in ('"main-aux"', '"optimal"'):
        models = trained(plugins, weighting=weighting)
        assert [list(m.config.codes) for m in models] == [["d"], ["d", "s"], ["s", "d"]], weighting
        assert all(not m.config.also_ranked_as for m in models)


def test_permutations_of_three_tasks_merge_and_the_first_listed_is_trained(plugins):
    models = trained(plugins, task_sets='["nsd", "sdn", "dns", "sd"]')
    assert ["".join(m.config.codes) for m in models] == ["nsd", "sd"]
    assert {"".join(plugins.tasks.get(t).code for t in o) for o in models[0].config.also_ranked_as} == {"sdn", "dns"}


def test_s1_trains_66_models_for_its_121_task_sets_and_the_dry_run_says_so(plugins):
    preset = Path(__file__).parents[1] / "examples" / "paper" / "s1.toml"
    grid = load_grid(preset, plugins)
    assert len(grid.settings.train.task_sets) == 121 and len(grid.train_trials) == 66 and grid.merged == 55
    result = run_cli("run", str(preset), "--dry-run", "--no-calibrate")
    assert result.returncode == 0, result.stderr
    assert "66 models trained for 121 task sets: 55 task orders ranked from" in " ".join(result.stdout.split())


@pytest.fixture(scope="module")
def merged_results(tmp_path_factory) -> Path:
    """A real run of d, ds and sd under uniform weights: two trainings, sd ranked from ds's model."""
    root = tmp_path_factory.mktemp("orders")
    (root / "grid.toml").write_text(grid_text())
    result = run_cli("run", str(root / "grid.toml"), "--out", str(root / "results"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return root / "results"


def stored_v(results: Path, codes: list[str], targets: list[str], task: str) -> float:
    """The relative vulnerability of ``task`` stored for the attack on ``targets`` of the model ``codes``."""
    db = sqlite3.connect(results / "mtbench.db")
    configs = {i: json.loads(c) for i, c in db.execute("SELECT id, config FROM trials")}
    model = next(i for i, c in configs.items() if c["kind"] == "train" and c["codes"] == codes)
    (attack,) = [i for i, c in configs.items() if c.get("model") == model and c["targets_codes"] == targets]
    (value,) = db.execute("SELECT value FROM metrics WHERE trial_id = ? AND task = ? AND phase = 'vulnerability' "
                          "AND metric = 'rel_vuln_ratio_of_means'", (attack, task)).fetchone()
    return value


def test_one_trained_model_gives_both_cells_and_the_report_says_so(merged_results):
    db = sqlite3.connect(merged_results / "mtbench.db")
    assert db.execute("SELECT count(*) FROM trials WHERE kind = 'train'").fetchone() == (2,)  # d and ds, not sd
    result = run_cli("report", "--out", str(merged_results), "--view", "leaderboard", "--format", "json")
    assert result.returncode == 0, result.stderr
    ((title, rows),) = json.loads(result.stdout).items()
    by_main = {(r["main"], r["model"]): r for r in rows}
    assert set(by_main) == {("d", "resnet18/d/uniform"), ("d", "resnet18/ds/uniform"),
                            ("s", "resnet18/sd/uniform (trained as ds)")}
    s_row = by_main[("s", "resnet18/sd/uniform (trained as ds)")]
    assert s_row["v"] == pytest.approx(stored_v(merged_results, ["d", "s"], ["s"], "segment_semantic"))
    assert by_main[("d", "resnet18/ds/uniform")]["v"] == pytest.approx(
        stored_v(merged_results, ["d", "s"], ["d"], "depth_zbuffer"))
    assert s_row["setting_id"] != by_main[("d", "resnet18/ds/uniform")]["setting_id"]


@pytest.mark.parametrize("source", ["", "parquet"])
def test_paper_tables_fill_both_cells_of_the_pair_from_the_one_model(merged_results, source):
    frames = load_frames(str(merged_results / source))
    single = next(s for s in paper.table1(frames, Filters()) if "uniform weighting, single" in s.title)
    rows = {r["main"]: r for r in single.rows}
    assert rows["s"]["d"] == pytest.approx(stored_v(merged_results, ["d", "s"], ["s"], "segment_semantic"))
    assert rows["d"]["s"] == pytest.approx(stored_v(merged_results, ["d", "s"], ["d"], "depth_zbuffer"))
    assert "come from one model per seed, trained once" in single.note
    multi = next(s for s in paper.table1(frames, Filters()) if "uniform weighting, multi" in s.title)
    both = {r["main"]: r for r in multi.rows}
    assert both["s"]["d"] == pytest.approx(stored_v(merged_results, ["d", "s"], ["d", "s"], "segment_semantic"))
    assert both["d"]["s"] == pytest.approx(stored_v(merged_results, ["d", "s"], ["d", "s"], "depth_zbuffer"))


def test_a_view_is_not_counted_as_a_trial_that_ran(merged_results):
    result = run_cli("report", "--out", str(merged_results), "--view", "models")
    assert result.returncode == 0, result.stderr
    assert "(6 done trials)" in result.stdout  # d: training + attack; ds: training + attacks on d, s and both
    db = sqlite3.connect(merged_results / "mtbench.db")
    assert db.execute("SELECT count(*) FROM trials WHERE status = 'done'").fetchone() == (6,)
