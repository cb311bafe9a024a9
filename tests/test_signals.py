"""SIGTERM, the cluster's signal, handled like Ctrl-C by real `mtbench run` processes: the trials in
flight are given back, the run record says interrupted, helper workers stop, the Parquet mirror
agrees with the database, and the exit status is 143 with one line saying what happened."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import CPU_TINY_DATA

LONG_TRAINING = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = {task_sets}
epochs = 2000
batch_size = 4
"""


def start_run(tmp_path: Path, task_sets: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    (tmp_path / "grid.toml").write_text(LONG_TRAINING.format(task_sets=task_sets))
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-c", "from mtbench.cli import main; main()", "run",
                             str(tmp_path / "grid.toml"), "--out", str(results), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    return proc, results


def wait_for_running(db: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> list[str]:
    """The workers (host:pid) of ``count`` running trials, once that many have started."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if db.is_file():
            try:
                with sqlite3.connect(db) as c:
                    workers = [w for (w,) in c.execute("select worker from trials where status = 'running'")]
            except sqlite3.OperationalError:  # the schema is being created
                workers = []
            if len(workers) >= count:
                return workers
        time.sleep(0.2)
    raise AssertionError(f"{count} trial(s) never started running")


def terminate(proc: subprocess.Popen) -> tuple[int, str]:
    time.sleep(1.0)  # well inside the trial: past claiming, training epochs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def gone(pid: int) -> bool:
    """True if the process has ended (a zombie left for an init that does not reap counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def assert_given_back(results: Path, err: str) -> None:
    with sqlite3.connect(results / "mtbench.db") as c:
        trials = dict(c.execute("select id, status from trials").fetchall())
        runs = [s for (s,) in c.execute("select status from runs")]
        assert c.execute("pragma integrity_check").fetchone() == ("ok",)
    assert trials and set(trials.values()) == {"pending"}, trials
    assert "interrupted" in runs and "running" not in runs, runs
    mirror = pq.read_table(results / "parquet" / "trials.parquet").to_pydict()
    assert dict(zip(mirror["id"], mirror["status"])) == trials, "the Parquet mirror is stale"
    assert set(pq.read_table(results / "parquet" / "runs.parquet").column("status").to_pylist()) == set(runs)
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "terminated (SIGTERM" in last and "given back" in last, err[-2000:]


def test_sigterm_gives_the_trial_back_and_exits_143(tmp_path):
    proc, results = start_run(tmp_path, '["d"]')
    wait_for_running(results / "mtbench.db", 1, proc)
    code, err = terminate(proc)
    assert code == 143, err[-3000:]
    assert_given_back(results, err)


def test_sigterm_stops_helper_workers(tmp_path):
    proc, results = start_run(tmp_path, '["d", "s"]', "--workers", "2")
    workers = wait_for_running(results / "mtbench.db", 2, proc)
    pids = [int(w.rpartition(":")[2]) for w in workers]
    assert proc.pid in pids and len(set(pids)) == 2, workers
    code, err = terminate(proc)
    assert code == 143, err[-3000:]
    helper = next(p for p in pids if p != proc.pid)
    deadline = time.time() + 10
    while not gone(helper) and time.time() < deadline:
        time.sleep(0.2)
    assert gone(helper), "the helper worker outlived the run as an orphan"
    assert_given_back(results, err)
    log = (results / "logs" / "worker-1.log").read_text()
    assert "terminated (SIGTERM" in log and "Traceback" not in log, log[-2000:]


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interruptible_raises_once_with_the_shells_exit_status(signum, code):
    from mtbench.signals import Interrupted, _fired, exit_code, interruptible

    _fired.clear()
    try:
        with pytest.raises(Interrupted) as caught, interruptible():
            os.kill(os.getpid(), signum)
            time.sleep(1)  # the handler runs at the next bytecode
        assert exit_code(caught.value) == code
        with interruptible():  # a second signal while cleaning up is ignored, not raised
            os.kill(os.getpid(), signum)
            time.sleep(0.1)
    finally:
        _fired.clear()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
