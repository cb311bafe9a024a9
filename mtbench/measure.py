"""Measuring tasks over a split: per-sample values batch by batch, one value per metric at the end.

A metric's value over a split is the mean of its per-sample values, unless the metric aggregates
per-sample statistics (:class:`mtbench.specs.MetricSpec`: dataset mIoU sums intersections and
unions over the whole split). Both rules live here, so every trial kind computes them the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from mtbench.specs import MetricSpec, TaskSpec

PerTask = dict[str, dict[str, torch.Tensor]]
"""Task -> name -> a per-sample tensor."""


def statistics_of(outputs, targets, masks, tasks: Mapping[str, TaskSpec]) -> PerTask:
    """Per-sample statistics (B, K) of every metric that aggregates them, for every task."""
    return {t: {m.name: m.statistics(outputs[t], targets[t], masks[t]) for m in spec.metrics
                if m.statistics is not None} for t, spec in tasks.items()}


@dataclass
class Measured:
    """One batch: per-sample loss and metrics of every task, and the statistics of aggregated metrics."""

    values: PerTask
    statistics: PerTask

    def losses(self) -> dict[str, torch.Tensor]:
        return {t: named["loss"] for t, named in self.values.items()}


def measure(model, images, targets, masks, tasks: Mapping[str, TaskSpec]) -> Measured:
    """Loss, every metric and the aggregated metrics' statistics, per sample of every task (no gradients)."""
    with torch.no_grad():
        outputs = model(images)
        values = {t: {"loss": spec.loss(outputs[t], targets[t], masks[t]),
                      **{m.name: m.fn(outputs[t], targets[t], masks[t]) for m in spec.metrics}}
                  for t, spec in tasks.items()}
        return Measured(values, statistics_of(outputs, targets, masks, tasks))


def split_value(metric: MetricSpec, values: torch.Tensor | None, statistics: torch.Tensor | None) -> torch.Tensor:
    """The metric over a split from its per-sample ``values`` (N,) or, if it aggregates, its
    per-sample ``statistics`` (N, K)."""
    if metric.aggregate is None:
        return values.mean()
    return metric.aggregate(statistics)


def aggregated_values(batches: Iterable[PerTask], tasks: Mapping[str, TaskSpec]) -> dict[str, dict[str, float]]:
    """The split value of every aggregated metric from the ``statistics_of`` each batch, for a loop that
    averages the other metrics itself."""
    chunks: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
    for batch in batches:
        for t, named in batch.items():
            for name, stats in named.items():
                chunks[t][name].append(stats.cpu())
    return {t: {m.name: float(split_value(m, None, torch.cat(chunks[t][m.name]))) for m in spec.metrics
                if m.aggregate is not None and chunks[t][m.name]} for t, spec in tasks.items()}


def _per_task_lists() -> dict[str, dict[str, list[torch.Tensor]]]:
    return defaultdict(lambda: defaultdict(list))


@dataclass
class SplitRecord:
    """What ``measure`` gave on every batch of a split, kept on the CPU."""

    values: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=_per_task_lists)
    statistics: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=_per_task_lists)

    def add(self, measured: Measured) -> None:
        for record, batch in ((self.values, measured.values), (self.statistics, measured.statistics)):
            for t, named in batch.items():
                for name, v in named.items():
                    record[t][name].append(v.cpu())

    def names(self, task: str) -> list[str]:
        """``loss`` and the task's metrics, in the order measured."""
        return list(self.values[task])

    def per_sample(self, task: str, name: str) -> torch.Tensor:
        return torch.cat(self.values[task][name])

    def split_value(self, task: str, metric: MetricSpec) -> torch.Tensor:
        """The metric over the whole split: the mean of its per-sample values or its aggregate."""
        chunks = self.statistics[task].get(metric.name)
        return split_value(metric, self.per_sample(task, metric.name), torch.cat(chunks) if chunks else None)
