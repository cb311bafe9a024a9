"""mtbench: adversarial robustness of multi-task vision models, as a plugin-based benchmark.

The public API for plugin authors is what this module exports: the hook marker, the spec
dataclasses and the errors. Plugins import nothing else from the core except the helpers
documented in :mod:`mtbench.testing` and :mod:`mtbench.data`.
"""

from importlib.metadata import PackageNotFoundError, version

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

try:
    __version__ = version("mtbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

hookimpl = pluggy.HookimplMarker("mtbench")

__all__ = [
    "AdaptiveObjective",
    "Aggregate",
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
    "hookimpl",
]
