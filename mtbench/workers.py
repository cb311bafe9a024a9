"""Several workers on one machine (``mtbench run --workers N``): this process runs the grid while
N - 1 helper ``mtbench worker`` processes claim trials from the same database.

The helpers never outlive the run: on SIGTERM or Ctrl-C they are sent SIGTERM and waited for, so
that each gives its trial in flight back, and the Parquet mirror is refreshed after them (they do
not write it themselves). The interruption is then raised again for the caller to report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.console import Console

from mtbench.grid import Grid
from mtbench.plugins import Plugins
from mtbench.runner import RunSummary, run_grid
from mtbench.signals import interruptible
from mtbench.storage import Store, export_parquet

STOP_GRACE_S = 60.0
"""How long a helper may take to give its trial back after SIGTERM before it is killed."""


def start_workers(grid: Path, out: Path, db: str | None, count: int) -> list[subprocess.Popen]:
    """Background ``mtbench worker`` processes; their output goes to <out>/logs/worker-K.log."""
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "mtbench.cli", "worker", str(grid), "--out", str(out), *(["--db", db] if db else [])]
    procs = []
    for k in range(count):
        with open(logs / f"worker-{k + 1}.log", "w") as log:
            procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
    return procs


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
    with interruptible():
        helpers = start_workers(grid_file, out, db, workers - 1)
        try:
            summary = run_grid(grid, store, out, plugins, console, export=not helpers)
            for proc in helpers:
                proc.wait()
        except KeyboardInterrupt:
            stop_workers(helpers)
            if helpers:  # the helpers gave their trials back after this worker wrote the mirror
                export_parquet(store, mirror)
            raise
        finally:
            stop_workers(helpers)
    if helpers:  # the helpers are done: the mirror and the summary get their trials too
        export_parquet(store, mirror)
        summary.add_others([t.id for t in grid.trials], store)
    return summary
