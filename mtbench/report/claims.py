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

from mtbench.report.frames import Frames
from mtbench.report.leaderboard import Filters, done, fraction, metric_values, model_info
from mtbench.report.render import Section
from mtbench.stats import bootstrap_ci, relative_increase, spearman

PLAIN = ("sum", "single", "mean")
ADAPTIVE = (("apgd-linf", PLAIN), ("pgd-linf", ("relative",)))
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
        self._samples: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        pgd = [r["eps"] for r in self.attacks if r["attack"] == "pgd-linf"]
        self.eps = f.eps if f.eps is not None else max(pgd, default=None)  # one budget, unless a claim says
        two_task = [m["encoder"] for m in self.models.values() if len(m["codes"]) == 2]
        self.encoder = f.encoder or ("resnet18" if "resnet18" in two_task else
                                     max(set(two_task), key=two_task.count, default=None))

    def select(self, attack: str = "pgd-linf", objectives=PLAIN, targets: str = "main",
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


def _pairs_by(ev: Evidence, trials: list[dict], key: Callable[[dict, dict], tuple | None]) -> dict[tuple, dict]:
    out = {}
    for r in trials:
        k = key(r, ev.models[r["model"]])
        if k is not None:
            out[k] = r
    return out


def auxiliary_task(ev: Evidence, eps_test=lambda e: True, text: str = "") -> Claim:
    """Models with an auxiliary task against the main task alone, attacked on the main task."""
    trials = ev.select(eps=eps_test)
    setting = lambda r, m: (m["encoder"], m["weighting"] if len(m["codes"]) > 1 else None, m["epochs"],  # noqa: E731
                            m["seed"], m["codes"][0], r["eps"], r["steps"])
    alone = _pairs_by(ev, [r for r in trials if len(ev.models[r["model"]]["codes"]) == 1],
                      lambda r, m: setting(r, m)[:1] + setting(r, m)[2:])
    pairs = []
    for r in trials:
        m = ev.models[r["model"]]
        if len(m["codes"]) == 2:
            base = alone.get(setting(r, m)[:1] + setting(r, m)[2:])
            if base is not None:
                pairs.append((base["id"], r["id"]))
    return _difference_claim(text, "change of the main task's vulnerability with an auxiliary task",
                             *paired_difference(ev, pairs), holds_if="not-negative")


def multi_vs_single(ev: Evidence) -> Claim:
    single = _pairs_by(ev, ev.select(targets="main"), lambda r, m: (r["model"], r["eps"], r["steps"])
                       if len(m["codes"]) > 1 else None)
    pairs = [(single[k]["id"], r["id"]) for r in ev.select(targets="all")
             if (k := (r["model"], r["eps"], r["steps"])) in single]
    return _difference_claim("multi-task attacks raise the main task's error less than single-task attacks do",
                             "v(all tasks attacked) - v(main task attacked)", *paired_difference(ev, pairs),
                             holds_if="negative")


def number_of_tasks(ev: Evidence) -> Claim:
    """Spearman's rho between the number of tasks and the main task's vulnerability, per weighting."""
    text = ("vulnerability does not fall monotonically with the number of tasks when unweighted (sum); "
            "with 1/N weights (uniform) it tends to")
    vuln = metric_values(ev.frames, "vulnerability", "rel_vuln_ratio_of_means")
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
        key = lambda r, m: (m["encoder"], m["codes"], m["epochs"], m["seed"], r["eps"], r["steps"])  # noqa: E731
        uniform = _pairs_by(ev, [r for r in trials if ev.models[r["model"]]["weighting"] == "uniform"], key)
        return [(uniform[k]["id"], r["id"]) for r in trials
                if ev.models[r["model"]]["weighting"] == "optimal" and (k := key(r, ev.models[r["model"]])) in uniform]

    pgd = paired_difference(ev, pairs_for("pgd-linf", PLAIN))
    adaptive = [paired_difference(ev, pairs_for(a, o)) for a, o in ADAPTIVE]
    adaptive = [d for d in adaptive if d[3]]
    if not pgd[3] or not adaptive:
        return Claim(text, "needs optimal and uniform models under pgd-linf and apgd-linf or wgd", None, None, None,
                     NOT_ENOUGH)
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
    norms = metric_values(ev.frames, "analysis", "grad_l1", list(analyses.values()))
    delta = metric_values(ev.frames, "vulnerability", "delta_loss")
    xs, ys = [], []
    for r in ev.attacks:
        m = ev.models[r["model"]]
        if r["model"] in analyses and r["attack"] == "pgd-linf" and len(r["targets"]) == 1 \
                and ev.eps is not None and abs(r["eps"] - ev.eps) < 1e-9:
            task = m["names"][m["codes"].index(r["targets"])]
            if (analyses[r["model"]], task) in norms and (r["id"], task) in delta:
                xs.append(norms[(analyses[r["model"]], task)])
                ys.append(delta[(r["id"], task)])
    return _correlation_claim("the most vulnerable tasks have the largest input-gradient norms",
                              "(task, attack) points of E||grad L||_1 vs E[dL]", xs, ys)


def small_vs_large_encoder(ev: Evidence) -> Claim:
    vuln = metric_values(ev.frames, "vulnerability", "rel_vuln_ratio_of_means")
    by: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in ev.select():
        m = ev.models[r["model"]]
        v = vuln.get((r["id"], m["main"]))
        if v is not None:
            by[(m["codes"], m["weighting"], m["epochs"], m["seed"], r["eps"], r["steps"])][m["encoder"]] = v
    xs, ys = [], []
    for values in by.values():
        if "resnet18" in values:
            for encoder, v in values.items():
                if encoder != "resnet18":
                    xs.append(values["resnet18"])
                    ys.append(v)
    return _correlation_claim("robustness ranked on a small encoder (resnet18) correlates with a larger one",
                              "model settings on both encoders", xs, ys)


def clean_vs_robust(ev: Evidence) -> Claim:
    vuln = metric_values(ev.frames, "vulnerability", "rel_vuln_ratio_of_means")
    clean = metric_values(ev.frames, "clean", "error")
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
    return Section("The paper's claims on this database (pgd-linf at eps "
                   f"{fraction(eps) if eps is not None else '-'} unless stated; v = relative vulnerability of the "
                   "main task)", rows, note="95% bootstrap intervals over test samples (differences) or over points "
                                        "(correlations); 'not enough data' names what is missing")
