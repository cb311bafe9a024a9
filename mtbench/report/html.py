"""One self-contained HTML file: every table, the plots embedded as inline SVG, and the grids and
mtbench version that produced the results."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence
from pathlib import Path

from mtbench.report.frames import Frames
from mtbench.report.plots import Figure
from mtbench.report.render import Section, html_table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.note { color: #666; font-size: 12px; margin-top: -1em; }
figure { margin: 1em 0 2em; } figcaption { color: #555; font-size: 13px; }
figure svg { max-width: 100%; height: auto; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 12px; }
"""


def html_report(sections: Sequence[Section], figures: Sequence[Figure], frames: Frames, version: str,
                made_with: Section | None = None) -> str:
    body = [f"<h1>mtbench report</h1><p>mtbench {html.escape(version)}, written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}; {frames.trials.num_rows} trials.</p>"]
    body += _made_with(made_with)
    body += [html_table(s) for s in sections if s.rows]
    body += [f"<h2>{html.escape(s.title)}</h2><p class=\"note\">nothing yet</p>" for s in sections if not s.rows]
    for n, fig in enumerate(figures):
        body.append(f"<figure>{inline_svg(fig.svg, fig.title, f'fig{n}-')}"
                    f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}</figcaption></figure>")
    runs = frames.runs.to_pylist() if frames.runs.num_rows else []
    for run in runs[-5:]:
        body.append(f"<h2>Grid of run {run['id']} ({html.escape(str(run['name']))}, mtbench "
                    f"{html.escape(str(run['mtbench_version']))}, {html.escape(str(run['status']))})</h2>"
                    f"<pre>{html.escape(run['grid_text'] or '')}</pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mtbench report</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _made_with(section: Section | None) -> list[str]:
    """The versions the results were made with, in the page's header: a line when all trials agree,
    else the table of the distinct sets."""
    if section is None or not section.rows:
        return []
    if len(section.rows) == 1 and "versions" in section.rows[0]:
        row = section.rows[0]
        return [f"<p class=\"made-with\"><b>Made with</b> {html.escape(str(row['versions']))} "
                f"({row['trials']} done trials).</p>"]
    return [html_table(section)]


def inline_svg(path: Path, title: str, prefix: str) -> str:
    """The SVG file matplotlib wrote, as an element of the page: without its XML prolog and DOCTYPE,
    labelled with the (escaped) title for screen readers, and every id and reference to one prefixed
    so that figures on one page never share an id. Text inside was escaped by matplotlib."""
    text = path.read_text(encoding="utf-8")
    text = text[text.index("<svg"):]
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m[1]}"', text)
    text = re.sub(r'(href="#|url\(#)', lambda m: m[1] + prefix, text)
    return text.replace("<svg", f"<svg role=\"img\" aria-label=\"{html.escape(title)}\"", 1)
