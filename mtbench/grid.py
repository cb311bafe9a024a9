"""Grid files: TOML -> validated settings -> the list of trials they expand into.

Validation reports every problem at once, each with the file and the table/key path, before any
work starts. Trials are plain dicts of their fully resolved config; their id is a hash of it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

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


Number = Annotated[float, BeforeValidator(_number)]
Eps = Annotated[float, BeforeValidator(_number), Field(gt=0, le=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(Section):
    name: str = Field("grid", description="a label for the run, stored with it")
    seed: int = Field(0, description="seed of training and attack trials (see train.seeds for several)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")


class DataSection(Section):
    dataset: str = Field("synthetic", description="a dataset plugin: synthetic (generated on first use) or taskonomy")
    root: str | None = Field(None, description="taskonomy: the folder in the official layout; synthetic: where to "
                                               "generate (default <out>/data/...)")
    image_size: int = Field(64, gt=0, description="images and labels are resized to this square size (pixels)")
    train_samples: int = Field(64, gt=0, description="training samples used")
    val_samples: int = Field(0, ge=0, description="validation samples (0: validate on the test split)")
    test_samples: int = Field(32, gt=0, description="test samples: clean metrics and attacks")
    split_file: str | None = Field(None, description="taskonomy: CSV of building,split (train/val/test)")
    train_buildings: list[str] | None = Field(None, description="taskonomy: buildings of the training split")
    val_buildings: list[str] | None = Field(None, description="taskonomy: buildings of the validation split")
    test_buildings: list[str] | None = Field(None, description="taskonomy: buildings of the test split")
    synth_size: int | None = Field(None, gt=0, description="synthetic: render at this size (default image_size)")


Weighting = Literal["uniform", "sum", "optimal"] | dict[str, Annotated[float, Field(ge=0)]]


class TrainSection(Section):
    encoders: list[str] = Field(min_length=1, description="encoder plugins, e.g. [\"resnet18\", \"xception\"]")
    task_sets: list[str | list[str]] = Field(min_length=1, description="each a model: codes (\"sd\") or names "
                                                                      "([\"segment_semantic\", \"depth_zbuffer\"]); "
                                                                      "the first task is the main task")
    weighting: list[Weighting] = Field(default_factory=lambda: ["uniform"], min_length=1,
                                       description="uniform (mean of the losses), sum, optimal (main 1, "
                                                   "auxiliaries aux_weight) or explicit {s = 1, d = 0.5}")
    aux_weight: float = Field(0.1, gt=0, description="auxiliary weight of 'optimal' (the paper: 0.01 or 0.1)")
    epochs: int = Field(2, ge=1, description="training epochs")
    batch_size: int = Field(16, ge=1, description="training batch size")
    lr: float = Field(1e-3, gt=0, description="initial learning rate")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam (the code) or sgd (the paper: momentum "
                                                                  "0.9, weight decay 1e-4)")
    lr_milestones: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.8, 0.93], description="fractions of the epochs where the lr drops x0.1")
    seeds: list[int] | None = Field(None, description="train every model once per seed (default: run.seed)")
    amp: bool = Field(False, description="mixed precision on CUDA")
    channels_last: bool = Field(False, description="channels-last memory layout for training")
    loss_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per task, keyword "
                                                    "arguments of its loss: {s = {class_weights = \"paper\"}}")


class SourceModel(Section):
    """Which trained model crafts the adversarial examples of a transfer attack: the target model's
    settings with these replaced."""

    encoder: str | None = Field(None, description="the surrogate's encoder")
    tasks: str | list[str] | None = Field(None, description="the surrogate's task set")
    weighting: Weighting | None = Field(None, description="the surrogate's weighting")


class AttackSection(Section):
    name: str = Field(description="an attack plugin: pgd-linf, pgd-l2, fgsm, ...")
    eps: list[Eps] = Field(min_length=1, description="budgets in [0, 1] pixel units: numbers or \"8/255\"")
    steps: list[Annotated[int, Field(ge=1)]] | Annotated[int, Field(ge=1)] = Field(
        10, description="attack steps (a list runs each)")
    step_size: Number | None = Field(None, description="default eps/4, the paper's 2/255 at 8/255")
    targets: Literal["each", "all"] | list[list[str]] = Field(
        "each", description="each: every task of the model alone; all: all together; or explicit sets "
                            "[[\"s\"], [\"s\", \"d\"]]")
    objective: str = Field("sum", description="an objective plugin: how attacked losses combine (sum, mean, "
                                              "single, weighted, ...)")
    weights: dict[str, float] | None = Field(None, description="task weights of the weighted objective")
    random_start: bool = Field(False, description="start uniformly inside the eps-ball")
    restarts: int = Field(1, ge=1, description="runs per sample, keeping the worst by the objective")
    paper_compat: bool = Field(False, description="reproduce the original code (start at x+eps, batch-wide L2)")
    batch_size: int | None = Field(None, ge=1, description="attack batch size (default train.batch_size)")
    trace: bool = Field(True, description="store every task's loss and error at every step")
    options: dict[str, Any] = Field(default_factory=dict, description="attack-specific settings, e.g. "
                                    "{members = [\"pgd-linf\", \"apgd-linf\"]} for ensemble-linf")
    source: SourceModel | None = Field(None, description="transfer: craft the examples on this other model of "
                                       "the grid and evaluate them on each model, e.g. {encoder = \"resnet18\"}")


class AnalysisSection(Section):
    """Gradient analysis of every trained model: input-gradient norms, covariances across tasks, on clean
    points and on the adversarial points of this all-task attack."""

    attack: str = Field("pgd-linf", description="the attack that makes the adversarial points (all tasks, sum)")
    eps: Eps = Field(8 / 255, description="its budget")
    steps: int = Field(10, ge=1, description="its steps")
    step_size: Number | None = Field(None, description="default eps/4")
    batch_size: int | None = Field(None, ge=1, description="default train.batch_size")


class ExecutorSection(Section):
    """Resources of each worker job when a grid runs with ``--executor slurm`` (submitit)."""

    partition: str | None = Field(None, description="Slurm partition")
    gpus: int | None = Field(None, ge=0, description="GPUs per job")
    cpus: int | None = Field(None, ge=1, description="CPU cores per job")
    mem_gb: float | None = Field(None, gt=0, description="memory per job (GB)")
    time_min: int | None = Field(None, ge=1, description="time limit per job (minutes)")
    account: str | None = Field(None, description="Slurm account")
    qos: str | None = Field(None, description="Slurm QOS")
    array_parallelism: int | None = Field(None, ge=1, description="at most this many jobs of the array at once")


class GridModel(Section):
    run: RunSection = RunSection()
    data: DataSection = DataSection()
    train: TrainSection
    attack: list[AttackSection] = Field(default_factory=list)
    analysis: list[AnalysisSection] = Field(default_factory=list)
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


def _loc(path: Path, loc: tuple) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif not p.startswith(("function-", "literal", "list[", "dict[", "str", "int", "float", "bool")):
            parts.append(("." if parts else "") + p)
    return f"{path.name}: {''.join(parts) or '(top level)'}"


def load_grid(path: Path, plugins: Plugins) -> Grid:
    """Parse, validate and expand a grid file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read the grid file ({exc.strerror})")]) from None
    return load_grid_text(text, path, plugins)


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
        for e in exc.errors():
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            problems.append((_loc(path, e["loc"]), msg))
    problems += _check_names(path, raw, plugins)  # on the raw file, so both kinds are reported together
    if problems or settings is None:
        raise ConfigError(sorted(set(problems), key=problems.index))
    return Grid(path, text, settings, expand(settings, plugins))


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
        targets = a.get("targets")
        if not isinstance(targets, list):
            continue
        if not targets:
            problems.append((where(f"attack[{i}].targets"), "empty list of targets"))
        for j, target in enumerate(targets):
            key = f"attack[{i}].targets[{j}]"
            if isinstance(target, list) and not target:
                problems.append((where(key), "empty target set"))
            for item in target if isinstance(target, list) else []:
                task = resolve_task(item, key)
                if task and all_tasks and task not in all_tasks:
                    problems.append((where(key), f"task {item!r} is in no task set of [train]"))
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
        for a in g.attack:
            spec = plugins.attacks.get(a.name)
            for targets in _targets(a, model_tasks, plugins):
                for eps, steps in itertools.product(a.eps, a.steps if isinstance(a.steps, list) else [a.steps]):
                    objective = a.objective
                    if plugins.objectives.get(objective).exact_targets not in (None, len(targets)):
                        continue  # e.g. 'single' with targets = "all" of a two-task model
                    config = {
                        "kind": "attack", "model": model.id, "attack": a.name, "norm": spec.norm,
                        "eps": eps, "steps": steps, "step_size": a.step_size if a.step_size is not None else eps / 4,
                        "random_start": a.random_start, "restarts": a.restarts, "paper_compat": a.paper_compat,
                        "objective": objective, "weights": a.weights, "targets": targets,
                        "targets_codes": [plugins.tasks.get(t).code for t in targets],
                        "seed": model.config["seed"], "data": model.config["data"],
                        "batch_size": a.batch_size or g.train.batch_size, "trace": a.trace,
                    }
                    if a.options:  # only when set, so trial ids of grids without it do not change
                        config["options"] = a.options
                    if a.source is not None:
                        source = source_model(a.source, model, models, g, plugins)
                        if source is None or not set(targets) <= set(source.config["tasks"]):
                            continue  # the model itself, or a target the surrogate cannot attack
                        config["source_model"] = source.id
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
    return trials


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
    raise ConfigError([("[[attack]] source", f"{source.model_dump(exclude_none=True)}: no model of "
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
