"""The hooks a plugin can implement: the contract between mtbench and its plugins.

Every hook is a *collecting* hook: mtbench calls all implementations and gathers what they
return. There is one hook per kind of plugin; :data:`mtbench.kinds.KINDS` lists them with their
spec classes. A plugin is any module or object with functions decorated by ``mtbench.hookimpl``
and named like the hooks below, registered under the entry-point group ``mtbench``::

    [project.entry-points.mtbench]
    my_plugin = "my_package.plugin"

Names must be unique across all installed plugins; mtbench refuses a second spec with the same
name and tells you which two distributions clash. Order does not matter: mtbench sorts by name.
"""

from __future__ import annotations

import pluggy

from mtbench.specs import AttackSpec, DatasetSpec, DefenseSpec, EncoderSpec, ObjectiveSpec, TaskSpec

hookspec = pluggy.HookspecMarker("mtbench")


@hookspec
def mtbench_register_encoders() -> list[EncoderSpec]:
    """Return the encoders (shared backbones) this plugin provides.

    Each :class:`~mtbench.specs.EncoderSpec` declares its output channels and stride and builds
    the module lazily. The model calls the encoder on normalised inputs and expects a feature
    map of ``out_channels`` channels at ``1/stride`` of the input resolution.
    """


@hookspec
def mtbench_register_tasks() -> list[TaskSpec]:
    """Return the tasks this plugin provides.

    A :class:`~mtbench.specs.TaskSpec` says which on-disk domains its label is decoded from, how
    (``decode``), the head width, a per-sample loss and named per-sample metrics. The one-letter
    ``code`` is what grid files may use in task sets (``"sd"``); it must be unique too. A metric's
    value over a split is the mean of its per-sample values unless its
    :class:`~mtbench.specs.MetricSpec` gives ``statistics`` and an ``aggregate`` (dataset mIoU).
    """


@hookspec
def mtbench_register_attacks() -> list[AttackSpec]:
    """Return the attacks this plugin provides.

    An attack gets an :class:`~mtbench.specs.AttackRequest` (model in eval mode with frozen
    parameters, a batch in [0, 1], the attacked tasks, an objective and a seeded generator) and
    returns an :class:`~mtbench.specs.AttackResult` whose adversarial batch stays inside the
    eps-ball of its norm and the [0, 1] image box.
    """


@hookspec
def mtbench_register_objectives() -> list[ObjectiveSpec]:
    """Return the attack objectives this plugin provides.

    An objective turns the per-sample losses of the model's tasks into the one per-sample scalar
    an attack ascends (the sum over the attacked tasks, a weighted sum, ...). One that measures
    progress from the clean point (WGD) also has ``start(losses)``, which mtbench calls with the
    clean losses before every attacked batch: see :class:`~mtbench.specs.AdaptiveObjective`.
    """


@hookspec
def mtbench_register_datasets() -> list[DatasetSpec]:
    """Return the datasets this plugin provides (the real Taskonomy layout, generated data, ...).

    A :class:`~mtbench.specs.DatasetSpec` prepares the data of a ``[data]`` section once
    (``prepare(data, cache_dir) -> root``) and opens a split of it
    (``open(root, data, split, tasks, image_size, limit) -> Dataset``); an optional cheap
    ``check(data)`` refuses bad settings before a run does any work.
    """


@hookspec
def mtbench_register_defenses() -> list[DefenseSpec]:
    """Return the training-time defences this plugin provides (a grid picks one per model with
    ``[train] defense = {name = "...", ...}``; ``none`` is today's training).

    A :class:`~mtbench.specs.DefenseSpec`'s ``loss`` gets a :class:`~mtbench.specs.DefenseRequest` for
    every training batch: the model in train mode, the batch (images, targets, masks), the tasks with their
    loss options (main task first), the weighting, the grid's options of the defence (as its
    ``validate(options, tasks)`` resolved them), a seeded generator, and an attack handle ``craft(...)``
    that runs any registered attack and objective on the model (in eval mode, parameters frozen,
    BatchNorm statistics untouched) and returns the adversarial images. It returns a
    :class:`~mtbench.specs.DefenseStep`: the loss to back-propagate and the per-task losses to log.
    ``mtbench.testing.check_defense`` checks the contract.
    """
