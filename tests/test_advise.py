"""The task-selection advisor on a database where the right ranking is known, and end to end."""

from __future__ import annotations

import io
import json
import math
import sqlite3

import pytest
from helpers import CPU_TINY_DATA, run_cli
from rich.console import Console

from mtbench.advise import ALONE, base_settings, correlations, evidence, rank, run_advice_trial, validation_set
from mtbench.configs import AdviceConfig
from mtbench.errors import MtbenchError
from mtbench.report.advice import advice_sections
from mtbench.report.frames import load_frames
from mtbench.stats import bootstrap_ci, pearson, ranks, spearman
from mtbench.storage import Store
from mtbench.storage.fixture import ResultsWriter

NAMES = {"s": "segment_semantic", "d": "depth_zbuffer", "D": "depth_euclidean", "n": "normal", "E": "edge_occlusion",
         "k": "keypoints2d", "e": "edge_texture"}
ATTACK = {"name": "pgd-linf", "eps": 8 / 255, "steps": 10}


@pytest.fixture
def known(tmp_path):
    """Proxy (resnet18) and full (resnet50) vulnerabilities of main task s with each auxiliary task."""
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    proxy = {ALONE: 0.8, "d": 0.5, "D": 0.9, "n": 0.6, "E": 0.7}
    full = {"d": 0.4, "D": 0.8, "n": 0.45, "E": 0.5}
    clean = {ALONE: 0.5, "d": 0.42, "D": 0.47, "n": 0.44, "E": 0.46}
    for encoder, values in (("resnet18", proxy), ("resnet50", full)):
        for aux, v in values.items():
            codes = "s" + ("" if aux == ALONE else aux)
            model = w.add_model({c: NAMES[c] for c in codes}, {c: clean[aux] for c in codes}, encoder=encoder)
            w.add_attack(model, "s", {NAMES["s"]: v})
    w.flush()
    return store, proxy, full


def test_ranking_follows_the_proxy(known):
    store, proxy, _ = known
    frames = load_frames(store.url)
    ev = evidence(frames, "s", ["d", "D", "n", "E"], "resnet18", 10, "vulnerability", ATTACK)
    assert sorted(ev, key=lambda a: ev[a].value) == [ "d", "n", "E", ALONE, "D"]
    assert ev["d"].value == pytest.approx(0.5) and ev["d"].seeds == 1
    clean = evidence(frames, "s", ["d", "D", "n", "E"], "resnet50", 10, "clean", None)
    assert sorted((a for a in clean if a != ALONE), key=lambda a: clean[a].value) == ["d", "n", "E", "D"]


def test_a_candidate_in_two_settings_is_refused_not_averaged(tmp_path):
    """An s+d model of another weighting in the same database is not a second seed of the first."""
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    for weighting, v in (("uniform", 0.5), ("sum", 0.9)):
        model = w.add_model({"s": NAMES["s"], "d": NAMES["d"]}, {"s": 0.42, "d": 0.42}, weighting=weighting,
                            weights={NAMES["s"]: 1.0, NAMES["d"]: 1.0} if weighting == "sum" else None)
        w.add_attack(model, "s", {NAMES["s"]: v})
    w.flush()
    frames = load_frames(store.url)
    for kind, attack in (("vulnerability", ATTACK), ("clean", None)):
        with pytest.raises(MtbenchError, match="main task s with d: .* 2 settings that differ in .*weighting"):
            evidence(frames, "s", ["d"], "resnet18", 10, kind, attack)


def test_stored_advice_and_correlations_appear_in_the_report(known, tmp_path, plugins):
    store, proxy, full = known
    candidates = ("d", "D", "n", "E")
    config = AdviceConfig(main="s", candidates=candidates, proxy="surrogate", encoder="resnet50",
                          proxy_encoder="resnet18", proxy_epochs=10, attack=ATTACK["name"], eps=ATTACK["eps"],
                          steps=ATTACK["steps"], evidence=(), epochs=10, validated=candidates)
    ranking, p, f = rank(load_frames(store.url), config)
    assert ranking == ["d", "n", "E", "D"]
    assert spearman([p[a].value for a in ranking], [f[a].value for a in ranking]) == pytest.approx(1.0)
    run_advice_trial(config, base_settings(None, plugins), store, tmp_path, plugins, Console(file=io.StringIO()))
    tid = config.id
    assert store.statuses([tid]) == {tid: "done"}  # stored by the runner, like every trial
    (section,) = advice_sections(load_frames(store.url))
    assert [r["auxiliary"] for r in section.rows] == ["d", "n", "E", "D", ALONE]
    assert section.rows[0]["full"] == pytest.approx(0.4) and "Spearman 1.00" in section.note
    result = run_cli("report", str(tmp_path / "mtbench.db"), "--view", "advice", "--format", "json")
    assert result.returncode == 0 and tid
    assert any(k.startswith("Advice") for k in json.loads(result.stdout))
    plots = tmp_path / "plots"
    assert run_cli("report", str(tmp_path / "mtbench.db"), "--view", "advice", "--plots", str(plots)).returncode == 0
    assert (plots / f"advice_s_surrogate_{tid[:6]}.png").is_file()


def test_validation_set_takes_best_and_worst():
    assert validation_set(["a", "b", "c", "d", "e"], 2) == ["a", "b", "d", "e"]
    assert validation_set(["a", "b", "c"], 2) == ["a", "b", "c"]
    assert validation_set(["a", "b", "c", "d", "e"], 0) == ["a", "b", "c", "d", "e"]  # --validate-all


# The proxy gets the extremes right and the middle wrong: over the 2 best and 2 worst (d, D, k, e) Spearman's
# r is 0.8, over all six candidates 1 - 6 * 20 / 210 = 0.4286 (rank differences 0, 3, 1, 1, 3, 0).
SIX_PROXY = {"d": 0.1, "D": 0.2, "n": 0.3, "E": 0.4, "k": 0.5, "e": 0.6}
SIX_FULL = {"d": 0.1, "D": 0.5, "n": 0.4, "E": 0.3, "k": 0.2, "e": 0.6}
EXTREMES = ("d", "D", "k", "e")


def _six(tmp_path, full_for):
    """Proxy (resnet18) results of six candidates for main task s; full (resnet50) ones for ``full_for``."""
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    for encoder, values in (("resnet18", SIX_PROXY), ("resnet50", {a: SIX_FULL[a] for a in full_for})):
        for aux, v in values.items():
            model = w.add_model({"s": NAMES["s"], aux: NAMES[aux]}, {"s": 0.5, aux: 0.5}, encoder=encoder)
            w.add_attack(model, "s", {NAMES["s"]: v})
    w.flush()
    config = AdviceConfig(main="s", candidates=tuple(SIX_PROXY), proxy="surrogate", encoder="resnet50",
                          proxy_encoder="resnet18", proxy_epochs=10, attack=ATTACK["name"], eps=ATTACK["eps"],
                          steps=ATTACK["steps"], evidence=(), epochs=10,
                          validated=validation_set(sorted(SIX_PROXY, key=SIX_PROXY.get), 2))
    return store, config


def test_correlations_cover_every_candidate_with_a_full_result(tmp_path, plugins):
    """Validated on the 2 best and 2 worst, but every candidate has a full-budget result: r is over all six
    (the paper's r over all pairs), not the inflated 0.8 of the extremes."""
    store, config = _six(tmp_path, full_for=tuple(SIX_PROXY))
    assert config.validated == EXTREMES
    ranking, proxy, full = rank(load_frames(store.url), config)
    assert set(full) == set(SIX_PROXY)
    corr = correlations(ranking, proxy, full)
    assert corr["pairs"] == corr["candidates"] == 6
    assert corr["spearman"] == pytest.approx(1 - 6 * 20 / 210)
    assert spearman([SIX_PROXY[a] for a in EXTREMES], [SIX_FULL[a] for a in EXTREMES]) == pytest.approx(0.8)
    assert corr["pearson"] == pytest.approx(pearson(list(SIX_PROXY.values()), [SIX_FULL[a] for a in SIX_PROXY]))
    for name in ("spearman", "pearson"):  # bootstrap over the candidates (pairs)
        assert corr[f"{name}_low"] <= corr[name] <= corr[f"{name}_high"] and corr[f"{name}_low"] < 0.4
    run_advice_trial(config, base_settings(None, plugins), store, tmp_path, plugins, Console(file=io.StringIO()))
    (section,) = advice_sections(load_frames(store.url))
    assert "over 6 of 6 candidates: Spearman 0.43 [" in section.note and "WARNING" not in section.note
    assert sum(r["full"] is not None for r in section.rows) == 6


def test_correlation_over_the_extremes_only_is_flagged(tmp_path, plugins):
    """Only the 2 best and 2 worst ran at the full budget: r = 0.8 over 4 of 6, said to be inflated."""
    store, config = _six(tmp_path, full_for=EXTREMES)
    ranking, proxy, full = rank(load_frames(store.url), config)
    corr = correlations(ranking, proxy, full)
    assert corr["pairs"] == 4 and corr["candidates"] == 6 and corr["spearman"] == pytest.approx(0.8)
    run_advice_trial(config, base_settings(None, plugins), store, tmp_path, plugins, Console(file=io.StringIO()))
    (section,) = advice_sections(load_frames(store.url))
    assert "over 4 of 6 candidates: Spearman 0.80" in section.note
    assert "inflated and not comparable with the paper's r over all pairs" in section.note
    assert "--validate-all" in section.note


def test_statistics():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933, abs=1e-4)
    assert ranks([3.0, 1.0, 3.0]) == [2.5, 1.0, 2.5]
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    import numpy as np

    data = np.random.default_rng(0).normal(5.0, 1.0, 400)
    low, high = bootstrap_ci(lambda idx: float(data[idx].mean()), len(data))
    assert low < data.mean() < high and high - low < 0.3


def test_advise_end_to_end(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text(CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["d"]
epochs = 2
batch_size = 4
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
""")
    out = tmp_path / "results"
    result = run_cli("advise", "--main", "d", "--candidates", "s", "--encoder", "resnet18", "--proxy", "early-stop",
                     "--budget", "0.5", "--base", str(base), "--validate", "--validate-k", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Advice: auxiliary tasks for main task d on resnet18, by the early-stop proxy" in result.stdout
    with sqlite3.connect(out / "mtbench.db") as c:
        epochs = sorted(e for (e,) in c.execute(
            "select json_extract(config, '$.epochs') from trials where kind='train'"))
        assert epochs == [1, 1, 2, 2]  # the proxy at half the epochs, the validation at full budget
        assert c.execute("select count(*) from trials where kind='advice' and status='done'").fetchone() == (1,)
    again = run_cli("advise", "--main", "d", "--candidates", "s", "--encoder", "resnet18", "--proxy", "early-stop",
                    "--budget", "0.5", "--base", str(base), "--validate-all", "--out", str(out))
    assert again.returncode == 0 and "0 trial(s)" not in again.stdout, again.stderr
    assert "proxy vs full over 1 of 1 candidates" in " ".join(again.stdout.split())  # r is NaN, the count is said
    with sqlite3.connect(out / "mtbench.db") as c:  # everything reused: no trial ran twice
        assert c.execute("select max(attempts) from trials").fetchone() == (1,)


def test_advise_bad_input(tmp_path):
    for args, words in ((["--main", "s", "--candidates", "sd"], "own auxiliary"),
                        (["--main", "s", "--candidates", "d", "--proxy", "magic"], "--proxy"),
                        (["--main", "s", "--candidates", "x"], "x"),
                        (["--main", "s", "--candidates", "d", "--encoder", "resnet9"], "resnet9")):
        result = run_cli("advise", *args, "--out", str(tmp_path))
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
