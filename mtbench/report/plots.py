"""The paper's figures from the database, as PNG and SVG (``mtbench report --plots DIR``).

Each function draws one kind of figure and returns the files it wrote; a figure with no data to
show is skipped rather than drawn empty. Like the tables, a figure averages trials only within one
setting (seeds): trials whose settings differ in more than the figure's axes get lines, panels or
figures of their own, labelled with the keys that differ (:func:`_settings_of`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class Figure:
    title: str
    png: Path
    svg: Path
    caption: str


def draw_all(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MtbenchError(f"{out}: cannot create the figures folder ({exc.strerror or exc})") from None
    figures: list[Figure] = []
    for draw in (error_along_steps, vulnerability_vs_tasks, vulnerability_vs_eps, vulnerability_vs_steps,
                 transfer_heatmaps, clean_vs_robust, advice_proxy_vs_full, first_order_vs_measured):
        figures += draw(frames, f, out)
    return figures


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


def _save(fig, out: Path, stem: str, title: str, caption: str) -> Figure:
    import matplotlib.pyplot as plt

    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    fig.suptitle(title)
    fig.tight_layout()
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    try:
        write_files({png: lambda tmp: fig.savefig(tmp, format="png", dpi=110),
                     svg: lambda tmp: fig.savefig(tmp, format="svg")}, "the figure")
    finally:
        plt.close(fig)
    return Figure(title, png, svg, caption)


def error_along_steps(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    """The paper's Figs 1-11: each task's error at every PGD step, one panel per measured task,
    one line per attacked task set."""
    import matplotlib.pyplot as plt

    models, attacks, attack, eps = _chosen(frames, f)
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
        tasks = model["names"]
        labels = _labels(line for _, line, _ in lines)  # what tells this model's attack settings apart
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for (targets, line, measured), points in sorted(lines.items()):
                if measured != task:
                    continue
                steps = sorted(points)
                ax.plot(steps, [_mean(points[x]) for x in steps], marker=".",
                        label=f"attacking {targets}{labels[line]}")
            ax.set(title=task, xlabel="PGD step", ylabel="error (1-mIoU or MSE)")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "no trace stored", ha="center", va="center", transform=ax.transAxes)
        figures.append(_save(fig, out, f"steps_{model['name']}_{model_id[:6]}_{attack}_{fraction(eps)}",
                             f"{model['name']}: error along {attack} eps={fraction(eps)}",
                             "Error of each task (panel) at every attack step, for each attacked task set (line). "
                             "Step 0 is the clean error."))
    return figures


def vulnerability_vs_tasks(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    """The paper's Figs 12-13: the main task's vulnerability under the all-task attack as tasks are
    added, unweighted (sum) beside 1/N (uniform mean) weighting."""
    import matplotlib.pyplot as plt

    models, attacks, attack, eps = _chosen(frames, f)
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    chosen = [r for r in attacks if r["attack"] == attack and r["eps"] == eps
              and r["targets"] == models[r["model"]]["codes"]]
    # along the x axis the model's tasks (and so its weights and per-task loss options) change
    setting = _settings_of(frames, chosen, model=(*MODEL_AXES, "loss_options"), attack=TARGET_AXES)
    labels = _labels_within({r["id"]: (models[r["model"]]["weighting"], models[r["model"]]["codes"][0])
                             for r in chosen}, setting)
    lines: dict[tuple[str, str, str], dict[int, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in chosen:
        m = models[r["model"]]
        v = vuln.get((r["id"], m["main"]))
        if v is not None:  # seeds of one task set averaged; each task set of N tasks is a point of its own
            line = (m["weighting"], f"main task {m['codes'][0]}{labels[r['id']]}", setting[r["id"]])
            lines[line][len(m["codes"])][m["codes"]].append(v)
    if not any(len(points) > 1 for points in lines.values()):
        return []
    weightings = sorted({w for w, _, _ in lines})
    fig, axes = plt.subplots(1, len(weightings), figsize=(5 * len(weightings), 3.8), squeeze=False, sharey=True)
    for ax, w in zip(axes[0], weightings):
        for (weighting, label, _), points in sorted(lines.items()):
            if weighting != w:
                continue
            xs = sorted(points)
            per_set = {x: [_mean(vs) for vs in points[x].values()] for x in xs}
            drawn = ax.plot(xs, [_mean(per_set[x]) for x in xs], marker="o", label=label)
            ax.scatter([x for x in xs for _ in per_set[x]], [v for x in xs for v in per_set[x]], s=12,
                       color=drawn[0].get_color(), alpha=0.5)
        ax.set(title=f"{w} weighting" + (" (1/N)" if w == "uniform" else ""), xlabel="number of tasks in the model",
               ylabel=V_LABEL)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return [_save(fig, out, "vulnerability_vs_tasks", f"Vulnerability vs number of tasks, {attack} eps={fraction(eps)}",
                  "Main-task vulnerability when every task of the model is attacked together, by model size: "
                  "a dot per task set (its seeds averaged), the line through each size's mean over its task sets.")]


def _sweep(frames: Frames, f: Filters, axis: str):
    """Lines of the main task's v along ``axis`` (eps or steps), one per model setting and attack setting
    less that axis (eps sweeps also let the default step size eps/4 follow), seeds averaged."""
    models, attacks, attack, eps = _chosen(frames, f)
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    chosen = [r for r in attacks if r["targets"] == models[r["model"]]["codes"][0]
              and (axis != "steps" or (r["attack"] == attack and r["eps"] == eps))]
    setting = _settings_of(frames, chosen, attack=("eps", "step_size") if axis == "eps" else ("steps",))
    labels = _labels_within({r["id"]: (r["norm"], models[r["model"]]["name"]) for r in chosen}, setting)
    lines: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in chosen:
        m = models[r["model"]]
        v = vuln.get((r["id"], m["main"]))
        if v is not None:
            lines[(r["norm"] or r["attack"], m["name"] + labels[r["id"]])][r[axis]].append(v)
    return lines, attack, eps


def vulnerability_vs_eps(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    """The paper's Figs 14-17 (part): vulnerability against the budget, L-inf beside L2."""
    import matplotlib.pyplot as plt

    lines, _, _ = _sweep(frames, f, "eps")
    norms = sorted({n for (n, name), pts in lines.items() if len(pts) > 1})
    if not norms:
        return []
    fig, axes = plt.subplots(1, len(norms), figsize=(5 * len(norms), 3.8), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        for (n, name), points in sorted(lines.items()):
            if n == norm:
                xs = sorted(points)
                scale = 255 if norm == "linf" else 1
                ax.plot([x * scale for x in xs], [_mean(points[x]) for x in xs], marker="o", label=name)
        ax.set(title=f"{norm} attacks",
               xlabel="eps (grey levels /255)" if norm == "linf" else "eps (L2 norm, [0,1] pixels)",
               ylabel=V_LABEL)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return [_save(fig, out, "vulnerability_vs_eps", "Vulnerability vs attack budget (main task attacked alone)",
                  "Each line is a model; L-inf and L2 attacks in separate panels.")]


def vulnerability_vs_steps(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    """The paper's Figs 14-17 (part): vulnerability against the number of attack steps."""
    import matplotlib.pyplot as plt

    lines, attack, eps = _sweep(frames, f, "steps")
    lines = {k: v for k, v in lines.items() if len(v) > 1}
    if not lines:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (_, name), points in sorted(lines.items()):
        xs = sorted(points)
        ax.plot(xs, [_mean(points[x]) for x in xs], marker="o", label=name)
    ax.set(xlabel="attack steps", ylabel=V_LABEL)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(fig, out, "vulnerability_vs_steps", f"Vulnerability vs steps, {attack} eps={fraction(eps)}",
                  "Each line is a model; the main task is attacked alone.")]


def transfer_heatmaps(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    """Cross-task transfer: the vulnerability of each measured task (column) when one task (row) is
    attacked alone, per multi-task model."""
    import matplotlib.pyplot as plt

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
        codes = models[model_id]["codes"]
        rows = [c for c in codes if any(k[0] == c for k in grid)]
        data = [[grid.get((a, b), float("nan")) for b in codes] for a in rows]
        fig, ax = plt.subplots(figsize=(1.2 * len(codes) + 2.5, 1.0 * len(rows) + 1.8))
        image = ax.imshow(data, cmap="magma_r")
        middle = sum(image.get_clim()) / 2
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=9,
                        color="white" if v > middle else "black")
        ax.set_xticks(range(len(codes)), codes)
        ax.set_yticks(range(len(rows)), rows)
        ax.set(xlabel="measured task", ylabel="attacked task")
        fig.colorbar(image, ax=ax, label="relative vulnerability")
        figures.append(_save(fig, out, f"transfer_{models[model_id]['name']}_{model_id[:6]}_{attack}_{fraction(eps)}"
                             + (f"_{hashlib.sha256(line.encode()).hexdigest()[:6]}" if labels[model_id, line] else ""),
                             f"{models[model_id]['name']}: cross-task transfer, {attack} eps={fraction(eps)}"
                             + labels[model_id, line],
                             "Row: the task attacked alone; column: the task whose error is measured."))
    return figures


def clean_vs_robust(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    """Clean error against vulnerability of the main task, one colour per encoder."""
    import matplotlib.pyplot as plt

    models, attacks, attack, eps = _chosen(frames, f)
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    clean = metric_values(frames, Phase.CLEAN, "error")
    points: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in attacks:
        m = models[r["model"]]
        if r["attack"] != attack or r["eps"] != eps or r["targets"] != m["codes"][0]:
            continue
        v, c = vuln.get((r["id"], m["main"])), clean.get((m["id"], m["main"]))
        if v is not None and c is not None:
            points[(m["encoder"], m["codes"][0])].append((c, v))
    if not points:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (encoder, main), pts in sorted(points.items()):
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=f"{encoder}, main task {main}")
    ax.set(xlabel="clean error of the main task (1-mIoU or MSE)", ylabel=V_LABEL)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(fig, out, "clean_vs_robust", f"Clean error vs vulnerability, {attack} eps={fraction(eps)}",
                  "One point per model (main task attacked alone).")]


def advice_proxy_vs_full(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    """For each validated advice: the proxy value against the full-budget value, one point per
    auxiliary task (the paper's Table 3 as a picture)."""
    import matplotlib.pyplot as plt

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
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter([p[1] for p in points], [p[2] for p in points])
        for task, x, y in points:
            ax.annotate(task, (x, y), textcoords="offset points", xytext=(4, 4))
        ax.set(xlabel=f"proxy: {cfg['proxy']} on {cfg['proxy_encoder']} ({cfg['proxy_epochs']} epochs)",
               ylabel=f"full: vulnerability on {cfg['encoder']}")
        ax.grid(alpha=0.3)
        figures.append(_save(fig, out, f"advice_{cfg['main']}_{cfg['proxy']}_{tid[:6]}",
                             f"Advisor for main task {cfg['main']}: proxy vs full",
                             "One point per auxiliary task: its proxy value and the main task's relative "
                             "vulnerability after full training; a good proxy puts them on a rising line."))
    return figures


def first_order_vs_measured(frames: Frames, f: Filters, out: Path) -> list[Figure]:
    """Per analysed model: the measured E[dL] of each attack against eps beside the first-order
    prediction eps * E||grad L||_q, to show where the linear approximation stops holding."""
    import matplotlib.pyplot as plt

    from mtbench.report.theory import first_order_rows

    rows = [r for r in first_order_rows(frames, f) if r["measured"] is not None]
    by_model: dict[str, dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_model[r["model"]][(r["attack"], r["targets"])].append(r)
    figures = []
    for model, lines in list(by_model.items())[:MAX_FIGURES_PER_KIND]:
        if not any(len(points) > 1 for points in lines.values()):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, ((attack, targets), points) in enumerate(sorted(lines.items())):
            points.sort(key=lambda r: r["eps_value"])
            xs = [r["eps_value"] for r in points]
            colour = f"C{k % 10}"
            ax.plot(xs, [r["measured"] for r in points], "o-", color=colour, label=f"{attack} on {targets}: measured")
            ax.plot(xs, [r["predicted"] for r in points], "--", color=colour, label="first-order prediction")
        ax.set(xlabel="eps ([0, 1] pixel units)", ylabel="E[dL]: mean loss increase per sample")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        figures.append(_save(fig, out, f"first_order_{model}", f"{model}: first-order theory vs measurement",
                             "Solid: the attack's measured mean loss increase; dashed: eps times the mean dual norm of "
                             "the input gradient (from the gradient-analysis trial)."))
    return figures
