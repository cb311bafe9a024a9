"""The paper's first-order theory against measurement, from gradient-analysis and attack trials.

- First order: an attack of budget eps raises a loss by about eps * E||grad L||_q, q the dual norm
  (L1 for L-inf attacks, L2 for L2 attacks). For a single attacked task the prediction uses that
  task's gradient; for the all-task ``sum`` attack, the summed gradient. Mao et al. (2020) write
  the L2 case through the task covariances: eps * sqrt(sum_ij E[g_i . g_j]).
- Marginal vulnerability of adding task a to an N-task model (the paper's bound, with the attack's
  weights w_i = 1 of the ``sum`` objective): eps * ((N+1) w_a E||g_a|| + N max_i w_i E||g_i||),
  against the measured change of the all-task attack's E[dL].
"""

from __future__ import annotations

import math

from mtbench.defaults import SUMMED_OBJECTIVES
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import Filters, done, fraction, metric_values, model_info
from mtbench.report.render import Section
from mtbench.results import Phase

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


def marginal(frames: Frames, f: Filters) -> list[Section]:
    """Adding one task a to an N-task model: the paper's bound against the measured change in the
    all-task attack's E[d sum L]."""
    models = model_info(frames, f)
    analysed = _analysed(frames, models)
    grads = _gradient_means(frames, list(analysed.values())) if analysed else {}
    attacks = [r for r in done(frames, "attack").to_pylist() if r["model"] in models and r["source_model"] is None
               and r["objective"] in SUMMED_OBJECTIVES and r["targets"] == models[r["model"]]["codes"]]
    delta = metric_values(frames, Phase.VULNERABILITY, "delta_loss", [r["id"] for r in attacks])
    by_setting = {(r["model"], r["attack"], r["eps"], r["steps"]): delta.get((r["id"], "objective")) for r in attacks}
    rows = []
    for big_id, big in models.items():
        if big_id not in analysed or len(big["codes"]) < 2:
            continue
        for small_id, small in models.items():
            same = all(small[k] == big[k] for k in ("encoder", "weighting", "epochs", "seed"))
            if not same or len(small["codes"]) != len(big["codes"]) - 1 or not set(small["codes"]) < set(big["codes"]):
                continue
            added = (set(big["codes"]) - set(small["codes"])).pop()
            for (model_id, attack, eps, steps), measured_big in by_setting.items():
                if model_id != big_id or (small_id, attack, eps, steps) not in by_setting:
                    continue
                norm = "l2" if attack.endswith("l2") else "linf"
                q = DUAL[norm]
                norms = {c: grads.get((analysed[big_id], name, q)) for c, name in zip(big["codes"], big["names"])}
                if any(v is None for v in norms.values()):
                    continue
                n = len(small["codes"])
                bound = eps * ((n + 1) * norms[added] + n * max(norms[c] for c in small["codes"]))
                measured_small = by_setting[(small_id, attack, eps, steps)]
                change = None if measured_big is None or measured_small is None else measured_big - measured_small
                rows.append({"base": small["name"], "added": added, "attack": attack, "eps": fraction(eps),
                             "steps": steps, "bound": bound, "measured_change": change,
                             "within_bound": None if change is None else change <= bound})
    if not rows:
        return []
    return [Section("Marginal vulnerability of adding a task: eps * ((N+1) E||g_a|| + N max_i E||g_i||) against the "
                    "measured change of the all-task attack's E[d sum L]", rows,
                    note="gradient norms from the larger model's analysis trial (dual norm of the attack); w_i = 1, "
                         "the weights of the sum objective")]
