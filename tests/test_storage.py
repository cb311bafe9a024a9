"""The store on SQLite and on PostgreSQL: claims are atomic, results land in one transaction,
stale trials come back, reports and the Parquet mirror read either."""

from __future__ import annotations

import threading

from mtbench.report import Filters, leaderboard, load_frames
from mtbench.storage import Store, export_parquet
from mtbench.storage.db import TrialResult
from mtbench.storage.fixture import ResultsWriter


def test_claim_finish_fail_release(db_url):
    store = Store(db_url)
    run = store.begin_run("t", "grid.toml", "", "0")
    assert store.claim("a", "train", "a", {"seed": 0}, None, run, "0")
    assert not store.claim("a", "train", "a", {"seed": 0}, None, run, "0")  # held
    store.finish("a", TrialResult(metrics=[{"split": "test", "phase": "clean", "task": "t", "attacked": None,
                                            "metric": "error", "step": 0, "value": 0.5}]), 1.0)
    assert not store.claim("a", "train", "a", {"seed": 0}, None, run, "0")  # done
    assert store.claim("b", "train", "b", {"seed": 0}, None, run, "0")
    store.fail("b", "boom")
    assert store.claim("b", "train", "b", {"seed": 0}, None, run, "0")  # a failed trial may run again
    store.release("b")
    assert store.statuses(["a", "b"]) == {"a": "done", "b": "pending"}
    assert store.trial("b")["attempts"] == 2


def test_concurrent_claims_have_one_winner(db_url):
    store = Store(db_url)
    run = store.begin_run("t", "grid.toml", "", "0")
    for trial in ("x", "y"):
        if trial == "y":  # an existing pending trial: the conditional update path
            store.claim("y", "attack", "y", {}, None, run, "0")
            store.release("y")
        wins = []
        barrier = threading.Barrier(8)

        def contend(trial=trial):
            barrier.wait()
            wins.append(Store(db_url).claim(trial, "attack", trial, {}, None, run, "0"))

        threads = [threading.Thread(target=contend) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wins.count(True) == 1, (trial, wins)


def test_stale_trials_come_back(db_url):
    store = Store(db_url)
    run = store.begin_run("t", "grid.toml", "", "0")
    store.claim("z", "train", "z", {}, None, run, "0")
    from sqlalchemy import update

    from mtbench.storage.schema import trials

    with store.engine.begin() as c:  # a worker on another machine whose heartbeat stopped long ago
        c.execute(update(trials).where(trials.c.id == "z").values(worker="elsewhere:123", heartbeat_at=0.0))
    assert store.reset_stale(stale_after_s=60) == ["z"]
    assert store.statuses(["z"]) == {"z": "pending"}


def test_reports_and_parquet_from_either_database(db_url, tmp_path):
    store = Store(db_url)
    w = ResultsWriter(store)
    s = w.add_model({"s": "segment_semantic"}, {"s": 0.5})
    sd = w.add_model({"s": "segment_semantic", "d": "depth_zbuffer"}, {"s": 0.4, "d": 0.01})
    w.add_attack(s, "s", {"segment_semantic": 0.8})
    w.add_attack(sd, "s", {"segment_semantic": 0.6, "depth_zbuffer": 0.1})
    w.flush()
    rows = leaderboard.leaderboard(load_frames(db_url), Filters()).rows
    assert [(r["model"], r["v"]) for r in rows] == [("resnet18/sd/uniform", 0.6), ("resnet18/s/uniform", 0.8)]
    export_parquet(store, tmp_path / "parquet")
    assert leaderboard.leaderboard(load_frames(str(tmp_path / "parquet")), Filters()).rows == rows
