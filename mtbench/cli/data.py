"""``mtbench data synth``, ``check`` and ``show``: Taskonomy-format folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mtbench.cli.common import console, err_console
from mtbench.console import LiteralTable, say

SHOWN_PROBLEMS = 50
"""``data check`` lists at most this many problems, then counts the rest."""


def synth(
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


def check(root: Annotated[Path, typer.Argument(help="dataset folder")]) -> None:
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
    for problem in result.problems[:SHOWN_PROBLEMS]:
        say(console, ("problem", "red"), " ", problem)
    if len(result.problems) > SHOWN_PROBLEMS:
        say(console, f"... and {len(result.problems) - SHOWN_PROBLEMS} more problems")
    say(console, f"{result.samples} sample(s), {len(result.problems)} problem(s)")
    if result.problems:
        raise typer.Exit(1)


def show(
    root: Annotated[Path, typer.Argument(help="dataset folder (Taskonomy layout)")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write")],
    samples: Annotated[int, typer.Option(min=1, max=64, help="samples (rows), spread over the split")] = 4,
    split: Annotated[Optional[str], typer.Option(help="split of splits.json (default: train; every building "
                                                      "if the folder has no splits.json)")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="task codes or names, e.g. sdn or segment_semantic,normal "
                                                      "(default: every task whose domains the folder has)")] = None,
    size: Annotated[Optional[int], typer.Option(min=8, max=4096, help="resize to this size, as a grid's "
                                                                      "image_size (default: the files' size)")] = None,
) -> None:
    """Draw a few samples (rows) x rgb and each task (columns), decoded as the tasks see them."""
    from mtbench.data.show import default_tasks, draw_samples
    from mtbench.plugins import get_plugins

    registry = get_plugins().tasks
    if tasks:
        names = [n.strip() for n in tasks.split(",")] if "," in tasks or tasks in registry else list(tasks)
        chosen = {registry.resolve(n): registry.get(registry.resolve(n)) for n in names}
    else:
        chosen = default_tasks(root, {n: registry.get(n) for n in registry.names()})
    shown = draw_samples(root, out, chosen, samples, split, size)
    say(console, f"wrote {out}: {len(shown.samples)} sample(s) x {len(shown.columns)} column(s) "
                 f"({', '.join(shown.columns)}), {shown.pixels[0]}x{shown.pixels[1]} px")
