"""Run a grid's trials in dependency order, skipping done ones, one transaction per finished trial.

Crash safety: a trial's results are written with its ``done`` status in one transaction, so a kill
loses at most the trial in flight; trials left ``running`` by a dead process are retried on the
next run. Ctrl-C gives the trial in flight back (``pending``) and stops.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mtbench import __version__
from mtbench.configs import DataConfig, TrialKind
from mtbench.console import make_console, say
from mtbench.context import TrialContext
from mtbench.defaults import check_defaults
from mtbench.errors import MtbenchError
from mtbench.grid import Grid, Trial
from mtbench.plugins import Plugins
from mtbench.provenance import Versions, current, other_versions
from mtbench.report.flat import export_mirror
from mtbench.signals import interruptible
from mtbench.storage import Store

HEARTBEAT_S = 30.0
STALE_S = 4 * HEARTBEAT_S  # a worker on another machine is dead after four missed heartbeats


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retried_stale: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)  # claimed by another worker
    idle_s: float = 0.0
    """Seconds this worker waited for models that other workers were training."""
    workers: list[WorkerStats] = field(default_factory=list)
    """Each worker's share of the run (``mtbench run --workers N``: this process first); empty for one worker."""

    def add_others(self, trial_ids: list[str], store: Store) -> None:
        """Count the trials that other workers of this run ran, read back from the database once
        they are done: the run's summary covers the whole grid, not just this worker's share."""
        statuses = store.statuses(trial_ids)
        self.failed.update({tid: "failed in another worker (see `mtbench report --view attacks`)"
                            for tid in trial_ids if statuses.get(tid) == "failed" and tid not in self.failed})
        self.done += [tid for tid in self.elsewhere if statuses.get(tid) == "done"]


@dataclass
class WorkerStats:
    """What one worker of a run did, for the run's summary."""

    name: str
    ran: int | None = None
    """Trials it ran to the end (None: it left no summary, e.g. it crashed)."""
    failed: int | None = None
    idle_s: float | None = None

    @classmethod
    def of(cls, name: str, summary: RunSummary) -> WorkerStats:
        return cls(name, len(summary.done), len(summary.failed), summary.idle_s)


EXECUTORS: dict[TrialKind, str] = {
    TrialKind.TRAIN: "mtbench.train:run_train",
    TrialKind.ATTACK: "mtbench.evaluate:run_attack",
    TrialKind.ANALYSIS: "mtbench.analysis:run_analysis",
    TrialKind.ADVICE: "mtbench.advise:run_advice",
}
"""What runs each kind of trial: ``executor(config, trial_id, ctx) -> TrialResult``, imported when first
needed (so that ``mtbench report`` never imports torch)."""


def executor_for(kind: str) -> Callable:
    """The function that runs a trial of this kind; an unknown kind is an error, never a guess."""
    try:
        module, name = EXECUTORS[TrialKind(kind)].split(":")
    except (ValueError, KeyError):
        raise MtbenchError(f"no executor for trials of kind {kind!r} (known: "
                           f"{', '.join(k.value for k in EXECUTORS)})") from None
    return getattr(importlib.import_module(module), name)


def schedule(todo: list[Trial], store: Store, summary: RunSummary, run_id: int, poll_s: float):
    """Yield the trials this worker should try next, in order, each once its model is trained.

    With several workers, a trial whose model another worker is still training waits, asleep
    between polls of the database every ``poll_s``, the wait counted in ``summary.idle_s``; a
    trial whose model failed fails too."""
    pending = list(todo)
    by_id = {t.id: t for t in todo}
    waiting_since: float | None = None  # since when this worker has found nothing it can run
    while pending:
        parents = {t.parent for t in pending if t.parent}
        statuses = store.statuses(list(parents)) if parents else {}
        ready = next((t for t in pending if not t.parent or statuses.get(t.parent) == "done"), None)
        if ready is None:
            revived = [by_id[p] for p in parents if statuses.get(p) in (None, "pending") and p in by_id
                       and by_id[p] not in pending]  # a model given back (Ctrl-C) by another worker
            if revived:
                pending[:0] = revived
                continue
            waiting = [t for t in pending if statuses.get(t.parent) == "running"]
            if not waiting:  # models that failed or never ran: their trials cannot run
                for t in pending:
                    error = f"its model (training trial {t.parent}) is not done"
                    if claim(store, t, run_id):
                        store.fail(t.id, error)
                        summary.failed[t.id] = error
                summary.idle_s += (time.monotonic() - waiting_since) if waiting_since is not None else 0.0
                return
            waiting_since = waiting_since if waiting_since is not None else time.monotonic()
            time.sleep(poll_s)
            for tid in store.reset_stale(stale_after_s=STALE_S):  # a worker died: take its trials back
                if tid in by_id and by_id[tid] not in pending:
                    pending.insert(0, by_id[tid])
                    if tid in summary.elsewhere:
                        summary.elsewhere.remove(tid)
            continue
        if waiting_since is not None:
            summary.idle_s += time.monotonic() - waiting_since
            waiting_since = None
        pending.remove(ready)
        yield ready


def claim(store: Store, trial: Trial, run_id: int) -> bool:
    """Mark the trial running for this worker (False: done, or another worker holds it)."""
    return store.claim(trial.id, trial.kind.value, trial.label(), trial.config.record(), trial.parent, run_id,
                       __version__)


def data_of(trial: Trial) -> DataConfig | None:
    """The data a trial reads (None: an advice trial, which reads only the store)."""
    return getattr(trial.config, "data", None)


def check_data(grid: Grid, plugins: Plugins) -> None:
    """Run each dataset's own check once per distinct ``[data]`` setting, before any work or write."""
    seen: set[str] = set()
    for trial in grid.trials:
        data = data_of(trial)
        if data is None or data.id in seen:
            continue
        seen.add(data.id)
        spec = plugins.datasets.get(data.dataset)
        if spec.check is not None:
            spec.check(data)


def warn_other_versions(grid: Grid, store: Store | None, console: Console, versions: Versions | None = None) -> None:
    """Warn about the grid's done trials made with other versions than ``versions`` (default: this
    process's, on the grid's device). They stay as they are: mtbench never alters results it did not
    create in this run, and the user decides whether to redo them."""
    if store is None:
        return
    if versions is None:
        from mtbench.models import resolve_device

        try:
            device = resolve_device(grid.settings.run.device)
        except MtbenchError:  # e.g. cuda asked for where there is none: the device is then not compared
            device = None
        versions = current(device)
    message = other_versions(store.versions(t.id for t in grid.trials), versions)
    if message:
        say(console, ("warning:", "bold yellow"), " ", message)


def run_grid(grid: Grid, store: Store, out: Path, plugins: Plugins, console: Console | None = None,
             export: bool = True, poll_s: float = 1.0) -> RunSummary:
    """Run the grid's trials that are not done, as one worker among any number sharing the store.

    SIGTERM (a scheduler's time limit or preemption) is handled like Ctrl-C: it raises
    :class:`mtbench.signals.Interrupted` after the trial in flight was given back, the run record
    closed as ``interrupted`` and (with ``export``) the Parquet mirror refreshed."""
    check_data(grid, plugins)
    check_defaults(plugins)  # every path that runs trials (CLI, local workers, Slurm jobs) passes here
    with interruptible():
        return _run_trials(grid, store, out, plugins, console, export, poll_s)


def _run_trials(grid: Grid, store: Store, out: Path, plugins: Plugins, console: Console | None,
                export: bool, poll_s: float) -> RunSummary:
    from mtbench.models import resolve_device

    console = console or make_console(stderr=True)
    device = resolve_device(grid.settings.run.device)
    versions = current(device)  # stored with each trial this worker finishes
    summary = RunSummary(retried_stale=store.reset_stale())
    if summary.retried_stale:
        console.print(f"[yellow]{len(summary.retried_stale)} trial(s) left running by a dead process will run again")
    statuses = store.statuses(t.id for t in grid.trials)
    todo = [t for t in grid.trials if statuses.get(t.id) != "done"]
    summary.skipped = [t.id for t in grid.trials if statuses.get(t.id) == "done"]
    warn_other_versions(grid, store, console, versions)
    run_id = store.begin_run(grid.settings.run.name, str(grid.path), grid.text, __version__)
    status = "interrupted"
    progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
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
            data = next((d for d in map(data_of, todo) if d is not None), None)
            if data is not None:
                progress.update(overall, description=f"{grid.settings.run.name}: preparing data")
                ctx.dataset_root(data)
            for trial in schedule(todo, store, summary, run_id, poll_s):
                progress.update(overall, description=trial.label())
                _run_one(trial, ctx, store, run_id, summary, console, versions)
                progress.update(overall, completed=len(summary.done) + len(summary.failed) + len(summary.elsewhere))
        status = "failed" if summary.failed else "done"
    finally:
        store.end_run(run_id, status)
        if export:
            export_mirror(store, Path(out) / "parquet")
    return summary


def _run_one(trial: Trial, ctx: TrialContext, store: Store, run_id: int, summary: RunSummary, console: Console,
             versions: Versions | None = None) -> None:
    if not claim(store, trial, run_id):
        status = store.statuses([trial.id]).get(trial.id)
        (summary.skipped.append if status == "done" else summary.elsewhere.append)(trial.id)
        return
    start = time.time()
    beat = Heartbeat(store, trial.id)
    try:
        result = executor_for(trial.kind)(trial.config, trial.id, ctx)
    except KeyboardInterrupt:
        beat.stop()
        store.release(trial.id)
        raise
    except Exception as exc:  # a failing trial is stored and the grid goes on
        beat.stop()
        store.fail(trial.id, "".join(traceback.format_exception(exc)))
        summary.failed[trial.id] = f"{type(exc).__name__}: {exc}"
        say(console, ("failed", "red"), f" {trial.label()} ({trial.id}): {exc}")
        return
    beat.stop()
    try:
        store.finish(trial.id, result, time.time() - start, versions)
    except KeyboardInterrupt:  # the transaction rolled back: the trial is not done, give it back
        store.release(trial.id)
        raise
    summary.done.append(trial.id)


class Heartbeat:
    """Refreshes a running trial's heartbeat from a background thread, so that workers on other
    machines can tell a live worker from a dead one (``Store.reset_stale``)."""

    def __init__(self, store: Store, trial_id: str, every_s: float = HEARTBEAT_S):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(store, trial_id, every_s), daemon=True)
        self._thread.start()

    def _beat(self, store: Store, trial_id: str, every_s: float) -> None:
        while not self._stop.wait(every_s):
            with contextlib.suppress(Exception):  # a missed beat must never kill the trial
                store.heartbeat(trial_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
