"""The Python API: run a grid, attack any model on a batch, load a checkpoint, read results.

These are what ``mtbench`` exports besides the plugin author's names (``mtbench/__init__.py`` loads
this module on first use, so ``import mtbench`` stays free of torch). Each does what the matching
command does, with the same validation and the same stores; see ``docs/api.md``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtbench.defaults import DEFAULT_OBJECTIVE, PAPER_ATTACK
from mtbench.errors import MtbenchError

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn

    from mtbench.runner import RunSummary


def run(grid: str | Path | Mapping[str, Any], out: str | Path = "results", *, db: str | None = None,
        workers: int = 1, quiet: bool = False) -> RunSummary:
    """Run every trial of a grid not yet done, as ``mtbench run GRID --out OUT`` does.

    ``grid``: a grid file, or its tables as a dict (``{"train": {...}, "attack": [{...}]}``), stored
    with the run as TOML text. Returns the run's summary (``done``, ``skipped``, ``failed`` trial ids).
    A bad grid raises :class:`mtbench.ConfigError` naming every problem; nothing is run."""
    from mtbench.cli.common import writable_store
    from mtbench.console import make_console
    from mtbench.grid import load_grid, load_grid_text
    from mtbench.plugins import get_plugins
    from mtbench.runner import check_data
    from mtbench.workers import run_with_helpers

    plugins = get_plugins()
    if isinstance(grid, Mapping):  # as TOML text: what the run stores, and the file other workers read
        from mtbench.overrides import anchored, render_toml

        path = Path.cwd() / "grid.toml"  # a [[model]]'s weights are relative to where Python runs
        g = load_grid_text(render_toml(anchored(copy.deepcopy(dict(grid)), path)), path, plugins)
    else:
        path = Path(grid)
        g = load_grid(path, plugins)
    check_data(g, plugins)
    out = Path(out)
    store = writable_store(out, db)
    if isinstance(grid, Mapping):
        from mtbench.overrides import write_effective_grid

        path = write_effective_grid(g.text, path, out)
    console = make_console(stderr=True)
    console.quiet = quiet
    return run_with_helpers(g, path, store, out, db, plugins, console, workers)


@dataclass
class AttackOutcome:
    """What :func:`attack` returns: the adversarial batch, and every task's metrics over the batch on
    the clean and on the adversarial images (``{task: {metric: value}}``, ``error`` included)."""

    adversarial: torch.Tensor
    clean: dict[str, dict[str, float]]
    adv: dict[str, dict[str, float]]

    def vulnerability(self, task: str) -> float:
        """The task's relative vulnerability on this batch: (err_adv - err_clean) / err_clean."""
        c, a = self.clean[task]["error"], self.adv[task]["error"]
        return (a - c) / max(c, 1e-12)


def attack(model: nn.Module, images: torch.Tensor, targets: Mapping[str, torch.Tensor], *,
           tasks: Sequence[str] | None = None, attack: str = PAPER_ATTACK, eps: float = 8 / 255, steps: int = 10,
           step_size: float | None = None, objective: str = DEFAULT_OBJECTIVE,
           attacked: Sequence[str] | None = None, masks: Mapping[str, torch.Tensor] | None = None,
           weights: Mapping[str, float] | None = None, random_start: bool = False, seed: int = 0,
           options: Mapping[str, Any] | None = None) -> AttackOutcome:
    """Attack one batch of ``model`` with a registered attack and objective; measure every task.

    ``model(images)`` takes images in [0, 1] and returns ``{task: output}`` (a model mtbench trained,
    or any module that does the same). ``targets``: each task's labels as its task plugin decodes
    them; ``tasks``: the tasks measured (default: those of ``targets``); ``attacked``: the tasks whose
    losses the objective ascends (default: the first task, the paper's main task); ``masks``: valid
    pixels per task (default: all). ``eps`` and ``step_size`` are in pixel units of [0, 1] images;
    ``step_size`` defaults to eps / 4, as in grids."""
    import torch

    from mtbench.evaluate import prepare_for_attack
    from mtbench.measure import measure
    from mtbench.plugins import get_plugins
    from mtbench.specs import AttackRequest, start_objective

    plugins = get_plugins()
    resolve = plugins.tasks.resolve  # codes or names, in every argument
    given = {resolve(t): y for t, y in targets.items()}
    names = [resolve(t) for t in (tasks or targets)]
    missing = [t for t in names if t not in given]
    if missing:
        raise MtbenchError(f"attack: no targets for task(s) {missing}; targets has {sorted(given)}")
    specs = {t: plugins.tasks.get(t) for t in names}
    targets = {t: given[t] for t in names}
    masks = {resolve(t): m for t, m in masks.items()} if masks is not None else \
        {t: torch.ones(y.shape[0], 1, *images.shape[-2:], dtype=torch.bool, device=images.device)
         for t, y in targets.items()}
    attacked_names = tuple(resolve(t) for t in (attacked or names[:1]))
    resolved_weights = {resolve(k): v for k, v in weights.items()} if weights else None
    made = plugins.objectives.get(objective).make(attacked_names, resolved_weights)
    was_training = model.training
    model.eval()
    try:
        fast, fast_images = prepare_for_attack(model, images)
        clean = measure(model, images, targets, masks, specs)
        start_objective(made, clean.losses())
        request = AttackRequest(model=fast, images=fast_images, targets=targets, masks=masks, tasks=specs,
                                attacked=attacked_names, objective=made, eps=eps, steps=steps,
                                step_size=eps / 4 if step_size is None else step_size,
                                generator=torch.Generator().manual_seed(seed), random_start=random_start,
                                trace=False, options=dict(options or {}))
        adversarial = plugins.attacks.get(attack).run(request).adversarial.detach().contiguous()
        adv = measure(model, adversarial, targets, masks, specs)
    finally:
        model.train(was_training)
    return AttackOutcome(adversarial, *(_summary(m, specs) for m in (clean, adv)))


def _summary(measured, specs) -> dict[str, dict[str, float]]:
    """Each task's loss and metrics over the batch (an aggregated metric over the batch, as over a
    split), and its error metric also as ``error``."""
    from mtbench.measure import SplitRecord

    record = SplitRecord()
    record.add(measured)
    out = {}
    for t, spec in specs.items():
        values = {"loss": float(record.per_sample(t, "loss").mean())}
        values.update({m.name: float(record.split_value(t, m)) for m in spec.metrics})
        values.setdefault("error", values[spec.error_metric])
        out[t] = values
    return out


def load_batch(root: str | Path, tasks: Sequence[str], *, n: int = 16, split: str = "test", image_size: int = 64,
               dataset: str = "taskonomy") -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The first ``n`` samples of a split of a data folder in the Taskonomy layout (a results folder's
    generated data under ``<out>/data/...`` is one), decoded for ``tasks`` (codes or names) as a
    grid's trials decode them: ``(images, targets, masks)``, images in [0, 1], for :func:`attack`."""
    import torch

    from mtbench.configs import DataConfig
    from mtbench.plugins import get_plugins

    plugins = get_plugins()
    specs = {plugins.tasks.resolve(t): plugins.tasks.get(plugins.tasks.resolve(t)) for t in tasks}
    data = DataConfig(dataset=dataset, root=str(root), image_size=image_size)
    if n < 1:
        raise MtbenchError(f"load_batch: n = {n}; ask for at least one sample")
    samples = plugins.datasets.get(dataset).open(Path(root), data, split, specs, image_size, n)
    items = [samples[i] for i in range(min(n, len(samples)))]
    images = torch.stack([i[0] for i in items])
    return images, *({t: torch.stack([i[k][t] for i in items]) for t in specs} for k in (1, 2))


def load_model(checkpoint: str | Path, device: str = "cpu") -> nn.Module:
    """A model mtbench saved (``<out>/checkpoints/<trial>.safetensors``), in eval mode, on ``device``.
    Its JSON sidecar says what it is (encoder, tasks, image size, weighting, epochs, versions)."""
    from mtbench.models import load_checkpoint

    return load_checkpoint(Path(checkpoint), device=device).eval()


def results(source: str | Path = "results") -> pd.DataFrame:
    """The flat results table (:mod:`mtbench.report.flat`) of a results folder, a SQLite file, a
    database URL or a Parquet mirror, as a pandas DataFrame: one row per (trial, task, metric)."""
    import pandas as pd
    import pyarrow as pa

    from mtbench.report.flat import results_table
    from mtbench.report.frames import load_frames

    # nullable integers and booleans: a column keeps its dtype whether or not some rows are null
    types = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return results_table(load_frames(str(source))).to_pandas(types_mapper=types.get)
