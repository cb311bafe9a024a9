"""The store on SQLite and on PostgreSQL: claims are atomic, results land in one transaction,
stale trials come back, reports and the Parquet mirror read either; opening never harms a database
(readers create nothing and cannot write, foreign and newer ones are refused, older ones upgraded by writers)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, inspect

from mtbench.errors import MtbenchError
from mtbench.records import MetricRow, Phase, TrialResult
from mtbench.report import Filters, leaderboard, load_frames
from mtbench.storage import DatabaseMissing, Store, export_parquet
from mtbench.storage.fixture import ResultsWriter
from mtbench.storage.opening import sqlite_path
from mtbench.storage.schema import SCHEMA_VERSION


def test_claim_finish_fail_release(db_url):
    store = Store(db_url)
    run = store.begin_run("t", "grid.toml", "", "0")
    assert store.claim("a", "train", "a", {"seed": 0}, None, run, "0")
    assert not store.claim("a", "train", "a", {"seed": 0}, None, run, "0")  # held
    store.finish("a", TrialResult(metrics=[MetricRow(Phase.CLEAN, "t", "error", 0.5)]), 1.0)
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

        def contend(trial=trial, barrier=barrier, wins=wins):
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


# ---------------------------------------------------------------- opening safely, schema versions

@contextmanager
def _inspector(url: str) -> Iterator:
    """SQLAlchemy's inspector on a plain engine, as another program would look."""
    engine = create_engine(url)
    try:
        yield inspect(engine)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    """The database's tables, looked at without creating it (a missing SQLite file stays missing)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return set()
    with _inspector(url) as inspector:
        return set(inspector.get_table_names())


def _sql(url: str, *statements: str) -> list:
    """Run statements with a plain engine, as another program would; the last one's rows."""
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            rows = [c.exec_driver_sql(s) for s in statements][-1]
            return rows.all() if rows.returns_rows else []
    finally:
        engine.dispose()


@pytest.fixture
def foreign_db(db_url):
    """Another program's database: one table of its own, one row."""
    _sql(db_url, "CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)", "INSERT INTO photos VALUES (1, 'a.jpg')")
    yield db_url
    _sql(db_url, "DROP TABLE IF EXISTS photos")


def test_a_reader_creates_nothing_and_cannot_write(db_url):
    with pytest.raises(DatabaseMissing):
        Store(db_url, read_only=True)
    assert _tables(db_url) == set()
    Store(db_url)  # a writer creates the schema
    reader = Store(db_url, read_only=True)
    with pytest.raises(MtbenchError, match="read-only|readonly"):  # refused by SQLite or by the server
        reader.begin_run("t", "grid.toml", "", "0")
    assert Store(db_url).latest_run() is None


@pytest.mark.parametrize("read_only", [True, False], ids=["reader", "writer"])
def test_a_foreign_database_is_refused_untouched(foreign_db, read_only):
    with pytest.raises(MtbenchError, match="not an mtbench database .*photos"):
        Store(foreign_db, read_only=read_only)
    assert _tables(foreign_db) == {"photos"}
    assert _sql(foreign_db, "SELECT * FROM photos") == [(1, "a.jpg")]


def test_schema_versions_newer_refused_older_read_then_upgraded(db_url):
    version = "SELECT value FROM mtbench_meta WHERE key = 'schema_version'"
    Store(db_url)
    assert _sql(db_url, version) == [(str(SCHEMA_VERSION),)]
    _sql(db_url, "UPDATE mtbench_meta SET value = '99'")
    for read_only in (True, False):
        with pytest.raises(MtbenchError, match="made by a newer mtbench"):
            Store(db_url, read_only=read_only)
    assert _sql(db_url, version) == [("99",)]

    _sql(db_url, "DROP TABLE mtbench_meta", "DROP INDEX ix_metrics_phase_metric_trial")  # as version 1 made it
    assert Store(db_url, read_only=True).statuses() == {}  # read as it is ...
    assert "mtbench_meta" not in _tables(db_url)  # ... and never migrated by a reader
    _sql(db_url, "ALTER TABLE trials DROP COLUMN checks")  # older still: lacks a column this version reads
    with pytest.raises(MtbenchError, match="lacks trials.checks.*mtbench run"):
        Store(db_url, read_only=True)

    Store(db_url)  # a writer upgrades it in place
    assert _sql(db_url, version) == [(str(SCHEMA_VERSION),)]
    with _inspector(db_url) as inspector:
        assert "checks" in {c["name"] for c in inspector.get_columns("trials")}
        assert "ix_metrics_phase_metric_trial" in {i["name"] for i in inspector.get_indexes("metrics")}
    assert Store(db_url, read_only=True).statuses() == {}


def test_versions_are_stored_read_by_old_readers_as_null_and_added_by_an_upgrade(db_url, tmp_path):
    """Schema 4 added trials.versions: a database of schema 3 (without it) is read as it is, its trials'
    versions unknown; a writer adds the column, keeps every trial, and stores versions from then on."""
    store = Store(db_url)
    run = store.begin_run("t", "grid.toml", "", "0")
    store.claim("old", "train", "old", {"seed": 0}, None, run, "0")
    store.finish("old", TrialResult(metrics=[MetricRow(Phase.CLEAN, "t", "error", 0.5)]), 1.0)
    store.engine.dispose()
    _sql(db_url, "ALTER TABLE trials DROP COLUMN versions", "UPDATE mtbench_meta SET value = '3'")

    reader = Store(db_url, read_only=True)  # an older database: read, not refused, not upgraded
    assert reader.absent == {"trials.versions"}
    assert reader.versions() == {"old": ("old", None)}
    assert reader.trial("old")["versions"] is None and reader.trial("old")["status"] == "done"
    assert load_frames(db_url).trials["versions"].to_pylist() == [None]
    export_parquet(reader, tmp_path / "old")
    import pyarrow.parquet as pq

    assert pq.read_schema(tmp_path / "old" / "trials.parquet").field("versions").type == "string"
    reader.engine.dispose()
    with _inspector(db_url) as inspector:
        assert "versions" not in {c["name"] for c in inspector.get_columns("trials")}
    assert _sql(db_url, "SELECT value FROM mtbench_meta") == [("3",)]

    writer = Store(db_url)  # upgrades: adds the column, nothing lost
    assert _sql(db_url, "SELECT value FROM mtbench_meta") == [(str(SCHEMA_VERSION),)] and SCHEMA_VERSION >= 4
    versions = {"mtbench": "9.9", "torch": "2.5.1", "plugins": {"mtbench-foo": "1.0"}}
    writer.claim("new", "train", "new", {"seed": 1}, None, run, "0")
    writer.finish("new", TrialResult(metrics=[MetricRow(Phase.CLEAN, "t", "error", 0.25)]), 1.0, versions)
    assert writer.versions() == {"old": ("old", None), "new": ("new", versions)}
    assert _sql(db_url, "SELECT count(*) FROM metrics") == [(2,)]
    writer.engine.dispose()
