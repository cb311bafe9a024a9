"""The theory view's marginal vulnerability (Appendix A, Definition 4 / Theorem 7) on ONE model, checked
by hand against the numbers real tiny trials stored."""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers import CPU_TINY_DATA, run_cli

from mtbench.report.frames import load_frames
from mtbench.report.leaderboard import Filters
from mtbench.report.theory import marginal, marginal_rows
from mtbench.storage import Store
from mtbench.storage.fixture import ResultsWriter

EPS = 8 / 255
GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["sd"]
weighting = ["sum"]
epochs = 1
batch_size = 4
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
targets = [["s"], ["s", "d"]]
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
targets = [["s"], ["s", "d"]]
objective = "weighted"
weights = {s = 0.5, d = 2.0}
[[analysis]]
eps = "8/255"
steps = 2
"""


@pytest.fixture(scope="module")
def one_model(tmp_path_factory):
    """One s+d model attacked on {s} and on {s, d} (sum and weighted objectives), and its gradient analysis."""
    tmp = tmp_path_factory.mktemp("theory")
    (tmp / "grid.toml").write_text(GRID)
    out = tmp / "results"
    result = run_cli("run", str(tmp / "grid.toml"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def _stored(out):
    """From the database itself: E[dL'] of task 'objective' per (objective, attacked codes), E||r_i||_1 per task."""
    with sqlite3.connect(out / "mtbench.db") as c:
        delta = {(json.loads(cfg)["objective"], "".join(json.loads(cfg)["targets_codes"])): v for cfg, v in c.execute(
            "select t.config, m.value from metrics m join trials t on t.id = m.trial_id where t.kind = 'attack' "
            "and m.phase = 'vulnerability' and m.metric = 'delta_loss' and m.task = 'objective'")}
        norms = dict(c.execute("select task, value from metrics where phase = 'analysis' and metric = 'grad_l1' "
                               "and task in ('segment_semantic', 'depth_zbuffer')"))
    return delta, norms["segment_semantic"], norms["depth_zbuffer"]


def test_marginal_on_one_model_equals_the_hand_computation(one_model):
    delta, r_s, r_d = _stored(one_model)
    rows, missing = marginal_rows(load_frames(f"sqlite:///{one_model / 'mtbench.db'}"), Filters())
    assert not missing
    by_objective = {r["objective"]: r for r in rows}
    assert set(by_objective) == {"sum", "weighted"} and all(r["T_N"] == "s" and r["added"] == "d" for r in rows)
    for objective, (w_s, w_d) in (("sum", (1.0, 1.0)), ("weighted", (0.5, 2.0))):
        row = by_objective[objective]
        measured = delta[(objective, "sd")] - delta[(objective, "s")]  # Definition 4, on one model
        assert row["E[dL'(T_N)]"] == pytest.approx(delta[(objective, "s")])
        assert row["marginal"] == pytest.approx(measured)
        # Theorem 7 with N = 1, a = d: eps ((N+1) w_d E||r_d|| + w_s E||r_s||); max form N max_i = the same here
        paper = EPS * (2 * w_d * r_d + w_s * r_s)
        assert row["paper"] == pytest.approx(paper) and row["paper_max"] == pytest.approx(paper)
        assert row["first_order_bound"] == pytest.approx(EPS * w_d * r_d)
        assert row["measured/paper"] == pytest.approx(measured / paper)
        assert row["measured/first_order_bound"] == pytest.approx(measured / (EPS * w_d * r_d))
    assert by_objective["weighted"]["first_order_estimate"] is None  # E||sum w_i r_i||_1 is not stored
    assert by_objective["sum"]["first_order_estimate"] is not None


def test_theory_report_shows_the_one_model_section(one_model):
    report = run_cli("report", "--out", str(one_model), "--view", "theory", "--format", "json")
    assert report.returncode == 0, report.stderr
    sections = json.loads(report.stdout)
    title = next(k for k in sections if k.startswith("Marginal vulnerability on one model"))
    assert {r["objective"] for r in sections[title]} == {"sum", "weighted"}
    assert not any(k.startswith("Across models") for k in sections)  # one model: no cross-model change


def test_missing_attack_on_t_n_is_named(tmp_path):
    """A model attacked on all its tasks only: the view says which attack to add, with the grid line."""
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    names = {"s": "segment_semantic", "d": "depth_zbuffer", "n": "normal"}
    model = w.add_model(names, {c: 0.5 for c in names}, weighting="sum")
    w.add_attack(model, "sdn", {n: 1.0 for n in names.values()}, delta_loss={"objective": 0.3})
    w.add_analysis(model, {n: 1.0 for n in names.values()})
    w.flush()
    frames = load_frames(store.url)
    rows, missing = marginal_rows(frames, Filters())
    assert rows == [] and len(missing) == 1
    assert "run an attack on T_N of this model" in missing[0]
    assert 'targets = [["s"], ["s", "d"], ["s", "d", "n"]]' in missing[0]
    (section,) = marginal(frames, Filters())
    assert "data missing" in section.title and "run an attack on T_N" in section.rows[0]["needs"]


def test_pairs_need_the_same_attack(tmp_path):
    """T_N and T_N+1 attacked with different eps are not a pair; a run without analysis has no bounds."""
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    names = {"s": "segment_semantic", "d": "depth_zbuffer"}
    model = w.add_model(names, {c: 0.5 for c in names}, weighting="sum")
    w.add_attack(model, "s", {}, eps=4 / 255, delta_loss={"objective": 0.1})
    w.add_attack(model, "sd", {}, eps=8 / 255, delta_loss={"objective": 0.3})
    w.add_attack(model, "s", {}, eps=8 / 255, delta_loss={"objective": 0.2})
    w.flush()
    rows, missing = marginal_rows(load_frames(store.url), Filters())
    assert len(rows) == 1 and rows[0]["marginal"] == pytest.approx(0.1) and "paper" not in rows[0]
    assert missing == ["resnet18/sd/sum: run an [[analysis]] of this model for the bounds (E||r_i||_q)"]
