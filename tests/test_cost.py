"""``run --dry-run``'s cost: steps counted by hand on small grids, the calibration cached in the user's
cache folder (never the results folder) and reused, ``--no-calibrate``, the JSON's ``cost`` object."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import run_cli

from mtbench.calibrate import cache_path
from mtbench.cost import cost_lines, cost_table, estimate, pending_work, probes, timed_batch
from mtbench.grid import load_grid

GRID = """
[run]
name = "cost"
device = "cpu"
[data]
image_size = 32
train_samples = 8
test_samples = 5
[train]
encoders = ["resnet18"]
task_sets = {task_sets}
epochs = 3
batch_size = 3
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
restarts = 2
batch_size = 2
targets = "each"
{analysis}
"""
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MTBENCH_THREADS": "1"}
"""The CLI's torch on one thread: quick steps on a shared machine (and the cache key says so)."""
ANALYSIS = """
[[analysis]]
steps = 3
batch_size = 2
"""


def grid_file(folder: Path, task_sets: str = '["s", "sd"]', analysis: str = ANALYSIS) -> Path:
    path = folder / "grid.toml"
    path.write_text(GRID.format(task_sets=task_sets, analysis=analysis))
    return path


def test_counts_by_hand(tmp_path, plugins):
    g = load_grid(grid_file(tmp_path), plugins)
    plan = estimate(pending_work(g.trials, {}), {}, None)
    total = plan.total
    # 2 models, 3 epochs of ceil(8 / 3) = 3 batches
    assert (total.trainings, total.epochs, total.train_steps) == (2, 6, 2 * 3 * 3)
    # attacks "each": 1 on s, 2 on sd; each 2 steps x 2 restarts on ceil(5 / 2) = 3 batches;
    # analyses: 1 per model, (3 steps + 2 gradient passes) on 3 batches
    assert total.attack_trials == 3 + 2
    assert total.attack_steps == 3 * (2 * 2 * 3) + 2 * ((3 + 2) * 3)
    assert plan.exact and total.seconds is None  # no times given: counts only
    assert [(row.encoder, row.image_size) for row in plan.groups] == [("resnet18", 32)]


def test_seconds_are_sample_passes_times_seconds_per_sample(tmp_path, plugins):
    g = load_grid(grid_file(tmp_path, analysis=""), plugins)
    works = pending_work(g.trials, {})
    needed = probes(works, None)  # a GPU: the trials' own batches
    assert sorted((p.phase, p.n_tasks, p.batch) for p in needed) == [("attack", 1, 2), ("attack", 2, 2),
                                                                     ("train", 1, 3), ("train", 2, 3)]
    seconds = {p: (0.3 if p.phase == "train" else 0.1) * p.n_tasks * p.batch for p in needed}  # a batch
    total = estimate(works, seconds, None).total
    # training: 3 epochs x 8 samples, at 0.3 s a sample per task; attacks: 2 x 2 steps x 5 samples per trial
    assert total.train_seconds == pytest.approx(3 * 8 * 0.3 * (1 + 2))
    assert total.attack_seconds == pytest.approx(2 * 2 * 5 * 0.1 * (1 + 2 + 2))


def test_more_tasks_extrapolate_from_one_and_two(tmp_path, plugins):
    g = load_grid(grid_file(tmp_path, task_sets='["sdn"]', analysis=""), plugins)
    works = [w for w in pending_work(g.trials, {}) if w.kind == "train"]
    needed = probes(works, None)
    assert sorted(p.n_tasks for p in needed) == [1, 2]  # a 3-task model is timed at 1 and 2 tasks
    seconds = {p: {1: 3.0, 2: 4.5}[p.n_tasks] for p in needed}  # a batch of 3: 1 s + 0.5 s a decoder
    assert estimate(works, seconds, None).total.train_seconds == pytest.approx(3 * 8 * (1 + 2 * 0.5))


def test_a_cpu_times_big_images_in_small_batches(tmp_path, plugins):
    g = load_grid(grid_file(tmp_path, analysis=""), plugins)
    probe = pending_work(g.trials, {})[0].probe
    assert timed_batch(probe, 2 * 256 * 256).batch == 3  # 32 px: the trial's own batch
    assert timed_batch(replace(probe, image_size=256, batch=32), 2 * 256 * 256).batch == 2  # 2 at 256 px
    assert timed_batch(replace(probe, image_size=64, batch=32), 2 * 256 * 256).batch == 32
    assert timed_batch(replace(probe, image_size=256, batch=32), None).batch == 32  # a GPU: the trial's


def test_done_trials_are_not_counted(tmp_path, plugins):
    g = load_grid(grid_file(tmp_path, analysis=""), plugins)
    done = {t.id: "done" for t in g.trials if t.config.kind == "train" and t.config.tasks == ("segment_semantic",)}
    done.update({t.id: "failed" for t in g.trials if t.config.kind == "attack"})  # failed ones run again
    total = estimate(pending_work(g.trials, done), {}, None).total
    assert (total.trainings, total.train_steps, total.attack_trials) == (1, 9, 3)


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[Path, Path]:
    """A results folder of a real tiny run (a depth model, trained and attacked), and its grid."""
    root = tmp_path_factory.mktemp("stored")
    grid = grid_file(root, '["d"]', analysis="")
    grid.write_text(grid.read_text().replace("epochs = 3", "epochs = 1").replace("restarts = 2", "restarts = 1"))
    result = run_cli("run", str(grid), "--out", str(root / "results"), env={**ONE_THREAD, "XDG_CACHE_HOME": str(root)})
    assert result.returncode == 0, result.stderr[-2000:]
    return grid, root / "results"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and time, less SQLite's own side files of a WAL database (a reader touches them)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


def extended(grid: Path, folder: Path, task_sets: str) -> Path:
    """The stored run's grid with other task sets, in ``folder``."""
    path = folder / "extended.toml"
    path.write_text(grid.read_text().replace('["d"]', task_sets))
    return path


def dry_run(grid: Path, out: Path, cache: Path, *extra: str):
    result = run_cli("run", str(grid), "--out", str(out), "--dry-run", *extra,
                     env={**ONE_THREAD, "XDG_CACHE_HOME": str(cache)})
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_calibration_is_cached_in_the_user_cache_and_reused(stored, tmp_path):
    grid, results = stored
    grid = extended(grid, tmp_path, '["d", "s", "sd"]')
    before = snapshot(results)
    cache = tmp_path / "cache"
    first = dry_run(grid, results, cache)
    path = cache / "mtbench" / "calibration.json"
    assert path == cache_path({"XDG_CACHE_HOME": str(cache)})
    entries = json.loads(path.read_text())
    keys = [json.loads(k) for k in entries]
    assert {(k["phase"], k["n_tasks"]) for k in keys} == {("train", 1), ("train", 2), ("attack", 1), ("attack", 2)}
    assert {(k["encoder"], k["image_size"], k["device"], k["batch"]) for k in keys} == {("resnet18", 32, "cpu", 3),
                                                                                         ("resnet18", 32, "cpu", 2)}
    assert all(k["torch"] and k["threads"] == 1 and k["revision"] == "mtrobust-decoder" for k in keys)
    assert "measured now" in first.stdout and "estimated time on this machine: " in first.stdout
    assert "unknown" not in first.stdout
    cached = (path.read_bytes(), path.stat().st_mtime_ns)

    second = dry_run(grid, results, cache)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == cached  # nothing measured again
    assert "4 from the cache" in second.stdout and "measured now" not in second.stdout
    assert snapshot(results) == before  # the results folder: not a byte written
    assert not list(results.rglob("calibration*"))


def test_done_trials_leave_the_estimate(stored, tmp_path):
    grid, results = stored  # the depth model and its attack are done
    grid = extended(grid, tmp_path, '["d", "s"]')
    cost = json.loads(dry_run(grid, results, tmp_path / "cache", "--format", "json", "--no-calibrate").stdout)["cost"]
    # only the segmentation model: 1 epoch of ceil(8 / 3) batches, 1 attack of 2 steps on ceil(5 / 2) batches
    assert {k: cost["total"][k] for k in ("trainings", "epochs", "train_steps", "attack_trials", "attack_steps")} == \
        {"trainings": 1, "epochs": 1, "train_steps": 3, "attack_trials": 1, "attack_steps": 2 * 3}


def test_no_calibrate_measures_nothing(tmp_path):
    grid, cache, out = grid_file(tmp_path, '["d"]', analysis=""), tmp_path / "cache", tmp_path / "results"
    result = dry_run(grid, out, cache, "--no-calibrate")
    assert "estimated time on this machine: unknown" in result.stdout
    assert "time unknown: --no-calibrate" in result.stdout
    assert "calibrating" not in result.stderr
    assert not cache.exists() and not out.exists()  # no cache written, and no results folder made
    dry_run(grid, out, cache)  # measures
    again = dry_run(grid, out, cache, "--no-calibrate")  # the cached times serve
    assert "unknown" not in again.stdout and "2 from the cache" in again.stdout
    assert not out.exists()


def test_json_has_the_cost_object(tmp_path):
    grid, cache = grid_file(tmp_path, '["d"]', analysis=""), tmp_path / "cache"
    plan = json.loads(dry_run(grid, tmp_path / "results", cache, "--format", "json").stdout)
    cost = plan["cost"]
    assert cost["counts"] == "exact"
    total = cost["total"]
    assert (total["trainings"], total["epochs"], total["train_steps"]) == (1, 3, 9)
    assert (total["attack_trials"], total["attack_steps"]) == (1, 2 * 2 * 3)
    assert cost["estimated_seconds"] > 0 and math.isclose(total["estimated_hours"], cost["estimated_seconds"] / 3600)
    assert cost["groups"][0]["seconds_per_train_step"] > 0 and cost["groups"][0]["seconds_per_attack_step"] > 0
    assert "validation" in cost["leaves_out"] and "process start-up" in cost["leaves_out"]
    assert (cache / "mtbench" / "calibration.json").is_file()


def test_a_grid_of_another_machines_data_counts_at_most(tmp_path, plugins):
    """The paper presets read Taskonomy from a folder this machine lacks: their sample counts are caps."""
    text = grid_file(tmp_path, '["d"]', analysis="").read_text()
    grid = tmp_path / "taskonomy.toml"
    grid.write_text(text.replace("[data]", '[data]\ndataset = "taskonomy"\nroot = "/nonexistent/taskonomy"'))
    plan = estimate(pending_work(load_grid(grid, plugins).trials, {}), {}, None)
    assert not plan.exact and plan.total.train_steps == 9  # the grid's train_samples, as if all were there
    assert cost_table(plan).title.plain == "cost of the trials to run (at most)"
    assert any(line.startswith("the counts are at most") for line in cost_lines(plan))


def test_the_cache_folder_follows_xdg(tmp_path):
    home = Path.home()
    assert cache_path({}) == home / ".cache" / "mtbench" / "calibration.json"
    assert cache_path({"XDG_CACHE_HOME": "relative"}) == home / ".cache" / "mtbench" / "calibration.json"
    assert cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "mtbench" / "calibration.json"
