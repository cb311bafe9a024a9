"""Training trials: a NaN loss stops with a clear error; a killed trial resumes at its last epoch
and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import run_cli

GRID = """
[run]
device = "cpu"
[data]
image_size = 32
train_samples = 16
test_samples = 4
[train]
encoders = ["resnet18"]
task_sets = ["d"]
epochs = {epochs}
batch_size = 4
lr = {lr}
"""


def clean_metrics(db) -> dict:
    with sqlite3.connect(db) as c:
        return dict(((t, m), v) for t, m, v in c.execute(
            "select task, metric, value from metrics where phase in ('clean', 'val', 'train')"
            " order by task, metric, step"))


def test_nan_loss_fails_the_trial_with_a_clear_error(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(epochs=3, lr=1e30))
    result = run_cli("run", str(grid), "--out", str(tmp_path / "r"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "training loss became" in result.stderr and "lower the lr" in result.stderr


def test_killed_training_resumes_at_its_last_epoch(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(epochs=4, lr=1e-3))
    straight = tmp_path / "straight"
    assert run_cli("run", str(grid), "--out", str(straight)).returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", "from mtbench.cli import main; main()", "run", str(grid),
                             "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((killed / "checkpoints").glob("*.resume.json")):
        time.sleep(0.05)
    assert list((killed / "checkpoints").glob("*.resume.json")), "no per-epoch state was written"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = run_cli("run", str(grid), "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    assert not list((killed / "checkpoints").glob("*.resume.*")), "the state is removed when the trial ends"
    a, b = clean_metrics(straight / "mtbench.db"), clean_metrics(killed / "mtbench.db")
    assert a.keys() == b.keys()
    for key in a:
        assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), key
