"""The paper's layouts: Table 1 (main x auxiliary task), Supplementary Tables 2-6 (per encoder) and
Table 2 (adaptive attacks), with the paper's own figure beside ours where the setting matches.

The paper's numbers ship in ``mtbench/report/data/paper_relative_vulnerability.csv`` (Ghamizi et al.
AAAI 2022, ResNet18 on real Taskonomy). Synthetic data will not match them in size; they are there
to compare shapes and orderings, and are labelled ``paper``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from functools import cache
from importlib import resources

from mtbench.report.frames import Frames
from mtbench.report.leaderboard import Filters, attack_info, attack_rows, fraction, metric_values, model_info
from mtbench.report.render import Section

PAPER_EPS = 8 / 255
PLAIN_OBJECTIVES = {"sum", "mean", "single"}  # the paper's PGD; others (e.g. `relative` = WGD) are adaptive


@cache
def reference() -> dict[tuple, float]:
    """``{(table, encoder, weighting, attack, threat, main, aux): value}`` from the shipped CSV."""
    text = resources.files("mtbench.report").joinpath("data/paper_relative_vulnerability.csv").read_text()
    return {(r["source"], r["encoder"], r["weighting"], r["attack"].split(" ")[0], r["threat"], r["main_task"],
             r["aux_task"]): float(r["relative_vulnerability"]) for r in csv.DictReader(text.splitlines())}


def _pairs(frames: Frames, f: Filters, attack: str, objective: str | None = None):
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


def table1(frames: Frames, f: Filters) -> list[Section]:
    """Main task (rows) x auxiliary task (columns, ``-`` = single-task model) of the main task's
    vulnerability, one matrix per weighting and threat."""
    attack = f.attack or "pgd-linf"
    eps = f.eps if f.eps is not None else PAPER_EPS
    vuln = metric_values(frames, "vulnerability", f.metric)
    cells: dict[tuple, list[float]] = defaultdict(list)
    encoders = set()
    for m, r, threat in _pairs(frames, Filters(**{**f.__dict__, "eps": eps}), attack):
        v = vuln.get((r["id"], m["main"]))
        if v is None:
            continue
        aux = m["codes"][1] if len(m["codes"]) == 2 else "-"
        weightings = ["uniform", "optimal"] if aux == "-" else [m["weighting"]]  # single-task: both tables
        for w in weightings:
            cells[(w, threat, m["codes"][0], aux)].append(v)
            if aux == "-":
                cells[(w, "multi", m["codes"][0], aux)].append(v)  # one task: single and multi attacks coincide
        encoders.add(m["encoder"])
    compare = attack == "pgd-linf" and abs(eps - PAPER_EPS) < 1e-9 and encoders <= {"resnet18"}
    sections = []
    for w in ("uniform", "optimal"):
        for threat in ("single", "multi"):
            mine = {k[2:]: sum(v) / len(v) for k, v in cells.items() if k[:2] == (w, threat)}
            if not mine:
                continue
            mains = sorted({k[0] for k in mine})
            auxes = ["-"] + sorted({k[1] for k in mine} - {"-"})
            rows = []
            for main in mains:
                row = {"main": main}
                for aux in auxes:
                    v = mine.get((main, aux))
                    paper = reference().get(("paper-table1", "resnet18", w, "pgd-linf", threat, main,
                                             "" if aux == "-" else aux)) if compare else None
                    row[aux] = _with_paper(v, paper)
                rows.append(row)
            sections.append(Section(
                f"Table 1 ({w} weighting, {threat}-task attack): relative vulnerability of the main task "
                f"under {attack} eps={fraction(eps)}; columns = auxiliary task, '-' = trained alone",
                rows, note="ours (paper: Ghamizi et al. 2022, ResNet18 on real Taskonomy, 25 steps)"
                if compare else "the paper's figures are shown only for ResNet18, pgd-linf, eps=8/255"))
    return sections


def transfer(frames: Frames, f: Filters) -> list[Section]:
    """Transfer attacks: examples crafted on one model (``crafted on``), measured on another."""
    section = attack_rows(frames, Filters(**{**f.__dict__, "transfer": True}))
    return [section] if section.rows else []


def per_encoder(frames: Frames, f: Filters) -> list[Section]:
    """Supplementary Tables 2-6: per encoder, each model's clean error and its main task's
    vulnerability under the single- and the multi-task attack."""
    attack = f.attack or "pgd-linf"
    eps = f.eps if f.eps is not None else PAPER_EPS
    vuln = metric_values(frames, "vulnerability", f.metric)
    clean = metric_values(frames, "clean", "error")
    rows_by_encoder: dict[str, dict[str, dict]] = defaultdict(dict)
    for m, r, threat in _pairs(frames, Filters(**{**f.__dict__, "eps": eps}), attack):
        row = rows_by_encoder[m["encoder"]].setdefault(m["name"], {
            "model": m["name"], "tasks": m["codes"], "clean_err": clean.get((m["id"], m["main"]))})
        row[f"v_{threat}"] = vuln.get((r["id"], m["main"]))
    return [Section(f"{encoder}: clean error and main-task vulnerability, {attack} eps={fraction(eps)}",
                    sorted(rows.values(), key=lambda r: r["model"]))
            for encoder, rows in sorted(rows_by_encoder.items())]


def table2(frames: Frames, f: Filters) -> list[Section]:
    """Adaptive attacks (the paper's Table 2): the main task's vulnerability under the multi-task
    attack of every attack and objective in the database (PGD, Auto-PGD, WGD = the `relative`
    objective, the other objectives, ensembles), for single- and two-task models."""
    eps = f.eps if f.eps is not None else PAPER_EPS
    vuln = metric_values(frames, "vulnerability", f.metric)
    models = model_info(frames, f)
    cells: dict[tuple, dict[str, float]] = defaultdict(dict)
    encoders = set()
    for r in attack_info(frames, models, Filters(eps=eps, steps=f.steps)):
        m = models[r["model"]]
        if len(m["codes"]) > 2 or r["targets"] != m["codes"] or r["norm"] != "linf":
            continue
        label = column_label(r["attack"], r["objective"])
        v = vuln.get((r["id"], m["main"]))
        if v is not None:
            cells[(m["weighting"], m["codes"][0], m["codes"][1:] or "-")][label] = v
            encoders.add(m["encoder"])
    labels = sorted({k for c in cells.values() for k in c}, key=lambda k: (k not in COLUMN_ORDER, COLUMN_ORDER.index(k)
                                                                            if k in COLUMN_ORDER else 0, k))
    if len(labels) < 2:
        return []
    compare = abs(eps - PAPER_EPS) < 1e-9 and encoders <= {"resnet18"}
    rows = []
    for (w, main, aux), values in sorted(cells.items()):
        row = {"weighting": w, "main": main, "aux": aux}
        for label in labels:
            paper = reference().get(("paper-table2", "resnet18", w, label, "unspecified", main,
                                     "" if aux == "-" else aux)) if compare else None
            row[label] = _with_paper(values.get(label), paper)
        rows.append(row)
    return [Section(f"Table 2: main-task vulnerability under adaptive multi-task L-inf attacks, eps={fraction(eps)}",
                    rows, note="wgd = pgd-linf with the `relative` objective; other columns: attack/objective; "
                               "(paper) = Ghamizi et al. 2022")]


COLUMN_ORDER = ["pgd", "apgd", "wgd"]


def column_label(attack: str, objective: str) -> str:
    """The paper's names where they apply (pgd, apgd, wgd), else ``attack/objective``."""
    plain = objective in PLAIN_OBJECTIVES
    if attack == "pgd-linf":
        return "pgd" if plain else ("wgd" if objective == "relative" else objective)
    if attack == "apgd-linf" and plain:
        return "apgd"
    return attack if plain else f"{attack}/{objective}"


def _with_paper(value: float | None, paper: float | None) -> str | float | None:
    if paper is None:
        return value
    return f"{'-' if value is None else f'{value:.3g}'} (paper {paper:.2f})"
