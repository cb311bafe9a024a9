"""mtbench: adversarial robustness of multi-task vision models, as a plugin-based benchmark.

What is public is what this module exports (``__all__``), and these modules, for plugin authors:

- :mod:`mtbench.specs`: the dataclasses a plugin returns (tasks, encoders, attacks, datasets);
- :mod:`mtbench.hookspecs`: the hooks a plugin implements (with :data:`hookimpl`);
- :mod:`mtbench.testing`: checks a plugin author runs on their plugin;
- :mod:`mtbench.data`: the Taskonomy layout and decoding, for dataset plugins.

The functions of the Python API (:func:`run`, :func:`attack`, :func:`load_batch`, :func:`load_model`,
:func:`results`; ``docs/api.md``) are loaded on first use, so that ``import mtbench`` (and ``mtbench
report``) stays free of torch. Every other module is private: it may change without notice.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import pluggy

from mtbench.configs import DataConfig
from mtbench.errors import ConfigError, MtbenchError, PluginError
from mtbench.specs import (
    AdaptiveObjective,
    Aggregate,
    AttackRequest,
    AttackResult,
    AttackSpec,
    DatasetSpec,
    Domain,
    EncoderSpec,
    MetricSpec,
    Objective,
    ObjectiveSpec,
    Statistics,
    TaskSpec,
)

if TYPE_CHECKING:
    from mtbench.api import AttackOutcome, attack, load_batch, load_model, results, run
    from mtbench.defend import frozen_eval

try:
    __version__ = version("mtbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

hookimpl = pluggy.HookimplMarker("mtbench")

API = ("AttackOutcome", "attack", "load_batch", "load_model", "results", "run")
"""The Python API's names, defined in :mod:`mtbench.api` and imported from there when first used."""
LAZY = {**dict.fromkeys(API, "mtbench.api"), "frozen_eval": "mtbench.defend"}
"""Public names that need torch, and the module each is imported from when first used; ``frozen_eval``
(eval mode, parameters frozen, restored after) is what attacks and defences craft under."""


def __getattr__(name: str) -> Any:
    """The lazy names, imported on first use (PEP 562). By module name: the package itself must not
    depend on their imports (torch, the runner), which every module that reads ``__version__`` would
    then depend on too (the import-linter contracts hold the layers)."""
    if name in LAZY:
        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'mtbench' has no attribute {name!r}")


__all__ = [
    "AdaptiveObjective",
    "Aggregate",
    "AttackOutcome",
    "AttackRequest",
    "AttackResult",
    "AttackSpec",
    "ConfigError",
    "DataConfig",
    "DatasetSpec",
    "Domain",
    "EncoderSpec",
    "MetricSpec",
    "MtbenchError",
    "Objective",
    "ObjectiveSpec",
    "PluginError",
    "Statistics",
    "TaskSpec",
    "__version__",
    "attack",
    "frozen_eval",
    "hookimpl",
    "load_batch",
    "load_model",
    "results",
    "run",
]
