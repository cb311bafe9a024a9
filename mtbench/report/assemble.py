"""A whole report: which sections each view holds and in what order, the ``--limit`` cut, the
figures and the HTML page; what ``mtbench report`` prints, as data.

Light at import (the CLI reads :data:`VIEWS` when it starts, for ``--help``): the section modules,
which load Arrow, are imported when a report is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtbench.errors import MtbenchError

if TYPE_CHECKING:
    from mtbench.report.frames import Frames
    from mtbench.report.leaderboard import Filters
    from mtbench.report.plots import Figure
    from mtbench.report.render import Section

VIEWS = ("leaderboard", "models", "attacks", "paper", "advice", "theory", "claims", "defenses")
"""What a report can show, in the order ``--help`` lists them."""
ALL = "all"
DEFAULT_VIEWS = ("leaderboard", "models")
SORTABLE = ("v", "std", "adv_err", "clean_err", "const_err", "params_M", "MACs_G", "epochs", "steps", "seeds",
            "model")
"""The leaderboard columns ``--sort`` can order by (within each main task, models that learnt first)."""


def _leaderboard(frames: Frames, f: Filters) -> list[Section]:
    from mtbench.report.leaderboard import leaderboard

    return [leaderboard(frames, f)]


def _models(frames: Frames, f: Filters) -> list[Section]:
    from mtbench.report.leaderboard import model_rows

    return [model_rows(frames, f)]


def _attacks(frames: Frames, f: Filters) -> list[Section]:
    from mtbench.report.leaderboard import attack_rows

    return [attack_rows(frames, f)]


def _paper(frames: Frames, f: Filters) -> list[Section]:
    """Tables 1, per encoder and 2; the transfer table only when the report is not already of transfers."""
    from mtbench.report import paper

    return paper.table1(frames, f) + paper.per_encoder(frames, f) + paper.table2(frames, f) \
        + ([] if f.transfer else paper.transfer(frames, f))


def _defenses(frames: Frames, f: Filters) -> list[Section]:
    from mtbench.report.defenses import defense_sections

    return defense_sections(frames, f)


def _theory(frames: Frames, f: Filters) -> list[Section]:
    from mtbench.report import theory

    return theory.first_order(frames, f) + theory.marginal(frames, f)


def _claims(frames: Frames, f: Filters) -> list[Section]:
    from mtbench.report.claims import claims_section

    return [claims_section(frames, f)]


def _advice(frames: Frames, f: Filters) -> list[Section]:
    from mtbench.report.advice import advice_sections

    return advice_sections(frames)


SECTIONS: dict[str, Callable[[Frames, Filters], list[Section]]] = {
    "leaderboard": _leaderboard, "models": _models, "attacks": _attacks, "paper": _paper, "theory": _theory,
    "defenses": _defenses, "claims": _claims, "advice": _advice}
"""Each view's sections, in the order a report prints them (tables first, the advisor's last)."""


@dataclass
class Report:
    """The sections and figures of one report, and the data they came from (the HTML page shows its grids)."""

    sections: list[Section]
    frames: Frames
    figures: list[Figure] = field(default_factory=list)
    made_with: Section | None = None
    """The versions the trials were made with (:mod:`mtbench.report.made_with`): every report ends with it."""

    def text_sections(self, fmt: str) -> list[Section]:
        """What a text report renders: the sections, then the versions they were made with in the formats
        people read (markdown; a terminal table, where it is one line, :meth:`made_with_line`, printed
        after, when all trials agree). JSON and CSV keep their shape: only the sections asked for."""
        if self.made_with is None or fmt in ("json", "csv") or (fmt == "table" and self.made_with_line()):
            return self.sections
        return [*self.sections, self.made_with]

    def made_with_line(self) -> str | None:
        """``Made with mtbench 0.1.0, torch ...  (12 done trials)`` when every done trial agrees, else None."""
        rows = self.made_with.rows if self.made_with is not None else []
        if len(rows) != 1 or "versions" not in rows[0]:
            return None
        return f"Made with {rows[0]['versions']} ({rows[0]['trials']} done trials)"

    def html(self) -> str:
        """One self-contained HTML page."""
        from mtbench import __version__
        from mtbench.report.html import html_report

        return html_report(self.sections, self.figures, self.frames, __version__, self.made_with)


def parse_filters(eps: str | None, metric: str, **narrowing: Any) -> Filters:
    """The report's filters from the command line's text, refusing a metric or an eps it cannot rank by."""
    from mtbench.report.leaderboard import VULNERABILITY_METRICS, Filters
    from mtbench.settings import number

    if metric not in VULNERABILITY_METRICS:
        raise MtbenchError(f"--metric: expected one of {', '.join(VULNERABILITY_METRICS)}, got {metric!r}")
    try:
        eps_value = number(eps) if eps is not None else None
        if not 0 < float(eps_value if eps_value is not None else 1) <= 1:
            raise ValueError
    except (TypeError, ValueError):
        raise MtbenchError(f"--eps: expected a number in (0, 1] or a fraction like 8/255, got {eps!r}") from None
    if narrowing.get("sort") not in (None, *SORTABLE):
        raise MtbenchError(f"--sort: expected a leaderboard column, one of {', '.join(SORTABLE)}; "
                           f"got {narrowing['sort']!r}")
    return Filters(eps=eps_value, metric=metric, **narrowing)


def chosen_views(views: Iterable[str]) -> set[str]:
    """The views asked for: none means the default ones, ``all`` every one."""
    wanted = set(views) or set(DEFAULT_VIEWS)
    return set(VIEWS) if ALL in wanted else wanted


def sections_for(frames: Frames, f: Filters, views: Iterable[str]) -> list[Section]:
    """The sections of these views, in report order."""
    wanted = chosen_views(views)
    return [section for name, build in SECTIONS.items() if name in wanted for section in build(frames, f)]


def cut(sections: list[Section], limit: int) -> None:
    """At most ``limit`` rows per section (0: all), saying so in the note of a section cut short."""
    for section in sections:
        if limit and len(section.rows) > limit:
            section.note += f" [first {limit} of {len(section.rows)} rows; --limit 0 shows all]"
            section.rows = section.rows[:limit]


def build_report(frames: Frames, f: Filters, views: Iterable[str], limit: int = 0,
                 plots: Path | None = None) -> Report:
    """The report of these views; figures are drawn into ``plots`` (an HTML page's caller gives a
    temporary folder, and removes it once the page is written)."""
    from mtbench.report.made_with import made_with

    report = Report(sections_for(frames, f, views), frames, made_with=made_with(frames))
    cut(report.sections, limit)
    if plots:
        from mtbench.report.plots import draw_all

        report.figures = draw_all(frames, f, plots)
    return report
