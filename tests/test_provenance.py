"""Provenance: every finished trial stores the versions that can change its numbers (mtbench, torch,
torchvision, CUDA, the device, plugin distributions); reports show them; a rerun over trials made with
other versions says which and what differs, and leaves them as they are; older databases are read
as they are (versions unknown) and upgraded by the first write."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import TINY_GRID, run_cli
from rich.console import Console

from mtbench import provenance
from mtbench.storage import Store
from mtbench.storage.schema import SCHEMA_VERSION

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[Path, Path]:
    """(grid, results folder) of a real tiny run: a depth model trained on CPU and attacked."""
    root = tmp_path_factory.mktemp("provenance")
    grid = root / "grid.toml"
    grid.write_text(TINY_GRID.format(task_sets='["d"]'))
    result = run_cli("run", str(grid), "--out", str(root / "results"))
    assert result.returncode == 0, result.stderr[-3000:]
    return grid, root / "results"


@pytest.fixture
def results(stored, tmp_path) -> Path:
    """A copy of the stored results, its WAL folded in, so that its file can be changed and compared."""
    copy = tmp_path / "results"
    shutil.copytree(stored[1], copy)
    with sqlite3.connect(copy / "mtbench.db") as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    return copy


def rows(db: Path, sql: str, *args) -> list:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def running_versions() -> dict:
    """The versions a CPU run in this environment records (torch imported, as in a worker)."""
    import torch  # noqa: F401  (its CUDA build is read only where it is imported)

    return provenance.current("cpu")


# ---------------------------------------------------------------- the versions themselves

def test_differences_name_what_changed_and_skip_what_is_not_known_now():
    old = {"mtbench": "0.1.0", "torch": "2.4.0", "torchvision": "0.19.0", "cuda": None, "device": "cpu",
           "plugins": {"mtbench-foo": "1.0", "gone": "2"}}
    new = {**old, "torch": "2.5.1", "cuda": "12.1", "plugins": {"mtbench-foo": "1.1", "added": "3"}}
    assert provenance.describe(provenance.differences(old, new)) == \
        "torch 2.4.0 -> 2.5.1, cuda none -> 12.1, added none -> 3, gone 2 -> none, mtbench-foo 1.0 -> 1.1"
    assert provenance.differences(old, old) == []
    unknown_device = {k: v for k, v in old.items() if k != "device"}
    assert provenance.differences({**old, "device": "NVIDIA H100"}, unknown_device) == []
    assert provenance.loads(provenance.dumps(new)) == new and provenance.loads(None) is None


def test_reading_the_versions_imports_no_torch():
    code = ("import sys; from mtbench import provenance; import mtbench.report.made_with; v = provenance.current(); "
            "assert 'torch' not in sys.modules, 'torch imported'; assert 'cuda' not in v and v['torch']; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# ---------------------------------------------------------------- a real run

def test_every_finished_trial_stores_the_running_versions(stored):
    db = stored[1] / "mtbench.db"
    found = rows(db, "SELECT id, status, versions FROM trials")
    assert len(found) == 2 and all(status == "done" for _, status, _ in found)
    expected = running_versions()
    assert expected["device"] == "cpu" and expected["torch"] and "cuda" in expected
    for tid, _, text in found:
        assert json.loads(text) == expected, tid


def test_the_parquet_mirror_carries_the_versions(stored):
    table = pq.read_table(stored[1] / "parquet" / "trials.parquet")
    assert table.schema.field("versions").type == "string"
    mirrored = dict(zip(table["id"].to_pylist(), table["versions"].to_pylist()))
    assert mirrored == dict(rows(stored[1] / "mtbench.db", "SELECT id, versions FROM trials"))


def test_the_report_shows_what_the_results_were_made_with(stored, tmp_path):
    v = running_versions()
    line = f"Made with mtbench {v['mtbench']}, torch {v['torch']}, torchvision {v['torchvision']}, " \
           f"cuda {v['cuda'] or 'none'}, device cpu"
    text = run_cli("report", "--out", str(stored[1]))
    assert text.returncode == 0, text.stderr[-2000:]
    assert line in text.stdout and "(2 done trials)" in text.stdout, text.stdout[-2000:]
    for source in (str(stored[1]), str(stored[1] / "parquet")):  # the database and its mirror
        markdown = run_cli("report", source, "--format", "markdown").stdout
        assert f"### Made with\n\n| trials | versions |\n|---|---|\n| 2 | {line.removeprefix('Made with ')} |" \
            in markdown, markdown[-2000:]
    assert "Made with" not in run_cli("report", str(stored[1]), "--format", "json").stdout  # its shape is kept
    page = tmp_path / "report.html"
    html = run_cli("report", "--out", str(stored[1]), "--format", "html", "-o", str(page))
    assert html.returncode == 0, html.stderr[-2000:]
    assert "<b>Made with</b> " + line.removeprefix("Made with ") in page.read_text()


def test_a_rerun_names_the_trials_made_with_other_versions_and_leaves_them(stored, results):
    db = results / "mtbench.db"
    (tid, label, text), other = rows(db, "SELECT id, label, versions FROM trials ORDER BY kind DESC")
    changed = {**json.loads(text), "torch": "0.0.1-old"}
    with sqlite3.connect(db) as c:
        c.execute("UPDATE trials SET versions = ? WHERE id = ?", (json.dumps(changed), tid))
    c.close()
    now = running_versions()

    def check(stderr: str) -> None:
        assert "1 of the 2 done trials of this grid were made with other versions" in stderr, stderr[-3000:]
        assert f"torch 0.0.1-old -> {now['torch']}: {tid[:8]} {label}" in stderr, stderr[-3000:]
        assert other[0][:8] not in stderr

    # a reader, as --dry-run opens the database: the warning, and not a byte changed
    before = digest(db)
    console = Console(file=io.StringIO(), width=300)
    from mtbench.grid import load_grid
    from mtbench.plugins import get_plugins
    from mtbench.runner import warn_other_versions

    warn_other_versions(load_grid(stored[0], get_plugins()), Store(f"sqlite:///{db}", read_only=True), console)
    check(console.file.getvalue())
    assert digest(db) == before

    rerun = run_cli("run", str(stored[0]), "--out", str(results))
    assert rerun.returncode == 0 and "0 trial(s) run, 2 already done" in rerun.stderr, rerun.stderr[-3000:]
    check(rerun.stderr)
    assert json.loads(rows(db, "SELECT versions FROM trials WHERE id = ?", tid)[0][0]) == changed  # kept

    report = run_cli("report", "--out", str(results), "--format", "markdown").stdout
    for torch in ("0.0.1-old", now["torch"]):
        assert f"| 1 | {now['mtbench']} | {torch} | {now['torchvision']} |" in report, report[-2000:]
    assert "2 different sets of versions" in report


# ---------------------------------------------------------------- an older database

def test_an_older_database_is_read_as_it_is_and_upgraded_on_the_first_write(tmp_path):
    db = tmp_path / "results" / "mtbench.db"
    db.parent.mkdir()
    shutil.copy(DATA / "previous-version.db", db)
    before = digest(db)
    trials = rows(db, "SELECT id, status FROM trials ORDER BY id")
    metrics = rows(db, "SELECT count(*) FROM metrics")
    assert "versions" not in {r[1] for r in rows(db, "PRAGMA table_info(trials)")}

    report = run_cli("report", "--out", str(db.parent), "--format", "markdown")
    assert report.returncode == 0, report.stderr[-2000:]
    assert f"| {len(trials)} | unknown (stored before mtbench recorded versions) |" in report.stdout
    reader = Store(f"sqlite:///{db}", read_only=True)
    assert set(reader.versions().values()) == {(label, None) for (label,) in rows(db, "SELECT label FROM trials")}
    reader.engine.dispose()
    assert digest(db) == before  # read as it is: not a byte changed

    Store(f"sqlite:///{db}").engine.dispose()  # a writer opens it: the upgrade
    assert rows(db, "SELECT value FROM mtbench_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert "versions" in {r[1] for r in rows(db, "PRAGMA table_info(trials)")}
    assert rows(db, "SELECT count(*) FROM metrics") == metrics
    assert sorted(rows(db, "SELECT status FROM trials")) == sorted((s,) for _, s in trials)
    assert rows(db, "SELECT count(*) FROM trials WHERE versions IS NOT NULL") == [(0,)]  # unknown, not made up
