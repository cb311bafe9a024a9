"""The paper's layouts: Table 1 (main x auxiliary task), Supplementary Tables 2-6 (per encoder) and
Table 2 (adaptive attacks), with the paper's own figure beside ours where the setting matches.

The paper's numbers ship in ``mtbench/report/data/paper_relative_vulnerability.csv`` (Ghamizi et al.
AAAI 2022, ResNet18 on real Taskonomy). Synthetic data will not match them in size; they are there
to compare shapes and orderings, and are labelled ``paper``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from functools import cache
from importlib import resources
from typing import Any

from mtbench.configs import setting_part
from mtbench.defaults import PAPER_ADAPTIVE_ATTACK, PAPER_ATTACK, PLAIN_OBJECTIVES, WGD_OBJECTIVE
from mtbench.records import Phase
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import (
    MODEL_AXES,
    TARGET_AXES,
    Filters,
    _flatten,
    attack_info,
    attack_rows,
    differences,
    distinct_names,
    fraction,
    key,
    metric_values,
    model_info,
    settings,
    varying_keys,
    without,
)
from mtbench.report.render import Section

PAPER_EPS = 8 / 255
PAPER_PRESETS = {("resnet18", "uniform"): "S1", ("resnet18", "optimal"): "S4"}
"""The preset (examples/paper) whose setting the shipped figures of an (encoder, weighting) were measured in."""
DATA_PATHS = ("root", "split_file")
"""Where the data lie on one machine: not part of the paper's setting (its content is)."""
MODEL_AXES_OF_PRESET = ("tasks", "codes", "weighting", "weights")
ATTACK_AXES_OF_PRESET = ("model", "targets", "targets_codes")
TABLE2_AXES = ("attack", "objective", "options", "weights")
"""What the columns of Table 2 vary: the rest of the attack must be the preset's."""
MAX_SHOWN = 10
FIRST = ("data.dataset", "data.image_size", "encoder", "weighting", "tasks", "weights", "epochs", "attack", "norm",
         "eps", "steps", "step_size", "random_start", "restarts", "paper_compat", "objective", "epoch", "schedule",
         "optimizer", "lr")
"""The keys a footnote names first, when it cannot name them all."""


def _without_paths(part: dict[str, Any], drop: Iterable[str]) -> dict[str, Any]:
    out = {k: v for k, v in part.items() if k not in set(drop)}
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k not in DATA_PATHS}
    return out


def model_template(config: dict[str, Any]) -> dict[str, Any]:
    """A training config's setting less its task set and weights and the data's paths (examples/paper/generate.py)."""
    return _without_paths(setting_part("train", config), MODEL_AXES_OF_PRESET)


def attack_template(config: dict[str, Any]) -> dict[str, Any]:
    """An attack config's setting less its model, attacked tasks and the data's paths."""
    return _without_paths(setting_part("attack", config), ATTACK_AXES_OF_PRESET)


@cache
def presets() -> dict[str, dict[str, Any]]:
    """The full presets' settings (``data/paper_settings.json``, written by examples/paper/generate.py)."""
    return json.loads(resources.files("mtbench.report").joinpath("data/paper_settings.json").read_text())


def paper_differences(setting: dict[str, Any], preset: str, skip: Iterable[str] = ()) -> list[str]:
    """``key=ours`` for every key where an attack trial's setting (``settings()``: the model's nested)
    differs from the preset's trial of the same task set and attacked tasks; empty: the paper's setting.
    ``skip``: attack keys a table varies on purpose (Table 2's columns)."""
    p = presets()[preset]
    model = setting.get("model") if isinstance(setting.get("model"), dict) else {}
    ours = _flat(model_template(model))
    theirs = _flat(p["model"])
    diff = _diff(ours, theirs)
    codes = "".join(model.get("codes") or [])
    if codes not in p["models"]:
        diff.append(f"tasks={codes}")
    else:
        diff += [f"{k}={model.get(k)}" for k in ("weighting", "weights") if p["models"][codes][k] != model.get(k)]
    attack = _flat({k: v for k, v in attack_template(setting).items() if k not in set(skip)})
    best = min((_diff(attack, _flat({k: v for k, v in a.items() if k not in set(skip)})) for a in p["attacks"]),
               key=len, default=[])
    found = list(dict.fromkeys(diff + best))
    return sorted(found, key=lambda d: FIRST.index(d.split("=")[0]) if d.split("=")[0] in FIRST else len(FIRST))


def _flat(part: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v, sort_keys=True) for k, v in _flatten(part).items()}


def _diff(ours: dict[str, str], theirs: dict[str, str]) -> list[str]:
    return [f"{k}={json.loads(ours[k]) if k in ours else '(default)'}" for k in sorted(ours.keys() | theirs.keys())
            if ours.get(k) != theirs.get(k)]


def differ_text(diff: list[str], preset: str) -> str:
    """``data.dataset=synthetic, epochs=10 differ from S1`` (at most ``MAX_SHOWN`` keys)."""
    shown = ", ".join(diff[:MAX_SHOWN]) + (f" and {len(diff) - MAX_SHOWN} more" if len(diff) > MAX_SHOWN else "")
    return f"{shown} differ from {preset}"


class PaperColumn:
    """Whether each cell may show the paper's figure: only where its setting is the preset's, unless
    forced (``--compare-paper``, labelled); collects what differs, for the section's footnote."""

    def __init__(self, forced: bool) -> None:
        self.forced = forced
        self.differs: dict[str, None] = {}
        self.shown = 0

    def figure(self, setting: dict[str, Any], preset: str | None, paper: float | None,
               skip: Iterable[str] = ()) -> tuple[float | None, bool]:
        """The paper's figure to show beside ours (or None), and whether it stands there only by force."""
        if paper is None or preset is None:
            return None, False
        diff = paper_differences(setting, preset, skip)
        if diff:
            self.differs[differ_text(diff, preset)] = None
        if diff and not self.forced:
            return None, False
        self.shown += 1
        return paper, bool(diff)

    def note(self) -> str:
        """The footnote: where the paper's figures stand and why others are missing."""
        if not self.differs:
            return "; (paper y): Ghamizi et al. 2022's figure, in the same setting" if self.shown else ""
        texts = "; ".join(self.differs)
        if self.forced:
            return f"; (paper y) FORCED by --compare-paper although the settings differ: {texts}"
        return f"; the paper's figures are not shown: {texts} (--compare-paper shows them anyway)"
Pair = tuple[dict, dict, str]  # (model, attack trial, threat)


@cache
def reference() -> dict[tuple, float]:
    """``{(table, encoder, weighting, attack, threat, main, aux): value}`` from the shipped CSV."""
    text = resources.files("mtbench.report").joinpath("data/paper_relative_vulnerability.csv").read_text()
    return {(r["source"], r["encoder"], r["weighting"], r["attack"].split(" ")[0], r["threat"], r["main_task"],
             r["aux_task"]): float(r["relative_vulnerability"]) for r in csv.DictReader(text.splitlines())}


def _pairs(frames: Frames, f: Filters, attack: str, objective: str | None = None) -> Iterator[Pair]:
    """``(model, attack trial, threat)`` for one- and two-task models under one attack at one eps;
    threat is ``single`` (main task attacked alone) or ``multi`` (all tasks attacked). Without an
    objective, only the plain PGD objectives count."""
    models = model_info(frames, f)
    for r in attack_info(frames, models, Filters(attack=attack, eps=f.eps, steps=f.steps)):
        m = models[r["model"]]
        if len(m["codes"]) > 2 or r["objective"] != (objective or r["objective"]) \
                or (objective is None and r["objective"] not in PLAIN_OBJECTIVES):
            continue
        if r["targets"] == m["codes"][0]:
            yield m, r, "single"
        if r["targets"] == m["codes"] and (len(m["codes"]) == 2 or objective):
            yield m, r, "multi"


def _measured(pairs: Iterable[Pair], vuln: dict[tuple[str, str], float]) -> list[Pair]:
    """The pairs whose attack trial has a vulnerability of the model's main task."""
    return [(m, r, threat) for m, r, threat in pairs if (r["id"], m["main"]) in vuln]


FILTERS = {"steps": "--steps", "eps": "--eps", "attack": "--attack", "objective": "--objective",
           "model.encoder": "--encoder"}
"""Report options that separate settings differing in a key."""


class Cell:
    """The values of one table cell by setting id. Seeds of one setting are averaged; a cell fed by
    several settings is refused rather than averaged (DESIGN.md), naming what differs."""

    def __init__(self) -> None:
        self.by_setting: dict[str, list[float]] = defaultdict(list)
        self.settings: dict[str, dict[str, Any]] = {}

    def add(self, setting_id: str, value: float, setting: dict[str, Any]) -> None:
        self.by_setting[setting_id].append(value)
        self.settings[setting_id] = setting

    def value(self) -> float | str:
        if len(self.by_setting) > 1:
            return refusal(list(self.settings.values()))
        (values,) = self.by_setting.values()
        return sum(values) / len(values)

    def setting(self) -> dict[str, Any] | None:
        """The one setting of the cell (None when it has several)."""
        return next(iter(self.settings.values())) if len(self.settings) == 1 else None

    def seeds(self) -> int:
        return max(len(v) for v in self.by_setting.values())


def refusal(settings: list[dict[str, Any]]) -> str:
    """Why a cell is not a mean: the keys its settings differ in, and the report option that separates them."""
    varying = varying_keys(settings)
    options = sorted({FILTERS[k] for k in varying if k in FILTERS})
    how = f"narrow with {', '.join(options)}" if options else "report each grid's results folder on its own"
    return f"refused: {len(settings)} settings differ in {', '.join(varying)} ({how})"


def _seeds_note(counts: Iterable[int]) -> str:
    """How many seeds each cell averages, for a section's note."""
    counts = sorted(set(counts))
    if not counts:
        return ""
    return f"; each cell: mean over {counts[0]}" + (f" to {counts[-1]}" if len(counts) > 1 else "") + " seed(s)"


def _labels(contexts: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Context key -> ``" [what differs]"`` when there are several contexts, else ``""``."""
    texts = differences(list(contexts.values()))
    return {c: f" [{text}]" if text else "" for c, text in zip(contexts, texts)}


def table1(frames: Frames, f: Filters) -> list[Section]:
    """Main task (rows) x auxiliary task (columns, ``-`` = single-task model) of the main task's
    vulnerability, one matrix per weighting and threat, and per context (everything of the setting
    but the tasks, weighting and attacked tasks: a ResNet18 never shares a matrix with a ResNet50)."""
    attack = f.attack or PAPER_ATTACK
    eps = f.eps if f.eps is not None else PAPER_EPS
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    pairs = _measured(_pairs(frames, Filters(**{**f.__dict__, "eps": eps}), attack), vuln)
    setting = settings(frames, [r["id"] for _, r, _ in pairs])
    contexts: dict[str, dict[str, Any]] = {}
    cells: dict[tuple, Cell] = defaultdict(Cell)
    views: set[tuple] = set()  # cells of a model trained once for both orders of its pair (report.orders)
    for m, r, threat in pairs:
        context = without(setting[r["id"]], model=MODEL_AXES, attack=TARGET_AXES)
        contexts[key(context)] = context
        aux = m["codes"][1] if len(m["codes"]) == 2 else "-"
        weightings = ["uniform", "optimal"] if aux == "-" else [m["weighting"]]  # single-task: both tables
        threats = {threat, "multi"} if aux == "-" else {threat}  # one task: single and multi attacks coincide
        for w in weightings:
            for t in threats:
                cells[(key(context), w, t, m["codes"][0], aux)].add(r["setting_id"], vuln[(r["id"], m["main"])],
                                                                     setting[r["id"]])
                if m.get("trained_as"):
                    views.add((key(context), w, t))
    labels = _labels(contexts)
    sections = []
    for c in sorted(contexts, key=labels.get):
        encoder = contexts[c]["model"].get("encoder")
        for w in ("uniform", "optimal"):
            for threat in ("single", "multi"):
                mine = {k[3:]: cell for k, cell in cells.items() if k[:3] == (c, w, threat)}
                if mine:
                    column = PaperColumn(f.compare_paper)
                    sections.append(_table1_section(mine, w, threat, attack, eps, (encoder, column), labels[c],
                                                    merged=(c, w, threat) in views))
    return sections


ORDERS_CELLS = ("; the cells (s, d) and (d, s) of a pair come from one model per seed, trained once and ranked "
                "under each main task (the weights do not depend on the main task; train.ordered_pairs)")


def _table1_section(mine: dict[tuple[str, str], Cell], w: str, threat: str, attack: str, eps: float,
                    compare: tuple[str | None, PaperColumn], label: str, merged: bool = False) -> Section:
    auxes = ["-"] + sorted({aux for _, aux in mine} - {"-"})
    encoder, column = compare
    preset = PAPER_PRESETS.get((encoder, w))
    rows = []
    for main in sorted({main for main, _ in mine}):
        row: dict[str, Any] = {"main": main}
        for aux in auxes:
            cell = mine.get((main, aux))
            paper = reference().get(("paper-table1", encoder, w, PAPER_ATTACK, threat, main, "" if aux == "-" else aux))
            shown, forced = column.figure(cell.setting(), preset, paper) if cell and cell.setting() else (None, False)
            row[aux] = _with_paper(cell.value() if cell else None, shown, forced)
        rows.append(row)
    note = "ours" + column.note()
    return Section(f"Table 1 ({encoder}, {w} weighting, {threat}-task attack): relative vulnerability of the main task "
                   f"under {attack} eps={fraction(eps)}; columns = auxiliary task, '-' = trained alone{label}",
                   rows, note=note + _seeds_note(c.seeds() for c in mine.values()) + (ORDERS_CELLS if merged else ""))


def transfer(frames: Frames, f: Filters) -> list[Section]:
    """Transfer attacks: examples crafted on one model (``crafted on``), measured on another."""
    section = attack_rows(frames, Filters(**{**f.__dict__, "transfer": True}))
    return [section] if section.rows else []


def per_encoder(frames: Frames, f: Filters) -> list[Section]:
    """Supplementary Tables 2-6: per encoder and attack setting, each model setting's clean error
    and its main task's vulnerability under the single- and the multi-task attack, averaged over the
    seeds that have every one of these numbers (seeds missing one form a row of their own)."""
    attack = f.attack or PAPER_ATTACK
    eps = f.eps if f.eps is not None else PAPER_EPS
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    clean = metric_values(frames, Phase.CLEAN, "error")
    pairs = _measured(_pairs(frames, Filters(**{**f.__dict__, "eps": eps}), attack), vuln)
    setting = settings(frames, [r["id"] for _, r, _ in pairs])
    contexts: dict[str, dict[str, Any]] = {}
    # (context, model setting) -> model trial (one seed) -> threat -> vulnerabilities
    seeds: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    models: dict[str, dict] = {}
    for m, r, threat in pairs:
        context = {"encoder": m["encoder"], **without(setting[r["id"]], attack=(*TARGET_AXES, "model"))}
        contexts[key(context)] = context
        models[key(setting[r["id"]]["model"])] = setting[r["id"]]["model"]
        seeds[(key(context), key(setting[r["id"]]["model"]))][m["id"]].setdefault(threat, []).append(
            vuln[(r["id"], m["main"])])
    info = model_info(frames, f)
    rows: dict[str, list[dict]] = defaultdict(list)
    for (c, ms), by_model in seeds.items():
        rows[c] += _per_encoder_rows(by_model, info, clean, ms)
    labels = _labels({c: {k: v for k, v in ctx.items() if k != "encoder"} for c, ctx in contexts.items()})
    return [Section(f"{contexts[c]['encoder']}: clean error and main-task vulnerability, {attack} eps={fraction(eps)}"
                    f"{labels[c]}", _named(rows[c], models), note="seeds: trained models averaged in the row")
            for c in sorted(contexts, key=lambda c: (contexts[c]["encoder"], labels[c]))]


def _per_encoder_rows(by_model: dict[str, dict[str, list[float]]], info: dict[str, dict],
                      clean: dict[tuple[str, str], float], ms: str) -> list[dict]:
    """Rows of one model setting: its seeds grouped by which threats they were attacked with, so
    that the clean error and the vulnerabilities of a row come from the same trained models."""
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for model_id, threats in by_model.items():
        groups[tuple(sorted(threats))].append(model_id)
    rows = []
    for present, ids in sorted(groups.items(), key=lambda g: (-len(g[0]), -len(g[1]))):
        m = info[ids[0]]
        row = {"model": m["name"], "tasks": m["codes"], "seeds": len(ids),
               "clean_err": _mean(clean.get((i, m["main"])) for i in ids)}
        for threat in ("single", "multi"):
            row[f"v_{threat}"] = _mean(_mean(by_model[i][threat]) for i in ids) if threat in present else None
        rows.append({**row, "_setting": ms})
    return rows


def _named(rows: list[dict], models: dict[str, dict]) -> list[dict]:
    """Rows sorted by model name, a name shared by several model settings told apart by what differs."""
    keys = {r["_setting"] for r in rows}
    names = distinct_names({k: next(r["model"] for r in rows if r["_setting"] == k) for k in keys},
                           {k: models[k] for k in keys})
    out = [{**{k: v for k, v in r.items() if k != "_setting"}, "model": names[r["_setting"]]} for r in rows]
    return sorted(out, key=lambda r: (r["model"], -r["seeds"]))


def table2(frames: Frames, f: Filters) -> list[Section]:
    """Adaptive attacks (the paper's Table 2): the main task's vulnerability under the multi-task
    attack of every attack and objective in the database (PGD, Auto-PGD, WGD = the `relative`
    objective, the other objectives, ensembles), for single- and two-task models; one table per
    model context (encoder, epochs, ...), one column per attack setting, seeds averaged in a cell."""
    eps = f.eps if f.eps is not None else PAPER_EPS
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    models = model_info(frames, f)
    trials = [r for r in attack_info(frames, models, Filters(eps=eps, steps=f.steps))
              if len(models[r["model"]]["codes"]) <= 2 and r["targets"] == models[r["model"]]["codes"]
              and r["norm"] == "linf" and (r["id"], models[r["model"]]["main"]) in vuln]
    setting = settings(frames, [r["id"] for r in trials])
    cells: dict[tuple[str, str, str], Cell] = defaultdict(Cell)
    contexts, rows, columns = {}, {}, {}
    for r in trials:
        s, m = setting[r["id"]], models[r["model"]]
        context = {k: v for k, v in s["model"].items() if k not in MODEL_AXES}
        row = (m["weighting"], m["codes"][0], m["codes"][1:] or "-", key({k: s["model"].get(k) for k in MODEL_AXES}))
        column = without(s, attack=(*TARGET_AXES, "model"))
        contexts[key(context)], rows[row], columns[key(column)] = context, row, column
        cells[(key(context), row, key(column))].add(r["setting_id"], vuln[(r["id"], m["main"])], s)
    labels = _labels(contexts)
    return [section for c in sorted(contexts, key=labels.get)
            if (section := _table2_section(c, contexts[c], labels[c], cells, columns, PaperColumn(f.compare_paper)))]


def _table2_section(c: str, context: dict, label: str, cells: dict[tuple[str, str, str], Cell],
                    columns: dict[str, dict], compare: PaperColumn) -> Section | None:
    mine = {k[1:]: v for k, v in cells.items() if k[0] == c}
    used = sorted({col for _, col in mine})
    names = distinct_names({col: column_label(columns[col]["attack"], columns[col]["objective"]) for col in used},
                           {col: columns[col] for col in used})
    used.sort(key=lambda col: (_column_rank(columns[col]), names[col]))
    if len(used) < 2:
        return None
    eps = columns[used[0]]["eps"]
    rows = []
    for row in sorted({row for row, _ in mine}):
        w, main, aux, _ = row
        out: dict[str, Any] = {"weighting": w, "main": main, "aux": aux}
        for col in used:
            cell = mine.get((row, col))
            paper = reference().get(("paper-table2", context.get("encoder"), w, _paper_column(columns[col]),
                                     "unspecified", main, "" if aux == "-" else aux)) if _alone(names, col) else None
            shown, forced = compare.figure(cell.setting(), PAPER_PRESETS.get((context.get("encoder"), w)), paper,
                                           skip=TABLE2_AXES) if cell and cell.setting() else (None, False)
            out[names[col]] = _with_paper(cell.value() if cell else None, shown, forced)
        rows.append(out)
    return Section(f"Table 2: main-task vulnerability under adaptive multi-task L-inf attacks, eps={fraction(eps)}"
                   f"{label}", rows, note="columns: attack/objective as registered; (paper) = Ghamizi et al. 2022's "
                   f"pgd ({PAPER_ATTACK}/sum), apgd ({PAPER_ADAPTIVE_ATTACK}/sum) or wgd ({PAPER_ATTACK}/"
                   f"{WGD_OBJECTIVE}) figure" + compare.note() + _seeds_note(c.seeds() for c in mine.values()))


PAPER_COLUMNS = ["pgd", "apgd", "wgd"]


def _paper_column(column: dict) -> str | None:
    """Which column of the paper's Table 2 a setting stands for, by what ran: its pgd and apgd are the
    summed multi-task loss under PGD L-inf and Auto-PGD L-inf, its wgd PGD L-inf with the WGD objective."""
    attack, objective = column["attack"], column["objective"]
    plain = objective in PLAIN_OBJECTIVES
    if attack == PAPER_ATTACK:
        return "pgd" if plain else ("wgd" if objective == WGD_OBJECTIVE else None)
    return "apgd" if attack == PAPER_ADAPTIVE_ATTACK and plain else None


def _alone(names: dict[str, str], col: str) -> bool:
    """No other column shares this one's attack/objective (a ``(steps=10)`` suffix marks the ones that do)."""
    return " (" not in names[col]


def _column_rank(column: dict) -> tuple[int, int]:
    """The columns that stand for the paper's first, in its order."""
    paper = _paper_column(column)
    return (0, PAPER_COLUMNS.index(paper)) if paper else (1, 0)


def column_label(attack: str, objective: str) -> str:
    """What ran, by its registered names: ``attack/objective`` (``pgd-linf/relative``), never the paper's
    wording, which may not match what was computed."""
    return f"{attack}/{objective}"


def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _with_paper(value: float | str | None, paper: float | None, forced: bool = False) -> float | str | None:
    """``ours (paper y)``; ``(paper y, forced)`` where ``--compare-paper`` put it beside another setting."""
    if paper is None:
        return value
    ours = "-" if value is None else value if isinstance(value, str) else f"{value:.3g}"
    return f"{ours} (paper {paper:.2f}{', forced' if forced else ''})"
