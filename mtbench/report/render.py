"""Render report sections as a terminal table, Markdown, CSV, JSON or HTML."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("table", "markdown", "csv", "json", "html")
FOR_MACHINES = ("setting_id",)
"""Columns only JSON and CSV carry (what a program groups by); people read the differing keys instead."""


@dataclass
class Section:
    """A titled table: rows are dicts; ``mark(row, column)`` stars a cell (e.g. an attacked task)."""

    title: str
    rows: list[dict[str, Any]]
    note: str = ""
    mark: Callable[[dict, str], bool] | None = None
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.columns:
            self.columns = list(dict.fromkeys(k for r in self.rows for k in r))

    def shown(self) -> list[str]:
        """The columns people read (terminal, Markdown, HTML)."""
        return [c for c in self.columns if c not in FOR_MACHINES]

    def cell(self, row: dict, column: str) -> str:
        v = row.get(column)
        if v is None:
            return "-"
        if isinstance(v, bool):
            if column == "learnt":  # a model that did not beat its constant predictor must stand out
                return "yes" if v else "NOT LEARNT"
            return ("SUSPECT" if v else "") if column == "suspect" else str(v)
        text = f"{v:.3g}" if isinstance(v, float) else str(v)
        return text + ("*" if self.mark and self.mark(row, column) else "")


def render(sections: list[Section], fmt: str, console=None) -> str | None:
    """Text for ``markdown``/``csv``/``json``/``html`` (an HTML fragment); prints ``table`` to the console."""
    if fmt == "json":
        return json.dumps({s.title: s.rows for s in sections}, indent=1, default=str)
    if fmt == "table":
        _print_tables(sections, console)
        return None
    parts = [{"markdown": markdown, "csv": as_csv, "html": html_table}[fmt](s) for s in sections if s.rows]
    return "\n".join(parts)


def markdown(s: Section) -> str:
    lines = [f"### {s.title}", "", "| " + " | ".join(s.shown()) + " |", "|" + "---|" * len(s.shown())]
    lines += ["| " + " | ".join(s.cell(r, c) for c in s.shown()) + " |" for r in s.rows]
    if s.note:
        lines += ["", f"_{s.note}_"]
    return "\n".join(lines) + "\n"


def as_csv(s: Section) -> str:
    buf = io.StringIO()
    extra = [k for k in dict.fromkeys(k for r in s.rows for k in r) if k not in s.columns]  # as JSON has them
    writer = csv.DictWriter(buf, [*s.columns, *extra], lineterminator="\n")
    writer.writeheader()
    writer.writerows(s.rows)
    return f"# {s.title}\n{buf.getvalue()}"


def html_table(s: Section) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in s.shown())
    body = "".join("<tr>" + "".join(f"<td>{html.escape(s.cell(r, c))}</td>" for c in s.shown()) + "</tr>"
                   for r in s.rows)
    note = f"<p class=\"note\">{html.escape(s.note)}</p>" if s.note else ""
    return f"<h2>{html.escape(s.title)}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _print_tables(sections: list[Section], console) -> None:
    """Each section as a bold title line and a table; titles, notes and cells are literal text."""
    from mtbench.console import LiteralTable, make_console, say, wide

    console = wide(console or make_console())  # piped or redirected: do not cut columns to 80 characters
    for s in sections:
        if not s.rows:
            say(console, f"{s.title}: nothing yet", style="dim")
            continue
        say(console, s.title, style="bold")  # not the table's title: rich wraps that to its width
        table = LiteralTable()
        for c in s.shown():
            numeric = any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in s.rows)
            table.add_column(c, justify="right" if numeric else "left", no_wrap=c == "model",
                             min_width=len(c) if numeric else None)
        for r in s.rows:
            table.add_row(*(s.cell(r, c) for c in s.shown()))
        console.print(table)
        if s.note:  # below the table at the console's width: a caption would wrap to a narrow table's
            say(console, s.note, style="dim")
