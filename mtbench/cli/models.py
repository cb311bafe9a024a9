"""``mtbench models info``: the sizes of :func:`mtbench.models.model_sizes` as a table."""

from __future__ import annotations

from typing import Annotated

import typer

from mtbench.cli.common import console
from mtbench.console import LiteralTable


def info(
    encoder: Annotated[str, typer.Argument(help="encoder name, or 'all'")],
    tasks: Annotated[str, typer.Argument(help="task set, e.g. 'sd' or 'depth_zbuffer,normal'")] = "dD",
    size: Annotated[int, typer.Option(min=8, max=4096, help="input size for MACs")] = 256,
) -> None:
    """Parameters and multiply-accumulates of encoder + decoders (paper: two 1-channel decoders, 256 px)."""
    from mtbench.grid import task_set_names
    from mtbench.models import model_sizes
    from mtbench.plugins import get_plugins

    p = get_plugins()
    names = task_set_names(tasks.split(",") if "," in tasks else tasks, p)
    rows = model_sizes(p.encoders.names() if encoder == "all" else [encoder], names, size, p)
    table = LiteralTable(title=f"encoder + decoders for {', '.join(names)} at 3x{size}x{size}")
    for col in ("encoder", "params (M)", "paper (M)", "diff", "MACs (G)", "paper (G)"):
        table.add_column(col, justify="right")
    for r in rows:
        known = r.paper_params_m is not None
        table.add_row(r.encoder, f"{r.params_m:.2f}", f"{r.paper_params_m:.2f}" if known else "-",
                      f"{(r.params_m / r.paper_params_m - 1) * 100:+.2f}%" if known else "-", f"{r.macs_g:.2f}",
                      f"{r.paper_macs_g:.2f}" if known else "-")
    console.print(table)
