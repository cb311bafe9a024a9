"""Training trials: a NaN loss stops with a clear error; a killed trial resumes at its last epoch
and ends exactly where an uninterrupted run ends; a resume state that cannot be used is set aside,
named in a warning, and the trial trains from scratch."""

from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import CPU_TINY_DATA, run_cli
from safetensors.torch import load_file, save_file

from mtbench.resume import CorruptState, RefusedState, load_state, paths, save_state
from mtbench.train import make_optimizer

GRID = """
[run]
device = "cpu"
[data]
image_size = 32
train_samples = 16
test_samples = 4
[train]
encoders = ["resnet18"]
task_sets = ["d"]
epochs = {epochs}
batch_size = 4
lr = {lr}
"""


def clean_metrics(db) -> dict:
    with sqlite3.connect(db) as c:
        return dict(((t, m), v) for t, m, v in c.execute(
            "select task, metric, value from metrics where phase in ('clean', 'val', 'train')"
            " order by task, metric, step"))


def test_nan_loss_fails_the_trial_with_a_clear_error(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(epochs=4, lr='10\noptimizer = "sgd"\nmomentum = 0.99\nweighting = [{d = 1000000}]'))
    result = run_cli("run", str(grid), "--out", str(tmp_path / "r"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "training loss became" in result.stderr and "lower the lr" in result.stderr


@pytest.mark.parametrize("defense", ["", 'defense = {name = "pgd-at", steps = 1}'], ids=["none", "pgd-at"])
def test_killed_training_resumes_at_its_last_epoch(tmp_path, defense):
    """A defence's random starts are drawn per epoch and batch: a resumed training crafts what an
    uninterrupted one crafts."""
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(epochs=4, lr=f"1e-3\n{defense}"))
    straight = tmp_path / "straight"
    assert run_cli("run", str(grid), "--out", str(straight)).returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", "from mtbench.cli import main; main()", "run", str(grid),
                             "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((killed / "checkpoints").glob("*.resume.json")):
        time.sleep(0.05)
    assert list((killed / "checkpoints").glob("*.resume.json")), "no per-epoch state was written"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = run_cli("run", str(grid), "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    leftovers = [p for suffix in ("json", "safetensors") for p in (killed / "checkpoints").glob(f"*.resume.{suffix}")]
    assert not leftovers, "the state is removed when the trial ends"
    a, b = clean_metrics(straight / "mtbench.db"), clean_metrics(killed / "mtbench.db")
    assert a.keys() == b.keys()
    for key in a:
        assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), key


# --- resume state that cannot be used is set aside, named in a warning, and the trial starts over ---

CONFIG = {"optimizer": "adam", "lr": 1e-3, "epochs": 3, "lr_milestones": [0.5]}


def tiny(**change):
    """A fresh model, optimiser, scheduler and loader generator, as run_train builds them."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    opt, sched = make_optimizer(SimpleNamespace(**{**CONFIG, **change}), model.parameters())
    return model, opt, sched, torch.Generator().manual_seed(0)


@pytest.fixture
def saved(tmp_path) -> tuple[Path, Path]:
    """The real state of a tiny model after epoch 1 of 3."""
    model, opt, sched, gen = tiny()
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    sched.step()
    rows = [{"split": "train", "phase": "train", "task": "t", "attacked": None, "metric": "loss", "step": 1,
             "value": 0.5}]
    save_state(tmp_path, "trial", 1, model, opt, sched, gen, rows)
    return paths(tmp_path, "trial")


def test_a_saved_state_loads_into_fresh_objects(saved):
    model, opt, sched, gen = tiny()
    epoch, rows = load_state(saved[0].parent, "trial", 3, model, opt, sched, gen)
    assert epoch == 1 and rows[0]["step"] == 1
    assert sched.last_epoch == 1 and opt.state_dict()["state"][0]["exp_avg"].abs().sum() > 0


@pytest.mark.parametrize("config", [CONFIG, {**CONFIG, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                                              "weight_decay": 1e-4}], ids=["adam", "sgd"])
def test_the_fused_optimizer_makes_the_loops_update(config):
    """On a CPU the optimiser is fused (one kernel per step); its steps are torch's per-tensor loop's."""
    fused, opt, _, _ = tiny(**config)
    loop = copy.deepcopy(fused)
    reference = type(opt)(loop.parameters(), **{**opt.defaults, "fused": None, "foreach": False})
    assert opt.defaults["fused"] is True
    for step in range(3):
        x = torch.randn(5, 3, generator=torch.Generator().manual_seed(step))
        for model, optimiser in ((fused, opt), (loop, reference)):
            optimiser.zero_grad()
            model(x).pow(2).sum().backward()
            optimiser.step()
    for a, b in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any((a - b).abs().max() > 0 for a, b in zip(fused.parameters(), tiny(**config)[0].parameters()))


def test_a_state_saved_by_the_unfused_optimizer_resumes_in_the_fused_one(saved):
    """fused is how torch computes the update, not a setting of the trial: older states still load."""
    model, opt, sched, gen = tiny()
    meta = json.loads(saved[1].read_text())
    assert meta["param_groups"][0]["fused"] is True
    meta["param_groups"][0]["fused"] = None
    saved[1].write_text(json.dumps(meta))
    assert load_state(saved[0].parent, "trial", 3, model, opt, sched, gen)[0] == 1


def _edit_meta(**change):
    def edit(tensors: Path, meta: Path) -> None:
        data = json.loads(meta.read_text())
        data.update(change)
        meta.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return edit


def _edit_tensors(edit_dict, metadata=None):
    def edit(tensors: Path, meta: Path) -> None:
        data = load_file(str(tensors))
        edit_dict(data)
        save_file(data, str(tensors), metadata=metadata or {"trial": "trial", "epoch": "1"})
    return edit


CASES = {
    "garbage safetensors": (lambda t, m: t.write_bytes(b"not a safetensors file" * 9), {}, CorruptState, 0,
                            "not a readable safetensors"),
    "truncated safetensors": (lambda t, m: t.write_bytes(t.read_bytes()[:-40]), {}, CorruptState, 0,
                              "not a readable safetensors"),
    "empty safetensors": (lambda t, m: t.write_bytes(b""), {}, CorruptState, 0, "not a readable safetensors"),
    "invalid JSON": (lambda t, m: m.write_text('{"trial": "tr'), {}, CorruptState, 1, "not valid JSON"),
    "JSON missing keys": (_edit_meta(rows=None), {}, CorruptState, 1, "lacks rows"),
    "tensor missing": (_edit_tensors(lambda d: d.pop("model.0.weight")), {}, CorruptState, 0, "lacks model.0.weight"),
    "tensor of another shape": (_edit_tensors(lambda d: d.update({"model.2.weight": torch.zeros(3, 4)})), {},
                                CorruptState, 0, "do not fit the model: model.2.weight"),
    "optimiser moment of another shape": (_edit_tensors(lambda d: d.update({"optim.0.exp_avg": torch.zeros(1)})), {},
                                          CorruptState, 0, "optim.0.exp_avg"),
    "optimiser state incomplete": (_edit_tensors(lambda d: d.pop("optim.1.exp_avg_sq")), {}, CorruptState, 0,
                                   "incomplete optimiser state"),
    "pair from two epochs": (_edit_tensors(lambda d: None, {"trial": "trial", "epoch": "2"}), {}, CorruptState, 0,
                             "epoch 1"),
    "JSON alone": (lambda t, m: t.unlink(), {}, CorruptState, 1, "no trial.resume.safetensors beside it"),
    "epoch beyond the trial's": (_edit_meta(epoch=7), {}, RefusedState, 1, "epoch 7"),
    "another trial": (_edit_meta(trial="other"), {}, RefusedState, 1, "trial 'other'"),
    "rows of other epochs": (_edit_meta(rows=[]), {}, RefusedState, 1, "metric rows"),
    "another optimizer": (lambda t, m: None, {"optimizer": "sgd"}, RefusedState, 1, "param groups"),
    "another lr": (lambda t, m: None, {"lr": 0.1}, RefusedState, 1, "initial_lr 0.001 (config: 0.1)"),
    "other milestones": (lambda t, m: None, {"lr_milestones": [0.9]}, RefusedState, 1, "milestones"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_state_is_rejected_naming_its_file_and_changing_nothing(saved, case):
    edit, change, error, at_fault, reason = CASES[case]
    edit(*saved)
    model, opt, sched, gen = tiny(**change)
    before = ({k: v.clone() for k, v in model.state_dict().items()}, torch.get_rng_state(), gen.get_state())
    with pytest.raises(error) as caught:
        load_state(saved[0].parent, "trial", 3, model, opt, sched, gen)
    assert caught.value.path == saved[at_fault] and reason in caught.value.reason
    assert all(torch.equal(v, before[0][k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), before[1]) and torch.equal(gen.get_state(), before[2])
    assert not opt.state and sched.last_epoch == 0


SPOILED_GRID = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["d", "s", "sd"]
epochs = 2
batch_size = 4
"""


def _garbage_tensors(tensors: Path, meta: Path) -> Path:
    tensors.write_bytes(b"\0garbage" * 100)
    return tensors


def _invalid_json(tensors: Path, meta: Path) -> Path:
    meta.write_text(meta.read_text()[:-20])
    return meta


def _epoch_beyond(tensors: Path, meta: Path) -> Path:
    _edit_meta(epoch=5)(tensors, meta)
    return meta


@pytest.fixture
def interrupted(tmp_path, plugins) -> tuple[Path, Path, list[str]]:
    """A grid of three 2-epoch trainings, each stopped right after epoch 1 saved its real state:
    (grid, results folder, trial ids)."""
    from mtbench.context import TrialContext
    from mtbench.grid import load_grid
    from mtbench.storage import Store, default_url
    from mtbench.train import run_train

    grid, out = tmp_path / "grid.toml", tmp_path / "r"
    grid.write_text(SPOILED_GRID)

    class Stop(Exception):
        pass

    def stop_after_an_epoch(n: int = 1) -> None:
        if n:
            raise Stop

    ctx = TrialContext(plugins, Store(default_url(out)), out, torch.device("cpu"),
                       lambda description, total: stop_after_an_epoch)
    trials = load_grid(grid, plugins).train_trials
    for trial in trials:
        with pytest.raises(Stop):
            run_train(trial.config, trial.id, ctx)
        assert all(p.is_file() for p in paths(ctx.checkpoints, trial.id))
    return grid, out, [t.id for t in trials]


def test_a_bad_state_is_set_aside_and_the_trial_trains_from_scratch(interrupted):
    """Garbage safetensors, invalid JSON and an epoch beyond the trial's: one run, three warnings."""
    grid, out, ids = interrupted
    folder = out / "checkpoints"
    spoils = [(_garbage_tensors, "corrupt", "is not a readable safetensors file"),
              (_invalid_json, "corrupt", "is not valid JSON"), (_epoch_beyond, "refused", "is at epoch 5")]
    spoiled = {tid: (spoil(*paths(folder, tid)), label, reason) for tid, (spoil, label, reason) in zip(ids, spoils)}
    contents = {bad: bad.read_bytes() for bad, _, _ in spoiled.values()}
    result = run_cli("run", str(grid), "--out", str(out))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(out / "mtbench.db") as c:
        assert dict(c.execute("select id, status from trials")) == {tid: "done" for tid in ids}
        epochs = list(c.execute("select trial_id, step, count(*) from metrics where phase = 'train' group by 1, 2"))
    for tid, (bad, label, reason) in spoiled.items():
        kept = list(folder.glob(f"{bad.name}.{label}-*"))
        assert len(kept) == 1 and kept[0].read_bytes() == contents[bad], "the bad file is kept as it was"
        assert f"resume state {bad} {reason}" in result.stderr and str(kept[0]) in result.stderr
        assert not any(p.exists() for p in paths(folder, tid)), "the trial ended and removed its own state"
        per_epoch = {step: n for t, step, n in epochs if t == tid}
        assert per_epoch.keys() == {1, 2} and per_epoch[1] == per_epoch[2], "two epochs, each trained once"
