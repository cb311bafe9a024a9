"""mtbench never deletes or alters a file or folder it did not create: folders given as a synthetic
dataset's root are replaced only if they carry mtbench's marker; outputs the user names are written
as asked (a named file replaced, a named folder written into, never cleared)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import CPU_TINY_DATA, run_cli

from mtbench.data.synthetic import SynthConfig, generate, is_synthetic_folder
from mtbench.errors import DataError

GRID = CPU_TINY_DATA + """{data}
[train]
encoders = ["resnet18"]
task_sets = ["d"]
epochs = 1
batch_size = 4
[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
"""


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def papers(tmp_path) -> Path:
    folder = tmp_path / "papers"
    (folder / "2022").mkdir(parents=True)
    (folder / "2022" / "ghamizi.pdf").write_bytes(b"%PDF-1.7 the paper")
    (folder / "notes.txt").write_text("do not lose me")
    return folder


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stored")
    (root / "grid.toml").write_text(GRID.format(data=""))
    assert run_cli("run", str(root / "grid.toml"), "--out", str(root / "results")).returncode == 0
    return root / "results"


def assert_refused(result, folder: Path) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert str(folder) in result.stderr and "not a synthetic dataset made by mtbench" in result.stderr, result.stderr


def test_data_synth_refuses_a_users_folder(papers):
    before = fingerprint(papers)
    result = run_cli("data", "synth", "--out", str(papers), "--samples", "2", "--test-samples", "1", "--size", "16")
    assert_refused(result, papers)
    assert fingerprint(papers) == before


def test_run_refuses_a_users_folder_as_dataset_root_before_any_write(papers, tmp_path):
    before = fingerprint(papers)
    (tmp_path / "grid.toml").write_text(GRID.format(data=f'root = "{papers}"'))
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "results"))
    assert_refused(result, papers)
    assert fingerprint(papers) == before
    assert not (tmp_path / "results").exists(), "the refused run still created its results folder"


def test_run_refuses_the_results_folder_as_dataset_root(stored, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(stored, results)
    before = fingerprint(results)
    (tmp_path / "grid.toml").write_text(GRID.format(data=f'root = "{results}"'))
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(results))
    assert_refused(result, results)
    assert fingerprint(results) == before
    with sqlite3.connect(results / "mtbench.db") as c:
        assert c.execute("pragma integrity_check").fetchone() == ("ok",)


def test_a_file_as_dataset_root_is_refused(tmp_path):
    target = tmp_path / "thesis.tex"
    target.write_text("\\chapter{}")
    (tmp_path / "grid.toml").write_text(GRID.format(data=f'root = "{target}"'))
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "results"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{target}: exists and is not a folder" in result.stderr
    assert target.read_text() == "\\chapter{}"


def test_mtbench_replaces_its_own_dataset_and_writes_into_an_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    generate(empty, SynthConfig(size=16, train=2, test=1, seed=0), workers=1)
    assert is_synthetic_folder(empty)
    generate(empty, SynthConfig(size=16, train=3, test=1, seed=1), workers=1)  # its own: replaced
    assert (empty / "synthetic.json").read_text().count('"seed": 1') == 1
    assert [p.name for p in tmp_path.iterdir()] == ["empty"], "a temporary folder was left behind"


def test_a_foreign_synthetic_json_is_not_a_marker(papers):
    (papers / "synthetic.json").write_text('{"title": "my synthetic data notes"}')
    before = fingerprint(papers)
    with pytest.raises(DataError, match="not a synthetic dataset made by mtbench"):
        generate(papers, SynthConfig(size=16, train=2, test=1), workers=1)
    assert fingerprint(papers) == before


def test_named_outputs_are_written_into_never_cleared(stored, tmp_path):
    plots, report = tmp_path / "figures", tmp_path / "report.csv"
    plots.mkdir()
    (plots / "mine.png").write_bytes(b"my own figure")
    report.write_text("old")
    result = run_cli("report", str(stored), "--plots", str(plots), "--format", "csv", "--view", "leaderboard", "-o",
                     str(report))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (plots / "mine.png").read_bytes() == b"my own figure"
    assert len(list(plots.iterdir())) > 1, "no figure was drawn"
    assert report.read_text().startswith("main,rank,model,") and "resnet18/d" in report.read_text()
