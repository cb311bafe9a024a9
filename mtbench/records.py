"""What a trial hands to the store: typed metric and sample rows, a model record, checks.

Every trial kind builds its rows with :class:`MetricRow` and :class:`SampleRow`, and
``Store.finish`` is the one writer that turns them into table rows. ``Phase`` names what a metric
row measures; the report filters by the same enum, so a phase cannot be misspelt on either side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Phase(str, Enum):
    """What a metric row measures."""

    TRAIN = "train"  # training loss per epoch
    VAL = "val"  # validation metrics per epoch
    BASELINE = "baseline"  # the best constant predictor of each task, fitted on the training split
    CLEAN = "clean"  # an evaluation on clean images (step 0 of an attack, or the end of training)
    ADV = "adv"  # an evaluation on adversarial images (step = attack steps)
    TRACE = "trace"  # the iterates of an attack, per step
    VULNERABILITY = "vulnerability"  # values derived from clean and adversarial ones
    ENSEMBLE = "ensemble"  # which member of an ensemble attack won, per sample share
    ANALYSIS = "analysis"  # input-gradient statistics on clean points
    ANALYSIS_ADV = "analysis_adv"  # the same on adversarial points
    ADVICE = "advice"  # the advisor's ranking of auxiliary tasks

    def __str__(self) -> str:
        return self.value


class TrialStatus(str, Enum):
    """Where a trial stands in the store."""

    PENDING = "pending"  # given back (Ctrl-C, SIGTERM, a dead worker): runs again
    RUNNING = "running"  # claimed by a worker that beats its heartbeat
    DONE = "done"  # its results are stored, in the same transaction as this status
    FAILED = "failed"  # the error is stored; a later run tries again

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class MetricRow:
    """One value of one metric of one task: the ``metrics`` table in long form."""

    phase: Phase
    task: str
    metric: str
    value: float
    step: int = 0
    split: str = "test"
    attacked: bool | None = None  # for attack trials: was this task among the attacked ones

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MetricRow:
        """A row back from its ``record()`` (e.g. the rows a resume state kept)."""
        return cls(**{**record, "phase": Phase(record["phase"])})

    def record(self) -> dict[str, Any]:
        """The row as the ``metrics`` table stores it."""
        return {"split": self.split, "phase": Phase(self.phase).value, "task": self.task,
                "attacked": self.attacked, "metric": self.metric, "step": int(self.step), "value": float(self.value)}


@dataclass(frozen=True)
class SampleRow:
    """One test sample's clean and adversarial value of one metric of one task."""

    sample: int
    task: str
    metric: str
    clean: float | None  # None where only the adversarial value means something (an ensemble's winner)
    adv: float
    attacked: bool | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrialResult:
    """What a trial hands to the store when it finishes."""

    metrics: list[MetricRow] = field(default_factory=list)
    samples: list[SampleRow] = field(default_factory=list)
    model: dict[str, Any] | None = None
    checks: dict[str, Any] | None = None
    suspect: bool = False
