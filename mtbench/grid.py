"""Grid files: TOML -> validated settings -> the list of trials they expand into.

Validation reports every problem at once, each with the file and the table/key path, before any
work starts. Trials are plain dicts of their fully resolved config; their id is a hash of it.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import re
import stat
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mtbench.errors import ConfigError, MtbenchError
from mtbench.plugins import Plugins


def _number(value: Any) -> Any:
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
        raise ValueError(f"expected increasing fractions, got {values}")
    return values


Number = Annotated[float, BeforeValidator(_number)]
Eps = Annotated[float, BeforeValidator(_number), Field(gt=0, le=1)]
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
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of training and attack trials (see train.seeds for several)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")


class DataSection(Section):
    dataset: Label = Field("synthetic",
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


Weighting = Literal["uniform", "sum", "optimal"] | dict[str, Weight]


class TrainSection(Section):
    encoders: Names = Field(description="encoder plugins, e.g. [\"resnet18\", \"xception\"]")
    task_sets: list[str | list[str]] = Field(min_length=1, max_length=MAX_LIST,
                                             description="each a model: codes (\"sd\") or names "
                                                         "([\"segment_semantic\", \"depth_zbuffer\"]); "
                                                         "the first task is the main task")
    weighting: list[Weighting] = Field(default_factory=lambda: ["uniform"], min_length=1, max_length=MAX_LIST,
                                       description="uniform (mean of the losses), sum, optimal (main 1, "
                                                   "auxiliaries aux_weight) or explicit {s = 1, d = 0.5}")
    aux_weight: float = Field(0.1, gt=0, le=1000,
                              description="auxiliary weight of 'optimal' (the paper: 0.01 or 0.1)")
    epochs: int = Field(2, ge=1, le=MAX_EPOCHS, description="training epochs")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="training batch size")
    lr: float = Field(1e-3, gt=0, le=10, description="initial learning rate")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam (the code) or sgd (the paper: momentum "
                                                                  "0.9, weight decay 1e-4)")
    lr_milestones: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], AfterValidator(_increasing)] = Field(
        max_length=100,
        default_factory=lambda: [0.8, 0.93], description="increasing fractions of the epochs where the lr drops x0.1")
    seeds: Seeds | None = Field(None, description="train every model once per seed (default: run.seed)")
    amp: bool = Field(False, description="mixed precision on CUDA")
    channels_last: bool = Field(False, description="channels-last memory layout for training")
    loss_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per task, keyword "
                                                    "arguments of its loss: {s = {class_weights = \"paper\"}}")


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
    objective: Label = Field("sum", description="an objective plugin: how attacked losses combine (sum, mean, "
                                                "single, weighted, ...)")
    weights: dict[str, Weight] | None = Field(None, description="task weights of the weighted objective")
    random_start: bool = Field(False, description="start uniformly inside the eps-ball")
    restarts: int = Field(1, ge=1, le=1000, description="runs per sample, keeping the worst by the objective")
    paper_compat: bool = Field(False, description="reproduce the original code (start at x+eps, batch-wide L2)")
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH,
                                   description="attack batch size (default train.batch_size)")
    trace: bool = Field(True, description="store every task's loss and error at every step")
    options: dict[str, Any] = Field(default_factory=dict, description="attack-specific settings, e.g. "
                                    "{members = [\"pgd-linf\", \"apgd-linf\"]} for ensemble-linf")
    source: SourceModel | None = Field(None, description="transfer: craft the examples on this other model of "
                                       "the grid and evaluate them on each model, e.g. {encoder = \"resnet18\"}")


class AnalysisSection(Section):
    """Gradient analysis of every trained model: input-gradient norms, covariances across tasks, on clean
    points and on the adversarial points of this all-task attack."""

    attack: Label = Field("pgd-linf", description="the attack that makes the adversarial points (all tasks, sum)")
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


class GridModel(Section):
    run: RunSection = RunSection()
    data: DataSection = DataSection()
    train: TrainSection
    attack: list[AttackSection] = Field(default_factory=list, max_length=MAX_LIST)
    analysis: list[AnalysisSection] = Field(default_factory=list, max_length=MAX_LIST)
    executor: ExecutorSection = ExecutorSection()


@dataclass(frozen=True)
class Trial:
    """One unit of work: ``kind`` is "train" or "attack"; ``parent`` is the training trial an
    attack needs."""

    id: str
    kind: str
    config: dict[str, Any]
    parent: str | None = None

    def label(self) -> str:
        c = self.config
        if self.kind == "train":
            return f"train {c['encoder']} [{'+'.join(c['codes'])}] {c['weighting']}"
        if self.kind == "analysis":
            return f"gradient analysis of {c['model'][:8]} (adversarial points: {c['attack']} eps={c['eps']:.4g})"
        return (f"attack {c['attack']} eps={c['eps']:.4g} steps={c['steps']} on [{'+'.join(c['targets_codes'])}]"
                f" of {c['model'][:8]}")


@dataclass
class Grid:
    path: Path
    text: str
    settings: GridModel
    trials: list[Trial] = field(default_factory=list)

    @property
    def train_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.kind == "train"]


def trial_id(config: dict[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


SCHEMA_TAG = re.compile(r"(function-\w+|constrained-\w+|lax-\w+|list|dict|literal|union|nullable|str|int|float|bool)"
                        r"(\[.*\])?")
"""The parts of pydantic's error locations that name a type (a branch of a union), not a key."""
TYPE_ERRORS = {"list_type", "dict_type", "literal_error", "int_type", "int_parsing", "float_type", "float_parsing",
               "string_type", "bool_type", "bool_parsing", "model_type", "none_required"}


def _loc(path: Path, loc: tuple) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif not SCHEMA_TAG.fullmatch(p):
            parts.append(("." if parts else "") + p)
    return f"{path.name}: {''.join(parts) or '(top level)'}"


def _validation_problems(path: Path, exc: ValidationError) -> list[tuple[str, str]]:
    """One line per problem; of a union's branches (steps = 5 or [5, 10]) only the one that fits the
    value's type speaks, not "Input should be a valid list" as well."""
    problems = [(_loc(path, e["loc"]), e["type"],
                 "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, "))
                for e in exc.errors()]
    return [(loc, msg) for loc, kind, msg in problems
            if kind not in TYPE_ERRORS or not any(_within(other, loc) and other_kind not in TYPE_ERRORS
                                                  for other, other_kind, _ in problems)]


def _within(loc: str, outer: str) -> bool:
    return loc == outer or loc.startswith((outer + ".", outer + "["))


def load_grid(path: Path, plugins: Plugins) -> Grid:
    """Parse, validate and expand a grid file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    return load_grid_text(_read_grid(path), path, plugins)


def _read_grid(path: Path) -> str:
    """The text of a grid file: a regular file of at most MAX_GRID_BYTES of UTF-8."""
    def fail(msg: str) -> ConfigError:
        return ConfigError([(str(path), msg)])

    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise fail("is a folder, not a grid file")
        if not stat.S_ISREG(info.st_mode):
            raise fail("is not a regular file (a device or a pipe?); give a grid file (TOML)")
        if info.st_size > MAX_GRID_BYTES:
            raise fail(f"{info.st_size / 2**20:.1f} MiB is too large for a grid file (at most "
                       f"{MAX_GRID_BYTES // 2**20} MiB); is it the right file?")
        data = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read the grid file ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): a grid is a TOML "
                   "file, saved as UTF-8") from None


def load_grid_text(text: str, path: Path, plugins: Plugins) -> Grid:
    """The same for a grid's text (``path`` names it in messages), e.g. one stored with a run."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), f"not valid TOML: {exc}")]) from None
    problems: list[tuple[str, str]] = []
    settings = None
    try:
        settings = GridModel.model_validate(raw)
    except ValidationError as exc:
        problems += _validation_problems(path, exc)
    problems += _check_names(path, raw, plugins)  # on the raw file, so both kinds are reported together
    if problems or settings is None:
        raise ConfigError(sorted(set(problems), key=problems.index))
    problems = check_settings(settings, plugins, path)
    trials, expansion_problems = _expand(settings, plugins, path)
    problems += expansion_problems
    if problems:
        raise ConfigError(sorted(set(problems), key=problems.index))
    return Grid(path, text, settings, trials)


def check_settings(g: GridModel, plugins: Plugins, path: Path = Path("grid")) -> list[tuple[str, str]]:
    """What needs several fields and the plugins together (names already resolve): image size vs
    each encoder's stride, explicit weights, loss options, split settings."""
    problems: list[tuple[str, str]] = []

    def add(key: str, msg: str) -> None:
        problems.append((f"{path.name}: {key}", msg))

    encoders = list(g.train.encoders) + [a.source.encoder for a in g.attack if a.source and a.source.encoder]
    for name in dict.fromkeys(encoders):
        stride = plugins.encoders.get(name).stride
        if g.data.image_size % stride:
            below = g.data.image_size // stride * stride
            add("data.image_size", f"{g.data.image_size} is not a multiple of the stride {stride} of encoder "
                                   f"{name!r}: use {max(below, stride)} or {below + stride}")
    task_sets = [task_set_names(ts, plugins) for ts in g.train.task_sets]
    in_some_set = {t for ts in task_sets for t in ts}
    for i, w in enumerate(g.train.weighting):
        if not isinstance(w, dict):
            continue
        weights = {plugins.tasks.resolve(k): v for k, v in w.items()}
        for name in weights.keys() - in_some_set:
            add(f"train.weighting[{i}]", f"task {name!r} is in no task set of [train]")
        for tasks in task_sets:
            if not any(weights.get(t, 0) > 0 for t in tasks):
                add(f"train.weighting[{i}]", f"every task of the task set {tasks} has weight 0: nothing to learn")
    for key, options in g.train.loss_options.items():
        task = plugins.tasks.get(plugins.tasks.resolve(key))
        accepted = _keyword_arguments(task.loss)
        for option in options:
            if accepted is not None and option not in accepted:
                add(f"train.loss_options.{key}.{option}", f"the loss of task {task.name!r} has no option "
                                                          f"{option!r} (it takes: {', '.join(accepted) or 'none'})")
    buildings = [f"{split}_buildings" for split in ("train", "val", "test") if getattr(g.data, f"{split}_buildings")]
    if g.data.split_file and buildings:
        add("data.split_file", f"give split_file or {', '.join(buildings)}, not both")
    return problems


def _keyword_arguments(fn: Any) -> list[str] | None:
    """The options a loss takes after (pred, target, mask); None when it takes any (``**kwargs``)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params[3:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _check_names(path: Path, raw: dict, plugins: Plugins) -> list[tuple[str, str]]:
    """What pydantic cannot know: plugin names, task codes, targets vs task sets.

    Works on the raw TOML and skips values of the wrong type (pydantic reports those)."""
    problems: list[tuple[str, str]] = []

    def where(key: str) -> str:
        return f"{path.name}: {key}"

    def section(name: str) -> dict:
        value = raw.get(name)
        return value if isinstance(value, dict) else {}

    def resolve_task(item: Any, key: str) -> str | None:
        if not isinstance(item, str):
            return None
        try:
            return plugins.tasks.resolve(item)
        except MtbenchError as exc:
            problems.append((where(key), str(exc)))
            return None

    dataset = section("data").get("dataset", "synthetic")
    if isinstance(dataset, str) and dataset not in plugins.datasets:
        problems.append((where("data.dataset"), plugins.datasets.unknown_message(dataset)))
    train = section("train")
    encoders = train.get("encoders")
    for i, name in enumerate(encoders if isinstance(encoders, list) else []):
        if isinstance(name, str) and name not in plugins.encoders:
            problems.append((where(f"train.encoders[{i}]"), plugins.encoders.unknown_message(name)))
    all_tasks: set[str] = set()
    models: dict[tuple, int] = {}
    task_sets = train.get("task_sets")
    for i, task_set in enumerate(task_sets if isinstance(task_sets, list) else []):
        key = f"train.task_sets[{i}]"
        if isinstance(task_set, str):
            items = [task_set] if task_set in plugins.tasks else list(task_set)
        elif isinstance(task_set, list):
            items = task_set
        else:
            continue
        if not items:
            problems.append((where(key), "empty task set"))
        names = [resolve_task(item, key) for item in items]
        all_tasks.update(n for n in names if n)
        if len(set(names)) != len(names):
            problems.append((where(key), "a task appears twice"))
        elif None not in names and models.setdefault(tuple(names), i) != i:
            problems.append((where(key), f"the same task set as train.task_sets[{models[tuple(names)]}]"))
    for i, w in enumerate(train.get("weighting") or []):
        if isinstance(w, dict):
            for name in w:
                resolve_task(name, f"train.weighting[{i}].{name}")
    loss_options = train.get("loss_options")
    for name in loss_options if isinstance(loss_options, dict) else {}:
        resolve_task(name, f"train.loss_options.{name}")
    analyses = raw.get("analysis")
    for i, a in enumerate(analyses if isinstance(analyses, list) else []):
        name = a.get("attack", "pgd-linf") if isinstance(a, dict) else None
        if isinstance(name, str) and name not in plugins.attacks:
            problems.append((where(f"analysis[{i}].attack"), plugins.attacks.unknown_message(name)))
    attacks = raw.get("attack")
    for i, a in enumerate(attacks if isinstance(attacks, list) else []):
        if not isinstance(a, dict):
            continue
        name, objective = a.get("name"), a.get("objective", "sum")
        if isinstance(name, str) and name not in plugins.attacks:
            problems.append((where(f"attack[{i}].name"), plugins.attacks.unknown_message(name)))
        if isinstance(objective, str) and objective not in plugins.objectives:
            problems.append((where(f"attack[{i}].objective"), plugins.objectives.unknown_message(objective)))
        if objective == "weighted" and not a.get("weights"):
            problems.append((where(f"attack[{i}].weights"), "the 'weighted' objective needs weights"))
        weights = a.get("weights")
        for name in weights if isinstance(weights, dict) else {}:
            resolve_task(name, f"attack[{i}].weights.{name}")
        source = a.get("source")
        if isinstance(source, dict):
            encoder = source.get("encoder")
            if isinstance(encoder, str) and encoder not in plugins.encoders:
                problems.append((where(f"attack[{i}].source.encoder"), plugins.encoders.unknown_message(encoder)))
            tasks = source.get("tasks")
            for item in ([tasks] if isinstance(tasks, str) and tasks in plugins.tasks else
                         list(tasks) if isinstance(tasks, (str, list)) else []):
                resolve_task(item, f"attack[{i}].source.tasks")
        targets = a.get("targets")
        if not isinstance(targets, list):
            continue
        if not targets:
            problems.append((where(f"attack[{i}].targets"), "empty list of targets"))
        for j, target in enumerate(targets):
            key = f"attack[{i}].targets[{j}]"
            if isinstance(target, list) and not target:
                problems.append((where(key), "empty target set"))
            names = [resolve_task(item, key) for item in (target if isinstance(target, list) else [])]
            for item, task in zip(target, names):
                if task and all_tasks and task not in all_tasks:
                    problems.append((where(key), f"task {item!r} is in no task set of [train]"))
            if len(set(names)) != len(names):
                problems.append((where(key), "a task appears twice"))
    return problems


def task_set_names(task_set: str | list[str], plugins: Plugins) -> list[str]:
    """``"sd"``, ``"depth_zbuffer"`` or ``["s", "normal"]`` -> full task names, order kept."""
    if isinstance(task_set, str):
        items = [task_set] if task_set in plugins.tasks else list(task_set)
    else:
        items = task_set
    return [plugins.tasks.resolve(t) for t in items]


def train_weights(weighting: Weighting, tasks: list[str], aux_weight: float, plugins: Plugins) -> tuple[str, dict[str, float]]:
    """Loss weights per task and a label: uniform (the mean), sum, optimal (first task is the main
    task at 1, the others at ``aux_weight``) or explicit."""
    if weighting == "uniform":
        return "uniform", {t: 1.0 / len(tasks) for t in tasks}
    if weighting == "sum":
        return "sum", {t: 1.0 for t in tasks}
    if weighting == "optimal":
        return "optimal", {t: (1.0 if i == 0 else aux_weight) for i, t in enumerate(tasks)}
    explicit = {plugins.tasks.resolve(k): float(v) for k, v in weighting.items()}
    return "explicit", {t: explicit.get(t, 0.0) for t in tasks}


def expand(g: GridModel, plugins: Plugins) -> list[Trial]:
    """Training trials first, then every attack of every model (dependency order)."""
    trials, problems = _expand(g, plugins)
    if problems:
        raise ConfigError(problems)
    return trials


def _expand(g: GridModel, plugins: Plugins, path: Path = Path("grid")) -> tuple[list[Trial], list[tuple[str, str]]]:
    """The trials, and the problems only expansion finds: an attack that gives no trial, targets its
    objective refuses, a transfer source that is no model of the grid."""
    problems: list[tuple[str, str]] = []
    made = [0] * len(g.attack)
    data = g.data.model_dump()
    data["seed"] = g.run.seed
    trials: list[Trial] = []
    seen: set[str] = set()
    seeds = g.train.seeds or [g.run.seed]
    models: list[Trial] = []
    for encoder, task_set, weighting, seed in itertools.product(g.train.encoders, g.train.task_sets,
                                                                 g.train.weighting, seeds):
        tasks = task_set_names(task_set, plugins)
        label, weights = train_weights(weighting, tasks, g.train.aux_weight, plugins)
        if label == "optimal" and len(tasks) == 1:
            label = "uniform"  # one task: every weighting is the same model
        config = {
            "kind": "train", "encoder": encoder, "tasks": tasks,
            "codes": [plugins.tasks.get(t).code for t in tasks],
            "weighting": label, "weights": weights, "epochs": g.train.epochs, "batch_size": g.train.batch_size,
            "lr": g.train.lr, "optimizer": g.train.optimizer, "lr_milestones": g.train.lr_milestones,
            "seed": seed, "data": data, "amp": g.train.amp, "channels_last": g.train.channels_last,
            "loss_options": {plugins.tasks.resolve(k): v for k, v in sorted(g.train.loss_options.items())
                             if plugins.tasks.resolve(k) in tasks},
        }
        t = Trial(trial_id(config), "train", config)
        if t.id not in seen:
            seen.add(t.id)
            models.append(t)
    trials.extend(models)
    for model in models:
        model_tasks = model.config["tasks"]
        for i, a in enumerate(g.attack):
            spec = plugins.attacks.get(a.name)
            weights = {plugins.tasks.resolve(k): v for k, v in a.weights.items()} if a.weights else a.weights
            objective = a.objective
            for targets in _targets(a, model_tasks, plugins):
                if plugins.objectives.get(objective).exact_targets not in (None, len(targets)):
                    continue  # e.g. 'single' with targets = "all" of a two-task model
                refused = _objective_refuses(plugins, objective, targets, weights)
                if refused:
                    problems.append((f"{path.name}: attack[{i}].objective", refused))
                    continue
                for eps, steps in itertools.product(a.eps, a.steps if isinstance(a.steps, list) else [a.steps]):
                    config = {
                        "kind": "attack", "model": model.id, "attack": a.name, "norm": spec.norm,
                        "eps": eps, "steps": steps, "step_size": a.step_size if a.step_size is not None else eps / 4,
                        "random_start": a.random_start, "restarts": a.restarts, "paper_compat": a.paper_compat,
                        "objective": objective, "weights": weights, "targets": targets,
                        "targets_codes": [plugins.tasks.get(t).code for t in targets],
                        "seed": model.config["seed"], "data": model.config["data"],
                        "batch_size": a.batch_size or g.train.batch_size, "trace": a.trace,
                    }
                    if a.options:  # only when set, so trial ids of grids without it do not change
                        config["options"] = a.options
                    if a.source is not None:
                        try:
                            source = source_model(a.source, model, models, g, plugins)
                        except ConfigError as exc:
                            problems += [(f"{path.name}: attack[{i}].source", msg) for _, msg in exc.problems]
                            continue
                        if source is None or not set(targets) <= set(source.config["tasks"]):
                            continue  # the model itself, or a target the surrogate cannot attack
                        config["source_model"] = source.id
                    made[i] += 1
                    t = Trial(trial_id(config), "attack", config, parent=model.id)
                    if t.id not in seen:
                        seen.add(t.id)
                        trials.append(t)
        for a in g.analysis:
            config = {"kind": "analysis", "model": model.id, "attack": a.attack,
                      "norm": plugins.attacks.get(a.attack).norm, "eps": a.eps, "steps": a.steps,
                      "step_size": a.step_size if a.step_size is not None else a.eps / 4,
                      "seed": model.config["seed"], "data": model.config["data"],
                      "batch_size": a.batch_size or g.train.batch_size}
            t = Trial(trial_id(config), "analysis", config, parent=model.id)
            if t.id not in seen:
                seen.add(t.id)
                trials.append(t)
    for i, a in enumerate(g.attack):
        if not made[i] and not problems:
            problems.append((f"{path.name}: attack[{i}]", f"gives no trial: its targets fit no model of [train] "
                             f"(objective {a.objective!r}" + (", crafted on another model)" if a.source else ")")))
    return trials, sorted(set(problems), key=problems.index)


def _objective_refuses(plugins: Plugins, objective: str, targets: list[str], weights: dict | None) -> str | None:
    """Build the objective once for these targets, as the attack trial will: its complaint, if any."""
    try:
        plugins.objectives.get(objective).make(tuple(targets), weights)
    except Exception as exc:  # a plugin's make may raise anything; the trial would fail the same way
        return f"objective {objective!r} refuses targets {targets}: {exc}"
    return None


def source_model(source: SourceModel, model: Trial, models: list[Trial], g: GridModel,
                 plugins: Plugins) -> Trial | None:
    """The trained model of the grid that crafts a transfer attack on ``model`` (None: itself)."""
    cfg = model.config
    tasks = task_set_names(source.tasks, plugins) if source.tasks is not None else cfg["tasks"]
    weighting = source.weighting if source.weighting is not None else cfg["weighting"]
    if weighting == "explicit":
        weighting = cfg["weights"]
    label, _ = train_weights(weighting, tasks, g.train.aux_weight, plugins)
    if label == "optimal" and len(tasks) == 1:
        label = "uniform"
    wanted = {"encoder": source.encoder or cfg["encoder"], "tasks": tasks, "weighting": label}
    for m in models:
        if all(m.config[k] == v for k, v in wanted.items()) and m.config["seed"] == cfg["seed"] \
                and m.config["epochs"] == cfg["epochs"]:
            return None if m.id == model.id else m
    raise ConfigError([("attack.source", f"{source.model_dump(exclude_none=True)}: no model of "
                        f"[train] has encoder {wanted['encoder']!r}, tasks {tasks} and weighting {label!r}")])


def _targets(a: AttackSection, model_tasks: list[str], plugins: Plugins) -> list[list[str]]:
    if a.targets == "each":
        return [[t] for t in model_tasks]
    if a.targets == "all":
        return [list(model_tasks)]
    out = []
    for target in a.targets:
        names = [plugins.tasks.resolve(t) for t in target]
        if set(names) <= set(model_tasks):
            out.append(names)
    return out
