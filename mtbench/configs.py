"""Typed trial configurations and the trial-id policy.

The grid builds one frozen configuration per trial (:class:`TrainConfig`, :class:`AttackConfig`,
:class:`AnalysisConfig`, :class:`AdviceConfig`); the runner, the executors, the store and the
report read it by attribute. Its JSON (``record()``) is what the ``trials`` table keeps.

**Trial-id policy.** Every field has one of three roles:

- *identity* (the default): it can change the results, so it is part of the id;
- *execution*: how the work runs, not what it computes (an attack's batch size, since a sample's
  perturbation never depends on its batch; whether per-step traces are stored); not in the id;
- *seed*: part of the id; the **setting id** (:func:`setting_id`) leaves the seeds out, so that results are
  averaged over seeds only within one setting.

A field added after trials were first stored is declared with :func:`added`: it leaves the id
while it holds its default, so adding a key never changes the ids of existing trials and existing
databases keep their done trials. Moving a field to *execution* does change ids; the store then
re-keys the trials it holds (``mtbench.storage.migrate``), once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from enum import Enum
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from mtbench.defaults import DEFAULT_DEFENSE
from mtbench.settings import DataSection


class TrialKind(str, Enum):
    TRAIN = "train"
    ATTACK = "attack"
    ANALYSIS = "analysis"
    ADVICE = "advice"

    def __str__(self) -> str:
        return self.value


class Role(str, Enum):
    IDENTITY = "identity"
    EXECUTION = "execution"
    SEED = "seed"


def execution(default: Any, description: str) -> Any:
    """A field that says how to run, not what to compute: not in the id."""
    return Field(default, description=description, json_schema_extra={"role": Role.EXECUTION.value})


def seed(description: str = "random seed") -> Any:
    """A seed: in the id, not in the setting id."""
    return Field(0, description=description, json_schema_extra={"role": Role.SEED.value})


def added(default: Any, description: str) -> Any:
    """A field added after trials were stored: in the id only when it differs from its default."""
    return Field(default, description=description, json_schema_extra={"added": True})


class Config(BaseModel):
    """A trial configuration: frozen, every key known, serialised as plain JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def record(self) -> dict[str, Any]:
        """Every field, as stored in the ``trials`` table."""
        return self.model_dump(mode="json")

    def identity(self, with_seeds: bool = True) -> dict[str, Any]:
        """The fields that make the id (``with_seeds=False``: less the seeds), nested configs included."""
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            role = extra.get("role", Role.IDENTITY.value)
            value = getattr(self, name)
            if role == Role.EXECUTION.value or (role == Role.SEED.value and not with_seeds):
                continue
            if extra.get("added") and value == info.default:
                continue
            out[name] = value.identity(with_seeds) if isinstance(value, Config) else _plain(value)
        return out

    @property
    def id(self) -> str:
        """The trial id: a hash of the identity fields (see the module's policy)."""
        return _digest(self.identity())


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.model_dump(mode="json")))  # tuples -> lists


def _digest(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class DataConfig(DataSection, Config):
    """The grid's ``[data]`` plus the seed of generated data (``run.seed``)."""

    seed: int = seed("seed of generated (synthetic) data")
    revision: str = added("", "the dataset plugin's revision (DatasetSpec.revision, e.g. the synthetic "
                              "generator's version): models trained on other samples are other models")


class DefenseConfig(Config):
    """A training trial's defence (``[train] defense``): a defence plugin and its options, as the plugin's
    ``validate`` resolved them for the model's tasks (defaults filled in, task codes as names)."""

    name: str = DEFAULT_DEFENSE
    options: dict[str, Any] = Field(default_factory=dict)

    def label(self) -> str:
        """The name and its budget, e.g. ``pgd-at eps=4/255 steps=3``."""
        shown = [f"{key}={_fraction(self.options[key])}" for key in ("eps", "steps") if key in self.options]
        return " ".join([self.name, *shown])


def _fraction(value: Any) -> str:
    """8/255 rather than 0.03137: how budgets are written."""
    if isinstance(value, float) and abs(value * 255 - round(value * 255)) < 1e-9 and round(value * 255):
        return f"{round(value * 255)}/255"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrainConfig(Config):
    """Train one multi-task model: an encoder with one decoder per task."""

    kind: Literal["train"] = "train"
    encoder: str
    tasks: tuple[str, ...]
    codes: tuple[str, ...]
    weighting: str = Field(description="uniform, sum, optimal, main-aux or explicit; external for [[model]]")
    weights: dict[str, float]
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    lr_milestones: tuple[float, ...]
    momentum: float | None = added(None, "sgd's momentum; None with sgd: trained before momentum was a key, "
                                         "with momentum 0.9 and weight decay 1e-4")
    weight_decay: float = added(0.0, "L2 weight decay")
    lr_drop_epochs: tuple[int, ...] = added((), "the epochs after which the lr drops x0.1 (instead of lr_milestones)")
    schedule: str | None = added(None, "the named recipe (mtbench.recipes) the optimiser settings come from")
    snapshots: tuple[int, ...] = execution((), "epochs whose weights are kept besides the trained model's")
    val_every: int = execution(1, "epochs between validation passes, the last epoch always validated (how the "
                                  "work is monitored, not what the model becomes)")
    head_init: str = added("upstream", "how each task head's last layer starts: upstream (the encoder plugin's "
                                       "own initialisation), prior (at the task's constant predictor) or scaled "
                                       "(at the prior, regression heads in standardised label units)")
    architecture: str = added("", "the encoder plugin's revision (EncoderSpec.revision): models of other "
                                  "layers are other models")
    also_ranked_as: tuple[tuple[str, ...], ...] = execution(
        (), "other orders of the same tasks this model stands for (task names, main task first): where the "
            "weights do not depend on which task is the main one, sd and ds are one model, trained once and "
            "ranked under each main task (``train.ordered_pairs``)")
    factory: str = added("", "a model trained elsewhere ([[model]]): the package.module:function that builds it; "
                             "mtbench measures it and trains nothing (epochs 0)")
    weights_sha256: str = added("", "[[model]]: the SHA-256 of the weights file loaded into it (other weights "
                                    "are another model)")
    weights_path: str = execution("", "[[model]]: where its weights file is (absolute); the file is the model, "
                                      "by its SHA-256, wherever it lies")
    defense: DefenseConfig = added(DefenseConfig(), "the training-time defence (a defence plugin and its resolved "
                                                    "options); none: the weighted sum of the task losses")
    seed: int = seed("training seed: weight init and data order")
    data: DataConfig
    amp: bool = False
    channels_last: bool = False
    loss_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def parent(self) -> str | None:
        return None

    def in_order(self, tasks: tuple[str, ...]) -> TrainConfig:
        """The same model with its tasks listed in another order (main task first), standing for no
        other order: the config a separate training of that order would have."""
        code = dict(zip(self.tasks, self.codes))
        return self.model_copy(update={"tasks": tuple(tasks), "codes": tuple(code[t] for t in tasks),
                                       "also_ranked_as": ()})

    @property
    def external(self) -> bool:
        """A model trained elsewhere ([[model]]): built by its factory, measured, never trained."""
        return bool(self.factory)

    def label(self) -> str:
        if self.external:
            return f"measure {self.encoder} [{'+'.join(self.codes)}] from {self.factory}"
        code = dict(zip(self.tasks, self.codes))
        also = "".join(f", also [{'+'.join(code[t] for t in order)}]" for order in self.also_ranked_as)
        defense = f", {self.defense.label()}" if self.defense.name != DEFAULT_DEFENSE else ""
        return f"train {self.encoder} [{'+'.join(self.codes)}] {self.weighting}{defense}{also}"


class OnModelConfig(Config):
    """What a trial on one trained model (``model``, a training trial id) shares: the attack that
    makes its adversarial points, the model's seed and data, and its batch size."""

    model: str
    attack: str
    norm: str
    eps: float
    steps: int
    step_size: float
    seed: int = seed("the model's seed: random starts")
    data: DataConfig
    batch_size: int = execution(16, "batch size: a sample's perturbation never depends on its batch")
    loss_options: dict[str, dict[str, Any]] = added({}, "the model's training loss options (class weights...): "
                                                        "the losses attacked and analysed are the losses trained")
    epoch: int | None = added(None, "the model's snapshot at this epoch (None: the trained model)")

    @property
    def parent(self) -> str | None:
        return self.model

    def of_model(self) -> str:
        """The model, in labels: its trial id's start, and the snapshot's epoch."""
        return self.model[:8] + (f" at epoch {self.epoch}" if self.epoch is not None else "")


class AttackConfig(OnModelConfig):
    """Attack one trained model and measure every task."""

    kind: Literal["attack"] = "attack"
    random_start: bool = False
    restarts: int = 1
    paper_compat: bool = False
    objective: str
    weights: dict[str, float] | None = None
    targets: tuple[str, ...]
    targets_codes: tuple[str, ...]
    trace: bool = execution(True, "store every task's loss and error at every step")
    options: dict[str, Any] = added({}, "attack-specific settings")
    source_model: str | None = added(None, "transfer: the training trial that crafts the examples")

    def label(self) -> str:
        return (f"attack {self.attack} eps={self.eps:.4g} steps={self.steps} on [{'+'.join(self.targets_codes)}]"
                f" of {self.of_model()}")


class AnalysisConfig(OnModelConfig):
    """Input-gradient statistics of one trained model, on clean and adversarial points."""

    kind: Literal["analysis"] = "analysis"

    def label(self) -> str:
        return f"gradient analysis of {self.of_model()} (adversarial points: {self.attack} eps={self.eps:.4g})"


class AdviceConfig(Config):
    """The advisor's ranking of auxiliary tasks, from the trials named in ``evidence``."""

    kind: Literal["advice"] = "advice"
    main: str
    candidates: tuple[str, ...]
    proxy: str
    encoder: str
    proxy_encoder: str
    proxy_epochs: int
    attack: str
    eps: float
    steps: int
    evidence: tuple[str, ...]
    epochs: int | None = added(None, "the full budget's epochs (of the validation trials)")
    validated: tuple[str, ...] = added((), "the candidates also trained at the full budget")

    @property
    def parent(self) -> str | None:
        return None

    def label(self) -> str:
        return f"advise {self.main} by {self.proxy}"


TrialConfig = Union[TrainConfig, AttackConfig, AnalysisConfig, AdviceConfig]
CONFIG_TYPES: dict[TrialKind, type[Config]] = {
    TrialKind.TRAIN: TrainConfig, TrialKind.ATTACK: AttackConfig, TrialKind.ANALYSIS: AnalysisConfig,
    TrialKind.ADVICE: AdviceConfig,
}


def parse_config(kind: str, record: str | dict[str, Any]) -> TrialConfig:
    """A stored configuration (JSON text or dict) back as its typed configuration."""
    data = json.loads(record) if isinstance(record, str) else record
    return CONFIG_TYPES[TrialKind(kind)].model_validate(data)  # type: ignore[return-value]


PARENT_KEYS = ("model", "source_model")
"""Config keys that name another trial (a trained model): a setting holds that trial's setting instead."""


def setting_part(kind: str | None, config: dict[str, Any], with_seeds: bool = False) -> dict[str, Any]:
    """A stored config (``record()``'s JSON) less what the id policy leaves out of a setting: its seeds
    (nested ones too: the data seed), its execution fields and added fields at their default. Parent
    ids stay as they are (see :func:`setting_id`). An unknown kind loses only its ``seed``."""
    config_type = CONFIG_TYPES.get(TrialKind(kind)) if kind in TrialKind._value2member_map_ else None
    return _part(config, config_type, with_seeds)


def _part(config: dict[str, Any], config_type: type[Config] | None, with_seeds: bool) -> dict[str, Any]:
    seeds, skip, defaults, nested = _policy(config_type) if config_type else (frozenset({"seed"}), frozenset(), {}, {})
    skip = skip if with_seeds else skip | seeds
    return {k: _part(v, nested[k], with_seeds) if k in nested and isinstance(v, dict) else v
            for k, v in config.items() if k not in skip and not (k in defaults and v == defaults[k])}


@functools.cache
def _policy(config_type: type[Config]) -> tuple[frozenset[str], frozenset[str], dict[str, Any], dict[str, type]]:
    """From a config class's field roles: its seeds, its execution fields, the added ones with their
    JSON default (absent from the id while at it), and the nested configs."""
    seeds, skip, defaults, nested = set(), set(), {}, {}
    for name, info in config_type.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("role") == Role.SEED.value:
            seeds.add(name)
        if extra.get("role") == Role.EXECUTION.value:
            skip.add(name)
        if extra.get("added"):
            defaults[name] = _plain(info.default)
        if isinstance(info.annotation, type) and issubclass(info.annotation, Config):
            nested[name] = info.annotation
    return frozenset(seeds), frozenset(skip), defaults, nested


def setting_id(kind: str | None, config: dict[str, Any] | Config, parent_setting_ids: dict[str, str]) -> str:
    """A trial's **setting id**: the hash of its resolved config less its seeds and execution keys
    (:func:`setting_part`), where ``model`` and ``source_model`` (trial ids, which hash the parent's
    seed) are replaced by the parents' setting ids (``parent_setting_ids``: trial id -> setting id; a
    parent missing there keeps its trial id). Trials of one setting differ only in their seeds: only
    they may be averaged. The one place this is computed: the store writes it, the report reads it."""
    record = config.record() if isinstance(config, Config) else config
    part = setting_part(kind, record)
    for k in PARENT_KEYS:
        if part.get(k) is not None:
            part[k] = {"setting": parent_setting_ids.get(part[k], part[k])}
    return _digest(part)
