"""The paper's figures from the database, as PNG and SVG (``mtbench report --plots DIR``).

Each builder (:data:`BUILDERS`) draws one kind of figure and returns the matplotlib figures it built
(:class:`Drawn`), which :func:`draw_all` writes; a figure with no data to show is skipped rather than
drawn empty. Figures stay readable: several tasks' values that span :data:`SPREAD` or more get a
panel each, counts get integer ticks, each axis holds one metric, legends and titles name tasks.
Like the tables, a figure averages trials only within one setting (seeds): trials whose settings
differ in more than the figure's axes get lines, panels or figures of their own, labelled with the
keys that differ (:func:`_settings_of`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtbench.errors import MtbenchError
from mtbench.records import Phase
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import (
    MODEL_AXES,
    TARGET_AXES,
    Filters,
    attack_info,
    default_attack,
    differences,
    fraction,
    key,
    metric_values,
    model_info,
    settings,
    without,
)
from mtbench.storage.files import write_files

MAX_FIGURES_PER_KIND = 12
V_LABEL = "relative vulnerability of the main task\n(err_adv - err_clean) / err_clean"
SPREAD = 10.0
"""Several tasks' values that span this factor or more do not share a linear axis: the small ones
would lie flat on zero. They get a panel each (:func:`panel_groups`), or a log scale."""
ERROR_METRICS = {"segment_semantic": "1 - mIoU"}
"""The error metric of a task, where it is not the MSE (the tables' notes say the same)."""


@dataclass
class Figure:
    title: str
    png: Path
    svg: Path
    caption: str


@dataclass
class Drawn:
    """A figure built but not yet written: the matplotlib figure (what the tests inspect), the stem
    of its file names, its title and caption."""

    fig: Any
    stem: str
    title: str
    caption: str


def draw_all(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    _pyplot()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MtbenchError(f"{out}: cannot create the figures folder ({exc.strerror or exc})") from None
    figures: list[Figure] = []
    for build in BUILDERS:
        drawn = build(frames, f)
        try:
            figures += [_save(d, out) for d in drawn]
        finally:
            for d in drawn:
                _pyplot().close(d.fig)
    return figures


def _pyplot():
    """pyplot on the Agg backend: figures are files, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def too_spread(values: Iterable[float | None], limit: float = SPREAD) -> bool:
    """Whether the positive finite values span ``limit`` times or more (max / min)."""
    positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) >= limit


def panel_groups(values: Mapping[str, Iterable[float | None]]) -> list[list[str]]:
    """The tasks (keys) that share a panel, sorted: all of them in one, or one panel each where their
    values together are :func:`too_spread`."""
    tasks = sorted(values)
    together = [v for t in tasks for v in values[t]]
    return [[t] for t in tasks] if too_spread(together) else [tasks]


def task_label(name: str, code: str) -> str:
    """A task as legends and titles name it: ``segment_semantic (s)``."""
    return f"{name} ({code})"


def targets_label(names: Mapping[str, str], targets: str) -> str:
    """Task codes (``"sd"``) as names: ``segment_semantic + depth_zbuffer (sd)``."""
    return f"{' + '.join(names.get(c, c) for c in targets)} ({targets})"


def error_label(task: str) -> str:
    return f"error of {task} ({ERROR_METRICS.get(task, 'MSE')})"


def _code_names(models: dict[str, dict]) -> dict[str, str]:
    """Task code -> task name, from the models' own lists."""
    return {c: n for m in models.values() for c, n in zip(m["codes"], m["names"])}


def _subplots(rows: int, cols: int, size: tuple[float, float], **share):
    """A figure of rows x cols panels of ``size`` inches each, its axes always a 2-D array; laid out by
    matplotlib's constrained layout, which (unlike tight_layout) leaves room for the suptitle."""
    return _pyplot().subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False,
                              layout="constrained", **share)


def _integer_ticks(axis) -> None:
    """Counts (tasks, steps) get whole-number ticks only."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _group_title(names: Mapping[str, str], groups: list[list[str]], group: list[str]) -> str:
    """``, main task <name>`` on a panel of one main task among several panels, else nothing."""
    return f", main task {targets_label(names, group[0])}" if len(groups) > 1 else ""


def _legend(ax, empty: str = "no data") -> None:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)


def _chosen(frames: Frames, f: Filters):
    models = model_info(frames, f)
    attacks = attack_info(frames, models, Filters(attack=f.attack, steps=f.steps))
    attack, eps = default_attack(frames, models, f)
    return models, attacks, attack, eps


def _settings_of(frames: Frames, rows: list[dict], model: tuple[str, ...] = (),
                 attack: tuple[str, ...] = ()) -> dict[str, str]:
    """Attack trial id -> the key of its setting less the keys a figure varies along (``model``: of its
    model's part, ``attack``: of its own). Trials are averaged together only when these keys are equal:
    they then differ in their seeds alone."""
    found = settings(frames, [r["id"] for r in rows])
    return {i: key(without(s, model=model, attack=attack)) for i, s in found.items()}


def _labels(keys) -> dict[str, str]:
    """For each distinct setting key: ``" (k=v, ...)"`` of the keys that tell it from the others, or ''."""
    distinct = list(dict.fromkeys(keys))
    return {k: f" ({d})" if d else "" for k, d in zip(distinct, differences([json.loads(k) for k in distinct]))}


def _labels_within(groups: dict[str, object], setting: dict[str, str]) -> dict[str, str]:
    """Trial id -> the label of its setting among the trials of the same group (a line's name): only
    what tells apart lines that would otherwise carry one name."""
    out: dict[str, str] = {}
    for group in set(groups.values()):
        ids = [i for i, g in groups.items() if g == group and i in setting]
        labels = _labels(setting[i] for i in ids)
        out.update({i: labels[setting[i]] for i in ids})
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _drawn(fig, stem: str, title: str, caption: str) -> Drawn:
    fig.suptitle(title)
    for ax in fig.axes:
        if ax.get_title():
            ax.set_title(textwrap.fill(ax.get_title(), 48))
    return Drawn(fig, re.sub(r"[^A-Za-z0-9_.-]+", "_", stem), title, caption)


def _save(d: Drawn, out: Path) -> Figure:
    png, svg = out / f"{d.stem}.png", out / f"{d.stem}.svg"
    write_files({png: lambda tmp: d.fig.savefig(tmp, format="png", dpi=110),
                 svg: lambda tmp: d.fig.savefig(tmp, format="svg", metadata={"Date": None})}, "the figure")
    return Figure(d.title, png, svg, d.caption)


def error_along_steps(frames: Frames, f: Filters) -> list[Drawn]:
    """The paper's Figs 1-11: each task's error at every PGD step, one panel per measured task (each
    its own error metric), one line per attacked task set."""
    models, attacks, attack, eps = _chosen(frames, f)
    names = _code_names(models)
    by_id = {r["id"]: r for r in attacks if r["attack"] == attack and r["eps"] == eps}
    setting = _settings_of(frames, list(by_id.values()), attack=TARGET_AXES)
    trace = frames.read_metrics(Phase.TRACE, "error", list(by_id)).to_pydict()
    series: dict[str, dict[tuple[str, str, str], dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for tid, task, step, value in zip(trace["trial_id"], trace["task"], trace["step"], trace["value"]):
        if tid in by_id:  # a model's seed is in its id: one figure per model, its attacks' lines by setting
            series[by_id[tid]["model"]][(by_id[tid]["targets"], setting[tid], task)][step].append(value)
    figures = []
    for model_id, lines in list(series.items())[:MAX_FIGURES_PER_KIND]:
        model = models[model_id]
        labels = _labels(line for _, line, _ in lines)  # what tells this model's attack settings apart
        n = len(model["names"])
        fig, axes = _subplots(1, n, (4.6, 3.8))
        # one colour per attacked set in every panel, named once in a legend under them all
        colours = {k: f"C{i % 10}" for i, k in enumerate(sorted({(t, line) for t, line, _ in lines}))}
        for ax, task, code in zip(axes[0], model["names"], model["codes"]):
            for (targets, line, measured), points in sorted(lines.items()):
                if measured == task:
                    steps = sorted(points)
                    ax.plot(steps, [_mean(points[x]) for x in steps], marker=".", color=colours[targets, line],
                            label=f"attacking {targets_label(names, targets)}{labels[line]}")
            ax.set(title=task_label(task, code), xlabel="PGD step", ylabel=error_label(task))
            _integer_ticks(ax.xaxis)
            ax.grid(alpha=0.3)
            if not ax.lines:
                ax.text(0.5, 0.5, "no trace stored", ha="center", va="center", transform=ax.transAxes)
        shown = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())}
        fig.legend(list(shown.values()), list(shown), loc="outside lower center", ncols=min(2, n), fontsize=8)
        figures.append(_drawn(fig, f"steps_{model['name']}_{model_id[:6]}_{attack}_{fraction(eps)}",
                              f"{model['name']}: error along {attack} eps={fraction(eps)}",
                              "Error of each task (panel, its own metric) at every attack step, for each attacked "
                              "task set (line). Step 0 is the clean error."))
    return figures


def vulnerability_vs_tasks(frames: Frames, f: Filters) -> list[Drawn]:
    """The paper's Figs 12-13: the main task's vulnerability under the all-task attack as tasks are
    added, unweighted (sum) beside 1/N (uniform mean) weighting; main tasks whose values span
    :data:`SPREAD` get a row of panels each."""
    models, attacks, attack, eps = _chosen(frames, f)
    names = _code_names(models)
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    chosen = [r for r in attacks if r["attack"] == attack and r["eps"] == eps
              and r["targets"] == models[r["model"]]["codes"]]
    # along the x axis the model's tasks (and so its weights and per-task loss options) change
    setting = _settings_of(frames, chosen, model=(*MODEL_AXES, "loss_options"), attack=TARGET_AXES)
    labels = _labels_within({r["id"]: (models[r["model"]]["weighting"], models[r["model"]]["codes"][0])
                             for r in chosen}, setting)
    raw: dict[tuple[str, str, str, str], dict[int, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in chosen:
        m = models[r["model"]]
        v = vuln.get((r["id"], m["main"]))
        if v is not None:  # seeds of one task set averaged; each task set of N tasks is a point of its own
            line = (m["weighting"], m["codes"][0], labels[r["id"]], setting[r["id"]])
            raw[line][len(m["codes"])][m["codes"]].append(v)
    if not any(len(points) > 1 for points in raw.values()):
        return []
    # line -> number of tasks -> the mean of each task set of that size
    lines = {line: {x: [_mean(vs) for vs in sets.values()] for x, sets in points.items()}
             for line, points in raw.items()}
    weightings = sorted({w for w, _, _, _ in lines})
    groups = panel_groups({main: [v for line, pts in lines.items() if line[1] == main
                                  for vs in pts.values() for v in vs] for main in {line[1] for line in lines}})
    fig, axes = _subplots(len(groups), len(weightings), (5.2, 3.8), sharex=True, sharey="row")
    for row, group in zip(axes, groups):
        for ax, w in zip(row, weightings):
            for (weighting, main, label, _), per_set in sorted(lines.items()):
                if weighting != w or main not in group:
                    continue
                xs = sorted(per_set)
                drawn = ax.plot(xs, [_mean(per_set[x]) for x in xs], marker="o",
                                label=f"main task {targets_label(names, main)}{label}")
                ax.scatter([x for x in xs for _ in per_set[x]], [v for x in xs for v in per_set[x]], s=12,
                           color=drawn[0].get_color(), alpha=0.5)
            ax.set(title=f"{w} weighting" + (" (1/N)" if w == "uniform" else "") + _group_title(names, groups, group),
                   xlabel="number of tasks in the model", ylabel=V_LABEL if ax is row[0] else "")
            _integer_ticks(ax.xaxis)
            _legend(ax)
    return [_drawn(fig, "vulnerability_vs_tasks", f"Vulnerability vs number of tasks, {attack} eps={fraction(eps)}",
                   "Main-task vulnerability when every task of the model is attacked together, by model size: "
                   "a dot per task set (its seeds averaged), the line through each size's mean over its task sets.")]


def _sweep(frames: Frames, f: Filters, axis: str):
    """Lines of the main task's v along ``axis`` (eps or steps), keyed by (norm, main task code, model
    name and setting label): one per model setting and attack setting less that axis (eps sweeps also
    let the default step size eps/4 follow), seeds averaged; and the task names by code."""
    models, attacks, attack, eps = _chosen(frames, f)
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    chosen = [r for r in attacks if r["targets"] == models[r["model"]]["codes"][0]
              and (axis != "steps" or (r["attack"] == attack and r["eps"] == eps))]
    setting = _settings_of(frames, chosen, attack=("eps", "step_size") if axis == "eps" else ("steps",))
    labels = _labels_within({r["id"]: (r["norm"], models[r["model"]]["name"]) for r in chosen}, setting)
    lines: dict[tuple[str, str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in chosen:
        m = models[r["model"]]
        v = vuln.get((r["id"], m["main"]))
        if v is not None:
            lines[(r["norm"] or r["attack"], m["codes"][0], m["name"] + labels[r["id"]])][r[axis]].append(v)
    return lines, attack, eps, _code_names(models)


def _sweep_panels(ax, lines, norm: str | None, group: list[str], names: Mapping[str, str], scale: float = 1) -> None:
    """The lines of ``_sweep`` of one norm (None: any) and one group of main tasks on one panel."""
    for (n, main, name), points in sorted(lines.items()):
        if (norm is None or n == norm) and main in group:
            xs = sorted(points)
            ax.plot([x * scale for x in xs], [_mean(points[x]) for x in xs], marker="o",
                    label=name + (f", main task {targets_label(names, main)}" if len(group) > 1 else ""))


def _sweep_groups(lines) -> list[list[str]]:
    return panel_groups({main: [_mean(vs) for (_, mm, _), pts in lines.items() if mm == main for vs in pts.values()]
                         for main in {main for _, main, _ in lines}})


def vulnerability_vs_eps(frames: Frames, f: Filters) -> list[Drawn]:
    """The paper's Figs 14-17 (part): vulnerability against the budget, L-inf beside L2; main tasks
    whose values span :data:`SPREAD` get a row of panels each."""
    lines, _, _, names = _sweep(frames, f, "eps")
    norms = sorted({n for (n, _, _), pts in lines.items() if len(pts) > 1})
    if not norms:
        return []
    lines = {k: v for k, v in lines.items() if k[0] in norms}
    groups = _sweep_groups(lines)
    fig, axes = _subplots(len(groups), len(norms), (5.2, 3.8), sharex="col")
    for row, group in zip(axes, groups):
        for ax, norm in zip(row, norms):
            _sweep_panels(ax, lines, norm, group, names, 255 if norm == "linf" else 1)
            if not ax.lines:  # no model of these main tasks was attacked with this norm
                ax.remove()
                continue
            ax.set(title=f"{norm} attacks" + _group_title(names, groups, group),
                   xlabel="eps (grey levels /255)" if norm == "linf" else "eps (L2 norm, [0,1] pixels)",
                   ylabel=V_LABEL)
            _legend(ax)
    return [_drawn(fig, "vulnerability_vs_eps", "Vulnerability vs attack budget (main task attacked alone)",
                   "Each line is a model; L-inf and L2 attacks in separate panels.")]


def vulnerability_vs_steps(frames: Frames, f: Filters) -> list[Drawn]:
    """The paper's Figs 14-17 (part): vulnerability against the number of attack steps."""
    lines, attack, eps, names = _sweep(frames, f, "steps")
    lines = {k: v for k, v in lines.items() if len(v) > 1}
    if not lines:
        return []
    groups = _sweep_groups(lines)
    fig, axes = _subplots(len(groups), 1, (5.8, 3.8), sharex=True)
    for (ax,), group in zip(axes, groups):
        _sweep_panels(ax, lines, None, group, names)
        ax.set(title=_group_title(names, groups, group).removeprefix(", "), xlabel="attack steps", ylabel=V_LABEL)
        _integer_ticks(ax.xaxis)
        _legend(ax)
    return [_drawn(fig, "vulnerability_vs_steps", f"Vulnerability vs steps, {attack} eps={fraction(eps)}",
                   "Each line is a model; the main task is attacked alone.")]


def transfer_heatmaps(frames: Frames, f: Filters) -> list[Drawn]:
    """Cross-task transfer: the vulnerability of each measured task (column) when one task (row) is
    attacked alone, per multi-task model; a log colour scale where the (all positive) values span
    :data:`SPREAD`."""
    from matplotlib.colors import LogNorm

    models, attacks, attack, eps = _chosen(frames, f)
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    chosen = [r for r in attacks if len(models[r["model"]]["codes"]) > 1 and r["attack"] == attack
              and r["eps"] == eps and len(r["targets"]) == 1]
    setting = _settings_of(frames, chosen, attack=TARGET_AXES)
    grids: dict[tuple[str, str], dict[tuple[str, str], float]] = defaultdict(dict)
    for r in chosen:  # one trial per cell: its model (one seed) and its attack setting are the figure's
        m = models[r["model"]]
        for name, code in zip(m["names"], m["codes"]):
            v = vuln.get((r["id"], name))
            if v is not None:
                grids[(r["model"], setting[r["id"]])][(r["targets"], code)] = v
    labels = {(m, line): label for m in {m for m, _ in grids}  # what tells one model's attack settings apart
              for line, label in _labels(line for model, line in grids if model == m).items()}
    figures = []
    for (model_id, line), grid in list(grids.items())[:MAX_FIGURES_PER_KIND]:
        m = models[model_id]
        codes, names = m["codes"], dict(zip(m["codes"], m["names"]))
        rows = [c for c in codes if any(k[0] == c for k in grid)]
        data = [[grid.get((a, b), float("nan")) for b in codes] for a in rows]
        values = [v for row in data for v in row if math.isfinite(v)]
        log = too_spread(values) and all(v > 0 for v in values)
        fig, ((ax,),) = _subplots(1, 1, (1.9 * len(codes) + 3.5, 1.0 * len(rows) + 2.4))
        image = ax.imshow(data, cmap="magma_r", norm=LogNorm() if log else None)
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=9,
                        color="white" if math.isfinite(v) and image.norm(v) > 0.5 else "black")
        ax.set_xticks(range(len(codes)), [task_label(names[c], c) for c in codes], rotation=20, ha="right")
        ax.set_yticks(range(len(rows)), [task_label(names[c], c) for c in rows])
        ax.set(xlabel="measured task", ylabel="attacked task")
        fig.colorbar(image, ax=ax, label="relative vulnerability" + (" (log scale)" if log else ""))
        figures.append(_drawn(fig, f"transfer_{m['name']}_{model_id[:6]}_{attack}_{fraction(eps)}"
                              + (f"_{hashlib.sha256(line.encode()).hexdigest()[:6]}" if labels[model_id, line] else ""),
                              f"{m['name']}: cross-task transfer, {attack} eps={fraction(eps)}"
                              + labels[model_id, line],
                              "Row: the task attacked alone; column: the task whose error is measured."))
    return figures


def clean_vs_robust(frames: Frames, f: Filters) -> list[Drawn]:
    """Clean error against vulnerability of the main task, a panel per main task (each its own error
    metric on x), one colour per encoder."""
    models, attacks, attack, eps = _chosen(frames, f)
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    clean = metric_values(frames, Phase.CLEAN, "error")
    points: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in attacks:
        m = models[r["model"]]
        if r["attack"] != attack or r["eps"] != eps or r["targets"] != m["codes"][0]:
            continue
        v, c = vuln.get((r["id"], m["main"])), clean.get((m["id"], m["main"]))
        if v is not None and c is not None:
            points[(m["main"], m["codes"][0])][m["encoder"]].append((c, v))
    if not points:
        return []
    fig, axes = _subplots(1, len(points), (5.2, 4))
    for ax, ((main, code), by_encoder) in zip(axes[0], sorted(points.items())):
        for encoder, pts in sorted(by_encoder.items()):
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=encoder)
        ax.set(title=f"main task {task_label(main, code)}", xlabel=f"clean {error_label(main)}", ylabel=V_LABEL)
        _legend(ax)
    return [_drawn(fig, "clean_vs_robust", f"Clean error vs vulnerability, {attack} eps={fraction(eps)}",
                   "One point per model (main task attacked alone); a panel per main task, its own error on x.")]


def advice_proxy_vs_full(frames: Frames, f: Filters) -> list[Drawn]:
    """For each validated advice: the proxy value against the full-budget value, one point per
    auxiliary task (the paper's Table 3 as a picture)."""
    from mtbench.report.leaderboard import done

    advice = done(frames, "advice")
    ids = advice["id"].to_pylist() if advice.num_rows else []
    if not ids:
        return []
    proxy = metric_values(frames, Phase.ADVICE, "proxy", ids)
    full = metric_values(frames, Phase.ADVICE, "full", ids)
    configs = {r["id"]: r["config"] for r in advice.select(["id", "config"]).to_pylist()}
    figures = []
    for tid in ids[:MAX_FIGURES_PER_KIND]:
        points = [(task, proxy[(t, task)], v) for (t, task), v in full.items() if t == tid and (t, task) in proxy]
        if len(points) < 2:
            continue
        cfg = json.loads(configs[tid])
        fig, ((ax,),) = _subplots(1, 1, (5, 4))
        ax.scatter([p[1] for p in points], [p[2] for p in points])
        for task, x, y in points:
            ax.annotate(task, (x, y), textcoords="offset points", xytext=(4, 4))
        ax.set(xlabel=f"proxy: {cfg['proxy']} on {cfg['proxy_encoder']} ({cfg['proxy_epochs']} epochs)",
               ylabel=f"full: vulnerability on {cfg['encoder']}")
        ax.grid(alpha=0.3)
        figures.append(_drawn(fig, f"advice_{cfg['main']}_{cfg['proxy']}_{tid[:6]}",
                              f"Advisor for main task {cfg['main']}: proxy vs full",
                              "One point per auxiliary task: its proxy value and the main task's relative "
                              "vulnerability after full training; a good proxy puts them on a rising line."))
    return figures


def first_order_vs_measured(frames: Frames, f: Filters) -> list[Drawn]:
    """Per analysed model: the measured E[dL] of each attack against eps beside the first-order
    prediction eps * E||grad L||_q, to show where the linear approximation stops holding. A column
    per attack (each its own eps norm), a row per attacked task set where their values span
    :data:`SPREAD`, a line per number of steps."""
    from mtbench.report.theory import first_order_rows

    names = _code_names(model_info(frames, f))
    rows = [r for r in first_order_rows(frames, f) if r["measured"] is not None]
    by_model: dict[str, dict[tuple[str, str, int], list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_model[r["model"]][(r["attack"], r["targets"], r["steps"])].append(r)
    figures = []
    for model, lines in list(by_model.items())[:MAX_FIGURES_PER_KIND]:
        if not any(len(points) > 1 for points in lines.values()):
            continue
        attacks = sorted({a for a, _, _ in lines})
        several_steps = len({s for _, _, s in lines}) > 1
        groups = panel_groups({t: [v for (_, tt, _), pts in lines.items() if tt == t for r in pts
                                   for v in (r["measured"], r["predicted"])] for t in {t for _, t, _ in lines}})
        fig, axes = _subplots(len(groups), len(attacks), (5.8, 3.9), sharex="col")
        for row, group in zip(axes, groups):
            for ax, attack in zip(row, attacks):
                for k, ((a, targets, steps), points) in enumerate(sorted(lines.items())):
                    if a != attack or targets not in group:
                        continue
                    points.sort(key=lambda r: r["eps_value"])
                    xs = [r["eps_value"] for r in points]
                    label = targets_label(names, targets) + (f", {steps} steps" if several_steps else "")
                    ax.plot(xs, [r["measured"] for r in points], "o-", color=f"C{k % 10}", label=f"{label}: measured")
                    ax.plot(xs, [r["predicted"] for r in points], "--", color=f"C{k % 10}",
                            label=f"{label}: first-order prediction")
                if not ax.lines:  # this task set was not attacked so
                    ax.remove()
                    continue
                title = f"{attack}, attacking {targets_label(names, group[0])}" if len(groups) > 1 else attack
                ax.set(title=title, xlabel=f"{attack} eps ([0, 1] pixel units)",
                       ylabel="E[dL]: mean loss increase per sample")
                _legend(ax)
        figures.append(_drawn(fig, f"first_order_{model}", f"{model}: first-order theory vs measurement",
                              "Solid: the attack's measured mean loss increase; dashed: eps times the mean dual "
                              "norm of the input gradient (from the gradient-analysis trial). A panel per attack "
                              "(each its own norm of eps)."))
    return figures


BUILDERS = (error_along_steps, vulnerability_vs_tasks, vulnerability_vs_eps, vulnerability_vs_steps,
            transfer_heatmaps, clean_vs_robust, advice_proxy_vs_full, first_order_vs_measured)
"""Every kind of figure, in the order the report shows them."""
