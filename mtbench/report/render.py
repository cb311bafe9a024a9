"""Render report sections as a terminal table, Markdown, CSV, JSON or HTML."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mtbench.errors import MtbenchError

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
    machine: tuple[str, ...] = ()
    """Columns only JSON and CSV carry, besides ``FOR_MACHINES``: the settings a title states in words
    (``eps`` as "8/255" for people, ``eps_value`` as a number for programs)."""

    def __post_init__(self) -> None:
        if not self.columns:
            self.columns = list(dict.fromkeys(k for r in self.rows for k in r))

    def shown(self) -> list[str]:
        """The columns people read (terminal, Markdown, HTML)."""
        return [c for c in self.columns if c not in FOR_MACHINES and c not in self.machine]

    @property
    def name(self) -> str:
        """A file name for the section: its title up to the first colon or parenthesis, as a slug."""
        head = re.split(r"[:(]", self.title, maxsplit=1)[0]
        return re.sub(r"[^a-z0-9]+", "-", head.lower()).strip("-")[:60] or "section"

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
    """Text for ``markdown``/``csv``/``json``/``html`` (an HTML fragment); prints ``table`` to the console.
    CSV is one table: one section with rows (``csv_files`` writes several, a file each)."""
    if fmt == "json":
        return json.dumps({s.title: s.rows for s in sections}, indent=1, default=str)
    if fmt == "table":
        _print_tables(sections, console)
        return None
    if fmt == "csv":
        filled = [s for s in sections if s.rows]
        if len(filled) > 1:
            raise MtbenchError(f"--format csv: {len(filled)} tables to write ({', '.join(s.name for s in filled)}); "
                               "a CSV holds one: choose it with --view (e.g. --view leaderboard), or give "
                               "-o FOLDER for one CSV file per table")
        return as_csv(filled[0]) if filled else ""
    parts = [{"markdown": markdown, "html": html_table}[fmt](s) for s in sections if s.rows]
    return "\n".join(parts)


def csv_files(sections: list[Section]) -> dict[str, str]:
    """File name -> CSV text, one per section with rows (``<name>.csv``, numbered where names repeat)."""
    files: dict[str, str] = {}
    for s in (s for s in sections if s.rows):
        name, k = s.name, 2
        while f"{name}.csv" in files:
            name, k = f"{s.name}-{k}", k + 1
        files[f"{name}.csv"] = as_csv(s)
    return files


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
    return buf.getvalue()  # no title line: every row carries its settings, and any CSV reader reads it


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
