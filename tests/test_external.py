"""Models trained elsewhere (``[[model]]``): built by a factory, checked on one batch, measured, attacked
and reported like trained ones; the example in plain torch runs."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import CPU_TINY_DATA, REPO, run_cli
from safetensors.torch import save_file

from mtbench.errors import ConfigError
from mtbench.grid import load_grid_text

FACTORIES = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, seg_channels=17):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.seg = nn.Conv2d(8, seg_channels, 1)
        self.depth = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        h = self.body(x)
        return {"segment_semantic": self.seg(h), "depth_zbuffer": self.depth(h)}


def build():
    torch.manual_seed(0)
    return Tiny()


def wrong_channels():
    return Tiny(seg_channels=5)


def a_tensor():
    return nn.Conv2d(3, 1, 1)


def not_a_module():
    return "model"


def raises():
    raise RuntimeError("no GPU here")
'''

MODEL_GRID = CPU_TINY_DATA + """
[[model]]
name = "tiny"
factory = "{factory}"
tasks = "sd"
{weights}

[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
targets = "each"
"""


@pytest.fixture
def factories(tmp_path, monkeypatch) -> Path:
    """A module of factories, importable here (sys.path) and in subprocesses (PYTHONPATH)."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "ext_models.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    return folder


def _grid(tmp_path: Path, factory: str = "ext_models:build", weights: str | None = None) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(MODEL_GRID.format(factory=factory, weights=f'weights = "{weights}"' if weights else ""))
    return path


def _problems(path: Path, plugins) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_grid_text(path.read_text(), path, plugins)
    return caught.value.problems


@pytest.mark.parametrize(("factory", "key", "says"), [
    ("ext_models:wrong_channels", "factory", "has shape (2, 5, 32, 32); expected (2, 17, 32, 32)"),
    ("ext_models:a_tensor", "factory", "returned a Tensor; expected a dict"),
    ("ext_models:not_a_module", "factory", "returned a str, not a torch.nn.Module"),
    ("ext_models:raises", "factory", "raised RuntimeError: no GPU here"),
    ("ext_models:missing", "factory", "has no 'missing'"),
    ("no_such_package.models:build", "factory", "put the folder that holds it on PYTHONPATH"),
    ("ext_models", "factory", "package.module:function"),
])
def test_a_factory_that_does_not_give_the_tasks_outputs_is_refused_naming_the_key(
        tmp_path, factories, plugins, factory, key, says):
    problems = _problems(_grid(tmp_path, factory), plugins)
    assert any(where == f"grid.toml: model[0].{key}" and says in message for where, message in problems), problems


def test_weights_are_found_relative_to_the_grid_and_must_fit(tmp_path, factories, plugins):
    problems = _problems(_grid(tmp_path, weights="w/missing.safetensors"), plugins)
    assert problems == [("grid.toml: model[0].weights",
                         f"{tmp_path / 'w' / 'missing.safetensors'}: no such file (a path relative to the grid file)")]
    (tmp_path / "w").mkdir()
    save_file({"body.0.weight": torch.zeros(8, 3, 3, 3)}, str(tmp_path / "w" / "partial.safetensors"))
    problems = _problems(_grid(tmp_path, weights="w/partial.safetensors"), plugins)
    assert problems[0][0] == "grid.toml: model[0].weights" and "do not fit the module" in problems[0][1], problems
    (tmp_path / "w" / "pickle.safetensors").write_bytes(b"\x80\x04not safetensors")
    problems = _problems(_grid(tmp_path, weights="w/pickle.safetensors"), plugins)
    assert "not a readable safetensors file" in problems[0][1], problems


def test_a_model_name_may_not_be_an_encoders(tmp_path, factories, plugins):
    path = _grid(tmp_path)
    path.write_text(path.read_text().replace('name = "tiny"', 'name = "resnet18"'))
    assert ("grid.toml: model[0].name", "'resnet18' is an encoder plugin's name; name the model otherwise") \
        in _problems(path, plugins)


def test_the_weights_content_is_the_models_identity(tmp_path, factories, plugins):
    import ext_models

    model = ext_models.build()
    save_file(model.state_dict(), str(tmp_path / "a.safetensors"))
    path = _grid(tmp_path, weights="a.safetensors")
    first = load_grid_text(path.read_text(), path, plugins).train_trials[0]
    assert first.config.weights_sha256 == hashlib.sha256((tmp_path / "a.safetensors").read_bytes()).hexdigest()
    assert (first.config.epochs, first.config.weighting, first.config.encoder) == (0, "external", "tiny")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(tmp_path / "a.safetensors", moved / "a.safetensors")
    path.write_text(path.read_text().replace('"a.safetensors"', '"elsewhere/a.safetensors"'))
    assert load_grid_text(path.read_text(), path, plugins).train_trials[0].id == first.id  # the file, not its place
    with torch.no_grad():
        model.depth.bias.add_(1.0)
    save_file(model.state_dict(), str(moved / "a.safetensors"))
    assert load_grid_text(path.read_text(), path, plugins).train_trials[0].id != first.id


def test_a_model_trained_elsewhere_is_attacked_and_ranked(tmp_path, factories):
    import ext_models

    import mtbench

    weights = tmp_path / "tiny.safetensors"
    trained = ext_models.build()
    with torch.no_grad():
        trained.depth.bias.fill_(0.25)  # weights that differ from the factory's own
    save_file(trained.state_dict(), str(weights))
    path = _grid(tmp_path, weights="tiny.safetensors")
    out = tmp_path / "results"
    result = run_cli("run", str(path), "--out", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "tiny/sd/external" in result.stdout  # the leaderboard ranks it
    models = run_cli("report", str(out), "--view", "models", "--format", "json")
    (rows,) = json.loads(models.stdout).values()
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert [(r["model"], r["epochs"], r["factory"], r["weights_sha256"]) for r in rows] == \
        [("tiny/sd/external", 0, "ext_models:build", sha)]
    assert rows[0]["const_s"] is not None and rows[0]["params_M"] is not None  # baseline and size like any model
    frame = mtbench.results(out)
    attacks = frame[(frame.kind == "attack") & (frame.metric == "error")]
    assert len(attacks) == 4 and set(attacks.factory) == {"ext_models:build"}  # 2 attacks x 2 tasks
    assert attacks.adv.notna().all() and attacks.constant.notna().all()
    # the stored checkpoint is the module with the grid's weights, rebuilt by its factory
    (checkpoint,) = (out / "checkpoints").glob("*.safetensors")
    loaded = mtbench.load_model(checkpoint)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = trained.eval()(images)
        got = loaded(images)
    assert torch.equal(got["depth_zbuffer"], expected["depth_zbuffer"])


def test_the_example_model_imports_nothing_from_mtbench_and_runs(tmp_path):
    """examples/external-model.toml, scaled down: the README's steps with 32 px data and one epoch."""
    source = REPO / "examples" / "external" / "tiny_mtl.py"
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(ast.parse(source.read_text()))
                if isinstance(n, ast.Import)} | {n.module.split(".")[0] for n in ast.walk(ast.parse(source.read_text()))
                                                  if isinstance(n, ast.ImportFrom) and n.module}
    assert "mtbench" not in imported and "torch" in imported
    data = tmp_path / "data" / "tiny"
    made = run_cli("data", "synth", "--out", str(data), "--samples", "16", "--test-samples", "8", "--size", "32")
    assert made.returncode == 0, made.stderr
    (tmp_path / "external").mkdir()
    weights = tmp_path / "external" / "tiny_mtl.safetensors"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "examples" / "external"),
                                                        os.environ.get("PYTHONPATH")]))}
    import subprocess
    import sys

    trained = subprocess.run([sys.executable, str(REPO / "examples" / "external" / "train_tiny_mtl.py"), str(data),
                              str(weights), "1", "16"], capture_output=True, text=True, env={**os.environ, **env})
    assert trained.returncode == 0 and weights.is_file(), trained.stderr[-2000:]
    grid = (REPO / "examples" / "external-model.toml").read_text()
    grid = grid.replace('root = "data/tiny"', f'root = "{data}"').replace("image_size = 64", "image_size = 32")
    grid = grid.replace("train_samples = 256", "train_samples = 16").replace("test_samples = 32", "test_samples = 8")
    grid = grid.replace("steps = 10", "steps = 2")
    (tmp_path / "grid.toml").write_text(grid)
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "results"), env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "tiny-mtl/sd/external" in result.stdout
