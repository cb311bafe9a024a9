"""Shared fixtures: the real plugin set, a small synthetic dataset on disk, grid writers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtbench.data.synthetic import SynthConfig, generate
from mtbench.plugins import get_plugins

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def plugins():
    return get_plugins()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """16 train + 8 test samples at 32 px, in the official layout."""
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, SynthConfig(size=32, train=16, test=8, seed=0, samples_per_building=8), workers=1)
    return root


TINY_GRID = """
[run]
name = "tiny"
seed = 0
device = "cpu"

[data]
dataset = "synthetic"
image_size = 32
train_samples = 8
test_samples = 4

[train]
encoders = ["resnet18"]
task_sets = {task_sets}
epochs = 1
batch_size = 4

[[attack]]
name = "pgd-linf"
eps = ["8/255"]
steps = 2
targets = "each"
"""


@pytest.fixture
def write_grid(tmp_path):
    def write(text: str = TINY_GRID, name: str = "grid.toml", **fmt) -> Path:
        fmt.setdefault("task_sets", '["s", "sd"]')
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).format(**fmt) if fmt else text)
        return path
    return write


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed ``mtbench`` command in a subprocess, as a user would."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", "from mtbench.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)
