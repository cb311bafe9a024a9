"""The kinds of plugin, in one table: the registries, the docs and ``mtbench plugins`` derive from it.

Adding a kind is one hook in :mod:`mtbench.hookspecs`, one spec class in :mod:`mtbench.specs`, one
field of :class:`mtbench.plugins.Plugins` and one row here. Imports neither torch nor a plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mtbench.specs import AttackSpec, DatasetSpec, DefenseSpec, EncoderSpec, ObjectiveSpec, TaskSpec


@dataclass(frozen=True)
class Kind:
    """One kind of plugin: the hook that collects it, the spec it returns, where it is registered."""

    name: str
    """Singular, as messages and ``mtbench plugins`` say it: ``"encoder"``."""
    hook: str
    """The collecting hook in :mod:`mtbench.hookspecs`."""
    spec: type
    """The frozen dataclass the hook returns a list of."""
    registry: str
    """The attribute of :class:`mtbench.plugins.Plugins` that holds the registry."""
    description: str
    summary: Callable[[Any], str]
    """One line about a spec, beside its name in ``mtbench plugins``."""


def _task_summary(spec: TaskSpec) -> str:
    metrics = ", ".join(m.name + (" (higher better)" if m.higher_is_better else "") for m in spec.metrics)
    return f"code {spec.code}, {spec.channels} ch, error {spec.error_metric}; metrics {metrics}"


KINDS: tuple[Kind, ...] = (
    Kind("encoder", "mtbench_register_encoders", EncoderSpec, "encoders",
         "a shared backbone: image -> feature map, and the decoder family that goes with it",
         lambda s: f"{s.out_channels} ch, stride {s.stride}"),
    Kind("task", "mtbench_register_tasks", TaskSpec, "tasks",
         "a dense prediction task: label decoding, head width, per-sample loss and metrics",
         _task_summary),
    Kind("attack", "mtbench_register_attacks", AttackSpec, "attacks",
         "an algorithm that perturbs a batch within a norm ball", lambda s: f"norm {s.norm}"),
    Kind("objective", "mtbench_register_objectives", ObjectiveSpec, "objectives",
         "how the attacked tasks' losses combine into the scalar an attack ascends",
         lambda s: f"{s.exact_targets} target(s)" if s.exact_targets else "any targets"),
    Kind("dataset", "mtbench_register_datasets", DatasetSpec, "datasets",
         "a source of samples in the Taskonomy layout", lambda s: ""),
    Kind("defense", "mtbench_register_defenses", DefenseSpec, "defenses",
         "a training-time defence: the loss of a training step, which may craft adversarial examples with any "
         "attack", lambda s: "options" if s.validate is not None else "no options"),
)

BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}
