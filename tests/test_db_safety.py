"""Databases are never harmed, through the command line as a user would meet it: reading commands
open a database read-only and create nothing; a foreign, corrupt or newer database is refused with
a message naming it and left byte for byte as it was; an older mtbench database is read as it is and
upgraded only by a writing command; a full disk at any write (database, checkpoint, Parquet mirror,
figures, report) ends with a message, exit 1 or 2, no traceback, and nothing stored lost.

The disk fills up through RLIMIT_FSIZE: writes past the limit fail with EFBIG (SIGXFSZ ignored)."""

from __future__ import annotations

import hashlib
import os
import random
import resource
import shutil
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import CPU_TINY_DATA, run_cli

from mtbench.storage import Store, export_parquet
from mtbench.storage.fixture import ResultsWriter
from mtbench.storage.schema import SCHEMA_VERSION

GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["{tasks}"]
epochs = 1
batch_size = 4

[[attack]]
name = "pgd-linf"
eps = ["{eps}"]
steps = 2
targets = "each"
"""


def write_grid(folder: Path, tasks: str = "d", eps: str = "8/255") -> Path:
    path = folder / f"grid-{tasks}-{eps.replace('/', '_')}.toml"
    path.write_text(GRID.format(tasks=tasks, eps=eps))
    return path


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A results folder from a real tiny run: a depth model trained and attacked, both done."""
    root = tmp_path_factory.mktemp("stored")
    result = run_cli("run", str(write_grid(root)), "--out", str(root / "results"))
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "results"


@pytest.fixture
def results(stored, tmp_path) -> Path:
    """A copy of ``stored`` with its WAL folded into the database file, so that the file alone is
    the database (its bytes can be compared) and a new write starts an empty WAL."""
    copy = tmp_path / "results"
    shutil.copytree(stored, copy)
    with sqlite3.connect(copy / "mtbench.db") as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    return copy


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(db: Path, sql: str) -> list:
    """Read through a read-only connection, so that looking changes nothing."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()


def done_trials(db: Path) -> list:
    return query(db, "SELECT t.id, count(m.trial_id) FROM trials t LEFT JOIN metrics m ON m.trial_id = t.id "
                     "WHERE t.status = 'done' GROUP BY t.id ORDER BY t.id")


def assert_intact(db: Path, before: list) -> None:
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert done_trials(db) == before


def assert_refused(result, code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout[-1000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for word in words:
        assert word in result.stderr, (word, result.stderr[-2000:])


def cli(template: str, **paths: Path) -> list[str]:
    """A command line from a template such as ``report --out {out}``."""
    return [arg.format(**paths) for arg in template.split()]


def disk_of(limit: int) -> Callable[[], None]:
    """preexec_fn: a disk that fills up after ``limit`` bytes of any one file."""
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limited


# ---------------------------------------------------------------- reading creates nothing

READERS = ["report --out {out}", "report {db}", "report --db sqlite:///{db}", "claims --out {out}",
           "export --out {out}", "run {grid} --dry-run --out {out}"]
WRITERS = ["run {grid} --out {out}", "worker {grid} --out {out}"]


def foreign_sqlite(path: Path) -> str:
    """Another program's SQLite file (rollback journal, one table); returns its digest."""
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
        c.execute("INSERT INTO photos VALUES (1, 'a.jpg')")
    c.close()
    return digest(path)


@pytest.mark.parametrize("command", READERS + WRITERS)
def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path, command):
    out = tmp_path / "results"
    db = out / "mtbench.db"
    before = foreign_sqlite(db)
    result = run_cli(*cli(command, out=out, db=db, grid=write_grid(tmp_path)))
    assert_refused(result, 2, str(db), "not an mtbench database", "photos")
    assert digest(db) == before
    assert sorted(p.name for p in out.iterdir()) == ["mtbench.db"]  # no -wal, -shm, parquet/ or checkpoints/


@pytest.mark.parametrize("command, words", [
    ("report --db sqlite:///{out}/typo.db", ["typo.db", "no such database file"]),
    ("report --db {out}/typo.db", ["typo.db", "no database"]),
    ("report --out {out}", ["no database"]),
    ("claims --db sqlite:///{out}/typo.db", ["typo.db", "no such database file"]),
    ("export --out {out}", ["mtbench.db", "no such database file"]),
])
def test_a_missing_database_is_not_created(tmp_path, command, words):
    out = tmp_path / "nowhere" / "results"
    assert_refused(run_cli(*cli(command, out=out)), 2, *words)
    assert not (tmp_path / "nowhere").exists()


def test_dry_run_on_a_new_folder_creates_nothing(tmp_path):
    out = tmp_path / "nowhere" / "results"
    result = run_cli(*cli("run {grid} --dry-run --out {out}", grid=write_grid(tmp_path), out=out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0 of 2 trials already done" in result.stdout
    assert not (tmp_path / "nowhere").exists()


def test_reports_read_an_old_database_as_it_is_and_run_upgrades_it(results, tmp_path):
    db = results / "mtbench.db"
    with sqlite3.connect(db) as c:  # what the previous mtbench made: no version table, no report index
        c.execute("DROP TABLE mtbench_meta")
        c.execute("DROP INDEX ix_metrics_phase_metric_trial")
    c.close()
    before, trials = digest(db), done_trials(db)
    report = run_cli("report", "--out", str(results), "--format", "csv", "--view", "leaderboard")
    assert report.returncode == 0 and "resnet18/d/uniform" in report.stdout, report.stderr[-2000:]
    assert digest(db) == before
    rerun = run_cli("run", str(write_grid(tmp_path)), "--out", str(results))
    assert rerun.returncode == 0 and "2 already done" in rerun.stderr, rerun.stderr[-2000:]
    assert query(db, "SELECT value FROM mtbench_meta") == [(str(SCHEMA_VERSION),)]
    assert query(db, "SELECT name FROM sqlite_master WHERE name = 'ix_metrics_phase_metric_trial'")
    assert_intact(db, trials)


# ---------------------------------------------------------------- corrupt and newer databases

def random_bytes(db: Path) -> None:
    db.write_bytes(random.Random(0).randbytes(db.stat().st_size))


def truncated(db: Path) -> None:
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


def newer(db: Path) -> None:
    with sqlite3.connect(db) as c:
        c.execute("UPDATE mtbench_meta SET value = '99' WHERE key = 'schema_version'")
    c.close()


@pytest.mark.parametrize("damage, words", [(random_bytes, ["corrupt", "not a database"]),
                                           (truncated, ["corrupt", "malformed"]),
                                           (newer, ["made by a newer mtbench", "schema version 99"])],
                         ids=["random bytes", "truncated", "newer schema"])
@pytest.mark.parametrize("command", ["report --out {out}", "run {grid} --out {out}"], ids=["report", "run"])
def test_a_corrupt_or_newer_database_is_refused_untouched(results, tmp_path, damage, words, command):
    db = results / "mtbench.db"
    damage(db)
    before = digest(db)
    result = run_cli(*cli(command, out=results, grid=write_grid(tmp_path)))
    assert_refused(result, 2, str(db), *words)
    assert digest(db) == before


# ---------------------------------------------------------------- a full disk at each write

def test_disk_full_while_storing_a_trial(results, tmp_path):
    """40 kB: the run record and the claim fit in the WAL, the attack trial's results do not."""
    db = results / "mtbench.db"
    before = done_trials(db)
    grid = write_grid(tmp_path, eps="4/255")  # one new attack on the stored model
    result = run_cli("run", str(grid), "--out", str(results), preexec_fn=disk_of(40_000))
    assert_refused(result, 2, str(db), "cannot write the database", "disk full")
    assert_intact(db, before)
    assert query(db, "SELECT status FROM trials WHERE id NOT IN (SELECT id FROM trials WHERE status = 'done')") \
        == [("running",)]  # claimed, its results rolled back; the next run takes it up again
    again = run_cli("run", str(grid), "--out", str(results))
    assert again.returncode == 0 and "1 trial(s) run" in again.stderr, again.stderr[-2000:]


def test_disk_full_while_saving_a_checkpoint(results, tmp_path):
    """1 MB: the database's writes fit, a ResNet18's 50 MB of weights do not."""
    db = results / "mtbench.db"
    before, checkpoints = done_trials(db), sorted(os.listdir(results / "checkpoints"))
    result = run_cli("run", str(write_grid(tmp_path, tasks="s")), "--out", str(results), preexec_fn=disk_of(2**20))
    assert_refused(result, 1, "cannot write the checkpoint", "File too large", "disk full")
    assert_intact(db, before)
    assert sorted(os.listdir(results / "checkpoints")) == checkpoints  # no half-written weights left behind
    assert query(db, "SELECT kind, status FROM trials WHERE status != 'done' ORDER BY kind") == \
        [("attack", "failed"), ("train", "failed")]


@pytest.mark.parametrize("command, limit, words", [
    ("report {out} --plots {tmp}/figures", 36_000, ["cannot write the figure", "/figures/", "disk full"]),
    ("report {out} --format html -o {tmp}/figures/report.html", 60_000, ["report.html", "cannot write the report"]),
], ids=["figures", "html report"])
def test_disk_full_while_writing_figures_or_a_report(results, tmp_path, command, limit, words):
    """Above 32 kB (SQLite's -shm file beside a WAL database must fit even to read it): 36 kB stops
    the first figure, 60 kB lets the figures through and stops the HTML report (100 kB)."""
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "report.html").write_text("the previous report")
    before = done_trials(results / "mtbench.db")
    result = run_cli(*cli(command, out=results, tmp=tmp_path), preexec_fn=disk_of(limit))
    assert_refused(result, 2, *words)
    assert_intact(results / "mtbench.db", before)
    assert (figures / "report.html").read_text() == "the previous report"
    assert not [p for p in figures.iterdir() if p.suffix in (".svg", ".png") or p.name.startswith(".")]  # no partial


def test_disk_full_while_exporting_parquet(tmp_path):
    """The mirror is written whole or not at all: 40 kB stops samples.parquet (random values, 230 kB)."""
    out = tmp_path / "results"
    store = Store(f"sqlite:///{out / 'mtbench.db'}")
    writer = ResultsWriter(store)
    add_results(writer, seeds=range(2))
    mirror = {p.name: digest(p) for p in export_parquet(store, out / "parquet")}
    add_results(writer, seeds=[2])  # the mirror is now out of date: a successful export would change it
    store.engine.dispose()
    before = done_trials(out / "mtbench.db")
    result = run_cli("export", "--out", str(out), preexec_fn=disk_of(40_000))
    assert_refused(result, 2, "samples.parquet", "cannot write the Parquet mirror", "disk full")
    assert {p.name: digest(p) for p in (out / "parquet").iterdir()} == mirror
    assert_intact(out / "mtbench.db", before)


def add_results(writer: ResultsWriter, seeds) -> None:
    """Made-up models and attacks with 5,000 per-sample errors each (random, so Parquet cannot shrink them)."""
    for seed in seeds:
        rng = random.Random(seed)
        model = writer.add_model({"d": "depth_zbuffer"}, {"d": 0.1}, seed=seed)
        errors = [rng.random() for _ in range(5_000)]
        writer.add_attack(model, "d", {"depth_zbuffer": 0.5}, errors={"depth_zbuffer": (errors, errors[::-1])})
    writer.flush()
