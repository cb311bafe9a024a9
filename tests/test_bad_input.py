"""The bad-input catalogue: each kind of bad input gives a clear message naming what and where, exit
code 2 (or a `failed` trial and exit 1 for faults inside one trial), no traceback, and nothing already
stored is lost. Every case runs against a copy of a results folder that already holds finished trials."""

from __future__ import annotations

import io
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import numpy as np
import pytest
from helpers import CPU_TINY_DATA, run_cli
from PIL import Image

from mtbench.cli import main

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


class Case(NamedTuple):
    """One kind of bad input: the grid file's content (text, bytes or None), the command line
    ({grid}, {out} and {tmp} are filled in), the exit code and words the message must contain."""

    name: str
    grid: str | bytes | None
    args: list[str]
    code: int
    words: list[str]
    fresh: bool = False  # run in a new interpreter (the case does real work)


RUN = ["run", "{grid}", "--out", "{out}"]
DRY = [*RUN, "--dry-run"]  # validation is the same with --dry-run, and it writes nothing either
TWO = grid_text().replace('task_sets = ["d"]', 'task_sets = ["sd"]')
TASKONOMY = 'dataset = "taskonomy"\nroot = "/nonexistent/taskonomy"'


def attack(extra: str, text: str = grid_text()) -> str:
    return text + extra + "\n"


def foreign_database() -> bytes:
    with sqlite3.connect(":memory:") as c:
        c.execute("create table invoices (id integer primary key, total real)")
        return c.serialize()


CASES = [
    # the grid file itself
    Case("TOML syntax error", "[run\nname = 1", RUN, 2, ["not valid TOML"]),
    Case("grid file missing", None, ["run", "/nonexistent/grid.toml", "--out", "{out}"], 2, ["/nonexistent/grid.toml"]),
    Case("grid file not UTF-8", grid_text().replace("[run]", '[run]\nname = "caf\xe9"').encode("latin-1"), RUN, 2,
         ["grid.toml", "not UTF-8", "0xe9"]),
    Case("grid path is a folder", None, ["run", "{tmp}", "--out", "{out}"], 2, ["is a folder, not a grid file"]),
    Case("grid path is a device", None, ["run", "/dev/zero", "--out", "{out}"], 2, ["/dev/zero", "not a regular file"]),
    Case("grid file too large", "#" * (2 << 20), RUN, 2, ["grid.toml", "too large for a grid file"]),
    Case("[train] missing", "[run]\nname = 'x'\n", RUN, 2, ["grid.toml: train", "a grid needs [train]", "[[model]]"]),
    Case("table where a list belongs", grid_text() + "[analysis]\neps = 0.1\n", DRY, 2, ["analysis", "valid list"]),
    Case("unknown key", grid_text(train="epochz = 3"), RUN, 2, ["train.epochz", "unknown key"]),
    Case("wrong type", grid_text(train='lr = "fast"'), RUN, 2, ["train.lr"]),
    # plugin names and task codes
    Case("unknown encoder", grid_text().replace("resnet18", "resnet9"), RUN, 2, ["resnet9"]),
    Case("unknown attack", grid_text(attack="pgd-linfinity"), RUN, 2, ["pgd-linfinity"]),
    Case("unknown objective", attack('objective = "maximum"'), RUN, 2, ["maximum"]),
    Case("unknown dataset", grid_text(data='dataset = "imagenet"'), DRY, 2, ["data.dataset", "imagenet"]),
    Case("unknown analysis attack", grid_text() + '[[analysis]]\nattack = "pgd-l3"\n', DRY, 2, ["analysis[0].attack"]),
    Case("unknown task", grid_text().replace('task_sets = ["d"]', 'task_sets = ["dq"]'), RUN, 2, ["q"]),
    Case("unknown task in attack weights", attack('objective = "weighted"\nweights = {q = 1}'), DRY, 2,
         ["attack[0].weights.q", "unknown task"]),
    Case("unknown surrogate encoder", attack('source = {encoder = "resnet9"}'), DRY, 2,
         ["attack[0].source.encoder", "resnet9"]),
    Case("unknown surrogate task", attack('source = {tasks = "q"}'), DRY, 2, ["attack[0].source.tasks", "'q'"]),
    # numbers: ranges, NaN and infinity, fractions
    Case("eps <= 0", grid_text(eps="0"), RUN, 2, ["attack[0].eps"]),
    Case("eps > 1", grid_text(eps="2"), RUN, 2, ["attack[0].eps"]),
    Case("eps not a number", grid_text(eps='"eight"'), RUN, 2, ["attack[0].eps"]),
    Case("eps a fraction over 0", grid_text(eps='"1/0"'), DRY, 2, ["attack[0].eps", "'1/0'"]),
    Case("eps twice", grid_text(eps='"8/255", 0.03137254901960784'), DRY, 2, ["attack[0].eps", "appears twice"]),
    Case("NaN", grid_text(train="lr = nan"), DRY, 2, ["train.lr", "finite number"]),
    Case("infinity", grid_text(train="aux_weight = inf"), RUN, 2, ["train.aux_weight", "finite number"]),
    Case("learning rate absurd", grid_text(train="lr = 1e30"), DRY, 2, ["train.lr", "less than or equal to 10"]),
    Case("steps 0", grid_text(steps="0"), RUN, 2, ["attack[0].steps"]),
    Case("steps absurd (int or list)", grid_text(steps="1000000000"), DRY, 2,
         ["attack[0].steps", "less than or equal to 100000"]),
    Case("epochs absurd", grid_text().replace("epochs = 1", "epochs = 10000000"), RUN, 2, ["train.epochs", "100000"]),
    Case("batch size absurd", grid_text().replace("batch_size = 4", "batch_size = 10000000"), DRY, 2,
         ["train.batch_size", "65536"]),
    Case("sample count absurd", grid_text().replace("train_samples = 8", "train_samples = 100000000000"), DRY, 2,
         ["data.train_samples"]),
    Case("step size > 1", attack("step_size = 2"), DRY, 2, ["attack[0].step_size"]),
    Case("restarts absurd", attack("restarts = 1000000"), DRY, 2, ["attack[0].restarts", "1000"]),
    Case("negative seed", grid_text().replace("[run]", "[run]\nseed = -1"), RUN, 2, ["run.seed"]),
    Case("seeds twice", grid_text(train="seeds = [1, 1]"), DRY, 2, ["train.seeds", "appears twice"]),
    Case("lr milestones not increasing", grid_text(train="lr_milestones = [0.9, 0.5]"), DRY, 2,
         ["train.lr_milestones", "increasing"]),
    Case("negative weight", attack('objective = "weighted"\nweights = {d = -1}'), DRY, 2, ["attack[0].weights.d"]),
    Case("executor resources absurd", grid_text() + "[executor]\ngpus = 100000\n", DRY, 2, ["executor.gpus"]),
    # sizes: the encoder's stride must divide the image
    Case("image size below 8", grid_text().replace("image_size = 32", "image_size = 4"), DRY, 2, ["data.image_size"]),
    Case("image size vs encoder stride", grid_text().replace("image_size = 32", "image_size = 48"), RUN, 2,
         ["data.image_size", "stride 32", "resnet18", "use 32 or 64"]),
    # strings: length and characters
    Case("run name with a newline", grid_text().replace("[run]", '[run]\nname = "a\\nb"'), RUN, 2,
         ["run.name", "control characters"]),
    Case("run name too long", grid_text().replace("[run]", f'[run]\nname = "{"x" * 500}"'), DRY, 2,
         ["run.name", "at most 200 characters"]),
    Case("building is a path", grid_text(data='train_buildings = ["../../etc"]'), DRY, 2,
         ["data.train_buildings[0]", "a building"]),
    Case("Slurm name with spaces", grid_text() + '[executor]\npartition = "gpu; rm -rf"\n', DRY, 2,
         ["executor.partition", "a Slurm name"]),
    # settings that contradict each other or the plugins
    Case("empty task set list", grid_text().replace('task_sets = ["d"]', "task_sets = []"), RUN, 2, ["task_sets"]),
    Case("empty task set", grid_text().replace('task_sets = ["d"]', 'task_sets = ["d", []]'), DRY, 2,
         ["task_sets[1]", "empty task set"]),
    Case("task twice in a task set", grid_text().replace('task_sets = ["d"]', 'task_sets = [["d", "depth_zbuffer"]]'),
         DRY, 2, ["task_sets[0]", "a task appears twice"]),
    Case("same task set twice", grid_text().replace('task_sets = ["d"]', 'task_sets = ["sd", ["s", "d"]]'), DRY, 2,
         ["task_sets[1]", "same task set as train.task_sets[0]"]),
    Case("encoder twice", grid_text().replace('["resnet18"]', '["resnet18", "resnet18"]'), DRY, 2,
         ["train.encoders", "appears twice"]),
    Case("target task not in the model", grid_text(targets='[["n"]]'), RUN, 2, ["n"]),
    Case("empty targets", grid_text(targets="[]"), DRY, 2, ["attack[0].targets", "empty list of targets"]),
    Case("empty target set", grid_text(targets="[[]]"), DRY, 2, ["attack[0].targets[0]", "empty target set"]),
    Case("weights all zero", grid_text(train="weighting = [{d = 0}]"), RUN, 2,
         ["train.weighting[0]", "weight 0", "nothing to learn"]),
    Case("weight of a task in no task set", grid_text(train="weighting = [{d = 1, n = 1}]"), DRY, 2,
         ["train.weighting[0]", "'normal' is in no task set"]),
    Case("unknown loss option", grid_text(train="loss_options = {d = {smoothing = 0.1}}"), DRY, 2,
         ["train.loss_options.d.smoothing", "no option 'smoothing'", "reduction"]),
    Case("unknown class weighting", grid_text(train='loss_options = {s = {class_weights = "papr"}}'), DRY, 2,
         ["train.loss_options.s", "refuses", "'papr'", "mtrobust"]),
    Case("split file and buildings", grid_text(data='split_file = "s.csv"\ntest_buildings = ["b"]'), DRY, 2,
         ["data.split_file", "not both"]),
    Case("point split of synthetic data", grid_text(data="point_split = 10"), DRY, 2,
         ["grid.toml: data.point_split", "taskonomy", "'synthetic'"]),
    Case("point split of several buildings",
         grid_text(data='dataset = "taskonomy"\nroot = "."\npoint_split = 10\ntrain_buildings = ["a", "b"]'), DRY, 2,
         ["grid.toml: data.point_split", "exactly one", "['a', 'b']"]),
    Case("weighted objective without weights", attack('objective = "weighted"'), DRY, 2,
         ["attack[0].weights", "needs weights"]),
    Case("weighted objective misses a target", attack('objective = "weighted"\nweights = {s = 1}', TWO), RUN, 2,
         ["attack[0].objective", "no weight for", "depth_zbuffer"]),
    Case("attack gives no trial", attack('objective = "single"', TWO.replace('"each"', '"all"')), RUN, 2,
         ["attack[0]", "gives no trial"]),
    Case("surrogate not in the grid", attack('source = {encoder = "resnet50"}'), RUN, 2,
         ["attack[0].source", "no model of [train] has encoder 'resnet50'"]),
    # data folders: checked by a run, not by --dry-run
    Case("dataset folder missing", grid_text(data=TASKONOMY), RUN, 2, ["/nonexistent/taskonomy"]),
    Case("dataset root is a file", grid_text(data='dataset = "taskonomy"\nroot = "{tmp}/grid.toml"'), RUN, 2,
         ["grid.toml", "is not a folder"]),
    Case("synthetic root is a user folder", grid_text(data='root = "{tmp}/results"'), RUN, 2,
         ["results", "not a synthetic dataset made by mtbench"]),
    # databases that are not mtbench's (the case's file is the database)
    Case("foreign SQLite database", foreign_database(), ["worker", "--db", "sqlite:///{grid}", "--out", "{out}"], 2,
         ["not an mtbench database", "invoices"]),
    Case("corrupt database", b"SQLite format 3\x00" + bytes(range(256)) * 20, ["report", "{grid}"], 2,
         ["corrupt or not a SQLite file"]),
    # markup-like text is shown as written
    Case("name with markup", grid_text().replace('["resnet18"]', '["[red]x[/]"]'), DRY, 2,
         ["train.encoders[0]", "'[red]x[/]'"]),
    # command-line options of every command
    Case("--out is a file", grid_text(), ["run", "{grid}", "--out", "{grid}"], 2, ["--out", "is a file"]),
    Case("workers 0", grid_text(), [*RUN, "--workers", "0"], 2, ["--workers"]),
    Case("workers absurd", grid_text(), [*DRY, "--workers", "100000"], 2, ["--workers", "1024"]),
    Case("unknown executor", grid_text(), [*DRY, "--executor", "pbs"], 2, ["--executor", "'pbs' is not one of"]),
    Case("database unreachable", grid_text(), [*RUN, "--db", "postgresql+psycopg://nobody@/x?host=/nonexistent&port=1"],
         2, ["cannot open the database"]),
    Case("report eps out of range", None, ["report", "{out}", "--eps", "3"], 2, ["--eps", "(0, 1]"]),
    Case("report limit negative", None, ["report", "{out}", "--limit", "-1"], 2, ["--limit"]),
    Case("report of a missing folder", None, ["report", "{tmp}/nothing"], 2, ["nothing", "no database"]),
    Case("advise candidates twice", None, ["advise", "--main", "s", "--candidates", "dd", "--out", "{out}"], 2,
         ["--candidates", "distinct"]),
    Case("advise unknown proxy", None, ["advise", "--main", "s", "--candidates", "d", "--proxy", "oracle"], 2,
         ["--proxy", "oracle"]),
    Case("advise base grid missing", None, ["advise", "--main", "s", "--candidates", "d", "--base", "{tmp}/no.toml",
                                            "--out", "{out}"], 2, ["no.toml", "cannot read the grid file"]),
    Case("synth size absurd", None, ["data", "synth", "--out", "{tmp}/synth", "--size", "100000"], 2, ["--size"]),
    Case("synth seed negative", None, ["data", "synth", "--out", "{tmp}/synth", "--seed", "-1"], 2, ["--seed"]),
    Case("data check of a missing folder", None, ["data", "check", "{tmp}/nothing"], 2, ["nothing", "does not exist"]),
    Case("model size vs encoder stride", None, ["models", "info", "xception", "d", "--size", "40"], 2,
         ["--size", "stride 16", "xception"]),
    Case("worker without a run to join", None, ["worker", "--out", "{tmp}/empty"], 2, ["no run in this database"]),
    Case("unknown command", None, ["frobnicate"], 2, ["No such command"]),
    # faults inside a trial: the trial fails, the rest stays
    # (diverges at epoch 10 of the synthetic data v4 and v5; 20 epochs leave a margin, the trial stops at the first NaN)
    Case("NaN loss in training",
         grid_text(train='lr = 10\noptimizer = "sgd"\nmomentum = 0.99\nweighting = [{d = 1000000}]')
         .replace("epochs = 1", "epochs = 20"), RUN, 1,
         ["training loss became"], fresh=True),
]


def run_here(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process: cases that stop at validation need no fresh interpreter (seconds of
    imports each). An exception that escapes would fail the test with its traceback."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", ["mtbench", *args]), redirect_stdout(out), redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_catalogue_has_sixty_kinds():
    tables = {"test_grid_and_cli_mistakes": [c.name for c in CASES], "test_bad_dataset_files": [d[0] for d in DAMAGES],
              "test_plugin_faults_fail_only_their_trial": list(PLUGIN)}
    singles = [name for name in globals() if name.startswith("test_") and name not in tables
               and name != "test_catalogue_has_sixty_kinds"]
    kinds = [kind for table in tables.values() for kind in table] + singles
    assert len(set(kinds)) == len(kinds) >= 60, len(kinds)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_grid_and_cli_mistakes(stored, tmp_path, case: Case):
    results = tmp_path / "results"
    shutil.copytree(stored, results)
    before = snapshot(results)
    grid = tmp_path / "grid.toml"
    if isinstance(case.grid, bytes):
        grid.write_bytes(case.grid)
    elif case.grid is not None:
        grid.write_text(textwrap.dedent(case.grid).replace("{tmp}", str(tmp_path)))
    args = [a.format(grid=grid, out=results, tmp=tmp_path) for a in case.args]
    result = run_cli(*args) if case.fresh else run_here(*args)
    assert result.returncode == case.code, (case.name, result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert not re.search(r"constrained-|function-(after|before)", result.stderr), result.stderr  # pydantic internals
    for word in case.words:
        assert word in result.stderr, (case.name, word, result.stderr[-2000:])
    assert set(before) <= set(snapshot(results))
    if case.code == 2:
        assert snapshot(results) == before


DAMAGES = [
    ("corrupt PNG", corrupt, ["not a readable PNG"]),
    ("wrong bit depth", eight_bit_depth, ["expected a 16-bit"]),
    ("mismatched sizes", wrong_size, ["differs from the sample's rgb"]),
    ("missing label file", missing_file, ["lacks domain", "file missing"]),
]


@pytest.mark.parametrize("case, damage, words", DAMAGES, ids=[d[0] for d in DAMAGES])
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
