"""Each worker process's share of the cores (mtbench.threads): the split, the user's overrides, and
what real worker processes (a helper of `run --workers`, a Slurm job) actually start torch with."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import CPU_TINY_DATA

from mtbench.errors import MtbenchError
from mtbench.threads import BUDGET_VAR, LIBRARY_VARS, THREADS_VAR, available_cores, inherited, plan

GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["s"]
epochs = 2
batch_size = 4
"""

SETTINGS = (THREADS_VAR, BUDGET_VAR, "SLURM_CPUS_PER_TASK", *LIBRARY_VARS)
"""Environment variables that change a worker's budget."""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the settings above, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return {**env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra}


def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
    """``mtbench ARGS`` in a clean environment (see :func:`clean_env`)."""
    return subprocess.run([sys.executable, "-c", "from mtbench.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=600, env=clean_env(**extra))


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> tuple[Path, Path]:
    """A grid whose only trial is done: a worker on it starts, applies its budget, finds nothing to do."""
    root = tmp_path_factory.mktemp("threads")
    (root / "grid.toml").write_text(GRID)
    result = cli("run", str(root / "grid.toml"), "--out", str(root / "r"))
    assert result.returncode == 0, result.stderr
    return root / "grid.toml", root / "r"


def test_local_workers_share_the_cores():
    two = plan(2, cores=2, environ={})
    assert (two.share, two.intra_op, two.inter_op, two.loader_workers) == (1, 1, 1, 0)
    four = plan(4, cores=16, environ={})  # loader workers are counted in the share
    assert four.share == 4 and four.intra_op + four.loader_workers == 4 and four.loader_workers == 1
    assert four.inter_op == 1
    assert plan(1, cores=2, environ={}).intra_op == 2
    assert plan(3, cores=2, environ={}).intra_op == 1  # more workers than cores: one thread each, never 0
    big = plan(1, cores=64, environ={})
    assert (big.intra_op, big.inter_op, big.loader_workers) == (60, 2, 4)
    assert four.for_worker(3).describe() == ("worker 3 of 4: 3 intra-op threads, 1 inter-op thread, "
                                             "1 data-loader worker (16 cores from given)")


def test_user_settings_override_or_cap_the_share():
    assert plan(2, cores=16, environ={THREADS_VAR: "6"}).share == 6  # explicit: whatever cores and workers
    assert plan(1, cores=16, environ={"OMP_NUM_THREADS": "3"}).share == 3  # the user's bound is kept
    assert plan(2, cores=16, environ={"OMP_NUM_THREADS": "12"}).share == 8  # and never raised
    capped = plan(1, cores=2, environ={"OMP_NUM_THREADS": "1"})
    assert capped.share == 1 and "at most OMP_NUM_THREADS=1" in capped.describe()
    with pytest.raises(MtbenchError, match=THREADS_VAR):
        plan(1, cores=2, environ={THREADS_VAR: "two"})
    # a helper gets its budget through its environment, as it is
    sent = plan(4, cores=16, environ={}).for_worker(2)
    assert inherited(sent.env()) == sent
    assert all(sent.env()[var] == "3" for var in LIBRARY_VARS)


def test_slurm_job_uses_its_cpus_per_task_whatever_the_machine(done):
    assert available_cores({"SLURM_CPUS_PER_TASK": "3"}) == (3, "SLURM_CPUS_PER_TASK")
    grid, out = done
    code = ("import sys, torch; from mtbench.executor import worker_job; "
            f"n = worker_job({str(grid)!r}, {str(out)!r}, None); print(n, torch.get_num_threads())")
    job = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=clean_env(SLURM_CPUS_PER_TASK="3"))
    assert job.returncode == 0, job.stderr
    assert job.stdout.split() == ["0", "3"]  # nothing left to run; torch runs the job's 3 threads
    assert ("worker 1 of 1: 3 intra-op threads, 1 inter-op thread, 0 data-loader workers "
            "(3 cores from SLURM_CPUS_PER_TASK)") in job.stderr


def test_a_helper_starts_with_its_share_and_logs_it(done, tmp_path, monkeypatch):
    from mtbench.workers import start_workers

    grid, out = done
    seen_file = tmp_path / "helper.env"
    wrapper = tmp_path / "python"  # records the environment the helper starts with, then runs Python in it
    wrapper.write_text(f'#!/bin/sh\nenv > "{seen_file}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    budget = plan(2, cores=2, environ={})
    [helper] = start_workers(grid, out, None, 1, budget)
    assert helper.wait(timeout=300) == 0
    log = (out / "logs" / "worker-1.log").read_text()
    assert budget.for_worker(2).describe() in log  # read back from torch in the helper
    assert "worker 2 of 2: 1 intra-op thread, 1 inter-op thread, 0 data-loader workers" in log
    seen = dict(line.split("=", 1) for line in seen_file.read_text().splitlines() if "=" in line)
    assert {var: seen.get(var) for var in LIBRARY_VARS} == dict.fromkeys(LIBRARY_VARS, "1")
    monkeypatch.undo()
    started = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, env={**clean_env(), **plan(8, cores=16, environ={}).env()})
    assert started.stdout.strip() == "2"  # what OMP_NUM_THREADS & co. do to a fresh torch


def test_a_standalone_worker_uses_the_machine(done):
    grid, out = done
    cores, source = available_cores(clean_env())
    result = cli("worker", str(grid), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert plan(1, environ=clean_env()).describe() in result.stderr
    assert f"({cores} core{'s' if cores > 1 else ''} from {source})" in result.stderr


def test_loader_workers_leave_the_training_unchanged(tmp_path):
    """Three threads a worker, with and without a data-loader worker (a share of 4 has one): the same
    batches in the same order every epoch, so the same losses to the bit."""
    (tmp_path / "grid.toml").write_text(GRID)
    losses = []
    for threads, loaders in (("4", 1), ("3", 0)):
        out = tmp_path / f"r{threads}"
        result = cli("run", str(tmp_path / "grid.toml"), "--out", str(out), **{THREADS_VAR: threads})
        assert result.returncode == 0, result.stderr
        assert f"{loaders} data-loader worker" in result.stderr
        with sqlite3.connect(out / "mtbench.db") as c:
            losses.append(c.execute("select phase, task, metric, step, value from metrics "
                                    "order by phase, task, metric, step").fetchall())
    assert losses[0] and losses[0] == losses[1]


def test_a_second_apply_keeps_the_inter_op_pool():
    code = ("import torch; from mtbench.threads import apply, plan\n"
            "first = apply(plan(1, cores=4, environ={}))\n"
            "second = apply(plan(1, cores=16, environ={}))\n"
            "print(first.inter_op, second.inter_op, second.intra_op, torch.get_num_interop_threads())")
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "12", "1"], (done.stdout, time.perf_counter() - t)
