"""What every command group shares: the consoles, the ``--out``/``--db`` options, option checks and
the store as a command opens it.

Kept free of heavy imports: ``mtbench --help`` and ``mtbench report`` load this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from mtbench.console import make_console, say
from mtbench.errors import MtbenchError
from mtbench.report.render import FORMATS

PLAIN_HELP = {"rich_markup_mode": None}  # help texts are literal: "[default: ...]" must not be read as markup

console = make_console()
err_console = make_console(stderr=True)


def folder_option(path: Path) -> Path:
    """--out: a results folder, new or existing; never a file."""
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file, not a results folder")
    return path


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A ``str`` Enum of these values: typer shows them in ``--help``, completes them in the shell and
    refuses any other value (exit 2, naming the option and the choices)."""
    return Enum(name, [(v, v) for v in values], type=str)  # type: ignore[return-value]


OutOpt = Annotated[Path, typer.Option("--out", callback=folder_option,
                                      help="results folder: mtbench.db, parquet/, checkpoints/, data/")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="SQLAlchemy URL (default: sqlite in --out)")]

Format = choices("Format", FORMATS)  # the renderer's formats
FormatOpt = Annotated[Format, typer.Option("--format", help="output format")]


def store(out: Path, db: str | None, writable: bool = False, missing_ok: bool = False):
    """The store, read-only unless ``writable``: reading commands never create or alter a database.
    ``missing_ok``: None instead of an error where there is no database yet (run --dry-run)."""
    from mtbench.storage import DatabaseMissing, Store, default_url

    try:
        return Store(db or default_url(out), read_only=not writable)
    except DatabaseMissing:
        if missing_ok:
            return None
        raise


def writable_store(out: Path, db: str | None):
    """The store for commands that write results; checks the database and the results folder first,
    so that a command refused for a read-only folder has changed nothing."""
    import tempfile

    opened = store(out, db, writable=True)
    opened.check_writable()
    try:
        (Path(out) / "checkpoints").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        where = exc.filename or out
        raise MtbenchError(f"{where}: the results folder cannot be written ({exc.strerror}); nothing was changed") \
            from None
    return opened


def exit_interrupted(interrupt: KeyboardInterrupt) -> NoReturn:
    """One line saying what happened, then the shell's exit status for the signal (143 or 130)."""
    from mtbench.signals import describe, exit_code

    say(err_console, f"{describe(interrupt)}: the trials in flight were given back and the run is recorded as "
                     "interrupted; run again to resume", style="yellow")
    raise typer.Exit(exit_code(interrupt)) from None
