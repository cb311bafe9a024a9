"""Several workers on one database, and kill -9 at random moments: every trial done exactly once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from helpers import CPU_TINY_DATA, run_cli

from mtbench.storage import Store

GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["s", "d", "sd"]
epochs = 1
batch_size = 4
[[attack]]
name = "pgd-linf"
eps = ["4/255", "8/255"]
steps = 2
targets = "each"
"""


def counts(db) -> tuple[list, dict]:
    with sqlite3.connect(db) as c:
        trials = c.execute("select id, kind, status, attempts from trials order by id").fetchall()
        rows = dict(c.execute("select trial_id, count(*) from metrics group by trial_id").fetchall())
    return trials, rows


def test_four_workers_run_every_trial_exactly_once(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "r"), "--workers", "4")
    assert result.returncode == 0, result.stderr
    trials, rows = counts(tmp_path / "r" / "mtbench.db")
    assert len(trials) == 3 + 8  # three models; each task of each model attacked at two eps
    assert all(status == "done" and attempts == 1 for _, _, status, attempts in trials)
    logs = sorted((tmp_path / "r" / "logs").glob("worker-*.log"))
    assert len(logs) == 3
    worked = [log.read_text() for log in logs]
    assert all("worker:" in text for text in worked)
    single = tmp_path / "single"
    assert run_cli("run", str(tmp_path / "grid.toml"), "--out", str(single)).returncode == 0
    _, single_rows = counts(single / "mtbench.db")
    assert rows == single_rows  # no metric row lost or duplicated


def test_four_workers_on_postgresql(tmp_path, postgres_url):
    from sqlalchemy import create_engine, text

    from mtbench.storage.schema import metadata

    engine = create_engine(postgres_url)
    metadata.drop_all(engine)
    (tmp_path / "grid.toml").write_text(GRID)
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "r"), "--db", postgres_url,
                     "--workers", "4")
    assert result.returncode == 0, result.stderr
    with engine.connect() as c:
        trials = c.execute(text("select status, attempts from trials")).fetchall()
        per_trial = c.execute(text("select trial_id, count(*) from metrics group by trial_id")).fetchall()
    assert len(trials) == 11 and all(s == "done" and a == 1 for s, a in trials)
    assert len(per_trial) == 11
    joined = run_cli("worker", "--out", str(tmp_path / "r"), "--db", postgres_url)  # joins from the DB's grid
    assert joined.returncode == 0 and "0 trial(s) run" in joined.stderr, joined.stderr
    engine.dispose()


def test_kill_9_at_random_moments_then_resume(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    out = tmp_path / "r"
    rng = random.Random(0)
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, "-c", "from mtbench.cli import main; main()", "run",
                                 str(tmp_path / "grid.toml"), "--out", str(out), "--workers", "2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.5, 4.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        trials, rows = counts(out / "mtbench.db") if (out / "mtbench.db").exists() else ([], {})
        for tid, _, status, _ in trials:  # nothing of an unfinished trial is visible
            assert status == "done" or tid not in rows, (tid, status)
    final = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(out))
    assert final.returncode == 0, final.stderr
    trials, rows = counts(out / "mtbench.db")
    assert len(trials) == 11 and all(status == "done" for _, _, status, _ in trials)
    assert all(rows.get(tid, 0) > 0 for tid, _, _, _ in trials)
    assert Store(f"sqlite:///{out / 'mtbench.db'}").integrity_ok()


def test_submitit_local_executor_runs_worker_jobs(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID + "\n[executor]\ncpus = 1\ntime_min = 30\npartition = \"cpu\"\n")
    out = tmp_path / "r"
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(out), "--executor", "local", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "2 worker job(s)" in result.stderr
    trials, rows = counts(out / "mtbench.db")
    assert len(trials) == 11 and all(status == "done" and attempts == 1 for _, _, status, attempts in trials)
    assert len(rows) == 11


def test_slurm_parameters_from_the_executor_table():
    from mtbench.executor import slurm_parameters

    assert slurm_parameters({"partition": "gpu", "gpus": 1, "time_min": 120, "mem_gb": 32, "cpus": None}) == {
        "slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 120, "mem_gb": 32}
