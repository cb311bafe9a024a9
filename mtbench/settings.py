"""What a grid file may say: its tables and keys, with types, bounds and descriptions.

pydantic validates a parsed grid against these models and reports every problem at once with its
key path (``mtbench.grid`` turns them into messages). The bounds are far above any sensible run
and low enough to catch a typo. ``docs/grid.md`` is generated from the descriptions.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from mtbench.defaults import DEFAULT_DATASET, DEFAULT_DEFENSE, DEFAULT_OBJECTIVE, PAPER_ATTACK


def number(value: Any) -> Any:
    """Accept 0.03, 8 / 255 written as the string "8/255", or "0.03"."""
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"expected a number or a fraction like '8/255', got {value!r}") from None
    return value


# Upper bounds: far above any sensible run, low enough to catch a typo (an extra zero or three).
MAX_EPOCHS = MAX_STEPS = 100_000
MAX_BATCH = 65_536
MAX_SAMPLES = 10_000_000
MAX_IMAGE = 4096
MAX_SEED = 2**32 - 1  # numpy's seeds
MAX_GRID_BYTES = 1 << 20
MAX_LIST = 1000  # entries of any list: encoders, task sets, seeds, eps...


def _plain(value: str) -> str:
    """Labels and paths are one line: no newline, tab or other control character."""
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"control characters such as {bad!r} are not allowed")
    return value


def _pattern(regex: str, what: str):
    def check(value: str) -> str:
        if not re.fullmatch(regex, value):
            raise ValueError(f"expected {what}, got {value!r}")
        return value
    return AfterValidator(check)


def _unique(values: list) -> list:
    seen: list = []
    for v in values:
        if v in seen:
            raise ValueError(f"{v!r} appears twice")
        seen.append(v)
    return values


def _increasing(values: list[float]) -> list[float]:
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"expected increasing values, got {values}")
    return values


Number = Annotated[float, BeforeValidator(number)]
Eps = Annotated[float, BeforeValidator(number), Field(gt=0, le=1)]
Label = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_plain)]
PathText = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_plain)]
Building = Annotated[str, Field(max_length=200), _pattern(r"(?!\.\.?$)[\w.-]+", "a building (a folder name "
                                                         "inside root: letters, digits, _ . -)")]
SlurmName = Annotated[str, Field(max_length=200), _pattern(r"[\w.,:+-]+", "a Slurm name (letters, digits, "
                                                           "_ . , : + -)")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Weight = Annotated[float, Field(ge=0, le=1e6)]


def _unique_list(item: Any) -> Any:
    """A list of ``item`` without repeats, 1 to MAX_LIST entries."""
    return Annotated[list[item], Field(min_length=1, max_length=MAX_LIST), AfterValidator(_unique)]


Names = _unique_list(Label)
Buildings = _unique_list(Building)
Seeds = _unique_list(Seed)
EpsList = _unique_list(Eps)
StepsList = _unique_list(Steps)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RunSection(Section):
    name: Label = Field("grid", description="a label for the run, stored with it")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="seed of training and attack trials (see train.seeds for several)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")


class DataSection(Section):
    dataset: Label = Field(DEFAULT_DATASET,
                           description="a dataset plugin: synthetic (generated on first use) or taskonomy")
    root: PathText | None = Field(None, description="taskonomy: the folder in the official layout; synthetic: "
                                                    "where to generate (default <out>/data/...)")
    image_size: int = Field(64, ge=8, le=MAX_IMAGE, description="images and labels are resized to this square "
                                                                 "size (pixels), a multiple of every encoder's stride")
    train_samples: int = Field(64, gt=0, le=MAX_SAMPLES, description="training samples used")
    val_samples: int = Field(0, ge=0, le=MAX_SAMPLES, description="validation samples (0: validate on the test split)")
    test_samples: int = Field(32, gt=0, le=MAX_SAMPLES, description="test samples: clean metrics and attacks")
    split_file: PathText | None = Field(None, description="taskonomy: CSV of building,split (train/val/test)")
    train_buildings: Buildings | None = Field(None, description="taskonomy: buildings of the training split")
    val_buildings: Buildings | None = Field(None, description="taskonomy: buildings of the validation split")
    test_buildings: Buildings | None = Field(None, description="taskonomy: buildings of the test split")
    synth_size: int | None = Field(None, ge=8, le=MAX_IMAGE,
                                   description="synthetic: render at this size (default image_size)")
    point_split: int | None = Field(None, ge=1, le=MAX_SAMPLES, json_schema_extra={"added": True},
                                    description="taskonomy: split the points of one building instead of "
                                                "buildings: point id < this is train, the rest test (the "
                                                "original code's split)")


Weighting = Literal["uniform", "sum", "optimal", "main-aux"] | dict[str, Weight]
Schedules = Literal["appendix-b", "mtrobust", "as-coded"]
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
EpochList = Annotated[list[Epochs], Field(max_length=MAX_LIST), AfterValidator(_unique),
                      AfterValidator(_increasing)]
SCHEDULE_KEYS = ("optimizer", "lr", "momentum", "weight_decay", "lr_milestones", "lr_drop_epochs")
"""The keys a named schedule sets."""


class DefenseTable(BaseModel):
    """One defence of ``[train] defense``: ``name`` (a defence plugin) and that defence's own options,
    which the defence validates (``DefenseSpec.validate``)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    name: Label = Field(description="a defence plugin: none, pgd-at, gat, ...")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _defense_tables(value: Any) -> Any:
    """A name, a table or a list of them -> a list of tables."""
    items = value if isinstance(value, list) else [value]
    return [{"name": item} if isinstance(item, str) else item for item in items]


Defenses = Annotated[list[DefenseTable], BeforeValidator(_defense_tables), Field(min_length=1, max_length=MAX_LIST)]


class TrainSection(Section):
    encoders: Names = Field(description="encoder plugins, e.g. [\"resnet18\", \"xception\"]")
    task_sets: list[str | list[str]] = Field(min_length=1, max_length=MAX_LIST,
                                             description="each a model: codes (\"sd\") or names "
                                                         "([\"segment_semantic\", \"depth_zbuffer\"]); "
                                                         "the first task is the main task")
    weighting: list[Weighting] = Field(default_factory=lambda: ["uniform"], min_length=1, max_length=MAX_LIST,
                                       description="uniform (mean of the losses), sum, optimal (Appendix B's "
                                                   "weights per pair of s, d, D, n, E), main-aux (main 1, "
                                                   "auxiliaries aux_weight) or explicit {s = 1, d = 0.5}")
    aux_weight: float = Field(0.1, gt=0, le=1000, description="auxiliary weight of 'main-aux'")
    epochs: int = Field(2, ge=1, le=MAX_EPOCHS, description="training epochs")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="training batch size")
    schedule: Schedules | None = Field(None, description="a named recipe that sets optimizer, lr, momentum, "
                                       "weight_decay and the lr drops: appendix-b (the paper's text), mtrobust "
                                       "(MTRobust's code as it runs) or as-coded (the paper's code); docs/presets.md")
    lr: float = Field(1e-3, gt=0, le=10, description="initial learning rate")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam or sgd (with momentum and weight_decay)")
    momentum: float | None = Field(None, ge=0, lt=1, description="sgd's momentum (default 0.9)")
    weight_decay: float | None = Field(None, ge=0, le=1, description="L2 weight decay (default: sgd 1e-4, adam 0)")
    lr_milestones: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], AfterValidator(_increasing)] = Field(
        max_length=100,
        default_factory=lambda: [0.8, 0.93], description="increasing fractions of the epochs where the lr drops x0.1")
    lr_drop_epochs: EpochList | None = Field(None, description="instead of lr_milestones: the epochs after which "
                                             "the lr drops x0.1 (e.g. [100, 120, 140])")
    snapshots: EpochList = Field(default_factory=list, description="also keep the weights at these epochs, for "
                                 "attack.epochs (how the work runs: not part of the training trial's id)")
    val_every: Epochs = Field(1, description="epochs between validation passes (the val split's loss and metrics, "
                              "stored per epoch validated); the last epoch is always validated (how the work is "
                              "monitored: not part of the training trial's id)")
    head_init: Literal["upstream", "prior", "scaled"] = Field(
        "upstream", description="upstream: each task head starts as the encoder plugin initialises it (the "
        "paper's models); prior: its last layer's bias starts at the training split's constant predictor (the "
        "mean label, or the log class frequencies) and its weights at a tenth of theirs, so that short runs "
        "start from the prior instead of spending their steps reaching it; scaled: as prior, and each "
        "regression head predicts its label standardised (its output is the training split's label mean plus "
        "std times the head's), so that each optimiser step moves a prediction in the label's own units")
    ordered_pairs: bool = Field(False, description="train sd and ds separately even where the weights do not "
                                "depend on the main task (uniform, sum, explicit): the paper's 121 trainings; by "
                                "default such task sets are one model, trained once and ranked under each main task")
    seeds: Seeds | None = Field(None, description="train every model once per seed (default: run.seed)")
    amp: bool = Field(False, description="mixed precision on CUDA")
    channels_last: bool = Field(False, description="channels-last memory layout for training")
    loss_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per task, keyword "
                                                    "arguments of its loss: {s = {class_weights = \"paper\"}}")
    defense: Defenses = Field(default_factory=lambda: [DefenseTable(name=DEFAULT_DEFENSE)], description=(
        "the training-time defence: a defence plugin's name, or a table of its name and options "
        "({name = \"pgd-at\", eps = \"4/255\", steps = 3, targets = \"main\"}), or a list of them (each "
        "a separate model); none: the weighted sum of the task losses. docs/plugins.md (A defence) lists the "
        "built-ins' options"))


class SourceModel(Section):
    """Which trained model crafts the adversarial examples of a transfer attack: the target model's
    settings with these replaced."""

    encoder: Label | None = Field(None, description="the surrogate's encoder")
    tasks: str | list[str] | None = Field(None, description="the surrogate's task set")
    weighting: Weighting | None = Field(None, description="the surrogate's weighting")


class AttackSection(Section):
    name: Label = Field(description="an attack plugin: pgd-linf, pgd-l2, fgsm, ...")
    eps: EpsList = Field(description="budgets in [0, 1] pixel units: numbers or \"8/255\"")
    steps: StepsList | Steps = Field(10, description="attack steps (a list runs each)")
    step_size: Number | None = Field(None, gt=0, le=1, description="default eps/4, the paper's 2/255 at 8/255")
    targets: Literal["each", "all"] | list[list[str]] = Field(
        "each", description="each: every task of the model alone; all: all together; or explicit sets "
                            "[[\"s\"], [\"s\", \"d\"]]")
    objective: Label = Field(DEFAULT_OBJECTIVE,
                             description="an objective plugin: how attacked losses combine (sum, mean, "
                                         "single, weighted, ...)")
    weights: dict[str, Weight] | None = Field(None, description="task weights of the weighted objective")
    random_start: bool = Field(False, description="start uniformly inside the eps-ball")
    restarts: int = Field(1, ge=1, le=1000, description="runs per sample, keeping the worst by the objective")
    paper_compat: bool = Field(False, description=(
        "reproduce the original attack code: start at min(1, x+eps) even without random_start, gradient of the "
        "batch-mean loss, L2 steps of eps/2 times that gradient put on one eps-sphere for the whole batch, "
        "no [0, 1] clip"))
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH,
                                   description="attack batch size (default train.batch_size)")
    trace: bool = Field(True, description="store every task's loss and error at every step")
    options: dict[str, Any] = Field(default_factory=dict, description="attack-specific settings, e.g. "
                                    "{members = [\"pgd-linf\", \"apgd-linf\"]} for ensemble-linf")
    source: SourceModel | None = Field(None, description="transfer: craft the examples on this other model of "
                                       "the grid and evaluate them on each model, e.g. {encoder = \"resnet18\"}")
    epochs: EpochList | None = Field(None, description="attack the models at these epochs: train.snapshots, or "
                                     "train.epochs for the trained model (default: the trained model)")


class AnalysisSection(Section):
    """Gradient analysis of every trained model: input-gradient norms, covariances across tasks, on clean
    points and on the adversarial points of this all-task attack."""

    attack: Label = Field(PAPER_ATTACK, description="the attack that makes the adversarial points (all tasks, sum)")
    eps: Eps = Field(8 / 255, description="its budget")
    steps: int = Field(10, ge=1, le=MAX_STEPS, description="its steps")
    step_size: Number | None = Field(None, gt=0, le=1, description="default eps/4")
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH, description="default train.batch_size")


class ExecutorSection(Section):
    """Resources of each worker job when a grid runs with ``--executor slurm`` (submitit)."""

    partition: SlurmName | None = Field(None, description="Slurm partition")
    gpus: int | None = Field(None, ge=0, le=64, description="GPUs per job")
    cpus: int | None = Field(None, ge=1, le=4096, description="CPU cores per job")
    mem_gb: float | None = Field(None, gt=0, le=65536, description="memory per job (GB)")
    time_min: int | None = Field(None, ge=1, le=525_600, description="time limit per job (minutes, at most a year)")
    account: SlurmName | None = Field(None, description="Slurm account")
    qos: SlurmName | None = Field(None, description="Slurm QOS")
    array_parallelism: int | None = Field(None, ge=1, le=100_000,
                                          description="at most this many jobs of the array at once")


FACTORY = r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*"
"""``package.module:callable``, as entry points name objects."""


class ModelSection(Section):
    """A model trained elsewhere (``[[model]]``), attacked, analysed and reported like trained ones: an
    importable function of no arguments returns an ``nn.Module`` that takes images in [0, 1] and returns
    ``{task name: the task head's output}``, each output (batch, task channels, height, width)."""

    name: Label = Field(description="what reports call the model (its encoder column), e.g. \"my-mtl\"")
    factory: Annotated[str, Field(max_length=400), _pattern(FACTORY, "an importable callable, "
                                                              "package.module:function")] = Field(
        description="package.module:function, importable in every worker (an installed package, or a folder on "
                    "PYTHONPATH; Slurm jobs inherit the submitting shell's)")
    tasks: str | list[str] = Field(description="the tasks of its outputs, codes (\"sd\") or names; the first is "
                                               "the main task")
    weights: PathText | None = Field(None, description="a safetensors file loaded into the module (strict), "
                                                       "relative to the grid file; default: the factory's weights")


class GridModel(Section):
    run: RunSection = RunSection()
    data: DataSection = DataSection()
    train: TrainSection = Field(default_factory=lambda: TrainSection.model_construct(encoders=[], task_sets=[]),
                                description="the models mtbench trains (a grid needs [train], [[model]] or "
                                                            "both)")
    model: list[ModelSection] = Field(default_factory=list, max_length=MAX_LIST,
                                      description="models trained elsewhere, attacked like trained ones")
    attack: list[AttackSection] = Field(default_factory=list, max_length=MAX_LIST)
    analysis: list[AnalysisSection] = Field(default_factory=list, max_length=MAX_LIST)
    executor: ExecutorSection = ExecutorSection()
