"""`mtbench claims` on constructed databases where each verdict is known (per claim of CLAIMS.md,
per stratum), and on real trials where the verdict is recomputed from the stored rows."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from mtbench.report import Filters, load_frames
from mtbench.report.claims import MARGIN, Claim, equivalent, evaluate_claims, not_lower
from mtbench.stats import relative_increase, two_level_bootstrap
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


def claims(store: Store, cid: str) -> list[Claim]:
    return [c for c in evaluate_claims(load_frames(store.url), Filters()) if c.id == cid]


def claim(store: Store, cid: str) -> Claim:
    (c,) = claims(store, cid)
    return c


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'mtbench.db'}")


def aux_db(store: Store, pair: Callable[[int], tuple], seeds=(0, 1), eps: float = 8 / 255, steps: int = 25,
           targets: str = "s") -> None:
    """s alone (v 0.8) against s+d, attacked on s, seed by seed; ``pair(seed)``: s+d's per-sample errors."""
    w = ResultsWriter(store)
    for seed in seeds:
        alone = w.add_model({"s": S}, {"s": 0.5}, seed=seed)
        two = w.add_model({"s": S, "d": D}, {"s": 0.5, "d": 0.01}, seed=seed)
        w.add_attack(alone, "s", {S: 0.8}, errors={S: errors(0.5, 0.9)}, seed=seed, eps=eps, steps=steps)
        w.add_attack(two, targets, {S: 0.8}, errors={S: pair(seed)}, seed=seed, eps=eps, steps=steps)
    w.flush()


@pytest.mark.parametrize("pair, verdict", [
    (lambda seed: errors(0.5, 0.9), "supported"),  # no change of v
    (lambda seed: errors(0.5, 0.88), "supported"),  # a reliable decrease (-5%) inside the margin
    (lambda seed: errors(0.5, 0.6), "contradicted"),  # v 0.2 instead of 0.8: -75%
    (lambda seed: spread(0.5, 0.9, 0.3), "inconclusive"),  # an interval of about +-25%
])
def test_c1_verdicts_with_two_seeds(store, pair, verdict):
    aux_db(store, pair)
    c = claim(store, "C1")
    assert c.verdict == verdict, c
    assert c.covers == "seeds and test samples (2 seeds)"
    assert "main=s" in c.stratum and "eps=8/255" in c.stratum and "steps=25" in c.stratum
    assert f"-{MARGIN:.0%}" in c.rule and "steps" not in c.numbers  # the paper's 25 steps: no note


def test_c1_reliable_small_decrease_is_inside_the_margin(store):
    """The old rule called any interval below 0 a failure; a -5% change is of no practical size."""
    aux_db(store, lambda seed: errors(0.5, 0.88))
    c = claim(store, "C1")
    assert c.high < 0 and c.low > -MARGIN and c.verdict == "supported"


def test_margin_rules():
    assert not_lower(-0.09, 0.5) == "supported" and not_lower(-0.3, -0.11) == "contradicted"
    assert not_lower(-0.2, 0.1) == "inconclusive"
    assert equivalent(-0.09, 0.09) == "supported" and equivalent(-0.09, 0.2) == "inconclusive"
    assert equivalent(0.11, 0.5) == "contradicted" and equivalent(-0.5, -0.11) == "contradicted"


def test_one_seed_caps_training_claims_but_not_c2(store):
    w = ResultsWriter(store)
    alone = w.add_model({"s": S}, {"s": 0.5})
    two = w.add_model({"s": S, "d": D}, {"s": 0.5, "d": 0.01})
    w.add_attack(alone, "s", {S: 0.8}, errors={S: errors(0.5, 0.9)})
    w.add_attack(two, "s", {S: 0.8}, errors={S: errors(0.5, 0.9)})
    w.add_attack(two, "sd", {S: 0.4}, errors={S: errors(0.5, 0.7)})  # the multi-task attack: v halved
    w.flush()
    c1 = claim(store, "C1")
    assert c1.verdict == "inconclusive" and c1.low > -MARGIN
    assert c1.covers == "test samples only (1 seed): capped, the interval alone says supported"
    c2 = claim(store, "C2")  # two attacks on the same trained model: no training claim
    assert c2.verdict == "supported" and c2.estimate == pytest.approx(-0.5, abs=0.05)
    assert c2.covers == "test samples only (1 seed)"
    assert "steps 10 (paper: 25)" in c1.numbers and "steps=10" in c1.stratum


def test_not_enough_data(store):
    aux_db(store, lambda seed: errors(0.5, 0.9), eps=4 / 255)
    c = claim(store, "C1")
    assert c.verdict == "not enough data" and "no attack at eps 8/255 (found: 4/255)" in c.numbers
    assert claim(store, "C4").verdict == "not enough data"  # 4/255 is not above 4/255
    assert all(c.verdict == "not enough data" for cid in ("C6", "C7", "C8", "C9", "C10", "C13", "C14")
               for c in claims(store, cid))


def test_strata_are_never_pooled(store):
    """eps 8/255 (no change) and 16/255 (v falls by 75%), and 10 against 25 steps: one row each."""
    w = ResultsWriter(store)
    for seed in (0, 1):
        alone = w.add_model({"s": S}, {"s": 0.5}, seed=seed)
        two = w.add_model({"s": S, "d": D}, {"s": 0.5, "d": 0.01}, seed=seed)
        for eps, adv in ((8 / 255, 0.9), (16 / 255, 0.6)):
            w.add_attack(alone, "s", {S: 0.8}, errors={S: errors(0.5, 0.9)}, seed=seed, eps=eps)
            w.add_attack(two, "s", {S: 0.8}, errors={S: errors(0.5, adv)}, seed=seed, eps=eps)
        w.add_attack(alone, "s", {S: 0.8}, errors={S: errors(0.5, 0.9)}, seed=seed, steps=25)
        w.add_attack(two, "s", {S: 0.8}, errors={S: errors(0.5, 0.6)}, seed=seed, steps=25)
    w.flush()
    c4 = {c.stratum: c for c in claims(store, "C4")}
    assert len(c4) == 3
    by_eps = {(s.split("eps=")[1].split(",")[0], s.split("steps=")[1].split(",")[0]): c.verdict
              for s, c in c4.items()}
    assert by_eps == {("8/255", "10"): "supported", ("16/255", "10"): "contradicted", ("8/255", "25"): "contradicted"}
    c1 = {c.stratum: c.verdict for c in claims(store, "C1")}  # 8/255 only, its two step counts apart
    assert sorted(c1.values()) == ["contradicted", "supported"] and all("eps=8/255" in s for s in c1)


def weighting_db(store: Store, pgd: tuple, adaptive: tuple | None, seeds=(0, 1)) -> None:
    """Uniform and optimal s+d models attacked on both tasks with PGD and (unless None) Auto-PGD;
    ``pgd``/``adaptive``: per-sample errors of (uniform, optimal)."""
    w = ResultsWriter(store)
    for seed in seeds:
        models = [w.add_model(tasks("sd"), {"s": 0.5, "d": 0.01}, weighting=x, seed=seed)
                  for x in ("uniform", "optimal")]
        for model, errs in zip(models, pgd):
            w.add_attack(model, "sd", {S: 0.5}, errors={S: errs}, seed=seed)
        for model, errs in zip(models, adaptive or ()):
            w.add_attack(model, "sd", {S: 0.5}, attack="apgd-linf", errors={S: errs}, seed=seed)
    w.flush()


FLAT = ([0.5] * 40, [0.9] * 40)


@pytest.mark.parametrize("pgd, adaptive, c9, c10", [
    ((FLAT, errors(0.5, 0.6)), (FLAT, errors(0.5, 0.9)), "supported", "supported"),  # helps against PGD only
    ((FLAT, errors(0.5, 1.2)), (FLAT, errors(0.5, 1.2)), "contradicted", "contradicted"),  # weighted worse
    ((FLAT, spread(0.5, 0.9, 0.3)), (FLAT, spread(0.5, 0.9, 0.3)), "inconclusive", "inconclusive"),
    ((FLAT, errors(0.5, 0.6)), None, "supported", "not enough data"),
])
def test_weighting_claims(store, pgd, adaptive, c9, c10):
    weighting_db(store, pgd, adaptive)
    assert claim(store, "C9").verdict == c9
    c = claim(store, "C10")
    assert c.verdict == c10 and (c10 == "not enough data" or "attack=apgd-linf" in c.stratum)


def add_losses(w: ResultsWriter, trial: str, losses: dict[str, tuple[list[float], list[float]]]) -> None:
    """Per-sample (clean, adversarial) losses of a trial, as attack trials store them."""
    w.samples += [{"trial_id": trial, "sample": i, "task": t, "metric": "loss", "clean": c, "adv": a,
                   "attacked": True} for t, (cl, ad) in losses.items() for i, (c, a) in enumerate(zip(cl, ad))]


def ntasks_db(store: Store, rise: dict[str, float], seeds=(0, 1), with_losses: bool = True) -> None:
    """s, sd, sdD, sdDn under sum and uniform weighting, all tasks attacked; each task of a model
    of N tasks adds ``rise[weighting] ** (N-1)`` to every sample's summed joint loss increase."""
    w = ResultsWriter(store)
    for seed in seeds:
        for weighting in ("sum", "uniform"):
            for codes in ("s", "sd", "sdD", "sdDn"):
                if codes == "s" and weighting == "sum":
                    continue  # the single-task model starts both series
                model = w.add_model(tasks(codes), {c: 0.5 for c in codes}, weighting=weighting, seed=seed)
                attack = w.add_attack(model, codes, {S: 0.5}, seed=seed)
                each = rise[weighting] ** (len(codes) - 1) / len(codes)
                noise = RNG.normal(0, 0.01, 30)
                if with_losses:
                    add_losses(w, attack, {NAMES[c]: ([1.0] * 30, list(1.0 + each + noise)) for c in codes})
    w.flush()


@pytest.mark.parametrize("rise, c6, c7", [
    ({"sum": 1.5, "uniform": 0.5}, "supported", "supported"),  # sum rises; 1/N falls
    ({"sum": 0.5, "uniform": 1.5}, "contradicted", "contradicted"),  # sum falls at every step; 1/N rises
])
def test_number_of_tasks_on_the_joint_delta_loss(store, rise, c6, c7):
    ntasks_db(store, rise)
    assert claim(store, "C6").verdict == c6
    c = claim(store, "C7")
    assert c.verdict == c7 and "weighting=uniform" in c.stratum and "sd->sdD" in c.numbers


def test_number_of_tasks_one_seed_and_no_losses(store, tmp_path):
    ntasks_db(store, {"sum": 1.5, "uniform": 0.5}, seeds=(0,))
    c6 = claim(store, "C6")
    assert c6.verdict == "inconclusive" and c6.covers.endswith("capped, the interval alone says supported")
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    ntasks_db(other, {"sum": 1.5, "uniform": 0.5}, with_losses=False)
    assert claim(other, "C6").verdict == claim(other, "C7").verdict == "not enough data"


def encoders_db(store: Store, main_tasks: dict[str, tuple[list, list, list]], seeds=(0, 1)) -> None:
    """Per main task, three two-task models (clean error, v on resnet18, v on resnet50)."""
    w = ResultsWriter(store)
    for seed in seeds:
        for main, (clean, small, large) in main_tasks.items():
            for k, aux in enumerate(c for c in "sdDn" if c != main):
                pair = tasks(main + aux)
                model = w.add_model(pair, {main: clean[k], aux: 0.1}, seed=seed)
                w.add_attack(model, main, {NAMES[main]: small[k]}, seed=seed)
                big = w.add_model(pair, {main: clean[k], aux: 0.1}, encoder="resnet50", seed=seed)
                w.add_attack(big, main, {NAMES[main]: large[k]}, seed=seed)
    w.flush()


def test_correlations_within_each_main_task(store):
    """s's v ~0.3 and d's ~10: pooled, the correlation would mostly say which task it is. Within each
    main task the orders agree perfectly on resnet50 and clean error, so the mean rho is 1."""
    encoders_db(store, {"s": ([0.3, 0.4, 0.5], [0.2, 0.3, 0.4], [0.9, 1.0, 1.1]),
                        "d": ([0.6, 0.7, 0.8], [9.0, 10.0, 11.0], [0.1, 0.2, 0.3])})
    for cid in ("C13", "C14"):
        c = claim(store, cid)
        assert (c.verdict, c.estimate) == ("supported", pytest.approx(1.0)), c
    assert "s vs resnet50 +1.00 (3)" in claim(store, "C13").numbers


def test_correlations_contradicted_inconclusive_and_capped(store, tmp_path):
    encoders_db(store, {"s": ([0.5, 0.4, 0.3], [0.2, 0.3, 0.4], [0.6, 0.5, 0.4])})
    assert claim(store, "C13").verdict == "contradicted"  # the order flips on the larger encoder
    c14 = claim(store, "C14")  # per encoder: resnet18 -1 (lower clean error, higher v), resnet50 +1
    assert c14.verdict == "inconclusive" and c14.estimate == pytest.approx(0.0)
    assert "resnet18/s -1.00 (3)" in c14.numbers and "resnet50/s +1.00 (3)" in c14.numbers
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    encoders_db(other, {"s": ([0.3, 0.4, 0.5], [0.2, 0.3, 0.4], [0.9, 1.0, 1.1]),
                        "d": ([0.8, 0.7, 0.6], [9.0, 10.0, 11.0], [0.1, 0.2, 0.3])}, seeds=(0,))
    c14 = claim(other, "C14")
    assert c14.estimate == pytest.approx(0.0) and c14.verdict == "inconclusive"
    c13 = claim(other, "C13")
    assert c13.verdict == "inconclusive"
    assert c13.covers == "task pairs only (1 seed): capped, the interval alone says supported"


def test_claims_command_formats(store, tmp_path):
    weighting_db(store, (FLAT, errors(0.5, 0.6)), (FLAT, errors(0.5, 0.9)))
    result = run_cli("claims", str(tmp_path / "mtbench.db"), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = next(iter(json.loads(result.stdout).values()))
    by = {r["id"]: r for r in rows}
    assert by["C9"]["verdict"] == by["C10"]["verdict"] == "supported"
    assert by["C1"]["verdict"] == "not enough data"
    for r in (by["C9"], by["C10"]):
        assert r["stratum"].startswith("encoder=resnet18, main=s, weighting=optimal") and r["rule"]
        assert r["interval covers"] == "seeds and test samples (2 seeds)" and r["low"] <= r["estimate"] <= r["high"]
        assert r["95% CI"] == f"[{r['low']:.3g}, {r['high']:.3g}]"
    table = run_cli("claims", str(tmp_path / "mtbench.db"))
    assert "C10" in table.stdout and "supported" in table.stdout and "+-10%" in table.stdout


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


def expected_change(first: list[dict], second: list[dict]) -> tuple[float, float, float, int]:
    """The claim's statistic recomputed from stored rows: v(second)/v(first) - 1, v averaged over
    seeds, pairs matched by seed; its interval by the two-level bootstrap (seeds, then samples)."""
    units = [np.vstack([a["errors"], b["errors"]]).T for a in first for b in second if a["seed"] == b["seed"]]

    def statistic(groups: list[list[np.ndarray]]) -> float:
        (drawn,) = groups
        return float(np.mean([relative_increase(u[:, 2], u[:, 3]) for u in drawn])
                     / np.mean([relative_increase(u[:, 0], u[:, 1]) for u in drawn]) - 1)

    return (statistic([units]), *two_level_bootstrap([units], statistic), len(units))


def test_real_trials_claims_follow_from_the_stored_rows(real_results):
    result = run_cli("claims", str(real_results), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = next(iter(json.loads(result.stdout).values()))
    attacks = stored_attacks(real_results)
    pick = lambda codes, targets: [a for a in attacks if a["codes"] == codes and a["targets"] == targets]  # noqa: E731

    (c1,) = [r for r in rows if r["id"] == "C1"]
    estimate, low, high, count = expected_change(pick("d", "d"), pick("ds", "d"))
    assert count == 2 and c1["interval covers"] == "seeds and test samples (2 seeds)"
    assert "main=d" in c1["stratum"] and "steps=2" in c1["stratum"] and "steps 2 (paper: 25)" in c1["numbers"]
    assert c1["estimate"] == pytest.approx(estimate) and not math.isnan(estimate)
    assert (c1["low"], c1["high"]) == (pytest.approx(low), pytest.approx(high))
    assert c1["verdict"] == not_lower(low, high)

    (c2,) = [r for r in rows if r["id"] == "C2"]
    estimate, low, high, count = expected_change(pick("ds", "d"), pick("ds", "ds"))
    assert count == 2 and c2["estimate"] == pytest.approx(estimate)
    assert c2["verdict"] == ("supported" if high < 0 else "contradicted" if low > 0 else "inconclusive")
    assert c2["95% CI"] == f"[{low:.3g}, {high:.3g}]"
