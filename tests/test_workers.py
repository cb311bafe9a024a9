"""Several workers on one database, and kill -9 at random moments: every trial done exactly once."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import CPU_TINY_DATA, run_cli

from mtbench.storage import Store
from mtbench.threads import plan

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
    shares = plan(4)  # each helper logs its share of this machine's cores
    assert shares.describe() in result.stderr
    assert all(shares.for_worker(k + 2).describe() in text for k, text in enumerate(worked))
    ran = [int(n) for n in re.findall(r"^  worker \d .*?: (\d+) trial\(s\) run, 0 failed, idle [\d.]+ s$",
                                      result.stderr, re.M)]
    assert len(ran) == 4 and sum(ran) == 11, result.stderr  # each worker's share, read back from the helpers
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
    jobs = "".join(p.read_text() for p in (out / "jobs").glob("*/*_log.err"))
    shares = plan(2)  # the two jobs run side by side on this machine: each gets half of it
    assert shares.describe() in jobs and shares.for_worker(2).describe() in jobs, jobs
    trials, rows = counts(out / "mtbench.db")
    assert len(trials) == 11 and all(status == "done" and attempts == 1 for _, _, status, attempts in trials)
    assert len(rows) == 11


def test_slurm_parameters_from_the_executor_table():
    from mtbench.executor import slurm_parameters

    assert slurm_parameters({"partition": "gpu", "gpus": 1, "time_min": 120, "mem_gb": 32, "cpus": None}) == {
        "slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 120, "mem_gb": 32}


def test_waiting_for_a_model_sleeps_and_counts_as_idle(tmp_path, plugins):
    """An attack whose model another worker is training waits, asleep between polls (no CPU burnt),
    and the wait is counted; once the model is done the attack is handed out."""
    from mtbench.grid import load_grid
    from mtbench.records import TrialResult
    from mtbench.runner import RunSummary, claim, schedule

    (tmp_path / "grid.toml").write_text(GRID)
    grid = load_grid(tmp_path / "grid.toml", plugins)
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    run_id = store.begin_run("other", "", "", "0")
    model = next(t for t in grid.trials if t.kind == "train")
    attacks = [t for t in grid.trials if t.parent == model.id]
    assert claim(store, model, run_id)  # "another worker" (alive: this process) trains it
    finished = threading.Timer(1.5, lambda: store.finish(model.id, TrialResult(), 1.5))
    summary = RunSummary()
    wall, cpu = time.perf_counter(), time.thread_time()
    finished.start()
    handed = [t.id for t in schedule(attacks, store, summary, run_id, poll_s=0.1)]
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu  # this thread's CPU: the waiting
    assert handed == [t.id for t in attacks]
    assert 1.4 <= summary.idle_s <= wall
    assert cpu < 0.25 * wall, (cpu, wall)  # asleep between polls, not spinning (about 0.05 here)

    failed = next(t for t in grid.trials if t.kind == "train" and t.id != model.id)
    assert claim(store, failed, run_id)
    threading.Timer(0.5, lambda: store.fail(failed.id, "boom")).start()
    waited = RunSummary()
    assert list(schedule([t for t in grid.trials if t.parent == failed.id], store, waited, run_id, 0.1)) == []
    assert waited.failed and 0.4 <= waited.idle_s < 5  # the wait before its model failed counts too


def test_a_helper_reports_its_idle_time(tmp_path, plugins):
    """A real `mtbench worker` that waits for a model another worker holds says how long, on its
    console and in the summary file `run --workers` reads back."""
    import json

    from mtbench.grid import load_grid
    from mtbench.runner import claim

    (tmp_path / "grid.toml").write_text(GRID.replace('["s", "d", "sd"]', '["s"]'))
    out = tmp_path / "r"
    out.mkdir()
    store = Store(f"sqlite:///{out / 'mtbench.db'}")
    model = next(t for t in load_grid(tmp_path / "grid.toml", plugins).trials if t.kind == "train")
    assert claim(store, model, store.begin_run("other", "", "", "0"))  # held by this (alive) process
    summary_file = out / "logs" / "worker-1.summary.json"
    worker = subprocess.Popen([sys.executable, "-c", "from mtbench.cli import main; main()", "worker",
                               str(tmp_path / "grid.toml"), "--out", str(out), "--summary-file", str(summary_file)],
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(store.table_rows("runs")) < 2 and time.time() < deadline:  # the worker has begun its run
        time.sleep(0.2)
    time.sleep(2.0)
    store.fail(model.id, "stopped by the test")
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 0, stderr
    idle = json.loads(summary_file.read_text())
    assert idle["ran"] == 0 and idle["failed"] == 2 and idle["idle_s"] >= 1.5, idle
    assert f"idle {idle['idle_s']:.1f} s" in stderr


SETS = ['train.task_sets=["s", "d"]', "train.epochs=2", "attack[0].eps=[0.01]"]
"""Changes from the command line that the helper workers and jobs must see: the file alone gives
other trials (one task set, one epoch, two eps)."""


@pytest.mark.parametrize("how", [["--workers", "2"], ["--executor", "local", "--workers", "1"]])
def test_helpers_and_jobs_run_the_grid_with_its_set_changes(tmp_path, plugins, how):
    """`run --set ...` with a helper process, or with a job as the only worker: every worker runs the
    trials of the changed grid (a worker that read the grid file would add trials of its own)."""
    from mtbench.grid import load_grid

    (tmp_path / "grid.toml").write_text(GRID.replace('["s", "d", "sd"]', '["s"]'))
    out = tmp_path / "r"
    wanted = {t.id for t in load_grid(tmp_path / "grid.toml", plugins, SETS).trials}
    assert len(wanted) == 4 and wanted.isdisjoint(t.id for t in load_grid(tmp_path / "grid.toml", plugins).trials)
    sets = [arg for change in SETS for arg in ("--set", change)]
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(out), *how, *sets)
    assert result.returncode == 0, result.stderr
    trials, rows = counts(out / "mtbench.db")
    assert {tid for tid, *_ in trials} == wanted and set(rows) == wanted
    assert all(status == "done" and attempts == 1 for _, _, status, attempts in trials)
    (effective,) = (out / "grids").glob("grid-*.toml")
    with sqlite3.connect(out / "mtbench.db") as c:
        runs = c.execute("select grid_path, grid_text from runs").fetchall()
    here = {tmp_path / "grid.toml"} if how[0] == "--workers" else set()  # with --executor, the job runs alone
    assert {Path(path).resolve() for path, _ in runs} == {effective.resolve(), *here}
    assert {text for _, text in runs} == {effective.read_text()}  # every worker ran the changed grid
