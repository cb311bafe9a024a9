"""Write made-up results straight into a store: for report tests with known values and for the
report benchmark's 100k-trial database. Nothing here trains or attacks anything, but every trial
has a complete typed configuration (``mtbench.configs``) and every row is a ``MetricRow`` or
``SampleRow``, so the report reads them exactly as it reads real trials."""

from __future__ import annotations

import itertools
import json
from typing import Any

from sqlalchemy import insert

from mtbench.configs import AnalysisConfig, AttackConfig, DataConfig, TrainConfig, TrialConfig, setting_id
from mtbench.defaults import DEFAULT_OBJECTIVE, PAPER_ATTACK, PAPER_ENCODER
from mtbench.records import MetricRow, Phase, SampleRow, TrialStatus
from mtbench.storage.db import Store
from mtbench.storage.schema import metrics, models, samples, trials

DATA = DataConfig()
"""The made-up trials' data: the default ``[data]`` section."""


class ResultsWriter:
    """Collects trials and their metric rows, then ``flush()`` bulk-inserts them in one transaction."""

    def __init__(self, store: Store):
        self.store = store
        self._ids = itertools.count()
        self.trials: list[dict[str, Any]] = []
        self.models: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self._tasks: dict[str, dict[str, str]] = {}  # model trial -> code -> task name
        self._settings: dict[str, str] = {}  # trial -> setting id, as the store computes it

    def trial(self, config: TrialConfig, suspect: bool = False) -> str:
        """Add a done trial of any configuration (a preset's, say); its metrics go in with :meth:`metric`."""
        return self._trial(config, suspect)

    def metric(self, tid: str, phase: Phase, task: str, metric: str, value: float, step: int = 0) -> None:
        self._metric(tid, phase, task, metric, value, step)

    def _trial(self, config: TrialConfig, suspect: bool = False) -> str:
        """A done trial under a made-up id (two made-up trials may share a configuration)."""
        tid = f"{config.kind[0]}{next(self._ids):015d}"
        self._settings[tid] = setting_id(config.kind, config, self._settings)
        self.trials.append({"id": tid, "setting_id": self._settings[tid], "kind": config.kind,
                            "label": config.label(), "parent": config.parent,
                            "config": json.dumps(config.record(), sort_keys=True), "status": TrialStatus.DONE.value,
                            "attempts": 1, "suspect": suspect, "seed": getattr(config, "seed", None)})
        return tid

    def _metric(self, tid: str, phase: Phase, task: str, metric: str, value: float, step: int = 0) -> None:
        self.metrics.append({"trial_id": tid, **MetricRow(phase, task, metric, value, step).record()})

    def add_model(self, tasks: dict[str, str], clean_err: dict[str, float], encoder: str = PAPER_ENCODER,
                  weighting: str = "uniform", epochs: int = 10, seed: int = 0,
                  const_err: dict[str, float] | None = None, parameters: int = 14_000_000,
                  macs: int = 6_000_000_000, weights: dict[str, float] | None = None, suspect: bool = False) -> str:
        """``tasks``: code -> name, main task first; ``weights``: task name -> weight (default uniform).
        Returns the training trial's id."""
        names = list(tasks.values())
        tid = self._trial(TrainConfig(
            encoder=encoder, tasks=names, codes=list(tasks), weighting=weighting,
            weights=weights or {n: 1 / len(names) for n in names}, epochs=epochs, batch_size=16, lr=1e-3,
            optimizer="adam", lr_milestones=(0.8, 0.93), seed=seed, data=DATA), suspect=suspect)
        self._tasks[tid] = dict(tasks)
        for code, name in tasks.items():
            self._metric(tid, Phase.CLEAN, name, "error", clean_err[code], epochs)
            if const_err:
                self._metric(tid, Phase.BASELINE, name, "error", const_err[code], epochs)
        self.models.append({"trial_id": tid, "encoder": encoder, "tasks": ",".join(tasks.values()),
                            "weighting": weighting, "epochs": epochs, "parameters": parameters, "macs": macs})
        return tid

    def add_attack(self, model: str, targets: str, vulnerability: dict[str, float], attack: str = PAPER_ATTACK,
                   eps: float = 8 / 255, steps: int = 10, objective: str = DEFAULT_OBJECTIVE, seed: int = 0,
                   trace: dict[str, list[float]] | None = None, suspect: bool = False,
                   errors: dict[str, tuple[list[float], list[float]]] | None = None,
                   delta_loss: dict[str, float] | None = None, source: str | None = None) -> str:
        """``vulnerability``: task name -> relative vulnerability; ``trace``: task name -> error per step;
        ``errors``: task name -> per-sample (clean, adversarial) errors; ``delta_loss``: task -> E[dL]."""
        norm = "l2" if attack.endswith("l2") else "linf"
        tid = self._trial(AttackConfig(
            model=model, attack=attack, norm=norm, eps=eps, steps=steps, step_size=eps / 4, objective=objective,
            targets=[self._tasks.get(model, {}).get(c, c) for c in targets], targets_codes=list(targets),
            seed=seed, data=DATA, source_model=source), suspect=suspect)
        for name, v in vulnerability.items():
            for metric in ("rel_vuln_ratio_of_means", "rel_vuln_mean_of_ratios"):
                self._metric(tid, Phase.VULNERABILITY, name, metric, v, steps)
        for name, per_step in (trace or {}).items():
            for step, e in enumerate(per_step):
                self._metric(tid, Phase.TRACE, name, "error", e, step)
        for name, value in (delta_loss or {}).items():
            self._metric(tid, Phase.VULNERABILITY, name, "delta_loss", value, steps)
        for name, (clean, adv) in (errors or {}).items():
            self.samples += [{"trial_id": tid, **SampleRow(i, name, "error", c, a, attacked=True).record()}
                             for i, (c, a) in enumerate(zip(clean, adv))]
        return tid

    def add_analysis(self, model: str, grad_l1: dict[str, float]) -> str:
        """A gradient-analysis trial with the mean L1 norm of each task's input gradient."""
        tid = self._trial(AnalysisConfig(model=model, attack=PAPER_ATTACK, norm="linf", eps=8 / 255, steps=10,
                                         step_size=2 / 255, data=DATA))
        for name, value in grad_l1.items():
            self._metric(tid, Phase.ANALYSIS, name, "grad_l1", value)
        return tid

    def flush(self) -> None:
        with self.store.engine.begin() as c:
            for table, rows in ((trials, self.trials), (models, self.models), (metrics, self.metrics),
                                (samples, self.samples)):
                if rows:
                    c.execute(insert(table), rows)
        self.trials, self.models, self.metrics, self.samples = [], [], [], []
