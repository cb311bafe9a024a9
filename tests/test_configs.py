"""Typed trial configurations and the trial-id policy (mtbench.configs), against a database written by
the previous version of mtbench (tests/data/previous-version.db, made by its `mtbench run` of
tests/data/previous-version.toml)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import run_cli

from mtbench.configs import CONFIG_TYPES, AttackConfig, Role, TrialKind, added, parse_config, setting_id
from mtbench.errors import MtbenchError
from mtbench.grid import load_grid
from mtbench.runner import EXECUTORS, executor_for
from mtbench.storage.opening import SCHEMA_VERSION

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def grid(plugins):
    return load_grid(DATA / "previous-version.toml", plugins)


def attack_of(grid) -> AttackConfig:
    return next(t.config for t in grid.trials if t.kind is TrialKind.ATTACK)


def test_execution_keys_leave_the_id_and_identity_keys_change_it(grid):
    config = attack_of(grid)
    assert config.model_copy(update={"batch_size": 64, "trace": False}).id == config.id
    assert config.model_copy(update={"eps": config.eps / 2}).id != config.id
    assert config.model_copy(update={"steps": config.steps + 1}).id != config.id


def test_seeds_change_the_id_but_not_the_setting(grid):
    train = grid.train_trials[0].config
    def setting(config) -> str:
        return setting_id("train", config, {})

    other = train.model_copy(update={"seed": 7})
    assert other.id != train.id and setting(other) == setting(train)
    data = train.data.model_copy(update={"seed": 3})  # the seed of generated data is a seed too
    assert setting(train.model_copy(update={"data": data})) == setting(train)
    assert setting(train.model_copy(update={"lr": train.lr * 10})) != setting(train)


def test_a_new_key_at_its_default_keeps_every_id(grid):
    class Extended(AttackConfig):
        new_option: int = added(0, "a key a later version adds")

    config = attack_of(grid)
    extended = Extended(**config.model_dump())
    assert extended.id == config.id
    assert Extended(**config.model_dump(), new_option=1).id != config.id


def test_every_field_has_a_role():
    roles = {r.value for r in Role}
    for config_type in CONFIG_TYPES.values():
        for name, info in config_type.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            assert extra.get("role", Role.IDENTITY.value) in roles, (config_type.__name__, name)


def test_stored_configs_read_back_typed(grid):
    for trial in grid.trials:
        again = parse_config(trial.kind, trial.config.record())
        assert again == trial.config and again.id == trial.id


def test_every_kind_has_an_executor_and_an_unknown_kind_is_an_error():
    assert set(EXECUTORS) == set(TrialKind)
    assert all(callable(executor_for(kind)) for kind in TrialKind)
    with pytest.raises(MtbenchError, match="no executor for trials of kind 'defence'"):
        executor_for("defence")


def as_before_revisions(config):
    """A training config as it was before the encoders' and the datasets' revisions were keys."""
    config = parse_config(config.kind, config.record())
    return config.model_copy(update={"architecture": "", "data": config.data.model_copy(update={"revision": ""})})


def test_the_synthetic_generators_version_is_part_of_a_trial_id(grid):
    """Data of another generator version is other data: its models are other models (and a results folder
    made with an older generator does not take its models for today's), while a real dataset's
    trials keep the ids they had."""
    from mtbench.data.synthetic import SynthConfig

    trial = grid.train_trials[0]
    assert trial.config.data.dataset == "synthetic" and trial.config.data.revision == f"v{SynthConfig.version}"
    other = trial.config.model_copy(update={"data": trial.config.data.model_copy(update={"revision": "v3"})})
    assert len({trial.id, other.id, as_before_revisions(trial.config).id}) == 3
    assert trial.config.identity()["data"]["revision"] == f"v{SynthConfig.version}"
    real = trial.config.data.model_copy(update={"dataset": "taskonomy", "revision": ""})  # its plugin's revision
    assert "revision" not in real.identity()


def test_a_database_of_the_previous_version_keeps_its_done_trials(grid, tmp_path):
    """Its trials are kept, re-keyed once; its models, made with the decoders' former layers, are not
    taken for today's (the encoders' revision is in the id): the grid trains new ones beside them."""
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(DATA / "previous-version.db", results / "mtbench.db")
    with sqlite3.connect(results / "mtbench.db") as c:
        before = dict(c.execute("select id, status from trials").fetchall())
        rows = c.execute("select count(*) from metrics").fetchone()[0]
    train_ids = {t.id for t in grid.train_trials}
    assert not train_ids & set(before), "a model of other layers would be taken for today's"
    assert {as_before_revisions(t.config).id for t in grid.train_trials} <= set(before), \
        "the old training trials' ids changed"

    result = run_cli("run", str(DATA / "previous-version.toml"), "--out", str(results))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(grid.trials)} trial(s) run, 0 already done" in result.stderr
    with sqlite3.connect(results / "mtbench.db") as c:
        after = dict(c.execute("select id, status from trials").fetchall())
        assert c.execute("select count(*) from metrics").fetchone()[0] > rows
        assert c.execute("select value from mtbench_meta where key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),)
        orphans = c.execute("select count(*) from metrics where trial_id not in (select id from trials)").fetchone()
        assert orphans == (0,)
    kept = {i: s for i, s in after.items() if i not in {t.id for t in grid.trials}}
    assert sorted(kept.values()) == sorted(before.values()) and set(train_ids) - set(before) <= set(after)
    assert all(after[t.id] == "done" for t in grid.trials)


MAIN_IDS_BEFORE_DEFENCES = {  # computed on main at 1e2e6b5, before [train] defense existed (synthetic data v4)
    "train resnet18 [s] uniform": "ec2a4214289925e7",
    "train resnet18 [s+d] uniform": "61a1b0650c6ea19d",
    "attack pgd-linf eps=0.03137 steps=2 on [d] of 61a1b065": "64c78259443b1229",
    "gradient analysis of 61a1b065 (adversarial points: pgd-linf eps=0.03137)": "b1fd246275f494e3",
}


def test_a_grid_without_a_defence_keeps_the_ids_it_had(plugins, monkeypatch):
    """TrainConfig.defense is an added field: at its default (none, no options) it is not in the id. The
    ids above were computed at synthetic data v4, so the grid is read at that revision here (a newer
    generator changes synthetic-data ids on purpose: test_the_synthetic_generators_version_is_part_...)."""
    import mtbench.grid

    monkeypatch.setattr(mtbench.grid, "_data_revision", lambda g, plugins: "v4")
    grid = load_grid(DATA / "previous-version.toml", plugins)
    ids = {t.label(): t.id for t in grid.trials}
    assert {label: ids[label] for label in MAIN_IDS_BEFORE_DEFENCES} == MAIN_IDS_BEFORE_DEFENCES
    train = grid.train_trials[1].config
    assert train.defense.name == "none" and "defense" not in train.identity()
    defended = train.model_copy(update={"defense": train.defense.model_copy(update={"name": "pgd-at"})})
    assert defended.id != train.id and defended.identity()["defense"] == {"name": "pgd-at", "options": {}}
    assert setting_id("train", defended, {}) != setting_id("train", train, {})
    assert parse_config("train", defended.record()) == defended
