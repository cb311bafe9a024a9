"""Several workers on one machine (``mtbench run --workers N``): this process runs the grid while
N - 1 helper ``mtbench worker`` processes claim trials from the same database.

Each of the N processes applies its share of this machine's cores (:mod:`mtbench.threads`); a
helper gets its share through its environment, so that its torch starts with it. Each helper
writes what it did (trials run, seconds idle) to <out>/logs/worker-K.summary.json, which the run's
summary reads back.

The helpers never outlive the run: on SIGTERM or Ctrl-C they are sent SIGTERM and waited for, so
that each gives its trial in flight back, and the Parquet mirror is refreshed after them (they do
not write it themselves). The interruption is then raised again for the caller to report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from mtbench.console import say
from mtbench.grid import Grid
from mtbench.plugins import Plugins
from mtbench.report.flat import export_mirror
from mtbench.runner import RunSummary, WorkerStats, run_grid
from mtbench.signals import interruptible
from mtbench.storage import Store
from mtbench.threads import ThreadBudget, apply, plan

STOP_GRACE_S = 60.0
"""How long a helper may take to give its trial back after SIGTERM before it is killed."""


def summary_file(out: Path, k: int) -> Path:
    """Where helper K (1 ...) writes what it did, next to its log."""
    return Path(out) / "logs" / f"worker-{k}.summary.json"


def start_workers(grid: Path, out: Path, db: str | None, count: int,
                  budget: ThreadBudget | None = None) -> list[subprocess.Popen]:
    """Background ``mtbench worker`` processes; their output goes to <out>/logs/worker-K.log.

    Each gets ``budget`` (default: ``count + 1`` workers' shares of this machine) as worker K + 1,
    this process being worker 1."""
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    budget = budget or plan(count + 1)
    args = [sys.executable, "-m", "mtbench.cli", "worker", str(grid), "--out", str(out), *(["--db", db] if db else [])]
    procs = []
    for k in range(1, count + 1):
        summary_file(out, k).unlink(missing_ok=True)  # a previous run's
        env = {**os.environ, **budget.for_worker(k + 1).env()}
        with open(logs / f"worker-{k}.log", "w") as log:
            procs.append(subprocess.Popen([*args, "--summary-file", str(summary_file(out, k))], stdout=log,
                                          stderr=subprocess.STDOUT, env=env))
    return procs


def helper_stats(out: Path, k: int) -> WorkerStats:
    """What helper K wrote about its share of the run (counts None where it wrote nothing)."""
    name = f"worker {k + 1} (logs/worker-{k}.log)"
    try:
        found = json.loads(summary_file(out, k).read_text())
        return WorkerStats(name, int(found["ran"]), int(found["failed"]), float(found["idle_s"]))
    except (OSError, ValueError, KeyError, TypeError):
        return WorkerStats(name)


def stop_workers(procs: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """Send SIGTERM to helper workers still running and wait for them to give their trials back."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_with_helpers(grid: Grid, grid_file: Path, store: Store, out: Path, db: str | None, plugins: Plugins,
                     console: Console, workers: int = 1) -> RunSummary:
    """Run the grid here with ``workers - 1`` helpers on ``grid_file`` and ``db`` (the command line's
    ``--db``, None: the results folder's); the summary counts the helpers' trials too.

    Raises ``KeyboardInterrupt`` (:class:`mtbench.signals.Interrupted` for SIGTERM) once every
    helper has stopped and the mirror holds what they gave back."""
    mirror = Path(out) / "parquet"
    budget = plan(workers)
    say(console, apply(budget).describe())
    with interruptible():
        helpers = start_workers(grid_file, out, db, workers - 1, budget)
        try:
            summary = run_grid(grid, store, out, plugins, console, export=not helpers)
            for proc in helpers:
                proc.wait()
        except KeyboardInterrupt:
            stop_workers(helpers)
            if helpers:  # the helpers gave their trials back after this worker wrote the mirror
                export_mirror(store, mirror)
            raise
        finally:
            stop_workers(helpers)
    if helpers:  # the helpers are done: the mirror and the summary get their trials too
        export_mirror(store, mirror)
        summary.workers = [WorkerStats.of("worker 1 (this process)", summary),
                           *(helper_stats(out, k) for k in range(1, len(helpers) + 1))]
        summary.add_others([t.id for t in grid.trials], store)
    return summary
