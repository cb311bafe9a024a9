"""`mtbench claims`: the paper's claims (C1-C15 of CLAIMS.md) evaluated on whatever the database holds.

Each claim is computed with the paper's quantity, per stratum (encoder, main task, weighting, eps,
steps, attack: never pooled), with a 95% interval from a two-level bootstrap (training seeds, then
test samples within each seed; ``mtbench.stats.two_level_bootstrap``) and one of four verdicts:
``supported``, ``contradicted``, ``inconclusive`` (the interval allows both) or ``not enough data``.
Each row prints its evidence rule: what is compared, the statistic and the decision rule.

Claims of "no reliable effect" are decided against a margin of practical equivalence
(``MARGIN``, a relative change of v), not against 0: an interval that merely straddles 0 is
absence of evidence, not evidence of absence. Claims about trained models (``TRAINING_CLAIMS``)
cannot be better than ``inconclusive`` with one training seed: the interval then covers
test-sample variation only, and says nothing about how another training run would come out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtbench.defaults import (
    DEFAULT_DEFENSE,
    PAPER_ADAPTIVE_ATTACK,
    PAPER_ATTACK,
    PAPER_ENCODER,
    PLAIN_OBJECTIVES,
    WGD_OBJECTIVE,
)
from mtbench.records import Phase
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import (
    MODEL_AXES,
    TARGET_AXES,
    Filters,
    distinct_names,
    done,
    fraction,
    key,
    metric_values,
    model_info,
    settings,
    without,
)
from mtbench.report.render import Section
from mtbench.stats import relative_increase, spearman, two_level_bootstrap

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_ENOUGH = "supported", "contradicted", "inconclusive", "not enough data"
MARGIN = 0.10
"""Margin of practical equivalence: a relative change of v within +-10% is no effect of practical
size (the paper's Table 1 differences it calls "mixed" are mostly within it; its reported effects,
e.g. v_d 5.74 -> 1.99, are far outside)."""
PAPER_EPS, PAPER_STEPS = 8 / 255, 25
"""The budget of the paper's main tables (Tables 1-3): L-inf PGD, eps 8/255, 25 steps."""
TRAINING_CLAIMS = frozenset({"C1", "C4", "C6", "C7", "C8", "C9", "C10", "C13", "C14", "D1"})
"""Claims comparing trained models (different task sets, weightings, encoders): training-seed
variance is part of their effect, so one seed caps them at inconclusive. C2 compares two attacks
on the same trained model, paired sample by sample: it is not capped."""
ADAPTIVE = ((PAPER_ADAPTIVE_ATTACK, PLAIN_OBJECTIVES), (PAPER_ATTACK, (WGD_OBJECTIVE,)))
VULNERABLE = frozenset("sE")
"""Tasks the paper (Supp 3.3) excepts from "vulnerability falls as tasks are added" (C7)."""
RESAMPLES = 1000


@dataclass
class Claim:
    """One verdict line: a claim in one stratum."""

    id: str
    claim: str
    stratum: str
    rule: str
    numbers: str
    estimate: float | None
    low: float | None
    high: float | None
    verdict: str
    covers: str = ""


def _not_enough(cid: str, text: str, rule: str, why: str, stratum: str = "-") -> Claim:
    return Claim(cid, text, stratum, rule, why, None, None, None, NOT_ENOUGH)


def _decided(cid: str, verdict: str, seeds: int, over: str = "test samples") -> tuple[str, str]:
    """The verdict and what its interval covers. A training claim with one seed cannot be decided
    either way: its verdict is inconclusive, and the cover says what the interval alone would say."""
    if seeds > 1:
        return verdict, f"seeds and {over} ({seeds} seeds)"
    if cid in TRAINING_CLAIMS and verdict in (SUPPORTED, CONTRADICTED):
        return INCONCLUSIVE, f"{over} only (1 seed): capped, the interval alone says {verdict}"
    return verdict, f"{over} only (1 seed)"


def _covers(seeds: int, over: str = "test samples") -> str:
    return _decided("", INCONCLUSIVE, seeds, over)[1]


def below_zero(low: float, high: float) -> str:
    """Directional claim "lower": the interval below 0 supports it, above 0 contradicts it."""
    return SUPPORTED if high < 0 else CONTRADICTED if low > 0 else INCONCLUSIVE


def not_lower(low: float, high: float, margin: float = MARGIN) -> str:
    """"No reliable decrease": supported when no decrease beyond the margin is compatible with the
    data (the interval above -margin), contradicted when the whole interval is a decrease beyond it."""
    return SUPPORTED if low > -margin else CONTRADICTED if high < -margin else INCONCLUSIVE


def equivalent(low: float, high: float, margin: float = MARGIN) -> str:
    """"About the same": supported when the interval lies inside +-margin, contradicted when it lies
    wholly outside it."""
    return SUPPORTED if -margin < low and high < margin else \
        CONTRADICTED if low > margin or high < -margin else INCONCLUSIVE


def positive(low: float, high: float) -> str:
    """A positive correlation: the interval above 0 supports it, below 0 contradicts it."""
    return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE


class Evidence:
    """Attack trials on the selected models, their settings and per-sample values."""

    def __init__(self, frames: Frames, f: Filters):
        self.frames, self.models = frames, model_info(frames, f)
        self.attacks = [r for r in done(frames, "attack").to_pylist()
                        if r["model"] in self.models and r["source_model"] is None]
        ids = [r["id"] for r in self.attacks]
        self.identity = settings(frames, ids, with_seeds=True)
        self.setting = settings(frames, ids)  # as dicts, to take keys out; trials average by their stored setting_id
        self._samples: dict[tuple[str, str], dict[str, tuple[np.ndarray, np.ndarray]]] = {}

    def select(self, attack: str = PAPER_ATTACK, objectives: Iterable[str] = PLAIN_OBJECTIVES,
               targets: str = "main", eps: Callable[[float], bool] = lambda e: True) -> list[dict]:
        """Attack trials of one attack on the main task alone (or all tasks) at the eps wanted."""
        objectives = tuple(objectives)
        out = []
        for r in self.attacks:
            m = self.models[r["model"]]
            wanted = m["codes"][0] if targets == "main" else m["codes"]
            if r["attack"] == attack and r["objective"] in objectives and r["targets"] == wanted and eps(r["eps"]):
                out.append(r)
        return out

    def context(self, r: dict, model: tuple[str, ...] = (), attack: tuple[str, ...] = (), seeds: bool = True) -> str:
        """The trial's setting less the compared keys (seeds kept unless ``seeds`` is False)."""
        return key(without((self.identity if seeds else self.setting)[r["id"]], model=model, attack=attack))

    def samples(self, trial: str, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Task -> per-sample (clean, adversarial) values of one metric, in sample order."""
        if (trial, metric) not in self._samples:
            table = self.frames.read_samples([trial], metric).to_pydict()
            by: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
            for s, t, c, a in zip(table["sample"], table["task"], table["clean"], table["adv"]):
                by[t][s] = (c, a)
            self._samples[(trial, metric)] = {
                t: (np.array([v[s][0] for s in sorted(v)], float), np.array([v[s][1] for s in sorted(v)], float))
                for t, v in by.items()}
        return self._samples[(trial, metric)]

    def main_errors(self, r: dict) -> np.ndarray | None:
        """Rows (test samples) of (clean, adversarial) error of the model's main task."""
        got = self.samples(r["id"], "error").get(self.models[r["model"]]["main"])
        return np.column_stack(got) if got is not None and len(got[0]) else None

    def joint_delta_loss(self, r: dict) -> np.ndarray | None:
        """Per-sample |objective(adv) - objective(clean)| over the attacked tasks (Definition 1's
        joint loss), from the stored per-sample losses; the objective's weights: sum/single 1,
        mean 1/N. None for other objectives or without per-sample losses."""
        m = self.models[r["model"]]
        attacked = [m["names"][m["codes"].index(c)] for c in r["targets"]]
        losses = self.samples(r["id"], "loss")
        if r["objective"] not in PLAIN_OBJECTIVES or any(t not in losses for t in attacked):
            return None
        weight = 1 / len(attacked) if r["objective"] == "mean" else 1.0
        n = min(len(losses[t][0]) for t in attacked)
        return np.abs(sum(weight * (losses[t][1][:n] - losses[t][0][:n]) for t in attacked))

    def stratum(self, r: dict, **extra: Any) -> dict[str, Any]:
        m = self.models[r["model"]]
        return {"encoder": m["encoder"], "main": m["codes"][0], "weighting": m["weighting"],
                "attack": r["attack"] if r["objective"] in PLAIN_OBJECTIVES else f"{r['attack']}/{r['objective']}",
                "eps": fraction(r["eps"]), "steps": r["steps"], **extra}


def _label(strata: dict[str, dict[str, Any]], rest: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``k=v, ...`` of each stratum, made distinct by what else differs in its setting."""
    names = {k: ", ".join(f"{a}={b}" for a, b in s.items()) for k, s in strata.items()}
    return distinct_names(names, rest)


def _rel_change(groups: list[list[np.ndarray]]) -> float:
    """Mean over settings of v(second)/v(first) - 1, v the ratio of mean errors, seeds averaged."""
    out = []
    for units in groups:
        first = np.mean([relative_increase(u[:, 0], u[:, 1]) for u in units])
        second = np.mean([relative_increase(u[:, 2], u[:, 3]) for u in units])
        out.append(second / first - 1 if first > 1e-12 else math.nan)
    return float(np.mean(out)) if out else math.nan


def paired_claims(ev: Evidence, cid: str, text: str, rule: str, pairs: list[tuple[dict, dict]],
                  decide: Callable[[float, float], str], stratum_extra: Callable[[dict], dict] = lambda r: {},
                  note: Callable[[dict], str] = lambda s: "") -> list[Claim]:
    """One verdict per stratum of the second trials: the relative change of the main task's v from
    the first trial of each pair to the second, over the settings in the stratum (seeds matched)."""
    strata: dict[str, dict[str, Any]] = {}
    rest: dict[str, dict[str, Any]] = {}
    data: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for a, b in pairs:
        ea, eb = ev.main_errors(a), ev.main_errors(b)
        if ea is None or eb is None:
            continue
        n = min(len(ea), len(eb))
        s = ev.stratum(b, **stratum_extra(b))
        k = key(s) + ev.context(b, model=MODEL_AXES, attack=TARGET_AXES, seeds=False)
        strata[k], rest[k] = s, without(ev.setting[b["id"]], model=MODEL_AXES, attack=TARGET_AXES)
        data[k][f"{a['setting_id']} {b['setting_id']}"].append(np.hstack([ea[:n], eb[:n]]))
    if not data:
        return [_not_enough(cid, text, rule, "no pair of trials with per-sample errors")]
    labels = _label(strata, rest)
    out = []
    for k in sorted(data, key=labels.get):
        groups = list(data[k].values())
        seeds = min(len(g) for g in groups)
        first, second = (float(np.mean([np.mean([relative_increase(u[:, i], u[:, i + 1]) for u in units])
                                        for units in groups])) for i in (0, 2))
        estimate = _rel_change(groups)
        low, high = two_level_bootstrap(groups, _rel_change, RESAMPLES)
        numbers = (f"relative change of v {estimate:+.1%} (v {first:.3g} -> {second:.3g}) over {len(groups)} "
                   f"setting(s){note(strata[k])}")
        if math.isnan(low) or math.isnan(estimate):
            why = f"v {first:.3g} -> {second:.3g}: a first v <= 0 leaves the relative change undefined"
            out.append(Claim(cid, text, labels[k], rule, why + note(strata[k]), None, None, None, NOT_ENOUGH,
                             _covers(seeds)))
            continue
        out.append(Claim(cid, text, labels[k], rule, numbers, estimate, low, high, *_decided(cid, decide(low, high),
                                                                                              seeds)))
    return out


def _at(eps: float) -> Callable[[float], bool]:
    return lambda e: abs(e - eps) < 1e-9


def _no_eps(ev: Evidence, cid: str, text: str, rule: str, eps: float) -> list[Claim] | None:
    """``not enough data`` naming the budgets found, when no attack trial is at ``eps``."""
    found = sorted({r["eps"] for r in ev.attacks})
    if any(abs(e - eps) < 1e-9 for e in found):
        return None
    return [_not_enough(cid, text, rule, f"no attack at eps {fraction(eps)} (found: "
                        f"{', '.join(fraction(e) for e in found) or 'none'})")]


def _steps_note(s: dict) -> str:
    return f"; steps {s['steps']} (paper: {PAPER_STEPS})" if s["steps"] != PAPER_STEPS else ""


def auxiliary_pairs(ev: Evidence, eps: Callable[[float], bool], targets: str) -> list[tuple[dict, dict]]:
    """(single-task attack, two-task attack) of the same main task and setting, seed by seed."""
    def k(r: dict) -> tuple[str, str]:
        return ev.models[r["model"]]["codes"][0], ev.context(r, model=MODEL_AXES, attack=TARGET_AXES)

    alone = {k(r): r for r in ev.select(eps=eps) if len(ev.models[r["model"]]["codes"]) == 1}
    return [(alone[k(r)], r) for r in ev.select(eps=eps, targets=targets)
            if len(ev.models[r["model"]]["codes"]) == 2 and k(r) in alone]


def c1(ev: Evidence) -> list[Claim]:
    text = "an auxiliary task does not reliably lower the main task's v (L-inf PGD, eps 8/255, 25 steps)"
    rule = (f"v(main+aux) / v(main alone) - 1, main task attacked, mean over aux tasks; supported if the CI's low "
            f"end > -{MARGIN:.0%}, contradicted if its high end < -{MARGIN:.0%}")
    return _no_eps(ev, "C1", text, rule, PAPER_EPS) or paired_claims(
        ev, "C1", text, rule, auxiliary_pairs(ev, _at(PAPER_EPS), "main"), not_lower, note=_steps_note)


def c2(ev: Evidence) -> list[Claim]:
    text = "multi-task attacks raise the main task's error less than single-task attacks do"
    rule = ("v(all tasks attacked) / v(main task attacked) - 1 on the same model; supported if the CI < 0, "
            "contradicted if > 0")

    def k(r: dict) -> str:
        return ev.context(r, attack=TARGET_AXES)

    single = {k(r): r for r in ev.select(eps=_at(PAPER_EPS)) if len(ev.models[r["model"]]["codes"]) > 1}
    pairs = [(single[k(r)], r) for r in ev.select(targets="all", eps=_at(PAPER_EPS)) if k(r) in single]
    return _no_eps(ev, "C2", text, rule, PAPER_EPS) or paired_claims(ev, "C2", text, rule, pairs, below_zero)


def c4(ev: Evidence) -> list[Claim]:
    text = "for eps > 4/255 multi-task learning gives no reliable robustness (single- or multi-task attacks)"
    rule = (f"v(main+aux) / v(main alone) - 1 per eps > 4/255 and attack target; supported if the CI's low end "
            f"> -{MARGIN:.0%}, contradicted if its high end < -{MARGIN:.0%}")
    large = lambda e: e > 4 / 255 + 1e-9  # noqa: E731
    pairs = auxiliary_pairs(ev, large, "main") + auxiliary_pairs(ev, large, "all")
    return paired_claims(ev, "C4", text, rule, pairs, not_lower,
                         stratum_extra=lambda r: {"attacked": "main" if len(r["targets"]) == 1 else "all"})


def weighting_pairs(ev: Evidence, attack: str, objectives: Iterable[str], targets: str) -> list[tuple[dict, dict]]:
    """(uniform, optimal) models of the same tasks and setting under one attack, seed by seed."""
    trials = ev.select(attack=attack, objectives=objectives, targets=targets, eps=_at(PAPER_EPS))
    axes = ("weighting", "weights")
    uniform = {ev.context(r, model=axes): r for r in trials if ev.models[r["model"]]["weighting"] == "uniform"}
    return [(uniform[ev.context(r, model=axes)], r) for r in trials
            if ev.models[r["model"]]["weighting"] == "optimal" and ev.context(r, model=axes) in uniform]


def c9(ev: Evidence) -> list[Claim]:
    text = "against PGD (single and multi) optimally weighted pairs are less vulnerable than uniform ones"
    rule = "v(optimal) / v(uniform) - 1, same tasks, mean over pairs; supported if the CI < 0, contradicted if > 0"
    pairs = weighting_pairs(ev, PAPER_ATTACK, PLAIN_OBJECTIVES, "main") + \
        weighting_pairs(ev, PAPER_ATTACK, PLAIN_OBJECTIVES, "all")
    return _no_eps(ev, "C9", text, rule, PAPER_EPS) or paired_claims(
        ev, "C9", text, rule, pairs, below_zero,
        stratum_extra=lambda r: {"attacked": "main" if len(r["targets"]) == 1 else "all"})


def c10(ev: Evidence) -> list[Claim]:
    text = "against Auto-PGD and WGD weighted models are about as vulnerable as uniform ones"
    rule = (f"v(optimal) / v(uniform) - 1 under {PAPER_ADAPTIVE_ATTACK} or {WGD_OBJECTIVE}; supported if the CI lies "
            f"inside +-{MARGIN:.0%}, contradicted if wholly outside it")
    pairs = [p for attack, objectives in ADAPTIVE for targets in ("main", "all")
             for p in weighting_pairs(ev, attack, objectives, targets)]
    return _no_eps(ev, "C10", text, rule, PAPER_EPS) or paired_claims(
        ev, "C10", text, rule, pairs, equivalent,
        stratum_extra=lambda r: {"attacked": "main" if len(r["targets"]) == 1 else "all"})


def _step_difference(groups: list[list[np.ndarray]]) -> float:
    """Mean over steps of E[dL](bigger task set) - E[dL](smaller), seeds averaged."""
    return float(np.mean([np.mean([u[:, 1].mean() - u[:, 0].mean() for u in units]) for units in groups]))


def task_steps(ev: Evidence) -> dict[str, tuple[dict[str, Any], dict[str, list[np.ndarray]]]]:
    """Stratum -> (its fields, step -> seed units of per-sample joint dL (smaller set, bigger set)).
    A step: a model of tasks T (all attacked) against the model of T less its last task, the same
    setting and seed; the single-task model starts every weighting's series."""
    trials = ev.select(targets="all", eps=_at(PAPER_EPS))

    def k(r: dict, codes: str) -> tuple[str, str, str]:
        m = ev.models[r["model"]]
        return codes, m["weighting"] if len(codes) > 1 else "*", ev.context(r, model=MODEL_AXES, attack=TARGET_AXES)

    by = {k(r, ev.models[r["model"]]["codes"]): r for r in trials}
    out: dict[str, tuple[dict[str, Any], dict[str, list[np.ndarray]]]] = {}
    for r in trials:
        codes = ev.models[r["model"]]["codes"]
        smaller = by.get(k(r, codes[:-1])) if len(codes) > 1 else None
        if smaller is None:
            continue
        da, db = ev.joint_delta_loss(smaller), ev.joint_delta_loss(r)
        if da is None or db is None:
            continue
        n = min(len(da), len(db))
        s = {**ev.stratum(r), "main": codes[0]}
        sk = key(s) + ev.context(r, model=MODEL_AXES, attack=TARGET_AXES, seeds=False)
        step = out.setdefault(sk, (s, defaultdict(list)))[1][f"{codes[:-1]}->{codes}"]
        step.append(np.column_stack([da[:n], db[:n]]))
    return out


def c6_c7(ev: Evidence) -> list[Claim]:
    """C6 on unweighted (sum) models, C7 on 1/N (uniform) and optimal ones, on the joint E[dL]."""
    t6 = "with tasks unweighted (sum), vulnerability does not fall monotonically with the number of tasks"
    r6 = ("joint E[dL] (all tasks attacked) of T+task minus T, per step; supported if some step's CI > 0, "
          "contradicted if every step's CI < 0")
    t7 = "with 1/N or optimal weights, vulnerability tends to fall as tasks (other than s, E) are added"
    r7 = ("joint E[dL] of T+task minus T, mean over steps adding a task other than s or E; supported if the CI < 0, "
          "contradicted if > 0")
    missing = _no_eps(ev, "C6", t6, r6, PAPER_EPS)
    if missing:
        return missing + (_no_eps(ev, "C7", t7, r7, PAPER_EPS) or [])
    found = task_steps(ev)
    out: dict[str, list[Claim]] = {"C6": [], "C7": []}
    for s, steps in found.values():
        label = ", ".join(f"{a}={b}" for a, b in s.items())
        if s["weighting"] == "sum":
            seeds = min(len(u) for u in steps.values())
            tested = {name: (_step_difference([u]), *two_level_bootstrap([u], _step_difference, RESAMPLES))
                      for name, u in steps.items()}
            if any(math.isnan(t[1]) for t in tested.values()):
                out["C6"].append(_not_enough("C6", t6, r6, "a step with no finite resample", label))
                continue
            rises = [n for n, t in tested.items() if t[1] > 0]
            verdict = SUPPORTED if rises else CONTRADICTED if all(t[2] < 0 for t in tested.values()) \
                else INCONCLUSIVE
            top = max(tested, key=lambda n: tested[n][0])
            numbers = (f"{len(tested)} step(s), reliable rises: {', '.join(rises) or 'none'}; largest rise {top} "
                       f"{tested[top][0]:+.3g}")
            out["C6"].append(Claim("C6", t6, label, r6, numbers, tested[top][0], tested[top][1], tested[top][2],
                                   *_decided("C6", verdict, seeds)))
        elif s["weighting"] in ("uniform", "optimal"):
            kept = {n: u for n, u in steps.items() if n.split("->")[1][-1] not in VULNERABLE}
            if not kept:
                out["C7"].append(_not_enough("C7", t7, r7, "no step adding a task other than s or E", label))
                continue
            groups = list(kept.values())
            seeds = min(len(u) for u in groups)
            estimate = _step_difference(groups)
            low, high = two_level_bootstrap(groups, _step_difference, RESAMPLES)
            numbers = f"mean change of E[dL] {estimate:+.3g} over {len(groups)} step(s): {', '.join(kept)}"
            out["C7"].append(Claim("C7", t7, label, r7, numbers, estimate, low, high,
                                   *_decided("C7", below_zero(low, high), seeds)))
    return (out["C6"] or [_not_enough("C6", t6, r6, "no sum-weighted task sets T and T+task with per-sample "
                                      "losses, all tasks attacked")]) + \
        (out["C7"] or [_not_enough("C7", t7, r7, "no 1/N or optimal task sets T and T+task with per-sample "
                                   "losses, all tasks attacked")])


def _mean_rank_correlation(groups: list[list[np.ndarray]]) -> float:
    """Mean over main tasks of Spearman's rho across task pairs (each pair's rows: seeds, averaged)."""
    rhos = [spearman([float(u[:, 0].mean()) for u in units], [float(u[:, 1].mean()) for u in units])
            for units in groups]
    return float(np.mean(rhos)) if rhos else math.nan


def correlation_claim(cid: str, text: str, rule: str, points: dict[str, dict[str, list[tuple[float, float]]]],
                      stratum: str) -> list[Claim]:
    """``points``: main task -> task pair -> (x, y) per seed. Rank correlation within each main task
    (3 task pairs at least), combined by the mean; interval over task pairs, then seeds."""
    groups = {main: [np.array(v, float) for v in pairs.values()] for main, pairs in points.items() if len(pairs) >= 3}
    if not groups:
        return [_not_enough(cid, text, rule, "no main task with 3 task pairs or more", stratum)]
    seeds = min(len(u) for units in groups.values() for u in units)
    values = list(groups.values())
    estimate = _mean_rank_correlation(values)
    low, high = two_level_bootstrap(values, _mean_rank_correlation, RESAMPLES)
    per = ", ".join(f"{m} {_mean_rank_correlation([u]):+.2f} ({len(u)})" for m, u in groups.items())
    if math.isnan(low):
        return [Claim(cid, text, stratum, rule, f"rho per main task: {per}; no finite resample", estimate, None, None,
                      NOT_ENOUGH, _covers(seeds, "task pairs"))]
    return [Claim(cid, text, stratum, rule, f"mean Spearman {estimate:+.2f}; per main task (pairs): {per}", estimate,
                  low, high, *_decided(cid, positive(low, high), seeds, "task pairs"))]


def c8(ev: Evidence) -> list[Claim]:
    text = "the tasks with the largest input-gradient norm are the most vulnerable (dominate E[dL])"
    rule = "Spearman(E||grad L||_1, E[dL]) over (model, attacked task) points; supported if the CI > 0, " \
           "contradicted if < 0"
    analyses = {r["model"]: r["id"] for r in done(ev.frames, "analysis").to_pylist()}
    norms = metric_values(ev.frames, Phase.ANALYSIS, "grad_l1", list(analyses.values()))
    delta = metric_values(ev.frames, Phase.VULNERABILITY, "delta_loss")
    points: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in ev.attacks:
        m = ev.models[r["model"]]
        if r["model"] not in analyses or r["attack"] != PAPER_ATTACK or len(r["targets"]) != 1 \
                or abs(r["eps"] - PAPER_EPS) > 1e-9:
            continue
        task = m["names"][m["codes"].index(r["targets"])]
        if (analyses[r["model"]], task) in norms and (r["id"], task) in delta:
            point = (norms[(analyses[r["model"]], task)], delta[(r["id"], task)])
            points["all"][r["setting_id"]].append(point)
    return correlation_claim("C8", text, rule, points, f"attack={PAPER_ATTACK}, eps={fraction(PAPER_EPS)}")


def c13(ev: Evidence) -> list[Claim]:
    text = f"robustness ranked on {PAPER_ENCODER} correlates with that on a larger encoder"
    rule = ("Spearman(v small encoder, v large encoder) across task pairs within each main task, mean over main "
            "tasks; supported if the CI > 0, contradicted if < 0")
    vuln = metric_values(ev.frames, Phase.VULNERABILITY, "rel_vuln_ratio_of_means")
    by: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in ev.select(eps=_at(PAPER_EPS)):
        m = ev.models[r["model"]]
        if (r["id"], m["main"]) in vuln:
            by[(m["codes"][0], ev.context(r, model=("encoder",), seeds=False))][m["encoder"]][m["seed"]] = \
                vuln[(r["id"], m["main"])]
    points: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(dict)
    others = set()
    for (main, setting), encoders in by.items():
        for encoder, seeds in encoders.items():
            if encoder != PAPER_ENCODER and PAPER_ENCODER in encoders:
                small = encoders[PAPER_ENCODER]
                others.add(encoder)
                pairs = [(small[s], seeds[s]) for s in sorted(set(small) & set(seeds))] or \
                    [(float(np.mean(list(small.values()))), float(np.mean(list(seeds.values()))))]
                points[f"{main} vs {encoder}"][setting] = pairs
    large = "/".join(sorted(others)) or "-"
    stratum = f"eps={fraction(PAPER_EPS)}, encoders={PAPER_ENCODER} vs {large}"
    return correlation_claim("C13", text, rule, points, stratum)


def c14(ev: Evidence) -> list[Claim]:
    text = "clean main-task performance with an auxiliary task correlates with robustness"
    rule = ("Spearman(clean error, v) across two-task models within each main task, mean over main tasks; "
            "supported if the CI > 0, contradicted if < 0")
    vuln = metric_values(ev.frames, Phase.VULNERABILITY, "rel_vuln_ratio_of_means")
    clean = metric_values(ev.frames, Phase.CLEAN, "error")
    points: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in ev.select(eps=_at(PAPER_EPS)):
        m = ev.models[r["model"]]
        if len(m["codes"]) == 2 and (r["id"], m["main"]) in vuln and (m["id"], m["main"]) in clean:
            points[f"{m['encoder']}/{m['codes'][0]}"][r["setting_id"]].append(
                (clean[(m["id"], m["main"])], vuln[(r["id"], m["main"])]))
    return correlation_claim("C14", text, rule, points, f"eps={fraction(PAPER_EPS)}, per encoder and main task")


def d1(ev: Evidence) -> list[Claim]:
    """Beyond the paper (issue #23): does an auxiliary task help an adversarially trained main task? Only
    where some model was trained with a defence; pairs hold the defence fixed (it is part of the setting)."""
    text = "under a defence, an auxiliary task lowers the main task's v (main+aux and main alone, same defence)"
    rule = ("v(main+aux, defended) / v(main alone, the same defence) - 1, main task attacked by PGD; supported if "
            "the CI < 0, contradicted if > 0")
    defended = [m for m in ev.models.values() if m["defense"] != DEFAULT_DEFENSE]
    if not defended:
        return []
    pairs = [(a, b) for a, b in auxiliary_pairs(ev, lambda e: True, "main")
             if ev.models[b["model"]]["defense"] != DEFAULT_DEFENSE]
    if not pairs:
        return [_not_enough("D1", text, rule, "no single- and two-task models trained with the same defence")]
    return paired_claims(ev, "D1", text, rule, pairs, below_zero,
                         stratum_extra=lambda r: {"defense": ev.models[r["model"]]["defense"]})


def evaluate_claims(frames: Frames, f: Filters) -> list[Claim]:
    ev = Evidence(frames, f)
    return [*c1(ev), *c2(ev), *c4(ev), *c6_c7(ev), *c8(ev), *c9(ev), *c10(ev), *c13(ev), *c14(ev), *d1(ev)]


def claim_rows(claims: list[Claim]) -> list[dict[str, Any]]:
    return [{"id": c.id, "verdict": c.verdict, "claim": c.claim, "stratum": c.stratum, "estimate": c.estimate,
             "95% CI": None if c.low is None or math.isnan(c.low) else f"[{c.low:.3g}, {c.high:.3g}]",
             "low": c.low, "high": c.high, "interval covers": c.covers, "numbers": c.numbers, "rule": c.rule}
            for c in claims]


def claims_section(frames: Frames, f: Filters) -> Section:
    return Section(
        "The paper's claims (CLAIMS.md) on this database, per stratum; v = relative vulnerability of the main task",
        claim_rows(evaluate_claims(frames, f)),
        note=f"95% intervals: two-level bootstrap (training seeds, then test samples; {RESAMPLES} resamples); "
             f"margin of practical equivalence +-{MARGIN:.0%} relative change of v; claims about trained models "
             f"({', '.join(sorted(TRAINING_CLAIMS, key=lambda c: int(c[1:])))}) are at best inconclusive with one "
             "seed. Not evaluated: C3, C5, C11, C12, C15",
        columns=["id", "verdict", "claim", "stratum", "estimate", "95% CI", "low", "high", "interval covers", "numbers",
                 "rule"], machine=("low", "high"))
