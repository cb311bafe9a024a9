"""Readable figures: tasks whose values differ tenfold get panels (or a log scale) of their own,
counts get integer ticks, one metric per axis, task names in legends and titles, and the HTML
report embeds the figures as inline SVG."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import run_cli

from mtbench.report import Filters, load_frames, plots
from mtbench.report.html import inline_svg
from mtbench.storage import Store
from mtbench.storage.fixture import ResultsWriter

S, D = "segment_semantic", "depth_zbuffer"


def write_db(folder: Path, d_scale: float) -> Path:
    """Main tasks s and d, alone and with the other task; d's vulnerabilities are s's times ``d_scale``
    (0.04: 25x apart, 1: alike). Attacks sweep eps and steps; the sd model has a trace, single-task
    attacks for a transfer map, a gradient analysis and E[dL] for L-inf and L2 attacks."""
    store = Store(f"sqlite:///{folder / 'mtbench.db'}")
    w = ResultsWriter(store)
    s = w.add_model({"s": S}, {"s": 0.5})
    d = w.add_model({"d": D}, {"d": 0.01})
    sd = w.add_model({"s": S, "d": D}, {"s": 0.4, "d": 0.012})
    ds = w.add_model({"d": D, "s": S}, {"d": 0.011, "s": 0.45})
    for model, main, v in ((s, "s", 0.8), (sd, "s", 0.6), (d, "d", 0.8 * d_scale), (ds, "d", 0.6 * d_scale)):
        name = {"s": S, "d": D}[main]
        w.add_attack(model, main, {name: v / 2}, eps=4 / 255)
        if model in (s, d):  # a one-task model's single-task attack is its all-task attack too
            w.add_attack(model, main, {name: v})
            w.add_attack(model, main, {name: v * 1.1}, steps=20)
    w.add_attack(ds, "d", {D: 0.6 * d_scale, S: 0.3})
    w.add_attack(sd, "s", {S: 0.6, D: 0.9}, delta_loss={S: 1.4})
    w.add_attack(sd, "d", {S: 0.05, D: 1.5}, delta_loss={D: 80.0})
    w.add_attack(sd, "sd", {S: 0.7, D: 1.2 * d_scale}, trace={S: [0.4, 0.6, 0.7], D: [0.012, 0.02, 0.03]})
    w.add_attack(ds, "ds", {D: 0.7 * d_scale, S: 0.9})
    w.add_attack(sd, "s", {S: 0.3, D: 0.4}, eps=2 / 255, delta_loss={S: 0.5})
    w.add_attack(sd, "d", {S: 0.02, D: 0.5}, eps=2 / 255, delta_loss={D: 40.0})
    w.add_attack(sd, "s", {S: 0.3, D: 0.4}, attack="pgd-l2", eps=0.25, delta_loss={S: 0.7})
    w.add_attack(sd, "s", {S: 0.5, D: 0.7}, attack="pgd-l2", eps=0.5, delta_loss={S: 1.2})
    w.add_analysis(sd, {S: 30.0, D: 3000.0})
    w.flush()
    return folder


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots._pyplot().close("all")


@pytest.fixture
def spread(tmp_path) -> Path:
    return write_db(tmp_path, 0.04)


@pytest.fixture
def alike(tmp_path) -> Path:
    return write_db(tmp_path, 1.0)


def build(folder: Path, builder) -> list[plots.Drawn]:
    drawn = builder(load_frames(str(folder)), Filters())
    for d in drawn:
        d.fig.canvas.draw()  # ticks and layout as they will be saved
    return drawn


def title(ax) -> str:
    """The panel's title as one line (long titles are wrapped)."""
    return " ".join(ax.get_title().split())


def texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_spread_is_judged_on_the_positive_values():
    assert plots.too_spread([0.1, 1.0]) and plots.too_spread([0.01, 0.5, None, math.nan])
    assert not plots.too_spread([0.2, 1.9]) and not plots.too_spread([0.5])
    assert not plots.too_spread([0.0, -5.0, 0.5, 1.0])  # zero and negative values have no ratio
    assert plots.too_spread([1, 4], limit=4) and not plots.too_spread([1, 3.9], limit=4)
    assert plots.panel_groups({"s": [0.5, 0.6], "d": [0.01]}) == [["d"], ["s"]]
    assert plots.panel_groups({"s": [0.5, 0.6], "d": [0.1]}) == [["d", "s"]]
    assert plots.panel_groups({"s": [0.5], "d": []}) == [["d", "s"]]


@pytest.mark.parametrize("builder", [plots.vulnerability_vs_tasks, plots.vulnerability_vs_eps,
                                     plots.vulnerability_vs_steps])
def test_tasks_ten_times_apart_get_a_row_of_panels_each(spread, builder):
    (fig,) = build(spread, builder)
    rows = {ax.get_subplotspec().rowspan.start: title(ax) for ax in fig.fig.axes}
    assert len(rows) == 2, rows  # main task d, main task s
    assert "main task depth_zbuffer (d)" in rows[0] and "main task segment_semantic (s)" in rows[1]
    for ax in fig.fig.axes:  # each panel holds one main task's lines
        assert len(ax.lines) >= 1
        ys = [y for line in ax.lines for y in line.get_ydata()]
        assert not plots.too_spread(ys), (title(ax), ys)


@pytest.mark.parametrize("builder", [plots.vulnerability_vs_tasks, plots.vulnerability_vs_eps,
                                     plots.vulnerability_vs_steps])
def test_tasks_alike_share_a_panel_and_the_legend_names_them(alike, builder):
    (fig,) = build(alike, builder)
    assert len({ax.get_subplotspec().rowspan.start for ax in fig.fig.axes}) == 1
    legend = [t for ax in fig.fig.axes for t in texts(ax)]
    assert any("main task depth_zbuffer (d)" in t for t in legend), legend
    assert any("main task segment_semantic (s)" in t for t in legend), legend


def test_counts_have_integer_ticks(spread):
    for builder in (plots.vulnerability_vs_tasks, plots.vulnerability_vs_steps, plots.error_along_steps):
        for fig in build(spread, builder):
            for ax in fig.fig.axes:
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), (builder.__name__, ticks)


def test_each_axis_holds_one_metric(spread):
    (clean,) = build(spread, plots.clean_vs_robust)
    assert sorted(ax.get_xlabel() for ax in clean.fig.axes) == [
        "clean error of depth_zbuffer (MSE)", "clean error of segment_semantic (1 - mIoU)"]
    (steps,) = build(spread, plots.error_along_steps)
    assert [ax.get_ylabel() for ax in steps.fig.axes] == ["error of segment_semantic (1 - mIoU)",
                                                          "error of depth_zbuffer (MSE)"]
    (first,) = build(spread, plots.first_order_vs_measured)
    assert {ax.get_xlabel() for ax in first.fig.axes} == {"pgd-linf eps ([0, 1] pixel units)",
                                                         "pgd-l2 eps ([0, 1] pixel units)"}
    for ax in first.fig.axes:  # L2 and L-inf budgets never share an axis; nor do s's E[dL] (~1) and d's (~60)
        attack = ax.get_xlabel().split()[0]
        assert title(ax).startswith(attack)
        assert len({t.split(":")[0] for t in texts(ax)}) == 1, texts(ax)
    for kind in plots.BUILDERS:
        for fig in build(spread, kind):
            for ax in fig.fig.axes:
                assert " or " not in ax.get_xlabel() + ax.get_ylabel(), (kind.__name__, ax.get_ylabel())


def test_legends_and_titles_name_tasks(spread):
    (steps,) = build(spread, plots.error_along_steps)
    assert [title(ax) for ax in steps.fig.axes] == ["segment_semantic (s)", "depth_zbuffer (d)"]
    (legend,) = steps.fig.legends  # one legend for all panels, each attacked set one colour
    assert [t.get_text() for t in legend.get_texts()] == ["attacking segment_semantic + depth_zbuffer (sd)"]
    (heat,) = [d for d in build(spread, plots.transfer_heatmaps) if "/sd/" in d.title]
    ax = heat.fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["segment_semantic (s)", "depth_zbuffer (d)"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["segment_semantic (s)", "depth_zbuffer (d)"]


def test_transfer_map_turns_logarithmic_only_when_its_values_spread(spread, tmp_path):
    from matplotlib.colors import LogNorm

    (heat,) = [d for d in build(spread, plots.transfer_heatmaps) if "/sd/" in d.title]  # 0.05 to 1.5
    assert isinstance(heat.fig.axes[0].images[0].norm, LogNorm)
    near = tmp_path / "near"
    near.mkdir()
    w = ResultsWriter(Store(f"sqlite:///{near / 'mtbench.db'}"))
    sd = w.add_model({"s": S, "d": D}, {"s": 0.4, "d": 0.012})
    w.add_attack(sd, "s", {S: 0.6, D: 0.3})
    w.add_attack(sd, "d", {S: 0.2, D: 0.9})
    w.flush()
    (flat,) = build(near, plots.transfer_heatmaps)
    assert not isinstance(flat.fig.axes[0].images[0].norm, LogNorm)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.ids += [v for k, v in attrs if k == "id"]


def test_inline_svg_is_escaped_and_its_ids_are_its_own(tmp_path):
    hostile = "</svg><script>alert(1)</script> --> <b>&"
    fig, ((ax,),) = plots._subplots(1, 1, (7, 4))
    ax.plot([0, 1], [0, 1], marker="o", label=hostile)
    ax.legend()
    drawn = plots._drawn(fig, "hostile", hostile, hostile)
    saved = plots._save(drawn, tmp_path)
    page = inline_svg(saved.svg, hostile, "fig0-") + inline_svg(saved.svg, hostile, "fig1-")
    parser = _Page()
    parser.feed(page)
    assert "script" not in parser.tags and "b" not in parser.tags and parser.tags.count("svg") == 2
    assert len(parser.ids) == len(set(parser.ids))  # the same figure twice: no id shared
    refs = re.findall(r'(?:href="#|url\(#)([^")]+)', page)
    assert refs and set(refs) <= set(parser.ids)  # every reference still points at its own figure's defs
    assert not page.startswith("<?xml") and "<!DOCTYPE" not in page


def test_real_report_embeds_every_figure_as_svg(real_results, tmp_path):
    """A real tiny run: the page carries the figures themselves (no file links, no PNG), and their
    legends and titles name the tasks."""
    out = tmp_path / "report.html"
    figures = tmp_path / "figures"
    result = run_cli("report", str(real_results), "--format", "html", "-o", str(out), "--plots", str(figures))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    svgs = sorted(figures.glob("*.svg"))
    assert svgs and page.count("<svg") == len(svgs)
    assert "<img" not in page and ".png" not in page  # no links to files (a heat map's pixels are inside its SVG)
    drawn = [d for kind in plots.BUILDERS for d in build(real_results, kind)]
    assert len(drawn) == len(svgs)
    names = [t for d in drawn for ax in d.fig.axes for t in (title(ax), *texts(ax))]
    names += [t.get_text() for d in drawn for legend in d.fig.legends for t in legend.get_texts()]
    assert any("depth_zbuffer (d)" in t for t in names) and any("segment_semantic (s)" in t for t in names)
