"""``mtbench report``, ``claims`` and ``export``: reading commands, which never import torch and never
create or alter a database. What a report holds is decided in :mod:`mtbench.report.assemble`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mtbench.cli.common import DbOpt, Format, FormatOpt, OutOpt, choices, console, err_console, store
from mtbench.console import say
from mtbench.errors import MtbenchError
from mtbench.report.assemble import ALL, SORTABLE, VIEWS

View = choices("View", (*VIEWS, ALL))
Metric = choices("Metric", ("rel_vuln_ratio_of_means", "rel_vuln_mean_of_ratios", "delta_loss", "error_adv"))
"""mtbench.report.leaderboard.VULNERABILITY_METRICS (not imported here: it loads Arrow)."""
Sort = choices("Sort", SORTABLE)

SourceArg = Annotated[Optional[str], typer.Argument(help="database URL/file, results or Parquet folder")]
EncoderOpt = Annotated[Optional[str], typer.Option(help="only this encoder")]
ViewOpt = Annotated[Optional[list[View]], typer.Option(
    help="what to show (repeatable): leaderboard, models, attacks, paper (Tables 1, 2, per encoder), "
         "advice (the advisor's rankings), theory (first-order predictions vs measurement), claims, defenses "
         "(defended models beside their undefended twins, and the gradient-masking check), all "
         "[default: leaderboard + models]")]
TaskOpt = Annotated[Optional[str], typer.Option(help="only models with this task (name or code)")]
AttackOpt = Annotated[Optional[str], typer.Option(help="rank by this attack [default: the most common one]")]
EpsOpt = Annotated[Optional[str], typer.Option(help="rank at this eps, e.g. 8/255 [default: its largest]")]
StepsOpt = Annotated[Optional[int], typer.Option(min=1, max=100_000, help="only attacks with this many steps")]
ObjectiveOpt = Annotated[Optional[str], typer.Option(help="rank by this attack objective [default: the most "
                                                     "common one]")]
TargetsOpt = Annotated[str, typer.Option(help="leaderboard target: main (main task alone), all, or codes like sd")]
MetricOpt = Annotated[Metric, typer.Option(help="what ranks the models: relative task vulnerability as a ratio of "
                                           "means (the paper's code) or a mean of per-sample ratios (the paper's "
                                           "formula), E[dL], or the adversarial error")]
SortOpt = Annotated[Optional[Sort], typer.Option(help="leaderboard column to sort by [default: v]")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="write here instead of printing "
                                                   "(html: default report.html in the results or Parquet folder "
                                                   "read, or next to its SQLite file; csv: a folder, or a new path "
                                                   "without suffix where there are several tables, gets one CSV "
                                                   "file per table)")]
PlotsOpt = Annotated[Optional[Path], typer.Option(help="also draw the paper's figures (PNG + SVG) here")]
LimitOpt = Annotated[int, typer.Option(min=0, help="at most this many rows per table (0: all)")]
CompareOpt = Annotated[bool, typer.Option("--compare-paper", help="show the paper's figure beside ours even where "
                                          "the setting is not the paper's preset (marked 'forced')")]
TransferOpt = Annotated[bool, typer.Option("--transfer", help="report transfer attacks (crafted on another model) "
                                           "instead of attacks on the model itself")]


def report(
    source: SourceArg = None, out: OutOpt = Path("results"), db: DbOpt = None, view: ViewOpt = None,
    encoder: EncoderOpt = None, task: TaskOpt = None, attack: AttackOpt = None, eps: EpsOpt = None,
    steps: StepsOpt = None, objective: ObjectiveOpt = None, targets: TargetsOpt = "main",
    metric: MetricOpt = Metric.rel_vuln_ratio_of_means, sort: SortOpt = None, fmt: FormatOpt = Format.table,
    output: OutputOpt = None, plots: PlotsOpt = None, limit: LimitOpt = 50, transfer: TransferOpt = False,
    compare_paper: CompareOpt = False,
) -> None:
    """Leaderboards, the paper's tables and figures, straight from the database (torch is not imported)."""
    from mtbench.report.assemble import build_report, parse_filters
    from mtbench.report.frames import load_frames
    from mtbench.report.render import render

    f = parse_filters(eps, metric.value, encoder=encoder, task=task, attack=attack, steps=steps,
                      objective=objective, transfer=transfer, targets=targets, sort=sort and sort.value,
                      compare_paper=compare_paper)
    frames = load_frames(source or db or str(out))
    if fmt is Format.html:
        target = output or html_beside(source or db or str(out))
        with _figure_folder(plots) as figures:  # the page embeds them: drawn before, removed after
            built = build_report(frames, f, [v.value for v in view or []], limit, Path(figures))
            _write_text(target, built.html())
        if plots:
            say(err_console, f"{len(built.figures)} figure(s) written to {plots}", style="dim")
        say(err_console, f"report written to {target}")
        return
    built = build_report(frames, f, [v.value for v in view or []], limit, plots)
    if plots:
        say(err_console, f"{len(built.figures)} figure(s) written to {plots}", style="dim")  # stdout: the report
    if fmt is Format.csv and output is not None and _csv_folder(output, built.text_sections(fmt.value)):
        _write_csv_files(output, built.text_sections(fmt.value))
        return
    text = render(built.text_sections(fmt.value), fmt.value, console)
    if text is None and built.made_with_line():  # a terminal table: the versions fit on one line
        say(console, built.made_with_line(), style="dim")
    if text is not None and output:
        _write_text(output, text)
    elif text is not None:
        print(text)


def _figure_folder(plots: Path | None):
    """``plots``, or a temporary folder removed when the block ends (an HTML page without --plots)."""
    import contextlib
    import tempfile

    if plots:
        return contextlib.nullcontext(plots)
    return tempfile.TemporaryDirectory(prefix="mtbench-plots-")


def _csv_folder(output: Path, sections) -> bool:
    """Whether ``-o`` names a folder for one CSV per table: an existing folder, or, where there are several
    tables (one file cannot hold them), a path that is no file and has no suffix (``-o tables``)."""
    several = sum(1 for s in sections if s.rows) > 1
    return output.is_dir() or (several and not output.exists() and not output.suffix)


def _write_csv_files(folder: Path, sections) -> None:
    """``-o FOLDER`` with ``--format csv``: one CSV per table, each written whole or not at all."""
    from mtbench.report.render import csv_files
    from mtbench.storage.files import write_files

    files = {folder / name: text for name, text in csv_files(sections).items()}
    theirs = [path.name for path in files if path.exists()] if not (folder / TABLES_MARKER).is_file() else []
    if theirs:
        raise MtbenchError(f"{folder}: holds {', '.join(theirs)}, which mtbench did not write there; it never "
                           "replaces a file it did not write: give another folder")
    folder.mkdir(parents=True, exist_ok=True)
    write_files({**{path: (lambda tmp, text=text: tmp.write_text(text)) for path, text in files.items()},
                 folder / TABLES_MARKER: lambda tmp: tmp.write_text("CSV tables written by mtbench report\n")},
                "the report")
    for path in files:
        say(err_console, f"wrote {path}")


TABLES_MARKER = ".mtbench-tables"
"""Left in a folder ``-o FOLDER --format csv`` wrote: its CSV files are mtbench's, a later report may replace
them. In a folder without it, a file of a table's name is the user's and is never replaced."""


HTML_MARKER = "<title>mtbench report</title>"
"""In every page ``--format html`` writes (mtbench.report.html): a report.html without it is the user's."""


def html_beside(source: str) -> Path:
    """Where ``--format html`` writes without ``-o``: beside what it reads (in a results or Parquet folder,
    next to a SQLite file), never into the current folder; a server database needs ``-o``."""
    if "://" in source:
        if not source.startswith("sqlite:///"):
            raise MtbenchError(f"{source}: --format html of a database server needs -o FILE (where to write it)")
        source = source.removeprefix("sqlite:///")
    path = Path(source)
    target = (path if path.is_dir() else path.parent) / "report.html"
    if target.exists() and HTML_MARKER not in target.read_text(errors="replace"):
        raise MtbenchError(f"{target}: exists and is not a report of mtbench's, which never replaces a file it did "
                           "not write; give -o FILE")
    return target


def _write_text(path: Path, text: str) -> None:
    from mtbench.storage.files import write_text

    write_text(path, text, "the report")  # atomically: a full disk leaves the previous report as it was


def claims(source: SourceArg = None, out: OutOpt = Path("results"), db: DbOpt = None, encoder: EncoderOpt = None,
           fmt: FormatOpt = Format.table) -> None:
    """The paper's claims checked on the database: numbers, 95% bootstrap intervals, verdicts."""
    from mtbench.report.claims import claims_section
    from mtbench.report.frames import load_frames
    from mtbench.report.leaderboard import Filters
    from mtbench.report.render import render

    section = claims_section(load_frames(source or db or str(out)), Filters(encoder=encoder))
    if fmt is Format.html:
        raise MtbenchError("--format html: use `mtbench report --view claims --format html`")
    text = render([section], fmt.value, console)
    if text is not None:
        print(text)


def export(out: OutOpt = Path("results"), db: DbOpt = None) -> None:
    """Rewrite the Parquet mirror of the database (``<out>/parquet/*.parquet``: its tables and the flat
    ``results.parquet``)."""
    from mtbench.report.flat import export_mirror

    for path in export_mirror(store(out, db), out / "parquet"):
        say(console, path)
