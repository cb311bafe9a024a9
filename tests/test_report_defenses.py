"""The report's side of defences, on real tiny trials: the defence column, each defended model beside its
undefended twin, the masking check the grid adds by itself, and the claim about auxiliary tasks."""

from __future__ import annotations

import json

import pytest
from helpers import CPU_TINY_DATA, run_cli

from mtbench.defaults import MASKING_ATTACKS
from mtbench.grid import load_grid_text
from mtbench.report import Filters, load_frames
from mtbench.report.claims import evaluate_claims
from mtbench.report.defenses import defense_sections

GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["d", "ds"]
epochs = 1
batch_size = 4
defense = ["none", {name = "pgd-at", eps = "4/255", steps = 1, targets = "main"}]

[[attack]]
name = "pgd-linf"
eps = ["4/255"]
steps = 2
targets = "each"

[[attack]]
name = "pgd-linf"
eps = ["4/255"]
steps = 2
step_size = "2/255"         # another setting of the same attack: never averaged with the first
targets = "each"
"""


@pytest.fixture(scope="module")
def defended(tmp_path_factory):
    root = tmp_path_factory.mktemp("defended")
    (root / "grid.toml").write_text(GRID)
    result = run_cli("run", str(root / "grid.toml"), "--out", str(root / "results"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return root


def test_a_grid_with_a_defence_checks_masking_on_every_model(tmp_path, plugins):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    g = load_grid_text(GRID, path, plugins)
    models = g.train_trials
    assert len(models) == 4  # d, ds, each with and without the defence
    for model in models:
        adaptive = [t.config for t in g.trials if t.parent == model.id and t.config.attack in MASKING_ATTACKS]
        assert sorted(c.attack for c in adaptive) == sorted(MASKING_ATTACKS)  # on the main task, at the grid's eps
        assert all(c.targets == (model.config.tasks[0],) and c.eps == pytest.approx(4 / 255) and c.steps == 2
                   for c in adaptive)
    plain = load_grid_text(GRID.replace('defense = ["none", {name = "pgd-at", eps = "4/255", steps = 1, '
                                        'targets = "main"}]', ""), path, plugins)
    assert not [t for t in plain.trials if getattr(t.config, "attack", None) in MASKING_ATTACKS]


def test_each_defended_model_stands_beside_its_twin(defended):
    comparison, masking = defense_sections(load_frames(str(defended / "results")), Filters())
    rows = comparison.rows
    assert {r["model"] for r in rows} == {"resnet18/d/uniform [pgd-at eps=4/255 steps=1]",
                                          "resnet18/ds/uniform [pgd-at eps=4/255 steps=1]"}
    assert {r["twin"] for r in rows} == {"resnet18/d/uniform", "resnet18/ds/uniform"}
    for r in rows:
        assert r["clean_err"] is not None and r["twin_clean_err"] is not None and r["adv_err"] is not None
        assert r["clean_cost"] == pytest.approx(r["clean_err"] - r["twin_clean_err"])
        assert r["adv_gain"] == pytest.approx(r["twin_adv_err"] - r["adv_err"])
    attacked = {(r["model"], r["attack"], r["targets"], r["task"]): r["attacked"] for r in rows}
    assert attacked[("resnet18/ds/uniform [pgd-at eps=4/255 steps=1]", "pgd-linf", "s", "d")] is False
    assert attacked[("resnet18/ds/uniform [pgd-at eps=4/255 steps=1]", "pgd-linf", "s", "s")] is True
    assert len(masking.rows) == 4 and all(r["pgd_adv_err"] is not None and r["ensemble_adv_err"] is not None
                                          and r["masking"] in ("no", "SUSPECTED") for r in masking.rows)
    # two PGD settings (step size 1/255, 2/255): a row each, never one mean, in both tables
    assert sorted(r["pgd_step_size"] for r in masking.rows) == ["1/255", "1/255", "2/255", "2/255"]
    pgd_rows = [(r["model"], r["targets"], r["task"], r["step_size"]) for r in rows if r["attack"] == "pgd-linf"]
    assert len(pgd_rows) == len(set(pgd_rows)) and {k[3] for k in pgd_rows} == {"1/255", "2/255"}
    for r in masking.rows:
        assert (r["masking"] == "SUSPECTED") == (r["ensemble_adv_err"] / r["pgd_adv_err"] - 1 > 0.10)


def test_the_boards_show_the_defence_and_the_claim_pairs_defended_models(defended):
    board = run_cli("report", str(defended / "results"), "--view", "leaderboard", "--view", "models",
                    "--view", "defenses", "--format", "json")
    assert board.returncode == 0, board.stderr
    sections = json.loads(board.stdout)
    leaderboard = next(v for k, v in sections.items() if k.startswith("Leaderboard"))
    assert {r["defense"] for r in leaderboard} == {"none", "pgd-at eps=4/255 steps=1"}
    models = next(v for k, v in sections.items() if k.startswith("Models"))
    assert sorted(r["defense"] for r in models) == ["none", "none", "pgd-at eps=4/255 steps=1",
                                                   "pgd-at eps=4/255 steps=1"]
    assert any(k.startswith("Gradient masking") for k in sections)
    claims = [c for c in evaluate_claims(load_frames(str(defended / "results")), Filters()) if c.id == "D1"]
    assert claims and all("defense=pgd-at eps=4/255 steps=1" in c.stratum for c in claims)
    assert all(c.verdict in ("inconclusive", "not enough data") for c in claims)  # one seed decides nothing


def test_without_defences_nothing_changes(real_results):
    sections = defense_sections(load_frames(str(real_results)), Filters())
    assert len(sections) == 1 and not sections[0].rows
    assert not [c for c in evaluate_claims(load_frames(str(real_results)), Filters()) if c.id == "D1"]
    board = run_cli("report", str(real_results), "--view", "leaderboard", "--format", "json")
    (rows,) = json.loads(board.stdout).values()
    assert all("defense" not in r for r in rows)
