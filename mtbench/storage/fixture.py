"""Write made-up results straight into a store: for report tests with known values and for the
report benchmark's 100k-trial database. Nothing here trains or attacks anything."""

from __future__ import annotations

import itertools
import json
from typing import Any

from sqlalchemy import insert

from mtbench.defaults import DEFAULT_OBJECTIVE, PAPER_ATTACK, PAPER_ENCODER
from mtbench.storage.db import Store
from mtbench.storage.schema import metrics, models, samples, trials


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

    def _trial(self, kind: str, config: dict, parent: str | None = None, suspect: bool = False) -> str:
        tid = f"{kind[0]}{next(self._ids):015d}"
        self.trials.append({"id": tid, "kind": kind, "label": kind, "parent": parent, "config": json.dumps(config),
                            "status": "done", "attempts": 1, "suspect": suspect, "seed": config.get("seed", 0)})
        return tid

    def _metric(self, tid: str, phase: str, task: str, metric: str, value: float, step: int = 0) -> None:
        self.metrics.append({"trial_id": tid, "split": "test", "phase": phase, "task": task, "attacked": None,
                             "metric": metric, "step": step, "value": value})

    def add_model(self, tasks: dict[str, str], clean_err: dict[str, float], encoder: str = PAPER_ENCODER,
                  weighting: str = "uniform", epochs: int = 10, seed: int = 0,
                  const_err: dict[str, float] | None = None, parameters: int = 14_000_000,
                  macs: int = 6_000_000_000) -> str:
        """``tasks``: code -> name, main task first. Returns the training trial's id."""
        tid = self._trial("train", {"kind": "train", "encoder": encoder, "codes": list(tasks),
                                    "tasks": list(tasks.values()), "weighting": weighting, "epochs": epochs,
                                    "seed": seed})
        self._tasks[tid] = dict(tasks)
        for code, name in tasks.items():
            self._metric(tid, "clean", name, "error", clean_err[code], epochs)
            if const_err:
                self._metric(tid, "baseline", name, "error", const_err[code], epochs)
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
        tid = self._trial("attack", {"kind": "attack", "model": model, "attack": attack, "norm": norm, "eps": eps,
                                     "steps": steps, "objective": objective, "targets_codes": list(targets),
                                     "targets": [self._tasks.get(model, {}).get(c, c) for c in targets],
                                     "seed": seed, **({"source_model": source} if source else {})},
                          parent=model, suspect=suspect)
        for name, v in vulnerability.items():
            for metric in ("rel_vuln_ratio_of_means", "rel_vuln_mean_of_ratios"):
                self._metric(tid, "vulnerability", name, metric, v, steps)
        for name, per_step in (trace or {}).items():
            for step, e in enumerate(per_step):
                self._metric(tid, "trace", name, "error", e, step)
        for name, value in (delta_loss or {}).items():
            self._metric(tid, "vulnerability", name, "delta_loss", value, steps)
        for name, (clean, adv) in (errors or {}).items():
            self.samples += [{"trial_id": tid, "sample": i, "task": name, "attacked": True, "metric": "error",
                              "clean": c, "adv": a} for i, (c, a) in enumerate(zip(clean, adv))]
        return tid

    def add_analysis(self, model: str, grad_l1: dict[str, float]) -> str:
        """A gradient-analysis trial with the mean L1 norm of each task's input gradient."""
        tid = self._trial("analysis", {"kind": "analysis", "model": model, "attack": PAPER_ATTACK}, parent=model)
        for name, value in grad_l1.items():
            self._metric(tid, "analysis", name, "grad_l1", value)
        return tid

    def flush(self) -> None:
        with self.store.engine.begin() as c:
            for table, rows in ((trials, self.trials), (models, self.models), (metrics, self.metrics),
                                (samples, self.samples)):
                if rows:
                    c.execute(insert(table), rows)
        self.trials, self.models, self.metrics, self.samples = [], [], [], []
