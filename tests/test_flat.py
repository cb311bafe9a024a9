"""The flat results table: one row per (trial, task, metric), read back against the stored rows of real
tiny trials, with a schema that does not depend on the data."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.compute as pc
import pyarrow.parquet as pq

from mtbench.report.flat import RESULTS_SCHEMA, results_table
from mtbench.report.frames import load_frames


def _stored(results, query: str) -> list[tuple]:
    with sqlite3.connect(results / "mtbench.db") as c:
        return c.execute(query).fetchall()


def test_every_attack_row_holds_the_stored_values_and_its_models_settings(real_results):
    table = results_table(load_frames(str(real_results)))
    assert table.schema == RESULTS_SCHEMA
    rows = table.to_pylist()
    configs = {tid: (kind, json.loads(c)) for tid, kind, c in
               _stored(real_results, "select id, kind, config from trials where status = 'done'")}
    value = {(t, p, task, m): v for t, p, task, m, v in _stored(
        real_results, "select trial_id, phase, task, metric, value from metrics "
                      "where phase in ('clean', 'adv', 'vulnerability', 'baseline')")}
    attacks = [tid for tid, (kind, _) in configs.items() if kind == "attack"]
    assert attacks
    for tid in attacks:
        config = configs[tid][1]
        model = configs[config["model"]][1]
        errors = [r for r in rows if r["trial_id"] == tid and r["metric"] == "error"]
        assert sorted(r["task"] for r in errors) == sorted(model["tasks"])  # one row per task of the model
        for r in errors:
            task = r["task"]
            assert r["clean"] == value[(tid, "vulnerability", task, "error_clean")]
            assert r["adv"] == value[(tid, "vulnerability", task, "error_adv")]
            assert r["rel_vuln"] == value[(tid, "vulnerability", task, "rel_vuln_ratio_of_means")]
            assert r["delta_loss"] == value[(tid, "vulnerability", task, "delta_loss")]
            assert r["constant"] == value[(config["model"], "baseline", task, "error")]
            assert r["attacked"] == (task in config["targets"])
            assert (r["encoder"], r["tasks"], r["seed"], r["epochs"], r["lr"]) == \
                (model["encoder"], model["tasks"], model["seed"], model["epochs"], model["lr"])
            assert (r["attack"], r["eps"], r["steps"], r["attacked_tasks"]) == \
                (config["attack"], config["eps"], config["steps"], config["targets"])
        losses = [r for r in rows if r["trial_id"] == tid and r["metric"] == "loss"]
        assert {r["task"]: r["adv"] for r in losses} == {t: value[(tid, "adv", t, "loss")] for t in model["tasks"]}


def test_training_rows_hold_clean_metrics_beside_the_constant_predictor(real_results):
    table = results_table(load_frames(str(real_results)))
    train = table.filter(pc.equal(table["kind"], "train")).to_pylist()
    stored = {(t, task, m): v for t, task, m, v in _stored(
        real_results, "select trial_id, task, metric, value from metrics where phase = 'clean'")}
    assert train and all(r["adv"] is None and r["attack"] is None and r["model_id"] == r["trial_id"] for r in train)
    assert all(r["clean"] == stored[(r["trial_id"], r["task"], r["metric"])] for r in train)
    assert {r["metric"] for r in train} >= {"error", "loss"}


def test_the_mirrors_results_parquet_is_the_same_table_with_the_same_schema(real_results):
    from_db = results_table(load_frames(str(real_results)))
    mirrored = pq.read_table(real_results / "parquet" / "results.parquet")
    assert mirrored.schema.equals(RESULTS_SCHEMA)
    assert str(mirrored.schema.field("finished_at").type) == "timestamp[us, tz=UTC]"
    key = [("trial_id", "ascending"), ("task", "ascending"), ("metric", "ascending")]
    assert mirrored.sort_by(key).equals(from_db.sort_by(key))


def test_an_empty_store_gives_the_same_columns_and_types(tmp_path):
    from mtbench.storage import Store, default_url

    Store(default_url(tmp_path))  # creates an empty database
    table = results_table(load_frames(str(tmp_path)))
    assert table.num_rows == 0 and table.schema == RESULTS_SCHEMA
