"""The ``mtbench`` command line: thin wrappers over the modules that do the work.

Heavy imports (torch, the plugins) happen inside the commands that need them, so ``mtbench
report`` and ``mtbench --help`` start fast. Every user error exits with code 2 and a message.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mtbench.console import LiteralTable, make_console, say
from mtbench.defaults import ADVICE_ENCODER, PAPER_SIZES, SURROGATE_ENCODER
from mtbench.errors import MtbenchError

PLAIN_HELP = {"rich_markup_mode": None}  # help texts are literal: "[default: ...]" must not be read as markup
app = typer.Typer(help="Adversarial robustness of multi-task vision models: train, attack, report.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, **PLAIN_HELP)
data_app = typer.Typer(help="Taskonomy-format data: generate synthetic scenes, check a folder.", no_args_is_help=True,
                       **PLAIN_HELP)
models_app = typer.Typer(help="Model architectures: sizes and costs.", no_args_is_help=True, **PLAIN_HELP)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

console = make_console()
err_console = make_console(stderr=True)



def _folder_option(path: Path) -> Path:
    """--out: a results folder, new or existing; never a file."""
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file, not a results folder")
    return path


def _choice(*choices: str):
    """A callback that accepts only these values (typer's enums would hand the commands an Enum)."""
    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"expected {' or '.join(choices)}, got {value!r}")
        return value
    return check


OutOpt = Annotated[Path, typer.Option("--out", callback=_folder_option,
                                      help="results folder: mtbench.db, parquet/, checkpoints/, data/")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="SQLAlchemy URL (default: sqlite in --out)")]


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"
    html = "html"


class View(str, Enum):
    leaderboard = "leaderboard"
    models = "models"
    attacks = "attacks"
    paper = "paper"
    advice = "advice"
    theory = "theory"
    claims = "claims"
    all = "all"


def _store(out: Path, db: str | None, writable: bool = False, missing_ok: bool = False):
    """The store, read-only unless ``writable``: reading commands never create or alter a database.
    ``missing_ok``: None instead of an error where there is no database yet (run --dry-run)."""
    from mtbench.storage import DatabaseMissing, Store, default_url

    try:
        return Store(db or default_url(out), read_only=not writable)
    except DatabaseMissing:
        if missing_ok:
            return None
        raise


def _writable_store(out: Path, db: str | None):
    """The store for commands that write results; checks the database and the results folder first."""
    import tempfile

    store = _store(out, db, writable=True)
    store.check_writable()
    try:
        (Path(out) / "checkpoints").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        where = exc.filename or out
        raise MtbenchError(f"{where}: the results folder cannot be written ({exc.strerror}); nothing was changed") \
            from None
    return store


@app.command()
def run(
    grid: Annotated[Path, typer.Argument(help="grid file (TOML)")],
    out: OutOpt = Path("results"),
    db: DbOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the expanded trials and stop")] = False,
    workers: Annotated[int, typer.Option(min=1, max=1024,
                                         help="worker processes on this machine, each claiming trials from the "
                                              "database (this one included); with --executor, jobs")] = 1,
    executor: Annotated[Optional[str], typer.Option(callback=_choice("slurm", "local"),
                                                    help="slurm: submit --workers worker jobs (a job array, "
                                                         "resources from the grid's [executor]) and return; local: "
                                                         "submitit's local executor, waiting for the jobs")] = None,
) -> None:
    """Train and attack every trial of a grid; skip trials already done."""
    from mtbench.grid import load_grid
    from mtbench.plugins import get_plugins

    plugins = get_plugins()
    g = load_grid(grid, plugins)  # validates everything before any work or any write
    if not dry_run:
        from mtbench.runner import check_data

        check_data(g, plugins)  # the data folders named by the grid: on this machine, and safe to write
    store = _store(out, db, missing_ok=True) if dry_run else _writable_store(out, db)
    statuses = store.statuses(t.id for t in g.trials) if store else {}
    if dry_run:
        table = LiteralTable(title=f"{g.settings.run.name}: {len(g.trials)} trials")
        for col in ("id", "kind", "trial", "needs", "status"):
            table.add_column(col)
        for t in g.trials:
            table.add_row(t.id, t.kind, t.label(), (t.parent or "")[:8], statuses.get(t.id, "new"))
        console.print(table)
        done = sum(1 for t in g.trials if statuses.get(t.id) == "done")
        console.print(f"{done} of {len(g.trials)} trials already done; {len(g.trials) - done} to run")
        return
    from mtbench.runner import run_grid

    if workers < 1:
        raise MtbenchError(f"--workers: expected at least 1, got {workers}")
    if executor is not None:
        from mtbench.executor import submit_workers

        if executor not in ("slurm", "local"):
            raise MtbenchError(f"--executor: expected slurm or local, got {executor!r}")
        ids = submit_workers(executor, grid.resolve(), Path(out).resolve(), db, workers,
                             g.settings.executor.model_dump(), wait=executor == "local")
        say(err_console, f"{len(ids)} worker job(s): {', '.join(ids)}; logs in {Path(out) / 'jobs'}; "
                         "`mtbench report` shows results as they land")
        if executor == "local":
            report(source=None, out=out, db=db)
        return
    from mtbench.signals import interruptible

    with interruptible():
        helpers = _start_workers(grid, out, db, workers - 1)
        try:
            summary = run_grid(g, store, out, plugins, err_console, export=not helpers)
            for proc in helpers:
                proc.wait()
        except KeyboardInterrupt as interrupt:
            _stop_workers(helpers)
            _exit_interrupted(interrupt, store, out, export=bool(helpers))
        finally:
            _stop_workers(helpers)
    if helpers:  # the helpers are done: the mirror gets their trials too
        from mtbench.storage import export_parquet

        export_parquet(store, Path(out) / "parquet")
    if helpers:  # the others' trials count too: read the outcome from the database
        statuses = store.statuses(t.id for t in g.trials)
        summary.failed.update({t.id: "failed in another worker (see `mtbench report --view attacks`)"
                               for t in g.trials if statuses.get(t.id) == "failed" and t.id not in summary.failed})
        summary.done += [t for t in summary.elsewhere if statuses.get(t) == "done"]
    err_console.print(f"{len(summary.done)} trial(s) run, {len(summary.skipped)} already done, "
                      f"{len(summary.failed)} failed")
    for tid, error in summary.failed.items():
        say(err_console, "  ", ("failed", "red"), f" {tid}: {error.splitlines()[0] if error else ''}")
    if summary.done or summary.skipped:
        report(source=None, out=out, db=db)
    if summary.failed:
        raise typer.Exit(1)


def _exit_interrupted(interrupt: KeyboardInterrupt, store, out: Path, export: bool) -> None:
    """One line saying what happened, then the shell's exit status for the signal (143 or 130)."""
    from mtbench.signals import describe, exit_code

    if export:  # helper workers gave their trials back after the main one wrote the mirror
        from mtbench.storage import export_parquet

        export_parquet(store, Path(out) / "parquet")
    say(err_console, f"{describe(interrupt)}: the trials in flight were given back and the run is recorded as "
                     "interrupted; run again to resume", style="yellow")
    raise typer.Exit(exit_code(interrupt)) from None


def _stop_workers(procs: list, grace_s: float = 60.0) -> None:
    """Send SIGTERM to helper workers still running and wait for them to give their trials back."""
    import subprocess

    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_workers(grid: Path, out: Path, db: str | None, count: int) -> list:
    """Background ``mtbench worker`` processes for ``--workers``; their output goes to <out>/logs/."""
    import subprocess

    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for k in range(count):
        args = [sys.executable, "-m", "mtbench.cli", "worker", str(grid), "--out", str(out)] + (["--db", db] if db else [])
        with open(logs / f"worker-{k + 1}.log", "w") as log:
            procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
    return procs


@app.command()
def worker(
    grid: Annotated[Optional[Path], typer.Argument(help="grid file [default: the latest run's grid in the database]")]
    = None,
    out: OutOpt = Path("results"),
    db: DbOpt = None,
) -> None:
    """Join a grid: claim and run its trials until none is left (several workers may share one database)."""
    from mtbench.grid import load_grid, load_grid_text
    from mtbench.plugins import get_plugins
    from mtbench.runner import run_grid

    plugins = get_plugins()
    store = _writable_store(out, db)
    if grid is not None:
        g = load_grid(grid, plugins)
    else:
        latest = store.latest_run()
        if latest is None:
            raise MtbenchError(f"{store.url}: no run in this database to join; give the grid file")
        g = load_grid_text(latest["grid_text"], Path(latest["grid_path"] or "grid.toml"), plugins)
    try:
        summary = run_grid(g, store, out, plugins, err_console, export=False)
    except KeyboardInterrupt as interrupt:
        _exit_interrupted(interrupt, store, out, export=False)
    err_console.print(f"worker: {len(summary.done)} trial(s) run, {len(summary.failed)} failed, "
                      f"{len(summary.elsewhere)} taken by other workers")


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List every registered encoder, task, attack, objective and dataset with its provider."""
    from mtbench.kinds import KINDS
    from mtbench.plugins import get_plugins

    p = get_plugins()
    rows = [{"kind": kind.name, "name": entry.spec.name, "provider": entry.provider,
             "details": kind.summary(entry.spec), "description": entry.spec.description}
            for kind in KINDS for entry in getattr(p, kind.registry)]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    table = LiteralTable(title="mtbench plugins")
    for col in ("kind", "name", "provider", "details"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["kind"], r["name"], r["provider"], r["details"])
    console.print(table)


@app.command()
def report(
    source: Annotated[Optional[str], typer.Argument(help="database URL/file, results or Parquet folder")] = None,
    out: OutOpt = Path("results"),
    db: DbOpt = None,
    view: Annotated[Optional[list[View]], typer.Option(
        help="what to show (repeatable): leaderboard, models, attacks, paper (Tables 1, 2, per encoder), "
             "advice (the advisor's rankings), theory (first-order predictions vs measurement), claims, all "
             "[default: leaderboard + models]")] = None,
    encoder: Annotated[Optional[str], typer.Option(help="only this encoder")] = None,
    task: Annotated[Optional[str], typer.Option(help="only models with this task (name or code)")] = None,
    attack: Annotated[Optional[str], typer.Option(help="rank by this attack [default: the most common one]")] = None,
    eps: Annotated[Optional[str], typer.Option(help="rank at this eps, e.g. 8/255 [default: its largest]")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, max=100_000,
                                                 help="only attacks with this many steps")] = None,
    objective: Annotated[Optional[str], typer.Option(help="rank by this attack objective [default: the most "
                                                     "common one]")] = None,
    targets: Annotated[str, typer.Option(help="leaderboard target: main (main task alone), all, or codes like sd")]
    = "main",
    metric: Annotated[str, typer.Option(help="rel_vuln_ratio_of_means | rel_vuln_mean_of_ratios | delta_loss")]
    = "rel_vuln_ratio_of_means",
    sort: Annotated[Optional[str], typer.Option(help="leaderboard column to sort by [default: the metric]")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="output format")] = Format.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write here instead of printing "
                                                   "(html: default <out>/report.html)")] = None,
    plots: Annotated[Optional[Path], typer.Option(help="also draw the paper's figures (PNG + SVG) here")] = None,
    limit: Annotated[int, typer.Option(min=0, help="at most this many rows per table (0: all)")] = 50,
    transfer: Annotated[bool, typer.Option("--transfer", help="report transfer attacks (crafted on another model) "
                                           "instead of attacks on the model itself")] = False,
) -> None:
    """Leaderboards, the paper's tables and figures, straight from the database (torch is not imported)."""
    from mtbench.settings import number
    from mtbench.report import Filters, leaderboard, load_frames, paper, render
    from mtbench.report.leaderboard import VULNERABILITY_METRICS

    if metric not in VULNERABILITY_METRICS:
        raise MtbenchError(f"--metric: expected one of {', '.join(VULNERABILITY_METRICS)}, got {metric!r}")
    try:
        eps_value = number(eps) if eps is not None else None
        if not 0 < float(eps_value if eps_value is not None else 1) <= 1:
            raise ValueError
    except (TypeError, ValueError):
        raise MtbenchError(f"--eps: expected a number in (0, 1] or a fraction like 8/255, got {eps!r}") from None
    f = Filters(encoder=encoder, task=task, attack=attack, eps=eps_value, steps=steps, objective=objective, transfer=transfer, targets=targets,
                metric=metric, sort=sort)
    views = set(view or [View.leaderboard, View.models])
    if View.all in views:
        views = set(View) - {View.all}
    frames = load_frames(source or db or str(out))
    sections = []
    if View.leaderboard in views:
        sections.append(leaderboard.leaderboard(frames, f))
    if View.models in views:
        sections.append(leaderboard.model_rows(frames, f))
    if View.attacks in views:
        sections.append(leaderboard.attack_rows(frames, f))
    if View.paper in views:
        sections += paper.table1(frames, f) + paper.per_encoder(frames, f) + paper.table2(frames, f) \
            + ([] if transfer else paper.transfer(frames, f))
    if View.theory in views:
        from mtbench.report import theory

        sections += theory.first_order(frames, f) + theory.marginal(frames, f)
    if View.claims in views:
        from mtbench.report.claims import claims_section

        sections.append(claims_section(frames, f))
    if View.advice in views:
        from mtbench.report.advice import advice_sections

        sections += advice_sections(frames)

    for section in sections:
        if limit and len(section.rows) > limit:
            section.note += f" [first {limit} of {len(section.rows)} rows; --limit 0 shows all]"
            section.rows = section.rows[:limit]

    figures = []
    if plots or fmt is Format.html:
        import tempfile

        from mtbench.report.plots import draw_all

        figures = draw_all(frames, f, plots or Path(tempfile.mkdtemp(prefix="mtbench-plots-")))
        if plots:
            say(console, f"{len(figures)} figure(s) written to {plots}", style="dim")
    if fmt is Format.html:
        from mtbench import __version__
        from mtbench.report.html import html_report

        target = output or Path(out) / "report.html"
        _write_text(target, html_report(sections, figures, frames, __version__))
        say(console, f"report written to {target}")
        return
    text = render.render(sections, fmt.value, console)
    if text is not None:
        if output:
            _write_text(output, text)
        else:
            print(text)


def _write_text(path: Path, text: str) -> None:
    from mtbench.storage.files import write_text

    write_text(path, text, "the report")  # atomically: a full disk leaves the previous report as it was


@app.command()
def claims(
    source: Annotated[Optional[str], typer.Argument(help="database URL/file, results or Parquet folder")] = None,
    out: OutOpt = Path("results"),
    db: DbOpt = None,
    encoder: Annotated[Optional[str], typer.Option(help="only this encoder")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="output format")] = Format.table,
) -> None:
    """The paper's claims checked on the database: numbers, 95% bootstrap intervals, verdicts."""
    from mtbench.report import Filters, load_frames, render
    from mtbench.report.claims import claims_section

    section = claims_section(load_frames(source or db or str(out)), Filters(encoder=encoder))
    if fmt is Format.html:
        raise MtbenchError("--format html: use `mtbench report --view claims --format html`")
    text = render.render([section], fmt.value, console)
    if text is not None:
        print(text)


@app.command()
def advise(
    main: Annotated[str, typer.Option(help="the main task (code or name)")],
    candidates: Annotated[str, typer.Option(help="auxiliary task codes to rank, e.g. dDnE")],
    encoder: Annotated[str, typer.Option(help="the encoder you will finally train")] = ADVICE_ENCODER,
    proxy: Annotated[str, typer.Option(callback=_choice("surrogate", "early-stop", "clean"),
                                       help="surrogate | early-stop | clean")] = "surrogate",
    surrogate: Annotated[str, typer.Option(help="the small encoder of the surrogate proxy")] = SURROGATE_ENCODER,
    budget: Annotated[float, typer.Option(help="early-stop: fraction of the epochs to train")] = 0.25,
    base: Annotated[Optional[Path], typer.Option(help="grid whose [data], [train] (epochs, batch, seeds...) and "
                                                      "first [[attack]] the advisor uses")] = None,
    validate: Annotated[bool, typer.Option("--validate", help="also run the full-budget trials of the best and "
                                           "worst candidates and report the rank correlation")] = False,
    validate_k: Annotated[int, typer.Option(min=1, max=100,
                                            help="how many best and worst candidates --validate runs")] = 2,
    out: OutOpt = Path("results"),
    db: DbOpt = None,
) -> None:
    """Rank auxiliary tasks by how robust they make the main task, with a cheap proxy (reuses trials already run)."""
    from mtbench.advise import AdviceRequest, advise as run_advice, base_settings
    from mtbench.plugins import get_plugins
    from mtbench.report.advice import advice_sections
    from mtbench.report.frames import load_frames
    from mtbench.report.render import render

    plugins = get_plugins()
    code = lambda t: plugins.tasks.get(plugins.tasks.resolve(t)).code  # noqa: E731
    main_code = code(main)
    wanted = [code(c) for c in (candidates.split(",") if "," in candidates else list(candidates))]
    if not wanted or len(set(wanted)) != len(wanted):
        raise MtbenchError(f"--candidates: expected distinct task codes such as dDnE, got {candidates!r}")
    if main_code in wanted:
        raise MtbenchError(f"--candidates: the main task {main_code!r} cannot be its own auxiliary task")
    if not 0 < budget <= 1:
        raise MtbenchError(f"--budget: expected a fraction in (0, 1], got {budget}")
    for name in {encoder, surrogate}:
        plugins.encoders.get(name)
    request = AdviceRequest(main_code, wanted, encoder, proxy, surrogate, budget, validate, validate_k)
    store = _writable_store(out, db)
    advice = run_advice(request, base_settings(base, plugins), store, out, plugins, err_console)
    render(advice_sections(load_frames(store.url), only=[advice["trial"]]), "table", console)
    say(console, f"advice stored as trial {advice['trial']}; `mtbench report --view advice` shows every advice")


@app.command()
def export(out: OutOpt = Path("results"), db: DbOpt = None) -> None:
    """Rewrite the Parquet mirror of the database (``<out>/parquet/*.parquet``)."""
    from mtbench.storage import export_parquet

    for path in export_parquet(_store(out, db), out / "parquet"):
        say(console, path)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="folder to write (official Taskonomy layout)")],
    samples: Annotated[int, typer.Option(min=1, max=10_000_000, help="training samples")] = 64,
    test_samples: Annotated[int, typer.Option(min=0, max=10_000_000, help="test samples")] = 32,
    size: Annotated[int, typer.Option(min=8, max=4096, help="image size in pixels")] = 64,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    workers: Annotated[Optional[int], typer.Option(min=1, max=1024, help="processes (default: all cores)")] = None,
) -> None:
    """Render synthetic indoor scenes and write every domain in the official format."""
    from rich.progress import Progress

    from mtbench.data.synthetic import SynthConfig, check_replaceable, generate

    check_replaceable(out)  # before the progress bar: a user's folder is refused, not half-rendered over

    cfg = SynthConfig(size=size, train=samples, test=test_samples, seed=seed)
    with Progress(console=err_console) as progress:
        bar = progress.add_task("rendering", total=samples + test_samples)
        generate(out, cfg, workers, progress=lambda n: progress.advance(bar, n))
    say(console, f"wrote {samples + test_samples} samples to {out}")


@data_app.command("check")
def data_check(root: Annotated[Path, typer.Argument(help="dataset folder")]) -> None:
    """Report what a Taskonomy-layout folder holds: buildings, samples per domain, problems."""
    from mtbench.data.check import check_folder

    result = check_folder(root)
    say(console, root, f": {len(result.buildings)} building(s)", style="bold")
    table = LiteralTable()
    table.add_column("domain")
    table.add_column("samples", justify="right")
    for domain, n in sorted(result.per_domain.items()):
        table.add_row(domain, str(n))
    console.print(table)
    for problem in result.problems[:50]:
        say(console, ("problem", "red"), " ", problem)
    if len(result.problems) > 50:
        say(console, f"... and {len(result.problems) - 50} more problems")
    say(console, f"{result.samples} sample(s), {len(result.problems)} problem(s)")
    if result.problems:
        raise typer.Exit(1)



@models_app.command("info")
def models_info(
    encoder: Annotated[str, typer.Argument(help="encoder name, or 'all'")],
    tasks: Annotated[str, typer.Argument(help="task set, e.g. 'sd' or 'depth_zbuffer,normal'")] = "dD",
    size: Annotated[int, typer.Option(min=8, max=4096, help="input size for MACs")] = 256,
) -> None:
    """Parameters and multiply-accumulates of encoder + decoders (paper: two 1-channel decoders, 256 px)."""
    from mtbench.grid import task_set_names
    from mtbench.models import build_model, count_macs, count_parameters
    from mtbench.plugins import get_plugins

    p = get_plugins()
    names = task_set_names(tasks.split(",") if "," in tasks else tasks, p)
    encoders = p.encoders.names() if encoder == "all" else [encoder]
    for name in encoders:
        if size % p.encoders.get(name).stride:
            raise MtbenchError(f"--size: {size} is not a multiple of the stride {p.encoders.get(name).stride} "
                               f"of encoder {name!r}")
    table = LiteralTable(title=f"encoder + decoders for {', '.join(names)} at 3x{size}x{size}")
    for col in ("encoder", "params (M)", "paper (M)", "diff", "MACs (G)", "paper (G)"):
        table.add_column(col, justify="right")
    for name in encoders:
        model = build_model(name, names, p)
        params, macs = count_parameters(model) / 1e6, count_macs(model, size) / 1e9
        paper = PAPER_SIZES.get(name)
        table.add_row(name, f"{params:.2f}", f"{paper[0]:.2f}" if paper else "-",
                      f"{(params / paper[0] - 1) * 100:+.2f}%" if paper else "-", f"{macs:.2f}",
                      f"{paper[1]:.2f}" if paper else "-")
    console.print(table)


def main() -> None:
    """Entry point: user errors become a message and exit code 2, never a traceback."""
    from mtbench.errors import MtbenchError

    try:
        app()
    except MtbenchError as exc:
        say(err_console, ("error:", "bold red"), f" {exc}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
