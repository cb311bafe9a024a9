"""Worker jobs on a real Slurm cluster (``.ci/slurm.sh start``): a submitit job array, ``scancel``
mid-trial, the time limit and its warning signal, and ``mtbench worker`` in an sbatch script.

Skipped without a cluster, unless MTBENCH_REQUIRE_SLURM is set (as .ci/run does). Job states come
from ``sacct``, as submitit reads them. The jobs run one torch thread each, so several share the
test machine's cores (the cluster oversubscribes them).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CPU_TINY_DATA, run_cli

ENV = {"OMP_NUM_THREADS": "1"}  # sbatch passes the submitter's environment on to its jobs
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING", "CONFIGURING"}


def grid(task_sets: str, steps: int) -> str:
    """One-epoch models and a PGD attack whose step count sets how long an attack trial takes
    (about 0.05-0.1 s a step here)."""
    return CPU_TINY_DATA + f"""
[train]
encoders = ["resnet18"]
task_sets = {task_sets}
epochs = 1
batch_size = 4
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = {steps}
targets = "each"
"""


def _cluster_up() -> bool:
    if not (shutil.which("sbatch") and shutil.which("sinfo") and shutil.which("sacct")):
        return False
    state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return state.returncode == 0 and any(s in ("idle", "mix", "alloc") for s in state.stdout.split())


@pytest.fixture(scope="module")
def slurm() -> None:
    """A Slurm cluster with an available node, or skip (fail under MTBENCH_REQUIRE_SLURM)."""
    if not _cluster_up():
        if os.environ.get("MTBENCH_REQUIRE_SLURM"):
            pytest.fail("Slurm is required (MTBENCH_REQUIRE_SLURM) but no cluster answers: .ci/slurm.sh start")
        pytest.skip("no Slurm cluster (.ci/slurm.sh start runs one on this machine)")


def sbatch(script: str, cwd: Path) -> str:
    """Submit a batch script; returns its job id."""
    done = subprocess.run(["sbatch", "--parsable"], input=script, capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **ENV}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def states(ids: list[str]) -> dict[str, str]:
    """Each job's (or array task's) state in the accounting database, e.g. CANCELLED, TIMEOUT."""
    ids_arg = ",".join(sorted({i.split("_")[0] for i in ids}))
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", ids_arg, "-o", "JobID,State"], capture_output=True,
                         text=True, timeout=60).stdout
    rows = dict(line.split("|") for line in out.splitlines() if line)
    return {job: state.split()[0] for job, state in rows.items()}


def wait_jobs(ids: list[str], timeout: float = 180) -> dict[str, str]:
    """Wait until every job has ended; returns their final states."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = states(ids)
        if all(i in now for i in ids) and not ACTIVE & {now[i] for i in ids}:
            return {i: now[i] for i in ids}
        time.sleep(1)
    raise AssertionError(f"jobs still active after {timeout} s: {states(ids)}")


def submit(*args: str) -> list[str]:
    """``mtbench run ... --executor slurm``; returns the job ids it prints (12, or 12_0 ... for arrays)."""
    result = run_cli("run", *args, "--executor", "slurm", env=ENV)
    assert result.returncode == 0, result.stderr
    return re.search(r"worker job\(s\): ([\d_, ]+);", result.stderr)[1].split(", ")


def job_log(out: Path, job: str) -> str:
    return "".join(p.read_text() for p in sorted((out / "jobs" / job).glob("*_log.*")))


def query(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / "mtbench.db", timeout=30) as c:
        return c.execute(sql).fetchall()


def trials(out: Path) -> dict[str, tuple[str, str, int]]:
    """id -> (kind, status, attempts)."""
    return {tid: (kind, status, attempts)
            for tid, kind, status, attempts in query(out, "select id, kind, status, attempts from trials")}


def wait_running(out: Path, kind: str, timeout: float = 120) -> str:
    """Wait until a trial of this kind is running; returns its id."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "mtbench.db").exists():
            try:
                running = [t for t, (k, s, _) in trials(out).items() if k == kind and s == "running"]
            except sqlite3.OperationalError:  # the schema is still being created
                running = []
            if running:
                return running[0]
        time.sleep(0.5)
    raise AssertionError(f"no {kind} trial started within {timeout} s")


def assert_done_exactly_once(out: Path, count: int) -> None:
    """Every trial done, and no result row written twice."""
    now = trials(out)
    assert len(now) == count and all(s == "done" for _, s, _ in now.values()), now
    twice = query(out, "select trial_id, split, phase, task, attacked, metric, step, count(*) from metrics "
                       "group by trial_id, split, phase, task, attacked, metric, step having count(*) > 1")
    assert not twice, twice
    assert {t for (t,) in query(out, "select distinct trial_id from metrics")} == set(now)


def assert_given_back(out: Path, trial: str) -> None:
    """The interrupted trial is pending again (tried once) and its worker's run record says so.

    sacct reports CANCELLED or TIMEOUT as soon as Slurm signals the job, so allow the worker the
    few seconds its clean-up takes."""
    deadline = time.time() + 30
    while trials(out)[trial][1] == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert trials(out)[trial][1:] == ("pending", 1), trials(out)[trial]
    assert ("interrupted",) in query(out, "select status from runs")


@pytest.fixture(scope="module", autouse=True)
def time_limited(slurm, tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A worker job with a one-minute time limit, submitted first so the other tests run while it
    waits for its limit: Slurm stops it with SIGTERM in the middle of a minutes-long attack trial."""
    root = tmp_path_factory.mktemp("slurm-time-limit")
    (root / "grid.toml").write_text(grid('["s"]', steps=3000))
    out = root / "r"
    job = sbatch(f"#!/bin/bash\n#SBATCH --time=1 --output={root}/job.log\n"
                 f"exec {sys.executable} -m mtbench.cli worker {root}/grid.toml --out {out}\n", root)
    yield out, job
    subprocess.run(["scancel", job], timeout=30)


def test_job_array_runs_every_trial_exactly_once(slurm, tmp_path):
    (tmp_path / "grid.toml").write_text(grid('["s", "sd"]', steps=2))
    out = tmp_path / "r"
    jobs = submit(str(tmp_path / "grid.toml"), "--out", str(out), "--workers", "3")
    assert len(jobs) == 3 and len({j.split("_")[0] for j in jobs}) == 1, jobs  # one array of three tasks
    assert wait_jobs(jobs) == {j: "COMPLETED" for j in jobs}, [job_log(out, j) for j in jobs]
    assert_done_exactly_once(out, 2 + 3)  # two models; s attacked once, s and d of sd each once
    assert all(attempts == 1 for _, _, attempts in trials(out).values())


def test_scancel_mid_trial_gives_it_back_and_a_rerun_finishes(slurm, tmp_path):
    (tmp_path / "grid.toml").write_text(grid('["s"]', steps=120))
    out = tmp_path / "r"
    args = (str(tmp_path / "grid.toml"), "--out", str(out))
    [job] = submit(*args)
    attack = wait_running(out, "attack")
    time.sleep(2)
    subprocess.run(["scancel", job], check=True, timeout=30)
    assert wait_jobs([job], timeout=60) == {job: "CANCELLED"}
    assert_given_back(out, attack)
    assert "SIGTERM" in job_log(out, job)

    again = submit(*args, "--workers", "2")  # workers for what is left
    assert len(again) == 2
    assert set(wait_jobs(again).values()) == {"COMPLETED"}
    assert_done_exactly_once(out, 2)
    assert trials(out)[attack][2] == 2  # given back once, then run to the end


def test_usr2_gives_the_trial_back_then_submitit_requeues(slurm, tmp_path):
    """Slurm sends SIGUSR2 (submitit asks for it 90 s before the time limit; some clusters send it
    on preemption). The worker gives its trial back rather than failing it, and submitit requeues
    a job that was not near its limit: the job comes back and finishes the grid. The signal is sent
    by hand here, as Slurm sends it."""
    (tmp_path / "grid.toml").write_text(grid('["s"]', steps=120) + "[executor]\ntime_min = 30\n")
    out = tmp_path / "r"
    [job] = submit(str(tmp_path / "grid.toml"), "--out", str(out))
    attack = wait_running(out, "attack")
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    deadline = time.time() + 30
    while states([job]).get(job) == "RUNNING" and time.time() < deadline:
        time.sleep(0.5)
    assert states([job]).get(job) in ("REQUEUED", "PENDING")  # .ci/slurm.sh: requeued jobs wait 10 s
    assert_given_back(out, attack)
    assert "Caught signal SIGUSR2" in job_log(out, job)
    assert wait_jobs([job]) == {job: "COMPLETED"}, job_log(out, job)
    assert_done_exactly_once(out, 2)
    assert trials(out)[attack][2] == 2


def test_sbatch_worker_joins_a_running_grid(slurm, tmp_path):
    (tmp_path / "grid.toml").write_text(grid('["s", "d", "sd"]', steps=40))
    out = tmp_path / "r"
    local = subprocess.Popen([sys.executable, "-m", "mtbench.cli", "run", str(tmp_path / "grid.toml"), "--out",
                              str(out)], env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_running(out, "train")
        job = sbatch(f"#!/bin/bash\n#SBATCH --output={tmp_path}/job.log\n"
                     f"exec {sys.executable} -m mtbench.cli worker {tmp_path}/grid.toml --out {out}\n", tmp_path)
        assert wait_jobs([job]) == {job: "COMPLETED"}, (tmp_path / "job.log").read_text()
        _, stderr = local.communicate(timeout=180)
    finally:
        local.kill()
    assert local.returncode == 0, stderr
    log = (tmp_path / "job.log").read_text()
    ran = int(log.split("worker: ")[1].split()[0])
    assert ran >= 1, log  # the job took trials of the grid the local run was working through
    assert_done_exactly_once(out, 3 + 4)
    assert all(attempts == 1 for _, _, attempts in trials(out).values())


def test_time_limit_gives_the_trial_back(slurm, time_limited):
    out, job = time_limited
    assert wait_jobs([job], timeout=240) == {job: "TIMEOUT"}
    [attack] = [t for t, (kind, _, _) in trials(out).items() if kind == "attack"]
    assert_given_back(out, attack)
