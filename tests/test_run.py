"""End to end: `mtbench run` trains and attacks, stores, skips done trials, survives SIGKILL, reports."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pyarrow.parquet as pq
from helpers import run_cli

from mtbench.storage import Store


def rows(db, sql):
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def test_run_report_rerun(write_grid, tmp_path):
    out = tmp_path / "results"
    grid = write_grid()
    first = run_cli("run", str(grid), "--out", str(out))
    assert first.returncode == 0, first.stderr
    db = out / "mtbench.db"
    assert rows(db, "select kind, status, count(*) from trials group by kind, status") == [
        ("attack", "done", 3), ("train", "done", 2)]
    # every task of the two-task model is measured under each single-task attack
    measured = rows(db, "select t.id, count(distinct m.task) from trials t join metrics m on m.trial_id = t.id "
                        "where t.kind='attack' and m.phase='adv' group by t.id")
    assert sorted(n for _, n in measured) == [1, 2, 2]
    checks = [json.loads(c) for (c,) in rows(db, "select checks from trials where kind='attack'")]
    assert all(c["in_ball"] and c["in_box"] and c["eps0_is_clean"] and c["finite"] for c in checks)
    assert pq.read_table(out / "parquet" / "samples.parquet").num_rows > 0
    assert "resnet18/sd/uniform" in first.stdout and "Leaderboard" in first.stdout
    again = run_cli("run", str(grid), "--out", str(out))
    assert again.returncode == 0 and "0 trial(s) run, 5 already done" in again.stderr
    assert rows(db, "select sum(attempts) from trials") == [(5,)]
    report = run_cli("report", "--out", str(out), "--format", "json", "--view", "attacks")
    data = json.loads(report.stdout)
    attacks = next(v for k, v in data.items() if k.startswith("Attacks"))
    assert len(attacks) == 3 and all("v_attacked_mean" in r for r in attacks)
    from_parquet = run_cli("report", str(out / "parquet"), "--format", "csv", "--view", "leaderboard")
    assert from_parquet.returncode == 0 and "resnet18/s/uniform" in from_parquet.stdout


def test_report_does_not_import_torch(tmp_path):
    code = ("import sys; from mtbench.cli import main; sys.argv=['mtbench','report','--out',%r]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'")
    Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    result = subprocess.run([sys.executable, "-c", code % str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_failed_trial_is_stored_and_grid_goes_on(write_grid, tmp_path):
    out = tmp_path / "results"
    grid = write_grid(task_sets='["d"]')
    assert run_cli("run", str(grid), "--out", str(out)).returncode == 0
    ckpt = next((out / "checkpoints").glob("*.safetensors"))
    ckpt.write_bytes(b"tampered")
    with sqlite3.connect(out / "mtbench.db") as c:
        c.execute("update trials set status='pending' where kind='attack'")
    result = run_cli("run", str(grid), "--out", str(out))
    assert result.returncode == 1
    (status, error), = rows(out / "mtbench.db", "select status, error from trials where kind='attack'")
    assert status == "failed" and "SHA-256" in error


def test_sigkill_and_resume_runs_every_trial_once(write_grid, tmp_path):
    out = tmp_path / "results"
    grid = write_grid(task_sets='["s", "d", "sd"]')
    rng = random.Random(0)
    cmd = [sys.executable, "-c", "from mtbench.cli import main; main()", "run", str(grid), "--out", str(out)]
    for _ in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(4, 12))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    final = run_cli("run", str(grid), "--out", str(out))
    assert final.returncode == 0, final.stderr
    db = out / "mtbench.db"
    # 3 models + 1 + 1 + 2 single-task attacks
    assert rows(db, "select status, count(*) from trials group by status") == [("done", 7)]
    # no duplicated metrics: one clean row per (trial, task, metric)
    assert rows(db, "select count(*) from (select trial_id, task, metric, count(*) n from metrics "
                    "where phase='clean' group by trial_id, task, metric having n > 1)") == [(0,)]
    assert Store(f"sqlite:///{db}").integrity_ok()


def test_ctrl_c_gives_the_trial_back(write_grid, tmp_path):
    out = tmp_path / "results"
    grid = write_grid(task_sets='["s", "d"]')
    cmd = [sys.executable, "-c", "from mtbench.cli import main; main()", "run", str(grid), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = out / "mtbench.db"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a trial is in flight
        try:
            if db.exists() and rows(db, "select count(*) from trials where status='running'") == [(1,)]:
                break
        except sqlite3.OperationalError:  # the file exists before its tables do
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert rows(db, "select count(*) from trials where status='running'") == [(0,)]
    assert run_cli("run", str(grid), "--out", str(out)).returncode == 0
    assert rows(db, "select status, count(*) from trials group by status") == [("done", 4)]
