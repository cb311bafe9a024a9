"""``mtbench plugins``: every registered plugin with its provider, as a table or JSON."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mtbench.cli.common import console
from mtbench.console import LiteralTable


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
