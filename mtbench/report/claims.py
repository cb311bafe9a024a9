"""`mtbench claims`: the paper's claims evaluated on whatever the database holds.

Each claim reports its numbers, a 95% bootstrap interval and a verdict: ``holds``, ``fails``,
``inconclusive`` (the interval allows both) or ``not enough data``. Differences of relative
vulnerability between two attack trials are bootstrapped over test samples (the same samples in
both trials, so the pairing is kept; several seeds enter as several pairs); correlations across
models or tasks are bootstrapped over the points.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mtbench.defaults import PAPER_ADAPTIVE_ATTACK, PAPER_ATTACK, PAPER_ENCODER, PLAIN_OBJECTIVES, WGD_OBJECTIVE
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import (
    MODEL_AXES,
    TARGET_AXES,
    Filters,
    done,
    fraction,
    key,
    metric_values,
    model_info,
    settings,
    without,
)
from mtbench.report.render import Section
from mtbench.results import Phase
from mtbench.stats import bootstrap_ci, relative_increase, spearman

ADAPTIVE = ((PAPER_ADAPTIVE_ATTACK, PLAIN_OBJECTIVES), (PAPER_ATTACK, (WGD_OBJECTIVE,)))
NOT_ENOUGH = "not enough data"


@dataclass
class Claim:
    claim: str
    numbers: str
    estimate: float | None
    low: float | None
    high: float | None
    verdict: str


class Evidence:
    """Attack trials on the selected models, their main-task vulnerability and per-sample errors."""

    def __init__(self, frames: Frames, f: Filters):
        self.frames, self.models = frames, model_info(frames, f)
        self.attacks = [r for r in done(frames, "attack").to_pylist()
                        if r["model"] in self.models and r["source_model"] is None]
        self.identity = settings(frames, [r["id"] for r in self.attacks], with_seeds=True)
        self._samples: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        pgd = [r["eps"] for r in self.attacks if r["attack"] == PAPER_ATTACK]
        self.eps = f.eps if f.eps is not None else max(pgd, default=None)  # one budget, unless a claim says
        two_task = [m["encoder"] for m in self.models.values() if len(m["codes"]) == 2]
        self.encoder = f.encoder or (PAPER_ENCODER if PAPER_ENCODER in two_task else
                                     max(set(two_task), key=two_task.count, default=None))

    def select(self, attack: str = PAPER_ATTACK, objectives=PLAIN_OBJECTIVES, targets: str = "main",
               eps: Callable[[float], bool] | None = None) -> list[dict]:
        """Attack trials of one attack on the main task alone (or all tasks), at the evidence's eps
        unless ``eps`` says otherwise."""
        eps = eps or (lambda e: self.eps is None or abs(e - self.eps) < 1e-9)
        out = []
        for r in self.attacks:
            m = self.models[r["model"]]
            wanted = m["codes"][0] if targets == "main" else m["codes"]
            if r["attack"] == attack and r["objective"] in objectives and r["targets"] == wanted and eps(r["eps"]):
                out.append(r)
        return out

    def context(self, r: dict, model: tuple[str, ...] = (), attack: tuple[str, ...] = ()) -> str:
        """The trial's setting less the compared keys, seeds kept: trials equal in this and in the
        compared keys are one trial, so pairs matched on it never overwrite each other."""
        return key(without(self.identity[r["id"]], model=model, attack=attack))

    def samples(self, trial: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-sample clean and adversarial error of the trial's main task."""
        if trial not in self._samples:
            table = self.frames.read_samples([trial], "error").to_pydict()
            main = {r["id"]: self.models[r["model"]]["main"] for r in self.attacks}[trial]
            by_sample = {s: (c, a) for s, t, c, a in zip(table["sample"], table["task"], table["clean"], table["adv"])
                         if t == main}
            order = sorted(by_sample)
            self._samples[trial] = (np.array([by_sample[s][0] for s in order]),
                                    np.array([by_sample[s][1] for s in order])) if order else None
        return self._samples[trial]


def paired_difference(ev: Evidence, pairs: list[tuple[str, str]]) -> tuple[float, float, float, int]:
    """Mean over pairs of v(second) - v(first), and its bootstrap interval over test samples."""
    data = [(ev.samples(a), ev.samples(b)) for a, b in pairs]
    data = [(a, b) for a, b in data if a is not None and b is not None]
    if not data:
        return math.nan, math.nan, math.nan, 0
    n = min(len(x[0]) for pair in data for x in pair)

    def statistic(idx: np.ndarray) -> float:
        return float(np.mean([relative_increase(b[0][:n][idx], b[1][:n][idx])
                              - relative_increase(a[0][:n][idx], a[1][:n][idx]) for a, b in data]))

    low, high = bootstrap_ci(statistic, n)
    return statistic(np.arange(n)), low, high, len(data)


def _difference_claim(text: str, what: str, estimate, low, high, count, holds_if: str) -> Claim:
    """``holds_if``: "negative" (the interval below 0), or "not-negative" (no reliable decrease)."""
    if count == 0 or math.isnan(estimate):
        return Claim(text, f"no {what}", None, None, None, NOT_ENOUGH)
    numbers = f"mean {what} {estimate:+.3g} over {count} pair(s)"
    if holds_if == "negative":
        verdict = "holds" if high < 0 else "fails" if low > 0 else "inconclusive"
    else:
        verdict = "fails" if high < 0 else "holds"
    return Claim(text, numbers, estimate, low, high, verdict)


def _correlation_claim(text: str, what: str, xs: list[float], ys: list[float]) -> Claim:
    if len(xs) < 3:
        return Claim(text, f"{len(xs)} point(s) of {what}", None, None, None, NOT_ENOUGH)
    x, y = np.array(xs), np.array(ys)
    rho = spearman(xs, ys)
    low, high = bootstrap_ci(lambda idx: spearman(list(x[idx]), list(y[idx])), len(xs))
    verdict = "holds" if low > 0 else "fails" if high < 0 else "inconclusive"
    return Claim(text, f"Spearman {rho:+.2f} over {len(xs)} {what}", rho, low, high, verdict)


def auxiliary_task(ev: Evidence, eps_test=lambda e: True, text: str = "") -> Claim:
    """Models with an auxiliary task against the main task alone, attacked on the main task, in
    the same setting (encoder, epochs, seed, eps, steps, ...) but for tasks and weighting."""
    trials = ev.select(eps=eps_test)

    def k(r: dict) -> tuple[str, str]:
        return ev.models[r["model"]]["codes"][0], ev.context(r, model=MODEL_AXES)

    alone = {k(r): r for r in trials if len(ev.models[r["model"]]["codes"]) == 1}  # one per key: see context
    pairs = [(alone[k(r)]["id"], r["id"]) for r in trials if len(ev.models[r["model"]]["codes"]) == 2 and k(r) in alone]
    return _difference_claim(text, "change of the main task's vulnerability with an auxiliary task",
                             *paired_difference(ev, pairs), holds_if="not-negative")


def multi_vs_single(ev: Evidence) -> Claim:
    """The same model under the same attack setting, on all its tasks against on its main task."""
    def k(r: dict) -> str:
        return ev.context(r, attack=TARGET_AXES)

    single = {k(r): r for r in ev.select(targets="main") if len(ev.models[r["model"]]["codes"]) > 1}
    pairs = [(single[k(r)]["id"], r["id"]) for r in ev.select(targets="all") if k(r) in single]
    return _difference_claim("multi-task attacks raise the main task's error less than single-task attacks do",
                             "v(all tasks attacked) - v(main task attacked)", *paired_difference(ev, pairs),
                             holds_if="negative")


def number_of_tasks(ev: Evidence) -> Claim:
    """Spearman's rho between the number of tasks and the main task's vulnerability, per weighting."""
    text = ("vulnerability does not fall monotonically with the number of tasks when unweighted (sum); "
            "with 1/N weights (uniform) it tends to")
    vuln = metric_values(ev.frames, Phase.VULNERABILITY, "rel_vuln_ratio_of_means")
    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in ev.select(targets="all"):
        m = ev.models[r["model"]]
        v = vuln.get((r["id"], m["main"]))
        if v is not None and m["weighting"] in ("sum", "uniform"):
            points[m["weighting"] if len(m["codes"]) > 1 else "single"].append((len(m["codes"]), v))
    rho = {}
    for w in ("sum", "uniform"):
        series = points[w] + points["single"]
        if len({n for n, _ in series}) < 3:
            return Claim(text, f"fewer than 3 task-set sizes with {w} weighting", None, None, None, NOT_ENOUGH)
        rho[w] = spearman([n for n, _ in series], [v for _, v in series])
    numbers = f"Spearman(N, v): sum {rho['sum']:+.2f}, uniform {rho['uniform']:+.2f}"
    verdict = "holds" if rho["sum"] > -1 and rho["uniform"] < 0 else \
        "fails" if rho["sum"] == -1 or rho["uniform"] > 0 else "inconclusive"
    return Claim(text, numbers, rho["uniform"], None, None, verdict)


def weighting_vs_adaptive(ev: Evidence) -> Claim:
    """v(optimal) - v(uniform) for the same tasks, under PGD and under the adaptive attacks."""
    text = "weighted models look more robust than uniform ones against PGD but not against adaptive attacks"

    def pairs_for(attack: str, objectives) -> list[tuple[str, str]]:
        trials = ev.select(attack=attack, objectives=objectives, targets="all")
        weighting = {r["id"]: ev.models[r["model"]]["weighting"] for r in trials}
        uniform = {ev.context(r, model=("weighting", "weights")): r for r in trials if weighting[r["id"]] == "uniform"}
        return [(uniform[k]["id"], r["id"]) for r in trials if weighting[r["id"]] == "optimal"
                and (k := ev.context(r, model=("weighting", "weights"))) in uniform]

    pgd = paired_difference(ev, pairs_for(PAPER_ATTACK, PLAIN_OBJECTIVES))
    adaptive = [paired_difference(ev, pairs_for(a, o)) for a, o in ADAPTIVE]
    adaptive = [d for d in adaptive if d[3]]
    if not pgd[3] or not adaptive:
        return Claim(text, f"needs optimal and uniform models under {PAPER_ATTACK} and {PAPER_ADAPTIVE_ATTACK} or wgd",
                     None, None, None, NOT_ENOUGH)
    worst = max(adaptive, key=lambda d: d[0])
    numbers = (f"v(optimal) - v(uniform): PGD {pgd[0]:+.3g} [{pgd[1]:.3g}, {pgd[2]:.3g}], "
               f"adaptive {worst[0]:+.3g} [{worst[1]:.3g}, {worst[2]:.3g}]")
    if pgd[2] < 0 and worst[2] >= 0:
        verdict = "holds"
    elif pgd[1] > 0 or worst[2] < 0:
        verdict = "fails"
    else:
        verdict = "inconclusive"
    return Claim(text, numbers, pgd[0], pgd[1], pgd[2], verdict)


def gradient_norms(ev: Evidence) -> Claim:
    analyses = {r["model"]: r["id"] for r in done(ev.frames, "analysis").to_pylist()}
    norms = metric_values(ev.frames, Phase.ANALYSIS, "grad_l1", list(analyses.values()))
    delta = metric_values(ev.frames, Phase.VULNERABILITY, "delta_loss")
    xs, ys = [], []
    for r in ev.attacks:
        m = ev.models[r["model"]]
        if r["model"] in analyses and r["attack"] == PAPER_ATTACK and len(r["targets"]) == 1 \
                and ev.eps is not None and abs(r["eps"] - ev.eps) < 1e-9:
            task = m["names"][m["codes"].index(r["targets"])]
            if (analyses[r["model"]], task) in norms and (r["id"], task) in delta:
                xs.append(norms[(analyses[r["model"]], task)])
                ys.append(delta[(r["id"], task)])
    return _correlation_claim("the most vulnerable tasks have the largest input-gradient norms",
                              "(task, attack) points of E||grad L||_1 vs E[dL]", xs, ys)


def small_vs_large_encoder(ev: Evidence) -> Claim:
    vuln = metric_values(ev.frames, Phase.VULNERABILITY, "rel_vuln_ratio_of_means")
    by: dict[str, dict[str, float]] = defaultdict(dict)  # setting but the encoder -> encoder -> v
    for r in ev.select():
        m = ev.models[r["model"]]
        v = vuln.get((r["id"], m["main"]))
        if v is not None:
            by[ev.context(r, model=("encoder",))][m["encoder"]] = v
    xs, ys = [], []
    for values in by.values():
        if PAPER_ENCODER in values:
            for encoder, v in values.items():
                if encoder != PAPER_ENCODER:
                    xs.append(values[PAPER_ENCODER])
                    ys.append(v)
    return _correlation_claim(f"robustness ranked on a small encoder ({PAPER_ENCODER}) correlates with a larger one",
                              "model settings on both encoders", xs, ys)


def clean_vs_robust(ev: Evidence) -> Claim:
    vuln = metric_values(ev.frames, Phase.VULNERABILITY, "rel_vuln_ratio_of_means")
    clean = metric_values(ev.frames, Phase.CLEAN, "error")
    xs, ys = [], []
    for r in ev.select():
        m = ev.models[r["model"]]
        if len(m["codes"]) == 2 and m["encoder"] == ev.encoder and (r["id"], m["main"]) in vuln \
                and (m["id"], m["main"]) in clean:
            xs.append(clean[(m["id"], m["main"])])
            ys.append(vuln[(r["id"], m["main"])])
    return _correlation_claim("clean performance with an auxiliary task correlates with robustness "
                              "(lower clean error, lower vulnerability)", f"two-task {ev.encoder} models", xs, ys)


def evaluate_claims(frames: Frames, f: Filters) -> list[Claim]:
    ev = Evidence(frames, f)
    return [
        auxiliary_task(ev, text="adding an auxiliary task does not reliably lower a main task's vulnerability "
                                "under L-inf PGD"),
        multi_vs_single(ev),
        auxiliary_task(ev, eps_test=lambda e: e > 4 / 255 + 1e-9,
                       text=f"for eps > {fraction(4 / 255)} multi-task learning gives no reliable robustness"),
        number_of_tasks(ev),
        weighting_vs_adaptive(ev),
        gradient_norms(ev),
        small_vs_large_encoder(ev),
        clean_vs_robust(ev),
    ]


def claims_section(frames: Frames, f: Filters) -> Section:
    rows = [{"verdict": c.verdict, "claim": c.claim, "numbers": c.numbers, "estimate": c.estimate,
             "95% CI": None if c.low is None or math.isnan(c.low) else f"[{c.low:.3g}, {c.high:.3g}]"}
            for c in evaluate_claims(frames, f)]
    eps = Evidence(frames, f).eps
    return Section(f"The paper's claims on this database ({PAPER_ATTACK} at eps "
                   f"{fraction(eps) if eps is not None else '-'} unless stated; v = relative vulnerability of the "
                   "main task)", rows, note="95% bootstrap intervals over test samples (differences) or over points "
                                        "(correlations); 'not enough data' names what is missing")
