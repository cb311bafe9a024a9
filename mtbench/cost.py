"""What a grid will cost before it runs: steps counted from the trials' configurations, times from a
calibration of this machine (:mod:`mtbench.calibrate`).

Why: the paper's settings train for days on a GPU; ``mtbench run GRID --dry-run`` should say so
before anyone starts them, and say what the quickstart costs on a laptop. The counting here is pure
(no torch, no data, no timing), so it is exact for what it counts and testable on its own:

- a training trial runs ``epochs x ceil(train samples / batch)`` training steps (forward, backward,
  optimiser update of one batch);
- an attack trial runs ``steps x restarts`` attack steps (a forward and an input-gradient backward
  pass of one batch) on each of its ``ceil(test samples / batch)`` batches;
- a gradient-analysis trial runs its attack's ``steps`` plus 2 (the input gradients at the clean
  and at the adversarial points) on each batch.

A trial is counted only while it is not done. Times are per sample: the calibration times a step
at some batch size (:class:`Probe`, :func:`timed_batch`), and a trial's seconds are its sample
passes times the seconds per sample of its probe. A model's step time grows with its number of
decoders (a decoder at 256 px costs about as much as a ResNet18 trunk), so probes are taken with 1
and 2 tasks and a model of more tasks is extrapolated linearly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mtbench.configs import AnalysisConfig, AttackConfig, TrainConfig
from mtbench.console import LiteralTable
from mtbench.defaults import DEFAULT_DATASET

Phase = Literal["train", "attack"]
MIN_BATCH = 2
"""The fewest images a step is timed on: batch-norm needs 2."""

INCLUDES = ("training steps (forward, backward and update of a batch) and attack steps (forward and input "
            "gradient of a batch), at the seconds per sample measured")
LEAVES_OUT = ("validation and test passes, the clean and adversarial measurements of attack trials, "
              "an ensemble attack's further members, data generation and loading, checkpoints, process start-up")


@dataclass(frozen=True)
class Probe:
    """One step to time: ``phase`` for a model of ``encoder`` (at ``revision``) with ``n_tasks``
    decoders on ``batch`` images of ``image_size`` pixels. ``config`` and ``tasks`` say which
    model and losses to time (a representative of the trials it stands for); they are not part
    of its identity: a probe stands for every model of its encoder, size and number of tasks."""

    phase: Phase
    encoder: str
    revision: str
    image_size: int
    n_tasks: int
    batch: int
    amp: bool = False
    channels_last: bool = False
    tasks: tuple[str, ...] = field(default=(), compare=False)
    config: TrainConfig | None = field(default=None, compare=False, repr=False)

    def at(self, n_tasks: int) -> Probe:
        """The same probe for a model of ``n_tasks`` decoders (its first ``n_tasks`` tasks)."""
        return replace(self, n_tasks=n_tasks, tasks=self.tasks[:n_tasks])

    def key(self) -> dict[str, Any]:
        """What identifies the probe in the calibration cache (the machine's part is added there)."""
        return {"phase": self.phase, "encoder": self.encoder, "revision": self.revision,
                "image_size": self.image_size, "n_tasks": self.n_tasks, "batch": self.batch,
                "amp": self.amp, "channels_last": self.channels_last}

    def describe(self) -> str:
        step = "training" if self.phase == "train" else "attack"
        return (f"{self.encoder} at {self.image_size} px, {self.n_tasks} task{'s' * (self.n_tasks > 1)}: "
                f"{step} step on a batch of {self.batch}")


@dataclass(frozen=True)
class Work:
    """The counted work of one trial not yet done."""

    kind: str
    encoder: str
    image_size: int
    epochs: int = 0
    train_steps: int = 0
    attack_steps: int = 0
    sample_passes: int = 0
    """Samples through the timed step: epochs x train samples, or attack steps per batch x test samples."""
    exact: bool = True
    """False where the sample counts are the grid's caps on a dataset read from disk (it may hold fewer)."""
    probe: Probe | None = None
    """What times this work's step at the trial's own batch size (the calibration may time another)."""


def _batches(samples: int, batch: int) -> int:
    return math.ceil(samples / batch)


def trial_work(config: Any, models: Mapping[str, TrainConfig]) -> Work | None:
    """One trial's work (None for trials without training or attack steps: the advisor's); ``models``:
    the grid's training trials by id, for the model an attack runs on."""
    if isinstance(config, TrainConfig) and config.external:
        return None  # a [[model]] is measured, not trained: its test pass is left out like every other
    if isinstance(config, TrainConfig):
        data = config.data
        return Work("train", config.encoder, data.image_size, epochs=config.epochs,
                    train_steps=config.epochs * _batches(data.train_samples, config.batch_size),
                    sample_passes=config.epochs * data.train_samples, exact=data.dataset == DEFAULT_DATASET,
                    probe=_probe("train", config, config.batch_size))
    if isinstance(config, (AttackConfig, AnalysisConfig)):
        per_batch = (config.steps * max(1, config.restarts) if isinstance(config, AttackConfig)
                     else config.steps + 2)
        data = config.data
        source = getattr(config, "source_model", None) or config.model  # transfer: the surrogate is attacked
        model = models.get(source)
        return Work(str(config.kind), model.encoder if model else "?", data.image_size,
                    attack_steps=per_batch * _batches(data.test_samples, config.batch_size),
                    sample_passes=per_batch * data.test_samples, exact=data.dataset == DEFAULT_DATASET,
                    probe=_probe("attack", model, config.batch_size) if model and not model.external else None)
    return None


def _probe(phase: Phase, model: TrainConfig, batch: int) -> Probe:
    train = phase == "train"
    return Probe(phase, model.encoder, model.architecture, model.data.image_size, len(model.tasks), batch,
                 amp=train and model.amp, channels_last=train and model.channels_last, tasks=tuple(model.tasks),
                 config=model)


def pending_work(trials: Iterable[Any], statuses: Mapping[str, str]) -> list[Work]:
    """The work of every trial of a grid (``Trial``: ``id`` and ``config``) whose status is not done."""
    trials = list(trials)
    models = {t.id: t.config for t in trials if isinstance(t.config, TrainConfig)}
    works = (trial_work(t.config, models) for t in trials if statuses.get(t.id) != "done")
    return [w for w in works if w is not None]


def timed_batch(probe: Probe, pixels: int | None) -> Probe:
    """The probe at the batch a calibration times: the trial's own, or (``pixels``: a CPU's budget) as
    many of its images as ``pixels`` holds, at least :data:`MIN_BATCH`. A CPU's time per sample falls
    with the batch (4x from 2 to 16 images at 64 px) until the batch fills its cores, so small images
    are timed in a batch like the trial's, and big ones in a few images, whose time is then scaled."""
    if pixels is None:
        return probe
    return replace(probe, batch=min(probe.batch, max(MIN_BATCH, pixels // probe.image_size ** 2)))


def probes(works: Iterable[Work], pixels: int | None) -> list[Probe]:
    """The probes a calibration must time for ``works``: at the batches of :func:`timed_batch`, with
    the numbers of tasks the models have; 1 and 2 tasks where a model has more, to extrapolate from."""
    groups: dict[Probe, list[Probe]] = {}
    for w in works:
        if w.probe is not None:
            p = timed_batch(w.probe, pixels)
            groups.setdefault(p.at(0), []).append(p)
    out: list[Probe] = []
    for members in groups.values():
        counts = {p.n_tasks for p in members}
        for n in sorted(counts if counts <= {1, 2} else {1, 2}):
            out.append(next(p for p in members if p.n_tasks >= n).at(n))
    return out


def seconds_per_sample(probe: Probe, timings: Mapping[Probe, float], pixels: int | None) -> float | None:
    """Seconds of one sample's step for ``probe`` (timed as :func:`probes` says) from ``timings``
    (seconds a batch, by probe); beyond 2 tasks, linear in the tasks from the 1- and 2-task times."""
    p = timed_batch(probe, pixels)
    if p in timings:
        return timings[p] / p.batch
    one, two = timings.get(p.at(1)), timings.get(p.at(2))
    if one is None or two is None:
        return None
    return (one + (p.n_tasks - 1) * max(0.0, two - one)) / p.batch


@dataclass
class GroupCost:
    """The work of one encoder at one image size."""

    encoder: str
    image_size: int
    trainings: int = 0
    epochs: int = 0
    train_steps: int = 0
    attack_trials: int = 0
    attack_steps: int = 0
    train_seconds: float | None = 0.0
    attack_seconds: float | None = 0.0

    def add(self, w: Work, seconds: float | None) -> None:
        if w.kind == "train":
            self.trainings += 1
            self.epochs += w.epochs
            self.train_steps += w.train_steps
            self.train_seconds = None if seconds is None or self.train_seconds is None else self.train_seconds + seconds
        else:
            self.attack_trials += 1
            self.attack_steps += w.attack_steps
            self.attack_seconds = (None if seconds is None or self.attack_seconds is None
                                   else self.attack_seconds + seconds)

    @property
    def seconds(self) -> float | None:
        if self.train_seconds is None or self.attack_seconds is None:
            return None
        return self.train_seconds + self.attack_seconds

    def record(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "image_size": self.image_size, "trainings": self.trainings,
                "epochs": self.epochs, "train_steps": self.train_steps, "attack_trials": self.attack_trials,
                "attack_steps": self.attack_steps,
                "seconds_per_train_step": _per(self.train_seconds, self.train_steps),
                "seconds_per_attack_step": _per(self.attack_seconds, self.attack_steps),
                "estimated_hours": None if self.seconds is None else self.seconds / 3600}


def _per(seconds: float | None, steps: int) -> float | None:
    return None if seconds is None or not steps else seconds / steps


@dataclass
class CostPlan:
    """A grid's pending work per encoder and image size, with the estimate where times are known."""

    groups: list[GroupCost]
    exact: bool = True
    notes: list[str] = field(default_factory=list)
    """How the times were had (machine, cache) or why some are unknown."""

    @property
    def total(self) -> GroupCost:
        total = GroupCost("total", 0)
        for g in self.groups:
            total.trainings += g.trainings
            total.epochs += g.epochs
            total.train_steps += g.train_steps
            total.attack_trials += g.attack_trials
            total.attack_steps += g.attack_steps
            for name in ("train_seconds", "attack_seconds"):
                mine, theirs = getattr(total, name), getattr(g, name)
                setattr(total, name, None if mine is None or theirs is None else mine + theirs)
        return total

    def record(self) -> dict[str, Any]:
        """The JSON of ``--dry-run --format json``'s ``cost``."""
        total = self.total.record()
        del total["encoder"], total["image_size"]
        return {"counts": "exact" if self.exact else "at most", "groups": [g.record() for g in self.groups],
                "total": total, "estimated_seconds": self.total.seconds, "includes": INCLUDES,
                "leaves_out": LEAVES_OUT, "notes": self.notes}


def estimate(works: Sequence[Work], timings: Mapping[Probe, float], pixels: int | None,
             notes: Sequence[str] = ()) -> CostPlan:
    """Group ``works`` by encoder and image size, with their seconds where ``timings`` (seconds a
    batch, by probe, timed as :func:`probes` says) cover them."""
    groups: dict[tuple[str, int], GroupCost] = {}
    for w in works:
        per_sample = seconds_per_sample(w.probe, timings, pixels) if w.probe else None
        group = groups.setdefault((w.encoder, w.image_size), GroupCost(w.encoder, w.image_size))
        group.add(w, None if per_sample is None else per_sample * w.sample_passes)
    return CostPlan(list(groups.values()), exact=all(w.exact for w in works), notes=list(notes))


def _number(n: float | None, digits: int = 0) -> str:
    if n is None:
        return "?"
    return f"{n:,.{digits}f}" if digits else f"{n:,}"


def _seconds(s: float | None) -> str:
    return "?" if s is None else f"{s:.3g}"


def cost_table(plan: CostPlan) -> LiteralTable:
    """The dry-run's cost table: one row per encoder and image size, then the total."""
    at_most = "" if plan.exact else " (at most)"
    table = LiteralTable(title=f"cost of the trials to run{at_most}")
    for col in ("encoder", "px", "trainings", "epochs", "train steps", "attack trials", "attack steps",
                "s/train step", "s/attack step", "est. hours"):
        table.add_column(col, justify="left" if col == "encoder" else "right")
    rows = [*plan.groups, plan.total] if len(plan.groups) > 1 else plan.groups
    for g in rows:
        table.add_row(g.encoder, str(g.image_size) if g.image_size else "", _number(g.trainings), _number(g.epochs),
                      _number(g.train_steps), _number(g.attack_trials), _number(g.attack_steps),
                      _seconds(_per(g.train_seconds, g.train_steps)), _seconds(_per(g.attack_seconds, g.attack_steps)),
                      _number(None if g.seconds is None else g.seconds / 3600, 2))
    return table


def cost_lines(plan: CostPlan) -> list[str]:
    """The lines under the table: the total time, what it counts, what it leaves out, how it was had."""
    seconds = plan.total.seconds
    if seconds is None:
        head = "estimated time on this machine: unknown"
    else:
        head = f"estimated time on this machine: {_duration(seconds)}"
    lines = [head + ("" if plan.exact or seconds is None else " at most")]
    if not plan.exact:
        lines.append("the counts are at most: the grid's train_samples and test_samples are caps on a dataset "
                     "read from disk, which may hold fewer")
    lines += plan.notes
    lines.append(f"includes {INCLUDES}; leaves out {LEAVES_OUT}")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.1f} days ({seconds / 3600:,.0f} h)"


def cache_note(path: Path, measured: int, cached: int, elapsed: float, since: str = "") -> str:
    """How the times were had: measured now (how long that took) and/or read from the cache, since
    when (a time measured on a busy machine stays in the cache: delete the file to measure again)."""
    parts = []
    if measured:
        parts.append(f"{measured} step time{'s' * (measured > 1)} measured now in {elapsed:.1f} s")
    if cached:
        parts.append(f"{cached} from the cache" + (f" (the oldest measured {since})" if since else ""))
    return (f"step times: {', '.join(parts)}, under the machine's load then; {path} keeps them "
            "(delete it to measure again)")
