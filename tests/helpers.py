"""What tests share besides fixtures: the tiny CPU grids and running the CLI as a user would.

Fixtures live in ``conftest.py``; tests import these helpers from here (``from helpers import
run_cli``), never from ``conftest``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


CPU_TINY_DATA = """
[run]
device = "cpu"
[data]
image_size = 32
train_samples = 8
test_samples = 4
"""
"""The head of most test grids: CPU, 32 px synthetic images, 8 training and 4 test samples."""

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


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None,
            preexec_fn=None) -> subprocess.CompletedProcess:
    """Run the installed ``mtbench`` command in a subprocess, as a user would."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", "from mtbench.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=preexec_fn)
