"""pytest fixtures for plugin authors: add ``pytest_plugins = ["mtbench.pytest_plugin"]`` to your
``conftest.py``, then ask for ``mtbench_plugins``, ``tiny_model_factory`` or ``fake_batch_factory``.

    def test_my_attack(mtbench_plugins):
        check_attack(mtbench_plugins.attacks.get("mi-fgsm"))
"""

from __future__ import annotations

import pytest

from mtbench.plugins import Plugins, get_plugins
from mtbench.testing import fake_batch, tiny_model


@pytest.fixture(scope="session")
def mtbench_plugins() -> Plugins:
    """Every installed mtbench plugin, yours included (loaded from the entry points)."""
    return get_plugins()


@pytest.fixture
def tiny_model_factory(mtbench_plugins):
    """``tiny_model_factory(["segment_semantic", "my_task"])``: a seeded tiny multi-task model."""
    return lambda tasks, seed=0: tiny_model(tasks, mtbench_plugins, seed)


@pytest.fixture
def fake_batch_factory(mtbench_plugins):
    """``fake_batch_factory(tasks, size=16, batch=2)``: images in [0, 1] with targets and masks."""
    return lambda tasks, size=16, batch=2, seed=0: fake_batch(tasks, size, batch, mtbench_plugins, seed)
