"""`mtbench claims` on constructed databases where each verdict is known, and on real trials where
the verdict is recomputed from the stored rows."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from mtbench.report import Filters, load_frames
from mtbench.report.claims import Claim, evaluate_claims
from mtbench.stats import bootstrap_ci, relative_increase
from mtbench.storage import Store
from mtbench.storage.fixture import ResultsWriter

S, D, DE, N, E = "segment_semantic", "depth_zbuffer", "depth_euclidean", "normal", "edge_occlusion"
NAMES = {"s": S, "d": D, "D": DE, "n": N, "E": E}
RNG = np.random.default_rng(0)


def errors(clean: float, adv: float, n: int = 40) -> tuple[list[float], list[float]]:
    """Per-sample errors around ``clean`` and ``adv``, with a little noise: a reliable difference."""
    noise = RNG.normal(0, 0.01, n)
    return list(clean + noise), list(adv + noise + RNG.normal(0, 0.01, n))


def spread(clean: float, adv: float, by: float, n: int = 40) -> tuple[list[float], list[float]]:
    """Adversarial errors ``adv +- by`` in turn: against a constant ``adv``, a difference whose
    interval straddles 0 (inconclusive)."""
    return [clean] * n, [adv + (by if i % 2 else -by) for i in range(n)]


def tasks(codes: str) -> dict[str, str]:
    return {c: NAMES[c] for c in codes}


def claim(store: Store, start: str) -> Claim:
    return next(c for c in evaluate_claims(load_frames(store.url), Filters()) if c.claim.startswith(start))


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'mtbench.db'}")


def test_auxiliary_task_lowering_vulnerability_reliably_makes_the_claim_fail(store):
    w = ResultsWriter(store)
    alone = w.add_model({"s": S}, {"s": 0.5})
    pair = w.add_model({"s": S, "d": D}, {"s": 0.5, "d": 0.01})
    w.add_attack(alone, "s", {S: 0.8}, errors={S: errors(0.5, 0.9)})
    w.add_attack(pair, "s", {S: 0.2}, errors={S: errors(0.5, 0.6)})  # v 0.2 instead of 0.8
    w.flush()
    c = claim(store, "adding an auxiliary task")
    assert c.verdict == "fails" and c.estimate == pytest.approx(-0.6, abs=0.05) and c.high < 0
    assert claim(store, "for eps > 4/255").verdict == "fails"  # 8/255 counts as large


def test_no_reliable_change_makes_it_hold_and_multi_vs_single(store):
    w = ResultsWriter(store)
    alone = w.add_model({"s": S}, {"s": 0.5})
    pair = w.add_model({"s": S, "d": D}, {"s": 0.5, "d": 0.01})
    w.add_attack(alone, "s", {S: 0.8}, errors={S: errors(0.5, 0.9)})
    w.add_attack(pair, "s", {S: 0.8}, errors={S: errors(0.5, 0.9)})
    w.add_attack(pair, "sd", {S: 0.4, D: 1.0}, errors={S: errors(0.5, 0.7)})  # the multi-task attack: less
    w.flush()
    assert claim(store, "adding an auxiliary task").verdict == "holds"
    assert claim(store, "for eps > 4/255").verdict == "holds"
    multi = claim(store, "multi-task attacks")
    assert multi.verdict == "holds" and multi.estimate == pytest.approx(-0.4, abs=0.05)
    assert claim(store, "robustness ranked").verdict == "not enough data"


@pytest.mark.parametrize("multi, verdict", [(errors(0.5, 1.2), "fails"), (spread(0.5, 0.9, 0.3), "inconclusive")])
def test_multi_vs_single_fails_or_is_inconclusive(store, multi, verdict):
    w = ResultsWriter(store)
    pair = w.add_model({"s": S, "d": D}, {"s": 0.5, "d": 0.01})
    w.add_attack(pair, "s", {S: 0.8}, errors={S: ([0.5] * 40, [0.9] * 40)})
    w.add_attack(pair, "sd", {S: 0.8}, errors={S: multi})
    w.flush()
    assert claim(store, "multi-task attacks").verdict == verdict


def test_pairs_match_the_setting_not_just_the_model(store):
    """Each trial pairs with the one of its own seed, steps and objective: two seeds, two pairs
    (before: a later trial with another objective overwrote the partner, v 0.4 instead of 0.8)."""
    w = ResultsWriter(store)
    for seed, adv in ((0, 0.6), (1, 0.65)):
        alone = w.add_model({"s": S}, {"s": 0.5}, seed=seed)
        pair = w.add_model({"s": S, "d": D}, {"s": 0.5, "d": 0.01}, seed=seed)
        w.add_attack(alone, "s", {S: 0.8}, errors={S: ([0.5] * 40, [0.9] * 40)}, seed=seed)
        w.add_attack(alone, "s", {S: 0.4}, errors={S: ([0.5] * 40, [0.7] * 40)}, seed=seed, objective="mean")
        w.add_attack(pair, "s", {S: 0.2}, errors={S: ([0.5] * 40, [adv] * 40)}, seed=seed)
        w.add_attack(pair, "s", {S: 0.2}, errors={S: ([0.5] * 40, [0.9] * 40)}, seed=seed, steps=1)  # no partner
    w.flush()
    c = claim(store, "adding an auxiliary task")
    assert c.numbers.endswith("over 2 pair(s)") and c.estimate == pytest.approx((0.2 + 0.3) / 2 - 0.8)


def test_large_eps_claim_needs_an_attack_above_4_255(store):
    w = ResultsWriter(store)
    alone = w.add_model({"s": S}, {"s": 0.5})
    pair = w.add_model({"s": S, "d": D}, {"s": 0.5, "d": 0.01})
    w.add_attack(alone, "s", {S: 0.8}, eps=4 / 255, errors={S: errors(0.5, 0.9)})
    w.add_attack(pair, "s", {S: 0.8}, eps=4 / 255, errors={S: errors(0.5, 0.9)})
    w.flush()
    assert claim(store, "adding an auxiliary task").verdict == "holds"  # every eps
    assert claim(store, "for eps > 4/255").verdict == "not enough data"


def number_of_tasks_db(store: Store, single: float, uniform: dict[str, float], summed: dict[str, float]) -> None:
    """A single-task model and growing task sets under 1/N (uniform) and sum weighting, each
    attacked on all its tasks: ``{codes: v of the main task}``."""
    w = ResultsWriter(store)
    w.add_attack(w.add_model(tasks("s"), {"s": 0.5}), "s", {S: single})
    for weighting, series in (("uniform", uniform), ("sum", summed)):
        for codes, v in series.items():
            model = w.add_model(tasks(codes), {c: 0.5 for c in codes}, weighting=weighting)
            w.add_attack(model, codes, {S: v})
    w.flush()


@pytest.mark.parametrize("uniform, summed, verdict", [
    ({"sd": 0.6, "sdD": 0.4}, {"sd": 0.9, "sdD": 0.7}, "holds"),  # 1/N falls; sum does not (rho -0.5)
    ({"sd": 0.9, "sdD": 1.0}, {"sd": 0.9, "sdD": 0.7}, "fails"),  # 1/N rises
    ({"sd": 0.9, "sdD": 0.3, "sdDn": 0.7}, {"sd": 0.9, "sdD": 0.7}, "inconclusive"),  # 1/N: rho exactly 0
    ({"sd": 0.6}, {"sd": 0.9}, "not enough data"),  # two task-set sizes
])
def test_number_of_tasks(store, uniform, summed, verdict):
    number_of_tasks_db(store, 0.8 if verdict != "inconclusive" else 0.5, uniform, summed)
    assert claim(store, "vulnerability does not fall").verdict == verdict


def weighting_db(store: Store, pgd: tuple, adaptive: tuple | None) -> None:
    """Uniform and optimal s+d models attacked on both tasks with PGD and (unless None) Auto-PGD;
    ``pgd``/``adaptive``: per-sample errors of (uniform, optimal)."""
    w = ResultsWriter(store)
    models = [w.add_model(tasks("sd"), {"s": 0.5, "d": 0.01}, weighting=x) for x in ("uniform", "optimal")]
    for model, errs in zip(models, pgd):
        w.add_attack(model, "sd", {S: 0.5}, errors={S: errs})
    for model, errs in zip(models, adaptive or ()):
        w.add_attack(model, "sd", {S: 0.5}, attack="apgd-linf", errors={S: errs})
    w.flush()


FLAT = ([0.5] * 40, [0.9] * 40)


@pytest.mark.parametrize("pgd, adaptive, verdict", [
    ((FLAT, errors(0.5, 0.6)), (FLAT, errors(0.5, 1.0)), "holds"),  # weighting helps against PGD only
    ((FLAT, errors(0.5, 1.2)), (FLAT, errors(0.5, 1.0)), "fails"),  # weighted models worse under PGD
    ((FLAT, spread(0.5, 0.9, 0.3)), (FLAT, errors(0.5, 1.0)), "inconclusive"),
    ((FLAT, errors(0.5, 0.6)), None, "not enough data"),
])
def test_weighting_vs_adaptive(store, pgd, adaptive, verdict):
    weighting_db(store, pgd, adaptive)
    assert claim(store, "weighted models look more robust").verdict == verdict


def encoders_db(store: Store, clean: list[float], small: list[float], large: list[float]) -> None:
    """Four s+aux models on resnet18 (clean error, v) and resnet50 (v), with gradient analyses
    whose norms grow with the auxiliary task's E[dL]."""
    w = ResultsWriter(store)
    for k, aux in enumerate("dDnE"):
        pair = tasks("s" + aux)
        model = w.add_model(pair, {"s": clean[k], aux: 0.1})
        w.add_attack(model, "s", {S: small[k]})
        w.add_attack(w.add_model(pair, {"s": clean[k], aux: 0.1}, encoder="resnet50"), "s", {S: large[k]})
        w.add_analysis(model, {S: 1.0 + k, NAMES[aux]: 0.1 * (k + 1)})
        w.add_attack(model, aux, {NAMES[aux]: 0.1}, delta_loss={NAMES[aux]: 0.01 * (k + 1)})
    w.flush()


def test_correlation_claims_hold(store):
    encoders_db(store, [0.3, 0.4, 0.5, 0.6], [0.2, 0.3, 0.4, 0.5], [0.3, 0.4, 0.5, 0.6])
    for start in ("robustness ranked", "clean performance", "the most vulnerable"):
        c = claim(store, start)
        assert (c.verdict, c.estimate) == ("holds", pytest.approx(1.0)), start


def test_correlation_claims_fail_or_are_inconclusive(store):
    encoders_db(store, [0.6, 0.5, 0.4, 0.3], [0.2, 0.3, 0.4, 0.5], [0.6, 0.5, 0.4, 0.3])
    assert claim(store, "robustness ranked").verdict == "fails"  # the order flips on the larger encoder
    assert claim(store, "clean performance").verdict == "fails"  # lower clean error, higher vulnerability


def test_correlation_claim_inconclusive(store):
    encoders_db(store, [0.3, 0.4, 0.5, 0.6], [0.3, 0.2, 0.5, 0.4], [0.3, 0.4, 0.5, 0.6])
    c = claim(store, "clean performance")
    assert c.verdict == "inconclusive" and c.estimate == pytest.approx(0.6) and c.low < 0 < c.high
    assert claim(store, "the most vulnerable").verdict == "holds"


def test_claims_command_formats(store, tmp_path):
    weighting_db(store, (FLAT, errors(0.5, 0.6)), (FLAT, errors(0.5, 1.0)))
    result = run_cli("claims", str(tmp_path / "mtbench.db"), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = next(iter(json.loads(result.stdout).values()))
    assert [r["verdict"] for r in rows] == ["not enough data", "not enough data", "not enough data",
                                            "not enough data", "holds", "not enough data", "not enough data",
                                            "not enough data"]
    assert rows == [{**r, "estimate": pytest.approx(r["estimate"])} for r in rows]  # JSON numbers, not text
    table = run_cli("claims", str(tmp_path / "mtbench.db"))
    assert "E[dL]" in table.stdout  # square brackets survive the terminal table


def stored_attacks(results: Path) -> list[dict]:
    """Attack trials straight from the SQLite file, each with its model's config and the per-sample
    (clean, adversarial) errors of the model's main task."""
    with sqlite3.connect(results / "mtbench.db") as c:
        configs = {i: json.loads(cfg) for i, cfg in c.execute("select id, config from trials where status = 'done'")}
        rows = c.execute("select trial_id, task, sample, clean, adv from samples where metric = 'error' "
                         "order by sample").fetchall()
    out = []
    for tid, cfg in configs.items():
        if cfg["kind"] == "attack":
            model = configs[cfg["model"]]
            main = [(clean, adv) for t, task, _, clean, adv in rows if t == tid and task == model["tasks"][0]]
            out.append({**cfg, "codes": "".join(model["codes"]), "targets": "".join(cfg["targets_codes"]),
                        "errors": np.array(main).T})
    return out


def expected_difference(first: list[dict], second: list[dict]) -> tuple[float, float, float, int]:
    """The claim's statistic recomputed from stored rows: mean over seed-matched pairs of the
    second trial's relative vulnerability minus the first's, and its bootstrap interval."""
    pairs = [(a["errors"], b["errors"]) for a in first for b in second if a["seed"] == b["seed"]]

    def statistic(idx: np.ndarray) -> float:
        return float(np.mean([relative_increase(*b[:, idx]) - relative_increase(*a[:, idx]) for a, b in pairs]))

    n = pairs[0][0].shape[1]
    return (statistic(np.arange(n)), *bootstrap_ci(statistic, n), len(pairs))


def test_real_trials_claims_follow_from_the_stored_rows(real_results):
    result = run_cli("claims", str(real_results), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {r["claim"]: r for r in next(iter(json.loads(result.stdout).values()))}
    attacks = stored_attacks(real_results)
    pick = lambda codes, targets: [a for a in attacks if a["codes"] == codes and a["targets"] == targets]  # noqa: E731

    aux = next(r for k, r in rows.items() if k.startswith("adding an auxiliary task"))
    estimate, low, high, count = expected_difference(pick("d", "d"), pick("ds", "d"))
    assert count == 2 and aux["numbers"].endswith("over 2 pair(s)")
    assert aux["estimate"] == pytest.approx(estimate) and not math.isnan(estimate)
    assert aux["verdict"] == ("fails" if high < 0 else "holds")

    multi = next(r for k, r in rows.items() if k.startswith("multi-task attacks"))
    estimate, low, high, count = expected_difference(pick("ds", "d"), pick("ds", "ds"))
    assert count == 2 and multi["estimate"] == pytest.approx(estimate)
    assert multi["verdict"] == ("holds" if high < 0 else "fails" if low > 0 else "inconclusive")
    assert multi["95% CI"] == f"[{low:.3g}, {high:.3g}]"
