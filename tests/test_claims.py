"""`mtbench claims` on constructed databases where each verdict is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from mtbench.report import Filters, load_frames
from mtbench.report.claims import evaluate_claims
from mtbench.storage import Store
from mtbench.storage.fixture import ResultsWriter

S, D, DE, N = "segment_semantic", "depth_zbuffer", "depth_euclidean", "normal"
RNG = np.random.default_rng(0)


def errors(clean: float, adv: float, n: int = 40) -> tuple[list[float], list[float]]:
    noise = RNG.normal(0, 0.01, n)
    return list(clean + noise), list(adv + noise + RNG.normal(0, 0.01, n))


def verdicts(store) -> dict[str, tuple[str, object]]:
    return {c.claim.split(" ")[0] + " " + c.claim.split(" ")[1]: (c.verdict, c)
            for c in evaluate_claims(load_frames(store.url), Filters())}


def claim(store, start: str):
    return next(c for c in evaluate_claims(load_frames(store.url), Filters()) if c.claim.startswith(start))


@pytest.fixture
def store(tmp_path):
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
    multi = claim(store, "multi-task attacks")
    assert multi.verdict == "holds" and multi.estimate == pytest.approx(-0.4, abs=0.05)
    assert claim(store, "robustness ranked").verdict == "not enough data"


def test_correlation_claims(store):
    w = ResultsWriter(store)
    clean = {"d": 0.3, "D": 0.4, "n": 0.5, "E": 0.6}
    for k, (aux, name) in enumerate((("d", D), ("D", DE), ("n", N), ("E", "edge_occlusion"))):
        small = w.add_model({"s": S, aux: name}, {"s": clean[aux], aux: 0.1})
        large = w.add_model({"s": S, aux: name}, {"s": clean[aux], aux: 0.1}, encoder="resnet50")
        w.add_attack(small, "s", {S: 0.2 + 0.1 * k})
        w.add_attack(large, "s", {S: 0.3 + 0.1 * k})
        a = w.add_analysis(small, {S: 1.0 + k, name: 0.1 * (k + 1)})
        w.add_attack(small, aux, {name: 0.1}, delta_loss={name: 0.01 * (k + 1)})
        w.add_attack(small, "s", {S: 0.2 + 0.1 * k}, eps=4 / 255, delta_loss={S: 0.1 * (k + 1)})
        assert a
    w.flush()
    assert claim(store, "robustness ranked").verdict == "holds"   # same order on both encoders
    assert claim(store, "clean performance").estimate == pytest.approx(1.0)
    grads = claim(store, "the most vulnerable")
    assert grads.estimate > 0.5 and grads.verdict in ("holds", "inconclusive")


def test_claims_command_formats(store, tmp_path):
    w = ResultsWriter(store)
    alone = w.add_model({"s": S}, {"s": 0.5})
    w.add_attack(alone, "s", {S: 0.8}, errors={S: errors(0.5, 0.9)})
    w.flush()
    result = run_cli("claims", str(tmp_path / "mtbench.db"), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = next(iter(json.loads(result.stdout).values()))
    assert len(rows) == 8 and {r["verdict"] for r in rows} <= {"holds", "fails", "inconclusive", "not enough data"}
    table = run_cli("claims", str(tmp_path / "mtbench.db"))
    assert "E[dL]" in table.stdout  # square brackets survive the terminal table
