"""Weight snapshots: a training trial keeps its weights at listed epochs, attacks name the epochs they
attack, and a stored model without a snapshot the grid asks for is refused before any work."""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers import CPU_TINY_DATA, run_cli

GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["d"]
epochs = 3
batch_size = 4
{snapshots}

[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
{epochs}
"""


def done_attacks(db) -> dict[int | None, str]:
    """Epoch attacked (None: the trained model) -> attack trial id, for the done attack trials."""
    with sqlite3.connect(db) as con:
        rows = con.execute("select id, config from trials where kind = 'attack' and status = 'done'").fetchall()
    return {json.loads(config).get("epoch"): tid for tid, config in rows}


def metric(db, trial: str, phase: str, task: str, name: str, step: int | None = None) -> float:
    query = "select value from metrics where trial_id = ? and phase = ? and task = ? and metric = ?"
    args = [trial, phase, task, name]
    if step is not None:
        query, args = query + " and step = ?", args + [step]
    with sqlite3.connect(db) as con:
        (value,), = con.execute(query, args).fetchall()
    return value


def test_attacks_run_on_the_snapshots_they_name(tmp_path, write_grid):
    grid = write_grid(GRID.format(snapshots="snapshots = [1, 2]", epochs="epochs = [1, 3]"))
    plan = run_cli("run", str(grid), "--out", str(tmp_path / "r"), "--dry-run", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    trials = json.loads(plan.stdout)["trials"]
    train, = (t for t in trials if t["kind"] == "train")
    assert train["config"]["snapshots"] == [1, 2]
    assert sorted((t["config"]["epoch"] or 0) for t in trials if t["kind"] == "attack") == [0, 1]  # 3 = trained

    result = run_cli("run", str(grid), "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    checkpoints = tmp_path / "r" / "checkpoints"
    assert {p.name for p in checkpoints.glob("*.safetensors")} == {
        f"{train['id']}.safetensors", f"{train['id']}.epoch1.safetensors", f"{train['id']}.epoch2.safetensors"}
    db = tmp_path / "r" / "mtbench.db"
    with sqlite3.connect(db) as con:  # the plan's setting ids are the ones stored
        assert dict(con.execute("select id, setting_id from trials").fetchall()) == {
            t["id"]: t["setting_id"] for t in trials}
    attacks = done_attacks(db)
    assert set(attacks) == {1, None}
    # the attack at epoch 1 measured the model as it was after epoch 1: its clean error is the error the
    # training trial validated after epoch 1 (no val split: on the test split), not the trained model's
    at_1 = metric(db, attacks[1], "clean", "depth_zbuffer", "mse")
    assert at_1 == pytest.approx(metric(db, train["id"], "val", "depth_zbuffer", "mse", step=1), rel=1e-5)
    at_3 = metric(db, attacks[None], "clean", "depth_zbuffer", "mse")
    assert at_3 == pytest.approx(metric(db, train["id"], "val", "depth_zbuffer", "mse", step=3), rel=1e-5)
    assert at_1 != pytest.approx(at_3, rel=1e-3)


def test_a_stored_model_without_the_snapshot_is_refused_before_any_work(tmp_path, write_grid):
    out = tmp_path / "r"
    first = run_cli("run", str(write_grid(GRID.format(snapshots="", epochs=""), name="a.toml")), "--out", str(out))
    assert first.returncode == 0, first.stderr
    db = out / "mtbench.db"
    before = done_attacks(db)
    later = write_grid(GRID.format(snapshots="snapshots = [2]", epochs="epochs = [2]"), name="b.toml")
    for extra in ([], ["--dry-run"]):
        result = run_cli("run", str(later), "--out", str(out), *extra)
        assert result.returncode == 2, result.stderr
        assert "b.toml: attack.epochs" in result.stderr and "kept no snapshot at epoch 2" in result.stderr
        assert "Traceback" not in result.stderr
    assert done_attacks(db) == before


def test_epochs_the_models_do_not_keep_are_refused(tmp_path, write_grid):
    grid = write_grid(GRID.format(snapshots="snapshots = [1, 3]", epochs="epochs = [2]"))
    result = run_cli("run", str(grid), "--out", str(tmp_path / "r"), "--dry-run")
    assert result.returncode == 2
    assert "train.snapshots: 3 is not before the last epoch (3)" in result.stderr
    assert "attack[0].epochs: the models keep no snapshot at epoch 2" in result.stderr
    assert not (tmp_path / "r").exists()
