"""The paper's first-order theory against measurement, from gradient-analysis and attack trials.

- First order: an attack of budget eps raises a loss by about eps * E||grad L||_q, q the dual norm
  (L1 for L-inf attacks, L2 for L2 attacks). For a single attacked task the prediction uses that
  task's gradient; for the all-task ``sum`` attack, the summed gradient. Mao et al. (2020) write
  the L2 case through the task covariances: eps * sqrt(sum_ij E[g_i . g_j]).
- Marginal vulnerability (Appendix A, Definition 4, Lemma 5, Theorem 7): see :func:`marginal_rows`.
  It is a property of ONE model, whose attacked task set grows from T_N to T_{N+1}; the change
  between two separately trained models is another quantity (:func:`cross_model_rows`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

from mtbench.configs import setting_part
from mtbench.defaults import SUMMED_OBJECTIVES
from mtbench.records import Phase
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import Filters, done, fraction, metric_values, model_info
from mtbench.report.render import Section

DUAL = {"linf": "grad_l1", "l2": "grad_l2"}
SUM_DUAL = {"linf": "sum_grad_l1", "l2": "sum_grad_l2"}


def _analysed(frames: Frames, models: dict) -> dict[str, str]:
    """Model id -> its (latest) gradient-analysis trial."""
    return {r["model"]: r["id"] for r in done(frames, "analysis").to_pylist() if r["model"] in models}


def _gradient_means(frames: Frames, analysis_ids: list[str]) -> dict[tuple[str, str, str], float]:
    """{(analysis id, task, metric): mean on clean points}."""
    out = {}
    for metric in (*DUAL.values(), *SUM_DUAL.values(), "sum_grad_sq"):
        for (tid, task), v in metric_values(frames, Phase.ANALYSIS, metric, analysis_ids).items():
            out[(tid, task, metric)] = v
    return out


def first_order_rows(frames: Frames, f: Filters) -> list[dict]:
    """One row per attack trial of an analysed model: predicted and measured E[dL]."""
    models = model_info(frames, f)
    analysed = _analysed(frames, models)
    if not analysed:
        return []
    grads = _gradient_means(frames, list(analysed.values()))
    attacks = [r for r in done(frames, "attack").to_pylist() if r["model"] in analysed and r["source_model"] is None
               and r["objective"] in (*SUMMED_OBJECTIVES, None)]
    delta = metric_values(frames, Phase.VULNERABILITY, "delta_loss", [r["id"] for r in attacks])
    rows = []
    for r in attacks:
        m, a = models[r["model"]], analysed[r["model"]]
        q = DUAL.get(r["norm"])
        if q is None:
            continue
        if len(r["targets"]) == 1:
            task = m["names"][m["codes"].index(r["targets"])]
            predicted = r["eps"] * grads.get((a, task, q), math.nan)
            measured = delta.get((r["id"], task))
            mao = None
        elif r["targets"] == m["codes"]:
            predicted = r["eps"] * grads.get((a, "*", SUM_DUAL[r["norm"]]), math.nan)
            measured = delta.get((r["id"], "objective"))
            sq = grads.get((a, "*", "sum_grad_sq"))
            mao = r["eps"] * math.sqrt(sq) if r["norm"] == "l2" and sq is not None else None
        else:
            continue
        rows.append({"model": m["name"], "attack": r["attack"], "eps": fraction(r["eps"]), "eps_value": r["eps"],
                     "steps": r["steps"], "targets": r["targets"], "predicted": predicted, "mao_et_al": mao,
                     "measured": measured,
                     "measured/predicted": measured / predicted if measured is not None and predicted else None})
    rows.sort(key=lambda r: (r["model"], r["attack"], r["targets"], r["eps_value"]))
    return rows


def first_order(frames: Frames, f: Filters) -> list[Section]:
    rows = first_order_rows(frames, f)
    for r in rows:
        r.pop("eps_value")
    if not rows:
        return []
    return [Section("First-order theory: predicted E[dL] = eps * E||grad L||_q (q dual to the attack norm) against "
                    "the measured E[dL] of the attack", rows,
                    note="targets of several tasks: the summed loss and the summed gradient; mao_et_al = "
                         "eps * sqrt(sum_ij E[g_i.g_j]) (L2 attacks); a ratio far from 1 shows where the first-order "
                         "approximation breaks (large eps, many steps)")]


WEIGHTED = "weighted"  # the objective with explicit weights w_i, the same for T_N and T_{N+1}


def _attack_weights(config: dict[str, Any], codes: str, names: list[str]) -> dict[str, float] | None:
    """The weights w_i (by task code) of the joint loss L' the attack ascends and whose E[dL'] is stored as
    task ``objective``: 1 for ``sum``/``single``, the grid's weights for ``weighted``. None for objectives
    whose weights change with the attacked set (``mean``: 1/|T'|) or are adaptive: Theorem 7 takes one
    fixed w_i for both task sets."""
    if config.get("objective") in SUMMED_OBJECTIVES:
        return {c: 1.0 for c in codes}
    if config.get("objective") == WEIGHTED and config.get("weights"):
        by_name = dict(zip(names, codes))
        return {by_name[n]: float(w) for n, w in config["weights"].items() if n in by_name}
    return None


def _same_attack(config: dict[str, Any]) -> str:
    """What two attacks on one model must share to form a T_N / T_{N+1} pair: everything of their setting
    (seeds included) but the attacked tasks; ``single`` is ``sum`` on one task."""
    part = setting_part("attack", config, with_seeds=True)
    for k in ("targets", "targets_codes"):
        part.pop(k, None)
    if part.get("objective") in SUMMED_OBJECTIVES:
        part["objective"] = "sum"
    return json.dumps(part, sort_keys=True, default=str)


def _example_targets(codes: str) -> str:
    """The grid line that adds the T_N attacks the marginal view needs, for a model with these tasks."""
    return "targets = [" + ", ".join("[" + ", ".join(f'"{c}"' for c in codes[:k]) + "]"
                                     for k in range(1, len(codes) + 1)) + "]"


def _ratio(measured: float | None, bound: float | None) -> float | None:
    return measured / bound if measured is not None and bound else None


def marginal_rows(frames: Frames, f: Filters) -> tuple[list[dict], list[str]]:
    """The paper's marginal vulnerability, measured on ONE model, beside its bounds; and what is missing.

    Model M (tasks T_M), one attack (same name, eps, steps, step size, objective and weights, seed) run
    twice on M: on T_N and on T_{N+1} = T_N + {a}, both subsets of T_M. The loss L'(T) = sum_{i in T} w_i L_i
    is the attacked tasks' weighted joint loss, w_i the attack objective's weights (``sum``: w_i = 1;
    ``weighted``: the grid's weights; the model's training weights only enter if the grid attacks with
    them). Measured (Definition 4), from the stored ``delta_loss`` of task ``objective`` of each attack
    (= E_x|L'(x + delta) - L'(x)| over the test split, Definition 1):

        marginal = E[dL'(T_{N+1})] - E[dL'(T_N)]

    Bounds, with r_i the input gradient of task i's loss and E||r_i||_q its mean dual norm on clean test
    points from M's analysis trial (q = 1 for L-inf attacks, 2 for L2):

        paper     = eps * ((N+1) w_a E||r_a||_q + sum_{i in T_N} w_i E||r_i||_q)      (Theorem 7, last line but one)
        paper_max = eps * ((N+1) w_a E||r_a||_q + N max_{i in T_N} w_i E||r_i||_q)   (Theorem 7, as stated; C8)
        first_order_bound = eps * w_a E||r_a||_q
            (Lemma 5 with the triangle inequality ||u + w_a r_a|| - ||u|| <= w_a ||r_a||, per sample)

    and, where the stored statistics allow it, Lemma 5's first-order estimate itself,
    eps * (E||grad L'(T_{N+1})||_q - E||grad L'(T_N)||_q): the analysis stores E||sum_i r_i||_q over all of
    M's tasks (so T_{N+1} = T_M with w_i = 1) and E||r_i||_q (so |T_N| = 1). Each bound's tightness is
    measured / bound. Every bound is on the first-order quantity: a many-step attack may exceed it."""
    models = model_info(frames, f)
    analyses = {(r["model"], r["epoch"]): r["id"] for r in done(frames, "analysis").to_pylist() if r["model"] in models}
    grads = _gradient_means(frames, list(analyses.values())) if analyses else {}
    attacks = [r for r in done(frames, "attack").to_pylist() if r["model"] in models and r["source_model"] is None
               and r["targets"]]
    groups: dict[tuple[str, str], dict[frozenset, dict]] = defaultdict(dict)
    weights: dict[tuple[str, str], dict[str, float]] = {}
    for r in attacks:
        m = models[r["model"]]
        config = json.loads(r["config"])
        w = _attack_weights(config, m["codes"], m["names"])
        if w is None or not set(r["targets"]) <= set(w):
            continue
        key = (r["model"], _same_attack(config))
        groups[key][frozenset(r["targets"])] = r
        weights[key] = w
    delta = metric_values(frames, Phase.VULNERABILITY, "delta_loss",
                          [r["id"] for g in groups.values() for r in g.values()])
    rows, missing = [], []
    for key, by_set in groups.items():
        model_id = key[0]
        m, w = models[model_id], weights[key]
        name = dict(zip(m["codes"], m["names"]))
        pairs = [(small, big) for big in by_set for small in by_set if len(big) == len(small) + 1 and small < big]
        larger = [s for s in by_set if len(s) >= 2]
        if larger and not pairs:
            big = max(larger, key=len)
            codes = "".join(c for c in m["codes"] if c in big)
            missing.append(f"{m['name']}: run an attack on T_N of this model (a set of {len(big) - 1} of the attacked "
                           f"tasks {codes}, same attack), e.g. {_example_targets(codes)}")
        for small, big in pairs:
            r_small, r_big = by_set[small], by_set[big]
            added = next(iter(big - small))
            n = len(small)
            eps = r_big["eps"]
            analysis = analyses.get((model_id, r_big["epoch"]))
            q = DUAL.get(r_big["norm"])
            norms = {c: grads.get((analysis, name[c], q)) for c in big} if analysis and q else {}
            measured_small = delta.get((r_small["id"], "objective"))
            measured_big = delta.get((r_big["id"], "objective"))
            marginal = None if measured_small is None or measured_big is None else measured_big - measured_small
            row = {"model": m["name"], "T_N": _in_order(small, m["codes"]), "added": added, "attack": r_big["attack"],
                   "objective": r_big["objective"], "eps": fraction(eps), "steps": r_big["steps"],
                   "E[dL'(T_N)]": measured_small, "E[dL'(T_N+1)]": measured_big, "marginal": marginal}
            if norms and all(v is not None for v in norms.values()):
                weighted = {c: w[c] * norms[c] for c in big}
                others = [weighted[c] for c in small]
                bounds = {"paper": eps * ((n + 1) * weighted[added] + sum(others)),
                          "paper_max": eps * ((n + 1) * weighted[added] + n * max(others)),
                          "first_order_bound": eps * weighted[added]}
                estimate = _lemma5(grads, analysis, m, small, big, w, weighted, r_big["norm"])
                row.update({**bounds, "first_order_estimate": None if estimate is None else eps * estimate,
                            **{f"measured/{k}": _ratio(marginal, v) for k, v in bounds.items()}})
            else:
                missing.append(f"{m['name']}: run an [[analysis]] of this model for the bounds (E||r_i||_q)")
            rows.append(row)
    rows.sort(key=lambda r: (r["model"], r["attack"], r["eps"], r["steps"], len(r["T_N"]), r["T_N"], r["added"]))
    return rows, sorted(set(missing))


def _in_order(tasks: frozenset, codes: str) -> str:
    return "".join(c for c in codes if c in tasks)


def _lemma5(grads: dict, analysis: str, m: dict, small: frozenset, big: frozenset, w: dict[str, float],
            weighted: dict[str, float], norm: str) -> float | None:
    """E||grad L'(T_{N+1})||_q - E||grad L'(T_N)||_q per eps, when the analysis stored both terms."""
    if big != frozenset(m["codes"]) or any(w[c] != 1.0 for c in big) or len(small) != 1:
        return None
    total = grads.get((analysis, "*", SUM_DUAL[norm]))
    return None if total is None else total - weighted[next(iter(small))]


def marginal(frames: Frames, f: Filters) -> list[Section]:
    """The one-model marginal vulnerability (the paper's quantity), then the cross-model change (another one)."""
    rows, missing = marginal_rows(frames, f)
    sections = []
    note = ("one model, one attack on T_N and on T_N+1 = T_N + {added}; E[dL'] = the stored delta_loss of task "
            "'objective' (L' = sum of w_i L_i over the attacked tasks, w_i of the attack objective: sum 1, weighted "
            "its weights); marginal = E[dL'(T_N+1)] - E[dL'(T_N)]; E||r_i||_q from the model's analysis (clean "
            "points, q dual to the attack norm); measured/bound near 1 = a tight bound, far below 1 = little "
            "evidence; first_order_estimate = eps (E||sum r_i|| - w_1 E||r_1||) (Lemma 5), where stored")
    if missing:
        note += "; missing: " + "; ".join(missing)
    if rows:
        sections.append(Section("Marginal vulnerability on one model (Definition 4): E[dL'] of an attack on T_N+1 "
                                "minus on T_N, against eps ((N+1) w_a E||r_a|| + sum_i w_i E||r_i||) (Theorem 7), its "
                                "max form and the first-order bound eps w_a E||r_a||", rows, note=note))
    elif missing:
        sections.append(Section("Marginal vulnerability on one model (Definition 4): data missing",
                                [{"needs": text} for text in missing], note=note))
    cross = cross_model_rows(frames, f)
    if cross:
        sections.append(Section("Across models (NOT the paper's marginal vulnerability): E[d sum L] of the all-task "
                                "attack on the N+1-task model minus on a separately trained N-task model", cross,
                                note="two models, each attacked on all its tasks with the sum objective; a different "
                                     "quantity from Definition 4, which Theorem 7 does not bound"))
    return sections


def cross_model_rows(frames: Frames, f: Filters) -> list[dict]:
    """The change of the all-task attack's E[d sum L] from a separately trained N-task model to the
    N+1-task model of the same encoder, weighting, epochs and seed."""
    models = model_info(frames, f)
    attacks = [r for r in done(frames, "attack").to_pylist() if r["model"] in models and r["source_model"] is None
               and r["objective"] in SUMMED_OBJECTIVES and r["targets"] == models[r["model"]]["codes"]]
    delta = metric_values(frames, Phase.VULNERABILITY, "delta_loss", [r["id"] for r in attacks])
    by_setting = {(r["model"], r["attack"], r["eps"], r["steps"]): delta.get((r["id"], "objective")) for r in attacks}
    rows = []
    for big_id, big in models.items():
        if len(big["codes"]) < 2:
            continue
        for small_id, small in models.items():
            same = all(small[k] == big[k] for k in ("encoder", "weighting", "epochs", "seed"))
            if not same or len(small["codes"]) != len(big["codes"]) - 1 or not set(small["codes"]) < set(big["codes"]):
                continue
            added = (set(big["codes"]) - set(small["codes"])).pop()
            for (model_id, attack, eps, steps), measured_big in by_setting.items():
                if model_id != big_id or (small_id, attack, eps, steps) not in by_setting:
                    continue
                measured_small = by_setting[(small_id, attack, eps, steps)]
                change = None if measured_big is None or measured_small is None else measured_big - measured_small
                rows.append({"base": small["name"], "added": added, "attack": attack, "eps": fraction(eps),
                             "steps": steps, "E[dL] base": measured_small, "E[dL] larger": measured_big,
                             "change": change})
    return rows
