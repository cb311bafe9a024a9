"""Run a grid's trials in dependency order, skipping done ones, one transaction per finished trial.

Crash safety: a trial's results are written with its ``done`` status in one transaction, so a kill
loses at most the trial in flight; trials left ``running`` by a dead process are retried on the
next run. Ctrl-C gives the trial in flight back (``pending``) and stops.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mtbench import __version__
from mtbench.context import TrialContext
from mtbench.grid import Grid, Trial
from mtbench.plugins import Plugins
from mtbench.storage import Store, export_parquet


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retried_stale: list[str] = field(default_factory=list)


def executor_for(kind: str) -> Callable:
    if kind == "train":
        from mtbench.train import run_train
        return run_train
    if kind == "analysis":
        from mtbench.analysis import run_analysis
        return run_analysis
    from mtbench.evaluate import run_attack
    return run_attack


def run_grid(grid: Grid, store: Store, out: Path, plugins: Plugins, console: Console | None = None,
             export: bool = True) -> RunSummary:
    from mtbench.models import resolve_device

    console = console or Console(stderr=True)
    device = resolve_device(grid.settings.run.device)
    summary = RunSummary(retried_stale=store.reset_stale())
    if summary.retried_stale:
        console.print(f"[yellow]{len(summary.retried_stale)} trial(s) left running by a dead process will run again")
    statuses = store.statuses(t.id for t in grid.trials)
    todo = [t for t in grid.trials if statuses.get(t.id) != "done"]
    summary.skipped = [t.id for t in grid.trials if statuses.get(t.id) == "done"]
    run_id = store.begin_run(grid.settings.run.name, str(grid.path), grid.text, __version__)
    status = "interrupted"
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, transient=False)
    try:
        with progress:
            overall = progress.add_task(f"{grid.settings.run.name}: trials", total=len(todo))
            inner = {"id": None}

            def start_inner(description: str, total: int):
                if inner["id"] is not None:
                    progress.remove_task(inner["id"])
                inner["id"] = progress.add_task(f"  {description}", total=total)
                return lambda n=1: progress.advance(inner["id"], n)

            ctx = TrialContext(plugins, store, Path(out), device, start_inner)
            if todo:
                progress.update(overall, description=f"{grid.settings.run.name}: preparing data")
                ctx.dataset_root(todo[0].config["data"])
            for trial in todo:
                progress.update(overall, description=escape(trial.label()))
                _run_one(trial, ctx, store, run_id, summary, console)
                progress.advance(overall)
        status = "failed" if summary.failed else "done"
    finally:
        store.end_run(run_id, status)
        if export:
            export_parquet(store, Path(out) / "parquet")
    return summary


def _run_one(trial: Trial, ctx: TrialContext, store: Store, run_id: int, summary: RunSummary, console: Console) -> None:
    if trial.parent and store.statuses([trial.parent]).get(trial.parent) != "done":
        error = f"its model (training trial {trial.parent}) is not done"
        store.claim(trial.id, trial.kind, trial.label(), trial.config, trial.parent, run_id, __version__)
        store.fail(trial.id, error)
        summary.failed[trial.id] = error
        return
    if not store.claim(trial.id, trial.kind, trial.label(), trial.config, trial.parent, run_id, __version__):
        summary.skipped.append(trial.id)
        return
    start = time.time()
    try:
        result = executor_for(trial.kind)(trial.config, trial.id, ctx)
    except KeyboardInterrupt:
        store.release(trial.id)
        raise
    except Exception as exc:  # a failing trial is stored and the grid goes on
        store.fail(trial.id, "".join(traceback.format_exception(exc)))
        summary.failed[trial.id] = f"{type(exc).__name__}: {exc}"
        console.print(f"[red]failed[/red] {escape(trial.label())} ({trial.id}): {escape(str(exc))}")
        return
    store.finish(trial.id, result, time.time() - start)
    summary.done.append(trial.id)
