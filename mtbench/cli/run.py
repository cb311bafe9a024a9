"""``mtbench run`` and ``mtbench worker``: the commands that run trials. The work is in
:mod:`mtbench.runner` (one worker), :mod:`mtbench.workers` (helpers on this machine) and
:mod:`mtbench.executor` (jobs on a scheduler)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from mtbench.cli.common import DbOpt, OutOpt, choices, console, err_console, exit_interrupted, store, writable_store
from mtbench.console import LiteralTable, say, wide
from mtbench.errors import MtbenchError

if TYPE_CHECKING:
    from mtbench.cost import CostPlan
    from mtbench.grid import Grid
    from mtbench.plugins import Plugins
    from mtbench.runner import RunSummary
    from mtbench.storage import Store

PlanFormat = choices("PlanFormat", ("table", "json"))
Executor = choices("Executor", ("slurm", "local"))

DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="print the expanded trials and stop")]
PlanFormatOpt = Annotated[PlanFormat, typer.Option("--format", help="--dry-run's output: table, or json (every "
                                                   "trial's resolved configuration, for scripts)")]
NoCalibrateOpt = Annotated[bool, typer.Option("--no-calibrate", help="--dry-run's time estimate: measure no "
                                               "step on this machine; use the cached step times (~/.cache/mtbench), "
                                               "else print the counts with the time unknown")]
WorkersOpt = Annotated[int, typer.Option(min=1, max=1024, help="worker processes on this machine, each claiming "
                                         "trials from the database (this one included); with --executor, jobs")]
ExecutorOpt = Annotated[Optional[Executor], typer.Option(help="slurm: submit --workers worker jobs (a job array, "
                                                         "resources from the grid's [executor]) and return; local: "
                                                         "submitit's local executor, waiting for the jobs "
                                                         "[default: none, the workers run here]")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="change a value of the grid (repeatable), e.g. train.epochs=2, "
    "attack[0].eps=[0.01], 'train.task_sets=[\"s\", \"d\"]': the value is TOML, other text a string; the grid "
    "file is not changed, the run stores the grid with its changes")]


def run(grid: Annotated[Path, typer.Argument(help="grid file (TOML)")], out: OutOpt = Path("results"),
        db: DbOpt = None, dry_run: DryRunOpt = False, workers: WorkersOpt = 1, executor: ExecutorOpt = None,
        plan_format: PlanFormatOpt = PlanFormat.table, no_calibrate: NoCalibrateOpt = False,
        overrides: SetOpt = None) -> None:
    """Train and attack every trial of a grid; skip trials already done."""
    from mtbench.grid import load_grid
    from mtbench.plugins import get_plugins

    plugins = get_plugins()
    g = load_grid(grid, plugins, overrides or ())  # validates everything before any work or any write
    if dry_run:
        return _dry_run(g, out, db, plugins, measure=not no_calibrate, plan_format=plan_format.value)
    from mtbench.runner import check_data

    check_data(g, plugins)  # the data folders named by the grid: on this machine, and safe to write
    results = writable_store(out, db)
    _check_snapshots(g, results, out)
    grid_file = _effective_grid_file(g, out) if overrides else grid  # what other workers read
    if executor is not None:
        return _submit(executor.value, grid_file, g, out, db, workers)
    from mtbench.workers import run_with_helpers

    try:
        summary = run_with_helpers(g, grid_file, results, out, db, plugins, err_console, workers)
    except KeyboardInterrupt as interrupt:
        exit_interrupted(interrupt)
    _print_summary(summary)
    if summary.done or summary.skipped:
        _show_results(out, db)
    if summary.failed:
        raise typer.Exit(1)


def _effective_grid_file(g: Grid, out: Path) -> Path:
    """The grid with its ``--set`` changes as a file in the results folder, for helper workers and
    scheduler jobs (they must not read the user's file, which lacks the changes)."""
    from mtbench.overrides import write_effective_grid

    path = write_effective_grid(g.text, g.path, out)
    say(err_console, f"grid with --set changes: {path}", style="dim")
    return path


def _dry_run(g: Grid, out: Path, db: str | None, plugins: Plugins, measure: bool, plan_format: str) -> None:
    """--dry-run: the trials with their status and the cost of those to run; no work, no write."""
    opened = store(out, db, missing_ok=True)
    _check_snapshots(g, opened, out)
    if opened is not None:
        from mtbench.runner import warn_other_versions

        warn_other_versions(g, opened, err_console)
    from mtbench.calibrate import estimate_grid

    statuses = opened.statuses(t.id for t in g.trials) if opened else {}
    cost = estimate_grid(g, statuses, plugins, measure=measure, console=err_console)
    (_print_plan_json if plan_format == "json" else _print_plan)(g, statuses, cost)


def _print_summary(summary: RunSummary) -> None:
    """What the run did: trials run, skipped and failed, and each worker's share and idle time."""
    err_console.print(f"{len(summary.done)} trial(s) run, {len(summary.skipped)} already done, "
                      f"{len(summary.failed)} failed")
    for w in summary.workers:  # --workers N: each worker's share, and its wait for models others were training
        say(err_console, f"  {w.name}: " + ("left no summary" if w.ran is None else
                                            f"{w.ran} trial(s) run, {w.failed} failed, idle {w.idle_s:.1f} s"))
    if not summary.workers and summary.idle_s >= 0.1:  # workers elsewhere were training models this one needed
        say(err_console, f"  idle {summary.idle_s:.1f} s waiting for models other workers were training")
    for tid, error in summary.failed.items():
        say(err_console, "  ", ("failed", "red"), f" {tid}: {error.splitlines()[0] if error else ''}")


def _print_plan(g: Grid, statuses: dict[str, str], cost: CostPlan) -> None:
    """--dry-run: every trial with its status in the database (``new`` where there is none yet), then
    the cost of those to run."""
    from mtbench.cost import cost_lines, cost_table

    table = LiteralTable(title=f"{g.settings.run.name}: {len(g.trials)} trials")
    for col in ("id", "kind", "trial", "needs", "status"):
        table.add_column(col)
    for t in g.trials:
        table.add_row(t.id, t.kind, t.label(), (t.parent or "")[:8], statuses.get(t.id, "new"))
    console.print(table)
    done = sum(1 for t in g.trials if statuses.get(t.id) == "done")
    console.print(f"{done} of {len(g.trials)} trials already done; {len(g.trials) - done} to run")
    if g.merged:  # train.ordered_pairs = false: sd and ds are one model where the weights ignore the main task
        say(console, f"{len(g.train_trials)} models trained for {len(g.train_trials) + g.merged} task sets: "
                     f"{g.merged} task orders ranked from the model of another order (one model for sd and ds "
                     "under weights that do not depend on the main task; train.ordered_pairs = true trains each)")
    wide(console).print(cost_table(cost))
    for text in cost_lines(cost):
        say(console, text)


def _print_plan_json(g: Grid, statuses: dict[str, str], cost: CostPlan) -> None:
    """--dry-run --format json: every trial's id, setting id, status and fully resolved configuration,
    and the cost of those to run."""
    import json

    from mtbench.configs import setting_id

    settings: dict[str, str] = {}
    for t in g.trials:  # models first: an attack's setting holds its model's
        settings[t.id] = setting_id(str(t.kind), t.config, settings)
    plan = [{"id": t.id, "setting_id": settings[t.id], "kind": str(t.kind), "label": t.label(),
             "needs": t.parent, "status": statuses.get(t.id, "new"), "config": t.config.record()} for t in g.trials]
    print(json.dumps({"grid": str(g.path), "name": g.settings.run.name, "trials": plan, "merged_orders": g.merged,
                      "cost": cost.record()}, indent=1))


def _check_snapshots(g: Grid, opened: Store | None, out: Path) -> None:
    """Refuse, before any work, attacks on snapshots that models already stored did not keep."""
    from mtbench.errors import ConfigError
    from mtbench.snapshots import missing_snapshots

    problems = missing_snapshots(g, opened, out) if opened else []
    if problems:
        raise ConfigError(problems)


def _submit(executor: str, grid: Path, g: Grid, out: Path, db: str | None, workers: int) -> None:
    """--executor: hand the workers to a scheduler (slurm returns at once, local waits for them)."""
    from mtbench.executor import submit_workers

    ids = submit_workers(executor, grid.resolve(), Path(out).resolve(), db, workers,
                         g.settings.executor.model_dump(), wait=executor == "local")
    say(err_console, f"{len(ids)} worker job(s): {', '.join(ids)}; logs in {Path(out) / 'jobs'}; "
                     "`mtbench report` shows results as they land")
    if executor == "local":
        _show_results(out, db)


def _show_results(out: Path, db: str | None) -> None:
    """The default report, as ``mtbench report`` would print it."""
    from mtbench.cli.report import report

    report(source=None, out=out, db=db)


def worker(grid: Annotated[Optional[Path], typer.Argument(
               help="grid file [default: the latest run's grid in the database]")] = None,
           out: OutOpt = Path("results"), db: DbOpt = None,
           overrides: SetOpt = None,
           summary_file: Annotated[Optional[Path], typer.Option(
               hidden=True, help="write the trials run and the seconds idle here (JSON), for `run --workers`")] = None,
           ) -> None:
    """Join a grid: claim and run its trials until none is left (several workers may share one database)."""
    from mtbench.grid import load_grid, load_grid_text
    from mtbench.plugins import get_plugins
    from mtbench.runner import run_grid
    from mtbench.threads import apply, inherited, plan

    if overrides and grid is None:
        raise MtbenchError("--set: give the grid file too (the latest run's grid already holds its changes)")
    say(err_console, apply(inherited() or plan(1)).describe())  # helpers of `run --workers`: the share it chose
    plugins = get_plugins()
    results = writable_store(out, db)
    if grid is not None:
        g = load_grid(grid, plugins, overrides or ())
    else:
        latest = results.latest_run()
        if latest is None:
            raise MtbenchError(f"{results.url}: no run in this database to join; give the grid file")
        g = load_grid_text(latest["grid_text"], Path(latest["grid_path"] or "grid.toml"), plugins)
    try:
        summary = run_grid(g, results, out, plugins, err_console, export=False)
    except KeyboardInterrupt as interrupt:
        exit_interrupted(interrupt)
    err_console.print(f"worker: {len(summary.done)} trial(s) run, {len(summary.failed)} failed, "
                      f"{len(summary.elsewhere)} taken by other workers, idle {summary.idle_s:.1f} s")
    if summary_file is not None:
        import json

        partial = summary_file.with_name(summary_file.name + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"ran": len(summary.done), "failed": len(summary.failed),
                                       "elsewhere": len(summary.elsewhere), "idle_s": round(summary.idle_s, 3)}))
        partial.replace(summary_file)  # whole or absent
