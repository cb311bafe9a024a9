"""The bad-input catalogue: each kind of bad input gives a clear message naming what and where, exit
code 2 (or a `failed` trial and exit 1 for faults inside one trial), no traceback, and nothing already
stored is lost. Every case runs against a copy of a results folder that already holds finished trials."""

from __future__ import annotations

import resource
import shutil
import signal
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CPU_TINY_DATA, run_cli

BASE = CPU_TINY_DATA + """{data}
[train]
encoders = ["resnet18"]
task_sets = ["d"]
epochs = 1
batch_size = 4
{train}
[[attack]]
name = "{attack}"
eps = [{eps}]
steps = {steps}
targets = {targets}
"""


def grid_text(data: str = "", train: str = "", attack: str = "pgd-linf", eps: str = '"8/255"', steps: str = "2",
              targets: str = '"each"') -> str:
    return BASE.format(data=data, train=train, attack=attack, eps=eps, steps=steps, targets=targets)


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A results folder with one trained and one attacked model, done."""
    root = tmp_path_factory.mktemp("stored")
    (root / "grid.toml").write_text(grid_text())
    assert run_cli("run", str(root / "grid.toml"), "--out", str(root / "results")).returncode == 0
    return root / "results"


def snapshot(results: Path) -> list:
    with sqlite3.connect(results / "mtbench.db") as c:
        return c.execute("select t.id, t.status, count(m.trial_id) from trials t left join metrics m "
                         "on m.trial_id = t.id where t.status = 'done' group by t.id order by t.id").fetchall()


def taskonomy_copy(tmp: Path, results: Path, damage) -> str:
    """A copy of the synthetic data as a `taskonomy` folder, damaged by ``damage(root)``."""
    source = next(p for p in (results / "data").iterdir() if p.is_dir())
    root = tmp / "taskonomy"
    shutil.copytree(source, root)
    damage(root)
    return f'dataset = "taskonomy"\nroot = "{root}"'


def first_png(root: Path, domain: str) -> Path:
    return sorted(root.glob(f"*/{domain}/*.png"))[0]


def corrupt(root: Path) -> None:
    first_png(root, "depth_zbuffer").write_bytes(b"\x89PNG not really")


def eight_bit_depth(root: Path) -> None:
    path = first_png(root, "depth_zbuffer")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)


def wrong_size(root: Path) -> None:
    path = first_png(root, "depth_zbuffer")
    Image.fromarray(np.zeros((17, 17), np.uint16)).save(path)


def missing_file(root: Path) -> None:
    first_png(root, "depth_zbuffer").unlink()


PLUGIN = {
    "raises": "def run(req):\n    raise RuntimeError('the plugin broke')\n",
    "shape": "def run(req):\n    return AttackResult(req.images[:, :1])\n",
}


def bad_plugin(site: Path, kind: str) -> dict:
    """A real installed distribution whose attack `broken` raises or returns a wrong shape."""
    info = site / "mtbench_broken-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtbench_broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mtbench]\nbroken = thirdparty_broken_attack\n")
    (site / "thirdparty_broken_attack.py").write_text(
        "from mtbench import AttackResult, AttackSpec, hookimpl\n\n" + PLUGIN[kind] +
        "\n@hookimpl\ndef mtbench_register_attacks():\n    return [AttackSpec('broken', 'linf', run)]\n")
    return {"PYTHONPATH": str(site)}


def limit_file_size():
    """A disk that fills up: writes past 30 MB fail with EFBIG instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (30 * 2**20, 30 * 2**20))


# (case, grid text or None, extra CLI arguments, expected exit code, words the message must contain)
CASES = [
    ("TOML syntax error", "[run\nname = 1", [], 2, ["not valid TOML"]),
    ("unknown key", grid_text(train="epochz = 3"), [], 2, ["train.epochz", "unknown key"]),
    ("unknown encoder", grid_text().replace("resnet18", "resnet9"), [], 2, ["resnet9"]),
    ("unknown attack", grid_text(attack="pgd-linfinity"), [], 2, ["pgd-linfinity"]),
    ("unknown objective", grid_text() + 'objective = "maximum"\n', [], 2, ["maximum"]),
    ("wrong type", grid_text(train='lr = "fast"'), [], 2, ["train.lr"]),
    ("eps <= 0", grid_text(eps="0"), [], 2, ["attack[0].eps"]),
    ("eps > 1", grid_text(eps="2"), [], 2, ["attack[0].eps"]),
    ("eps not a number", grid_text(eps='"eight"'), [], 2, ["attack[0].eps"]),
    ("steps 0", grid_text(steps="0"), [], 2, ["attack[0].steps"]),
    ("empty task set list", grid_text().replace('task_sets = ["d"]', "task_sets = []"), [], 2, ["task_sets"]),
    ("unknown task", grid_text().replace('task_sets = ["d"]', 'task_sets = ["dq"]'), [], 2, ["q"]),
    ("target task not in the model", grid_text(targets='[["n"]]'), [], 2, ["n"]),
    ("dataset folder missing", grid_text(data='dataset = "taskonomy"\nroot = "/nonexistent/taskonomy"'), [], 2,
     ["/nonexistent/taskonomy"]),
    ("grid file missing", None, ["run", "/nonexistent/grid.toml"], 2, ["/nonexistent/grid.toml"]),
    ("database unreachable", grid_text(), ["--db", "postgresql+psycopg://nobody@/x?host=/nonexistent&port=1"], 2,
     ["cannot open the database"]),
    ("workers 0", grid_text(), ["--workers", "0"], 2, ["--workers"]),
    ("NaN loss in training", grid_text(train="lr = 1e30"), [], 1, ["training loss became"]),
]


@pytest.mark.parametrize("case, text, extra, code, words", CASES, ids=[c[0] for c in CASES])
def test_grid_and_cli_mistakes(stored, tmp_path, case, text, extra, code, words):
    results = tmp_path / "results"
    shutil.copytree(stored, results)
    before = snapshot(results)
    if text is not None:
        (tmp_path / "grid.toml").write_text(textwrap.dedent(text))
    args = extra if extra[:1] == ["run"] else ["run", str(tmp_path / "grid.toml"), *extra]
    result = run_cli(*args, "--out", str(results))
    assert result.returncode == code, (case, result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, (case, word, result.stderr[-2000:])
    assert snapshot(results)[: len(before)] == before or set(before) <= set(snapshot(results))


@pytest.mark.parametrize("case, damage, words", [
    ("corrupt PNG", corrupt, ["not a readable PNG"]),
    ("wrong bit depth", eight_bit_depth, ["expected a 16-bit"]),
    ("mismatched sizes", wrong_size, ["differs from the sample's rgb"]),
    ("missing label file", missing_file, ["lacks domain", "file missing"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_dataset_files(stored, tmp_path, case, damage, words):
    results = tmp_path / "results"
    shutil.copytree(stored, results)
    before = snapshot(results)
    (tmp_path / "grid.toml").write_text(grid_text(data=taskonomy_copy(tmp_path, results, damage)))
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(results))
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert any(w in result.stderr for w in words) and "depth_zbuffer" in result.stderr, result.stderr[-2000:]
    assert set(before) <= set(snapshot(results))


@pytest.mark.parametrize("kind, words", [("raises", ["the plugin broke"]), ("shape", ["returned a", "expected"])])
def test_plugin_faults_fail_only_their_trial(stored, tmp_path, kind, words):
    results = tmp_path / "results"
    shutil.copytree(stored, results)
    before = snapshot(results)
    (tmp_path / "grid.toml").write_text(grid_text(attack="broken"))
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(results), env=bad_plugin(tmp_path / "site", kind))
    assert result.returncode == 1, result.stderr[-2000:]
    assert all(w in result.stderr for w in words), result.stderr[-2000:]
    with sqlite3.connect(results / "mtbench.db") as c:
        (error,) = c.execute("select error from trials where status = 'failed'").fetchone()
    assert "broken" in error or "plugin broke" in error
    assert set(before) <= set(snapshot(results))


def test_checkpoint_missing_fails_the_attack(stored, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(stored, results)
    for checkpoint in (results / "checkpoints").glob("*.safetensors"):
        checkpoint.unlink()
    (tmp_path / "grid.toml").write_text(grid_text(eps='"4/255"'))  # a new attack on the stored model
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(results))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ".safetensors" in result.stderr


def test_read_only_output_folder(stored, tmp_path):
    import os
    import subprocess

    results = tmp_path / "results"
    shutil.copytree(stored, results)
    before = snapshot(results)
    (tmp_path / "grid.toml").write_text(grid_text(eps='"4/255"'))
    # root ignores permission bits; the immutable attribute stops it too
    lock, unlock = (["chattr", "+i"], ["chattr", "-i"]) if os.geteuid() == 0 else (["chmod", "a-w"], ["chmod", "u+w"])
    targets = [str(results), str(results / "mtbench.db")]
    subprocess.run([*lock, *targets], check=True)
    try:
        result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(results))
    finally:
        subprocess.run([*unlock, *targets], check=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "mtbench.db" in result.stderr or "results" in result.stderr, result.stderr[-2000:]
    assert snapshot(results) == before


def test_disk_full_during_a_trial(stored, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(stored, results)
    before = snapshot(results)
    (tmp_path / "grid.toml").write_text(grid_text().replace('task_sets = ["d"]', 'task_sets = ["sd"]'))
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(results), preexec_fn=limit_file_size)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "too large" in result.stderr.lower() or "disk" in result.stderr.lower(), result.stderr[-2000:]
    assert set(before) <= set(snapshot(results))
    with sqlite3.connect(results / "mtbench.db") as c:
        assert c.execute("pragma integrity_check").fetchone() == ("ok",)
