"""A trial's setting is its identity (issue #19): trials differing in any key of the setting never share
a leaderboard row or a table cell, seeds are averaged only within one setting, the paper's figure stands
beside ours only in the paper's setting, and a leaderboard ranks models that learnt first.

Most tests read one results folder written by real tiny trials: a base grid and, into the same folder,
grids differing from it in one key each (the attack-key variants share the base's trained model)."""

from __future__ import annotations

import csv
import io
import json
import re
import runpy
import sqlite3
from pathlib import Path

import pytest
from helpers import REPO, run_cli

from mtbench.configs import setting_id, setting_part
from mtbench.records import Phase
from mtbench.report import paper
from mtbench.report.frames import load_frames
from mtbench.report.leaderboard import Filters, _flatten, leaderboard, settings
from mtbench.storage import Store
from mtbench.storage.fixture import ResultsWriter

HEAD = """
[run]
name = "{name}"
seed = 0
device = "cpu"
[data]
dataset = "synthetic"
image_size = {image_size}
train_samples = 8
test_samples = 4
[train]
encoders = ["resnet18"]
task_sets = ["d"]
weighting = {weighting}
epochs = {epochs}
batch_size = 4
lr = {lr}
loss_options = {loss_options}
"""
BASE_TRAIN = dict(image_size=32, weighting='["uniform"]', epochs=1, lr=0.01, loss_options="{}")
ATTACK = """
[[attack]]
name = "pgd-linf"
eps = ["{eps}"]
steps = {steps}
step_size = "{step_size}"
random_start = {random_start}
paper_compat = {paper_compat}
objective = "{objective}"
targets = "each"
"""
BASE_ATTACK = dict(eps="8/255", steps=2, step_size="2/255", random_start="false", paper_compat="false",
                   objective="sum")
MODEL_VARIANTS = {"lr": dict(lr=0.02), "epochs": dict(epochs=2), "image_size": dict(image_size=64),
                  "loss_options": dict(loss_options='{d = {reduction = "valid"}}')}
ATTACK_VARIANTS = {"eps": dict(eps="4/255"), "steps": dict(steps=3), "step_size": dict(step_size="4/255"),
                   "random_start": dict(random_start="true"), "paper_compat": dict(paper_compat="true"),
                   "objective": dict(objective="mean")}
KEYS = ["weighting", *MODEL_VARIANTS, *ATTACK_VARIANTS]
BOARD = {"eps": ("--eps", "4/255"), "objective": ("--objective", "mean")}
"""The keys that choose a leaderboard (its attack): their variant has a board of its own."""


def _grid(name: str, train: dict, attacks: list[dict]) -> str:
    return HEAD.format(name=name, **{**BASE_TRAIN, **train}) + "".join(ATTACK.format(**{**BASE_ATTACK, **a})
                                                                        for a in attacks)


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> Path:
    """The base grid (uniform and sum weighting: two models differing in one key), the attack variants
    on the base model, and one grid per model key, all run into one results folder (about a minute)."""
    root = tmp_path_factory.mktemp("variants")
    grids = {"base": _grid("base", {"weighting": '["uniform", "sum"]'}, [{}]),
             "attacks": _grid("attacks", {}, list(ATTACK_VARIANTS.values()))}
    grids.update({k: _grid(k, v, [{}]) for k, v in MODEL_VARIANTS.items()})
    for name, text in grids.items():
        (root / f"{name}.toml").write_text(text)
        result = run_cli("run", str(root / f"{name}.toml"), "--out", str(root / "results"))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return root / "results"


def _attack_settings(results: Path) -> dict[str, dict]:
    """Attack trial id -> flattened setting (the model's under ``model.``)."""
    frames = load_frames(str(results))
    ids = [r["id"] for r in frames.trials.to_pylist() if r["kind"] == "attack"]
    return {i: _flatten(s) for i, s in settings(frames, ids).items()}


def _pair(results: Path, key: str) -> tuple[str, str]:
    """The base attack trial and the one whose setting differs from it only in ``key``."""
    flat = _attack_settings(results)
    base = [i for i, f in flat.items() if f.get("model.lr") == 0.01 and f.get("model.weighting") == "uniform"
            and f.get("model.epochs") == 1 and f.get("model.data.image_size") == 32 and f.get("steps") == 2
            and f.get("eps") == pytest.approx(8 / 255) and f.get("step_size") == pytest.approx(2 / 255)
            and not f.get("random_start") and not f.get("paper_compat") and f.get("objective") == "sum"
            and "model.loss_options.depth_zbuffer.reduction" not in f]
    assert len(base) == 1, base
    b = flat[base[0]]
    found = []
    for i, f in flat.items():
        differ = {k for k in b.keys() | f.keys() if b.get(k) != f.get(k)}
        if differ and all(key in k.split(".") for k in differ):
            found.append(i)
    assert len(found) == 1, (key, found)
    return base[0], found[0]


@pytest.fixture(scope="module")
def boards(variants) -> dict[tuple[str, str], str]:
    """(board, format) -> the leaderboard's output: the default board and the eps and objective variants'."""
    out = {}
    for board, extra in {"default": (), **{k: v for k, v in BOARD.items()}}.items():
        for fmt in ("json", "csv", "table"):
            result = run_cli("report", "--out", str(variants), "--view", "leaderboard", "--format", fmt, *extra)
            assert result.returncode == 0, result.stderr[-3000:]
            out[(board, fmt)] = result.stdout
    return out


@pytest.mark.parametrize("key", KEYS)
def test_trials_differing_in_one_key_never_merge(variants, boards, key):
    """Two trials differing only in ``key`` are two settings: separate leaderboard rows, one seed each,
    in JSON and CSV (by setting id) and in the terminal (told apart by the differing key)."""
    base, other = _pair(variants, key)
    frames = load_frames(str(variants))
    sid = {r["id"]: r["setting_id"] for r in frames.trials.to_pylist()}
    assert sid[base] != sid[other]
    for board in ("default", key) if key in BOARD else ("default",):
        (rows,) = json.loads(boards[(board, "json")]).values()
        csv_text = boards[(board, "csv")]
        csv_rows = list(csv.DictReader(io.StringIO(csv_text)))
        assert len({r["setting_id"] for r in rows}) == len(rows) and all(r["seeds"] == 1 for r in rows)
        assert all(r["seeds"] == "1" for r in csv_rows) and len(csv_rows) == len(rows)
        wanted = {sid[other]} if board == key else {sid[base]} if key in BOARD else {sid[base], sid[other]}
        assert wanted <= {r["setting_id"] for r in rows} and wanted <= {r["setting_id"] for r in csv_rows}
        for r in rows:  # the attack that defines the board, in every row
            assert {"attack", "norm", "eps", "steps"} <= r.keys()
    if key not in BOARD:  # the terminal tells the rows apart by what differs
        names = [r["model"] for r in json.loads(boards[("default", "json")]).popitem()[1]]
        assert len(set(names)) == len(names)
        assert any(key in name for name in names) or key == "weighting"


def test_boards_name_their_attack_and_rank_models_that_learnt_first(boards):
    (title, rows), = json.loads(boards[("default", "json")]).items()
    assert "pgd-linf eps=8/255 (linf, steps=2,3)" in title
    tiers = [(r["main"], r["suspect"] or r["learnt"] is False) for r in rows]
    assert tiers == sorted(tiers)  # within the main task, every model that learnt before any that did not
    assert all("learnt" in r and "adv_err" in r for r in rows)


def test_per_encoder_and_table2_cells_come_from_one_setting(variants):
    frames = load_frames(str(variants))
    for section in paper.per_encoder(frames, Filters()):
        assert all(r["seeds"] == 1 for r in section.rows)
        assert len({r["model"] for r in section.rows}) == len(section.rows)
    tables = paper.table2(frames, Filters())
    assert tables
    for section in tables:
        assert "mean over 1 seed(s)" in section.note
        assert all(not isinstance(v, str) or v in ("d", "-", "uniform", "sum") for r in section.rows
                   for v in r.values())  # numbers: no refusal, no paper figure on synthetic data


def test_report_of_synthetic_trials_shows_no_paper_figure(variants):
    """Before: ResNet18 under pgd-linf 8/255 was enough for '0.0817 (paper 0.82)'."""
    result = run_cli("report", "--out", str(variants), "--view", "paper", "--format", "markdown")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Table 1" in result.stdout and not re.search(r"\(paper \d", result.stdout)
    assert "data.dataset=synthetic" in result.stdout and "differ from S1" in result.stdout
    forced = run_cli("report", "--out", str(variants), "--view", "paper", "--compare-paper", "--format", "markdown")
    assert forced.returncode == 0 and "forced)" in forced.stdout and "FORCED by --compare-paper" in forced.stdout


def test_an_upgraded_database_gets_the_setting_ids_the_store_writes(variants, tmp_path):
    """Schema 5: an older database (setting_id dropped) is read with the same ids, computed; a writer fills them."""
    import shutil

    db = tmp_path / "mtbench.db"
    for suffix in ("", "-wal", "-shm"):  # the database in WAL mode: its last writes may be in the -wal file
        if (variants / f"mtbench.db{suffix}").exists():
            shutil.copy(variants / f"mtbench.db{suffix}", tmp_path / f"mtbench.db{suffix}")
    with sqlite3.connect(db) as c:
        stored = dict(c.execute("select id, setting_id from trials"))
        c.execute("alter table trials drop column setting_id")
        c.execute("update mtbench_meta set value = '4' where key = 'schema_version'")
    assert all(stored.values())
    read = load_frames(str(db)).trials.to_pylist()
    assert {r["id"]: r["setting_id"] for r in read} == stored
    Store(f"sqlite:///{db}")  # a writer upgrades
    with sqlite3.connect(db) as c:
        assert dict(c.execute("select id, setting_id from trials")) == stored
        assert c.execute("select value from mtbench_meta where key = 'schema_version'").fetchone() == ("5",)


# ---------------------------------------------------------------- the paper's setting, at config level

def _preset_trials(name: str) -> tuple[dict, list[dict]]:
    from mtbench.grid import load_grid
    from mtbench.plugins import get_plugins

    grid = load_grid(REPO / "examples" / "paper" / f"{name}.toml", get_plugins())
    return ({t.id: t.config for t in grid.train_trials},
            [t.config for t in grid.trials if t.kind.value == "attack" and t.config.epoch is None])


def _nested(attack, models) -> dict:
    """What ``settings()`` makes of an attack trial: its setting, the model's nested."""
    out = setting_part("attack", attack.record())
    out["model"] = setting_part("train", models[attack.model].record())
    return out


def test_the_paper_figure_only_for_the_papers_setting():
    models, attacks = _preset_trials("s1")
    single = next(a for a in attacks if list(a.targets_codes) == ["s"] and models[a.model].codes == ("s",))
    assert paper.paper_differences(_nested(single, models), "S1") == []
    moved = single.model_copy(update={"data": single.data.model_copy(update={"root": "/elsewhere"})})
    assert paper.paper_differences(_nested(moved, models), "S1") == []  # where the data lie is not the setting
    fewer = single.model_copy(update={"steps": 10})
    assert paper.paper_differences(_nested(fewer, models), "S1") == ["steps=10"]
    assert "eps=0.0156862745098" in " ".join(paper.paper_differences(
        _nested(single.model_copy(update={"eps": 4 / 255}), models), "S1"))
    mini_models, mini_attacks = _preset_trials("s1-mini")
    diff = paper.paper_differences(_nested(mini_attacks[0], mini_models), "S1")
    assert "data.dataset=synthetic" in diff and "epochs=3" in diff and "steps=5" in diff
    pair = next(a for a in attacks if list(a.targets_codes) == ["s"] and models[a.model].codes == ("s", "d"))
    s4 = paper.paper_differences(_nested(pair, models), "S4")  # S1's uniform s+d is not S4's optimal one
    assert s4[:2] == ["weighting=uniform", "weights={'segment_semantic': 0.5, 'depth_zbuffer': 0.5}"]


def test_table1_shows_the_paper_figure_beside_trials_of_the_preset(tmp_path):
    """Trials with S1's own configurations (numbers made up) get '(paper 0.82)'; no footnote of differences."""
    models, attacks = _preset_trials("s1")
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    ids = {}
    for a in attacks:
        if list(a.targets_codes) == ["s"] and models[a.model].codes == ("s",):
            ids[a.model] = ids.get(a.model) or w.trial(models[a.model])
            w.trial(a.model_copy(update={"model": ids[a.model]}))
            tid = w.trials[-1]["id"]
            w.metric(tid, Phase.VULNERABILITY, "segment_semantic", "rel_vuln_ratio_of_means", 0.8, 25)
    w.flush()
    (single, *_) = [s for s in paper.table1(load_frames(str(tmp_path / "mtbench.db")), Filters())
                    if "single" in s.title]
    assert single.rows[0]["-"] == "0.8 (paper 0.82)" and "not shown" not in single.note


def test_a_cell_of_two_settings_is_refused_naming_the_keys(tmp_path):
    """Two s+d models both called 'uniform' but with other weights fall in one Table 1 cell: refused."""
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    s, d = "segment_semantic", "depth_zbuffer"
    for weights, v in (({s: 0.5, d: 0.5}, 0.6), ({s: 0.9, d: 0.1}, 0.2)):
        m = w.add_model({"s": s, "d": d}, {"s": 0.4, "d": 0.01}, weights=weights)
        w.add_attack(m, "s", {s: v})
    w.flush()
    tables = paper.table1(load_frames(str(tmp_path / "mtbench.db")), Filters())
    (single, *_) = [x for x in tables if "single" in x.title]
    cell = single.rows[0]["d"]
    assert cell.startswith("refused: 2 settings differ in model.weights.depth_zbuffer, model.weights.segment_semantic")
    assert "0.4" not in cell  # never the silent mean of 0.6 and 0.2


def test_leaderboard_ranks_models_that_did_not_learn_or_lack_valid_pixels_last(tmp_path):
    """A model no better than its constant predictor, or one whose task had no valid test pixel (clean
    error 0, suspect), ranks after a model that learnt, however small its v."""
    store = Store(f"sqlite:///{tmp_path / 'mtbench.db'}")
    w = ResultsWriter(store)
    d = "depth_zbuffer"
    good = w.add_model({"d": d}, {"d": 0.5}, const_err={"d": 0.8}, seed=0, epochs=1)
    flat = w.add_model({"d": d}, {"d": 0.79}, const_err={"d": 0.8}, seed=0, epochs=2)
    empty = w.add_model({"d": d}, {"d": 0.0}, const_err={"d": 0.0}, seed=0, epochs=3, suspect=True)
    for m, v in ((good, 0.9), (flat, 0.1), (empty, 0.0)):
        w.add_attack(m, "d", {d: v})
    w.flush()
    rows = leaderboard(load_frames(str(tmp_path / "mtbench.db")), Filters()).rows
    assert [(r["epochs"], r["learnt"], r["suspect"]) for r in rows] == [(1, True, False), (2, False, False),
                                                                         (3, False, True)]


def test_attack_checks_flag_a_task_without_valid_pixels():
    from mtbench.evaluate import _check_valid_pixels

    checks: dict = {}
    _check_valid_pixels(checks, {"segment_semantic": 120}, {"segment_semantic": None, "depth_zbuffer": None})
    assert checks["every_task_has_valid_pixels"] is False and checks["valid_test_pixels"]["depth_zbuffer"] == 0


def test_setting_id_replaces_parents_by_their_setting():
    models, attacks = _preset_trials("s1-mini")
    a = attacks[0]
    model = models[a.model]
    other_seed = model.model_copy(update={"seed": 7})
    parents = {a.model: setting_id("train", model, {}), other_seed.id: setting_id("train", other_seed, {})}
    assert parents[a.model] == parents[other_seed.id] and a.model != other_seed.id
    moved = a.model_copy(update={"model": other_seed.id, "seed": 7})
    assert setting_id("attack", a, parents) == setting_id("attack", moved, parents)
    assert setting_id("attack", a, parents) != setting_id("attack", a.model_copy(update={"steps": 9}), parents)


def test_paper_settings_file_is_current():
    """mtbench/report/data/paper_settings.json is what examples/paper/generate.py writes."""
    generate = runpy.run_path(str(REPO / "examples" / "paper" / "generate.py"))
    assert generate["PAPER_SETTINGS"].read_text() == generate["paper_settings"](), \
        "run `python examples/paper/generate.py`"
