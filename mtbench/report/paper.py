"""The paper's layouts: Table 1 (main x auxiliary task), Supplementary Tables 2-6 (per encoder) and
Table 2 (adaptive attacks), with the paper's own figure beside ours where the setting matches.

The paper's numbers ship in ``mtbench/report/data/paper_relative_vulnerability.csv`` (Ghamizi et al.
AAAI 2022, ResNet18 on real Taskonomy). Synthetic data will not match them in size; they are there
to compare shapes and orderings, and are labelled ``paper``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Iterator
from functools import cache
from importlib import resources
from typing import Any

from mtbench.defaults import PAPER_ADAPTIVE_ATTACK, PAPER_ATTACK, PAPER_ENCODER, PLAIN_OBJECTIVES, WGD_OBJECTIVE
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import (
    MODEL_AXES,
    TARGET_AXES,
    Filters,
    attack_info,
    attack_rows,
    differences,
    distinct_names,
    fraction,
    key,
    metric_values,
    model_info,
    settings,
    without,
)
from mtbench.report.render import Section
from mtbench.results import Phase

PAPER_EPS = 8 / 255
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


class Cell:
    """The values of one table cell by setting. Seeds of one setting are averaged; a cell fed by
    several settings is refused rather than averaged (DESIGN.md), so a table never mixes them."""

    def __init__(self) -> None:
        self.by_setting: dict[str, list[float]] = defaultdict(list)

    def add(self, setting: str, value: float) -> None:
        self.by_setting[setting].append(value)

    def value(self) -> float | str:
        if len(self.by_setting) > 1:
            return f"refused: {len(self.by_setting)} settings"
        (values,) = self.by_setting.values()
        return sum(values) / len(values)

    def seeds(self) -> int:
        return max(len(v) for v in self.by_setting.values())


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


def _compare(attack: str, eps: float, encoder: str | None) -> bool:
    """Whether the paper's figure may stand beside ours: its attack, budget and encoder."""
    return attack == PAPER_ATTACK and abs(eps - PAPER_EPS) < 1e-9 and encoder == PAPER_ENCODER


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
    for m, r, threat in pairs:
        context = without(setting[r["id"]], model=MODEL_AXES, attack=TARGET_AXES)
        contexts[key(context)] = context
        aux = m["codes"][1] if len(m["codes"]) == 2 else "-"
        weightings = ["uniform", "optimal"] if aux == "-" else [m["weighting"]]  # single-task: both tables
        threats = {threat, "multi"} if aux == "-" else {threat}  # one task: single and multi attacks coincide
        for w in weightings:
            for t in threats:
                cells[(key(context), w, t, m["codes"][0], aux)].add(key(setting[r["id"]]), vuln[(r["id"], m["main"])])
    labels = _labels(contexts)
    sections = []
    for c in sorted(contexts, key=labels.get):
        compare = _compare(attack, eps, contexts[c]["model"].get("encoder"))
        for w in ("uniform", "optimal"):
            for threat in ("single", "multi"):
                mine = {k[3:]: cell for k, cell in cells.items() if k[:3] == (c, w, threat)}
                if mine:
                    sections.append(_table1_section(mine, w, threat, attack, eps, compare, labels[c]))
    return sections


def _table1_section(mine: dict[tuple[str, str], Cell], w: str, threat: str, attack: str, eps: float,
                    compare: bool, label: str) -> Section:
    auxes = ["-"] + sorted({aux for _, aux in mine} - {"-"})
    rows = []
    for main in sorted({main for main, _ in mine}):
        row: dict[str, Any] = {"main": main}
        for aux in auxes:
            cell = mine.get((main, aux))
            paper = reference().get(("paper-table1", PAPER_ENCODER, w, PAPER_ATTACK, threat, main,
                                     "" if aux == "-" else aux)) if compare else None
            row[aux] = _with_paper(cell.value() if cell else None, paper)
        rows.append(row)
    note = ("ours (paper: Ghamizi et al. 2022, ResNet18 on real Taskonomy, 25 steps)" if compare else
            f"the paper's figures are shown only for {PAPER_ENCODER}, {PAPER_ATTACK}, eps={fraction(PAPER_EPS)}")
    return Section(f"Table 1 ({w} weighting, {threat}-task attack): relative vulnerability of the main task "
                   f"under {attack} eps={fraction(eps)}; columns = auxiliary task, '-' = trained alone{label}",
                   rows, note=note + _seeds_note(c.seeds() for c in mine.values()))


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
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    contexts, rows, columns = {}, {}, {}
    for r in trials:
        s, m = setting[r["id"]], models[r["model"]]
        context = {k: v for k, v in s["model"].items() if k not in MODEL_AXES}
        row = (m["weighting"], m["codes"][0], m["codes"][1:] or "-", key({k: s["model"].get(k) for k in MODEL_AXES}))
        column = without(s, attack=(*TARGET_AXES, "model"))
        contexts[key(context)], rows[row], columns[key(column)] = context, row, column
        cells[(key(context), row, key(column))].append(vuln[(r["id"], m["main"])])
    labels = _labels(contexts)
    return [section for c in sorted(contexts, key=labels.get)
            if (section := _table2_section(c, contexts[c], labels[c], cells, columns, eps))]


def _table2_section(c: str, context: dict, label: str, cells: dict[tuple[str, str, str], list[float]],
                    columns: dict[str, dict], eps: float) -> Section | None:
    mine = {k[1:]: v for k, v in cells.items() if k[0] == c}
    used = sorted({col for _, col in mine})
    names = distinct_names({col: column_label(columns[col]["attack"], columns[col]["objective"]) for col in used},
                           {col: columns[col] for col in used})
    used.sort(key=lambda col: (_column_rank(columns[col]), names[col]))
    if len(used) < 2:
        return None
    compare = abs(eps - PAPER_EPS) < 1e-9 and context.get("encoder") == PAPER_ENCODER
    rows = []
    for row in sorted({row for row, _ in mine}):
        w, main, aux, _ = row
        out: dict[str, Any] = {"weighting": w, "main": main, "aux": aux}
        for col in used:
            values = mine.get((row, col))
            paper = reference().get(("paper-table2", PAPER_ENCODER, w, _paper_column(columns[col]), "unspecified",
                                     main, "" if aux == "-" else aux)) if compare and _alone(names, col) else None
            out[names[col]] = _with_paper(sum(values) / len(values) if values else None, paper)
        rows.append(out)
    return Section(f"Table 2: main-task vulnerability under adaptive multi-task L-inf attacks, eps={fraction(eps)}"
                   f"{label}", rows, note="columns: attack/objective as registered; (paper) = Ghamizi et al. 2022's "
                   f"pgd ({PAPER_ATTACK}/sum), apgd ({PAPER_ADAPTIVE_ATTACK}/sum) or wgd ({PAPER_ATTACK}/"
                   f"{WGD_OBJECTIVE}) figure" + _seeds_note(len(v) for v in mine.values()))


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


def _with_paper(value: float | str | None, paper: float | None) -> float | str | None:
    if paper is None:
        return value
    ours = "-" if value is None else value if isinstance(value, str) else f"{value:.3g}"
    return f"{ours} (paper {paper:.2f})"
