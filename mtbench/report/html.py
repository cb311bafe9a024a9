"""One self-contained HTML file: every table, the plots embedded as data URIs, and the grids and
mtbench version that produced the results."""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Sequence

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
img { max-width: 100%; } pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 12px; }
"""


def html_report(sections: Sequence[Section], figures: Sequence[Figure], frames: Frames, version: str,
                made_with: Section | None = None) -> str:
    body = [f"<h1>mtbench report</h1><p>mtbench {html.escape(version)}, written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}; {frames.trials.num_rows} trials.</p>"]
    body += _made_with(made_with)
    body += [html_table(s) for s in sections if s.rows]
    body += [f"<h2>{html.escape(s.title)}</h2><p class=\"note\">nothing yet</p>" for s in sections if not s.rows]
    for fig in figures:
        data = base64.b64encode(fig.png.read_bytes()).decode()
        body.append(f"<figure><img alt=\"{html.escape(fig.title)}\" src=\"data:image/png;base64,{data}\">"
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
