"""The ``mtbench`` command line: thin wrappers over the modules that do the work.

One module per command group (``run``, ``report``, ``advise``, ``data``, ``models``, ``plugins``;
what they share is in ``common``); each command parses its options, calls the library and prints.
Heavy imports (torch, the plugins, Arrow) happen inside the commands that need them, so ``mtbench
report`` and ``mtbench --help`` start fast. Every user error exits with code 2 and a message.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mtbench.cli import advise, data, models, plugins, report, run
from mtbench.cli.common import PLAIN_HELP, err_console
from mtbench.console import say
from mtbench.errors import MtbenchError

app = typer.Typer(help="Adversarial robustness of multi-task vision models: train, attack, report.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True, **PLAIN_HELP)
data_app = typer.Typer(help="Taskonomy-format data: generate synthetic scenes, check a folder, draw samples.",
                       no_args_is_help=True, **PLAIN_HELP)
models_app = typer.Typer(help="Model architectures: sizes and costs.", no_args_is_help=True, **PLAIN_HELP)


def _print_version(value: bool) -> None:
    if value:
        from mtbench import __version__

        typer.echo(f"mtbench {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="print mtbench's version and exit")] = False) -> None:
    """Adversarial robustness of multi-task vision models: train, attack, report."""


for command in (run.run, run.worker, plugins.plugins, report.report, report.claims, advise.advise, report.export):
    app.command()(command)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
data_app.command("synth")(data.synth)
data_app.command("check")(data.check)
data_app.command("show")(data.show)
models_app.command("info")(models.info)


def main() -> None:
    """Entry point: user errors become a message and exit code 2, never a traceback."""
    try:
        app(prog_name="mtbench")  # also as python -m mtbench.cli: shell completion is for the `mtbench` command
    except MtbenchError as exc:
        say(err_console, ("error:", "bold red"), f" {exc}")
        sys.exit(exc.exit_code)
