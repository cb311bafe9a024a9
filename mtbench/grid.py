"""Grid files: TOML -> validated settings (``mtbench.settings``) -> the typed trials they expand into.

Validation reports every problem at once, each with the file and the table/key path, before any
work starts. Each trial is a typed configuration (``mtbench.configs``) whose id follows the
trial-id policy written there. This module is the only place that turns grid keys into trials.
"""

from __future__ import annotations

import inspect
import itertools
import re
import stat
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mtbench.configs import (
    AnalysisConfig,
    AttackConfig,
    DataConfig,
    DefenseConfig,
    TrainConfig,
    TrialConfig,
    TrialKind,
)
from mtbench.defaults import (
    DEFAULT_DATASET,
    DEFAULT_DEFENSE,
    DEFAULT_OBJECTIVE,
    MASKING_ATTACKS,
    PAPER_ATTACK,
    WEIGHTED_OBJECTIVE,
)
from mtbench.errors import ConfigError, MtbenchError
from mtbench.plugins import Plugins
from mtbench.recipes import OPTIMAL_WEIGHTS, SCHEDULES, optimal_weight
from mtbench.settings import (
    MAX_GRID_BYTES,
    SCHEDULE_KEYS,
    AttackSection,
    DefenseTable,
    GridModel,
    SourceModel,
    TrainSection,
    Weighting,
)
from mtbench.specs import DefenseOptionError, TaskSpec


@dataclass(frozen=True)
class Trial:
    """One unit of work: a typed configuration; its id, kind and the trial it needs follow from it."""

    config: TrialConfig

    @cached_property
    def id(self) -> str:
        return self.config.id

    @property
    def kind(self) -> TrialKind:
        return TrialKind(self.config.kind)

    @property
    def parent(self) -> str | None:
        """The training trial whose model this trial needs (None for a training trial)."""
        return self.config.parent

    def label(self) -> str:
        return self.config.label()


@dataclass
class Grid:
    path: Path
    text: str
    settings: GridModel
    trials: list[Trial] = field(default_factory=list)

    @property
    def train_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.kind is TrialKind.TRAIN]

    @property
    def merged(self) -> int:
        """How many task orders are ranked from another order's model instead of trained
        (``train.ordered_pairs``, :func:`merge_orders`)."""
        return sum(len(t.config.also_ranked_as) for t in self.train_trials)  # type: ignore[attr-defined]


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


def load_grid(path: Path, plugins: Plugins, overrides: Sequence[str] = ()) -> Grid:
    """Parse, validate and expand a grid file; raise :class:`ConfigError` listing every problem.
    ``overrides``: ``KEY=VALUE`` changes from the command line (:mod:`mtbench.overrides`)."""
    path = Path(path)
    if overrides:
        from mtbench.overrides import load_overridden

        return load_overridden(_read_grid(path), path, plugins, overrides)
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
    try:
        trials, expansion_problems = _expand(settings, plugins, path)
    except ConfigError as exc:  # a weighting that gives no weights: check_settings has said why
        trials, expansion_problems = [], [] if problems else [(f"{path.name}: {k}", m) for k, m in exc.problems]
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
        unknown = [o for o in options if accepted is not None and o not in accepted]
        for option in unknown:
            add(f"train.loss_options.{key}.{option}", f"the loss of task {task.name!r} has no option "
                                                      f"{option!r} (it takes: {', '.join(accepted) or 'none'})")
        refused = None if unknown else _loss_refuses(task, options)
        if refused:
            add(f"train.loss_options.{key}", f"the loss of task {task.name!r} refuses {options}: {refused}")
    for i, w in enumerate(g.train.weighting):
        for tasks in task_sets if w == "optimal" else []:
            if len(tasks) > 1 and _optimal_pair(tasks, plugins) is None:
                add(f"train.weighting[{i}]", _not_in_table(tasks, plugins))
    problems += [(f"{path.name}: {key}", msg) for key, msg in _schedule_problems(g)]
    problems += [(f"{path.name}: {key}", msg) for key, msg in _defense_problems(g, task_sets, plugins)]
    buildings = [f"{split}_buildings" for split in ("train", "val", "test") if getattr(g.data, f"{split}_buildings")]
    if g.data.split_file and buildings:
        add("data.split_file", f"give split_file or {', '.join(buildings)}, not both")
    if g.data.point_split is not None:  # one building's points split by id: only the taskonomy layout has ids
        named = sorted({b for key in buildings for b in getattr(g.data, key)})
        if g.data.dataset != "taskonomy":
            add("data.point_split", f"splits the points of one building of the taskonomy dataset; dataset "
                                    f"{g.data.dataset!r} has its own splits: remove point_split")
        elif g.data.split_file or not g.data.train_buildings or len(named) != 1:
            add("data.point_split", f"splits the points of one building: give exactly one in train_buildings "
                                    f"(and no split_file); found {named or 'none'}")
    return problems


def _schedule_problems(g: GridModel) -> list[tuple[str, str]]:
    """A named schedule against the keys it sets; the lr drops; snapshots against the epochs attacked."""
    t, given = g.train, g.train.model_fields_set
    problems = [(f"train.{key}", f"set by train.schedule {t.schedule!r}; give one of them")
                for key in SCHEDULE_KEYS if t.schedule and key in given]
    if not t.schedule and {"lr_milestones", "lr_drop_epochs"} <= given:
        problems.append(("train.lr_drop_epochs", "give lr_drop_epochs (epochs) or lr_milestones (fractions), not both"))
    if not t.schedule and t.optimizer != "sgd" and t.momentum is not None:
        problems.append(("train.momentum", f"momentum is sgd's; the optimizer is {t.optimizer!r}"))
    problems += [("train.snapshots", f"{e} is not before the last epoch ({t.epochs}); the trained model is kept "
                                     "anyway") for e in t.snapshots if e >= t.epochs]
    kept = [*t.snapshots, t.epochs]
    for i, a in enumerate(g.attack):
        problems += [(f"attack[{i}].epochs", f"the models keep no snapshot at epoch {e}: add {e} to train.snapshots "
                                              f"(they keep epochs {kept})") for e in a.epochs or [] if e not in kept]
    return problems


def _defense_key(g: GridModel, i: int) -> str:
    return "train.defense" if len(g.train.defense) == 1 else f"train.defense[{i}]"


def _defense_problems(g: GridModel, task_sets: list[list[str]], plugins: Plugins) -> list[tuple[str, str]]:
    """Each defence's options, as the defence resolves them for each task set of [train] (one message per
    defence and option, however many task sets refuse it)."""
    problems: list[tuple[str, str]] = []
    for i, table in enumerate(g.train.defense):
        for tasks in task_sets:
            try:
                resolve_defense(table, tasks, plugins)
            except DefenseOptionError as exc:
                problems.append((f"{_defense_key(g, i)}.{exc.option}", str(exc)))
            except (ValueError, TypeError, MtbenchError) as exc:
                problems.append((_defense_key(g, i), str(exc)))
    return list(dict.fromkeys(problems))


def resolve_defense(table: DefenseTable, tasks: list[str], plugins: Plugins) -> DefenseConfig:
    """A ``[train] defense`` table for a model of ``tasks`` (main task first): the defence's resolved options
    (``DefenseSpec.validate``; a defence without it takes none), whose ``attack`` and ``objective``, if
    any, must be registered. Raises ``DefenseOptionError`` (``ValueError``) or ``MtbenchError``."""
    spec = plugins.defenses.get(table.name)
    options = table.options
    if spec.validate is None:
        for option in options:
            raise DefenseOptionError(option, f"defence {spec.name!r} takes no options")
        return DefenseConfig(name=spec.name)
    resolved = dict(spec.validate(options, [plugins.tasks.get(t) for t in tasks]))
    for option, registry in (("attack", plugins.attacks), ("objective", plugins.objectives)):
        name = resolved.get(option)
        if isinstance(name, str) and name not in registry:
            raise DefenseOptionError(option, registry.unknown_message(name))
    return DefenseConfig(name=spec.name, options=resolved)


def _loss_refuses(task: TaskSpec, options: dict[str, Any]) -> str | None:
    """Call the loss once on a blank 2x2 batch with the options, so that a value it refuses (a class
    weighting it does not know) is reported now, not by every training trial."""
    import torch

    pred = torch.zeros(1, task.channels, 2, 2)
    target = torch.zeros(1, 1 if task.classification else task.channels, 2, 2)
    try:
        task.loss(pred, target, torch.ones(1, 1, 2, 2, dtype=torch.bool), **options)
    except Exception as exc:  # a plugin's loss may raise anything; each trial would fail the same way
        return str(exc)
    return None


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

    dataset = section("data").get("dataset", DEFAULT_DATASET)
    if isinstance(dataset, str) and dataset not in plugins.datasets:
        problems.append((where("data.dataset"), plugins.datasets.unknown_message(dataset)))
    train = section("train")
    if "train" not in raw and not raw.get("model"):
        problems.append((where("train"), "missing: a grid needs [train] (models to train), [[model]] (models "
                                         "trained elsewhere) or both"))
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
    models_raw = raw.get("model")
    for i, m in enumerate(models_raw if isinstance(models_raw, list) else []):
        tasks = m.get("tasks") if isinstance(m, dict) else None
        for item in ([tasks] if isinstance(tasks, str) and tasks in plugins.tasks else
                     list(tasks) if isinstance(tasks, (str, list)) else []):
            all_tasks.update(filter(None, [resolve_task(item, f"model[{i}].tasks")]))
    for i, w in enumerate(train.get("weighting") or []):
        if isinstance(w, dict):
            for name in w:
                resolve_task(name, f"train.weighting[{i}].{name}")
    defenses = train.get("defense")
    for i, d in enumerate(defenses if isinstance(defenses, list) else [defenses] if defenses is not None else []):
        key = f"train.defense[{i}]" if isinstance(defenses, list) else "train.defense"
        name = d.get("name") if isinstance(d, dict) else d
        if isinstance(name, str) and name not in plugins.defenses:
            problems.append((where(key + (".name" if isinstance(d, dict) else "")),
                             plugins.defenses.unknown_message(name)))
    loss_options = train.get("loss_options")
    for name in loss_options if isinstance(loss_options, dict) else {}:
        resolve_task(name, f"train.loss_options.{name}")
    analyses = raw.get("analysis")
    for i, a in enumerate(analyses if isinstance(analyses, list) else []):
        name = a.get("attack", PAPER_ATTACK) if isinstance(a, dict) else None
        if isinstance(name, str) and name not in plugins.attacks:
            problems.append((where(f"analysis[{i}].attack"), plugins.attacks.unknown_message(name)))
    attacks = raw.get("attack")
    for i, a in enumerate(attacks if isinstance(attacks, list) else []):
        if not isinstance(a, dict):
            continue
        name, objective = a.get("name"), a.get("objective", DEFAULT_OBJECTIVE)
        if isinstance(name, str) and name not in plugins.attacks:
            problems.append((where(f"attack[{i}].name"), plugins.attacks.unknown_message(name)))
        if isinstance(objective, str) and objective not in plugins.objectives:
            problems.append((where(f"attack[{i}].objective"), plugins.objectives.unknown_message(objective)))
        if objective == WEIGHTED_OBJECTIVE and not a.get("weights"):
            problems.append((where(f"attack[{i}].weights"), f"the {WEIGHTED_OBJECTIVE!r} objective needs weights"))
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


def train_weights(weighting: Weighting, tasks: list[str], aux_weight: float,
                  plugins: Plugins) -> tuple[str, dict[str, float]]:
    """Loss weights per task and a label: uniform (the mean), sum, optimal (Appendix B's table, see
    ``mtbench.recipes``), main-aux (the first task is the main task at 1, the others at ``aux_weight``)
    or explicit. For one task, optimal and main-aux are the uniform model."""
    if weighting == "uniform" or (weighting in ("optimal", "main-aux") and len(tasks) == 1):
        return "uniform", {t: 1.0 / len(tasks) for t in tasks}
    if weighting == "sum":
        return "sum", {t: 1.0 for t in tasks}
    if weighting == "optimal":
        weight = _optimal_pair(tasks, plugins)
        if weight is None:
            raise ConfigError([("train.weighting", _not_in_table(tasks, plugins))])
        return "optimal", {tasks[0]: 1.0, tasks[1]: weight}
    if weighting == "main-aux":
        return "main-aux", {t: (1.0 if i == 0 else aux_weight) for i, t in enumerate(tasks)}
    explicit = {plugins.tasks.resolve(k): float(v) for k, v in weighting.items()}
    return "explicit", {t: explicit.get(t, 0.0) for t in tasks}


def _optimal_pair(tasks: list[str], plugins: Plugins) -> float | None:
    """The auxiliary weight of a (main, auxiliary) pair in Appendix B's table; None for other task sets."""
    return optimal_weight(*(plugins.tasks.get(t).code for t in tasks)) if len(tasks) == 2 else None


def _not_in_table(tasks: list[str], plugins: Plugins) -> str:
    codes = [plugins.tasks.get(t).code for t in tasks]
    example = ", ".join(f"{c} = {1 if i == 0 else 0.1}" for i, c in enumerate(codes))
    return (f"'optimal' has Appendix B's weights only for pairs of {', '.join(OPTIMAL_WEIGHTS)} (main task first); "
            f"task set {''.join(codes)!r} is not one: give explicit weights such as {{{example}}}, or 'main-aux' "
            "with train.aux_weight")


def optimizer_settings(t: TrainSection) -> dict[str, Any]:
    """The optimiser fields of a training trial: a named schedule's, or the keys' with their defaults."""
    if t.schedule is not None:
        recipe = SCHEDULES[t.schedule]
        return {"optimizer": recipe.optimizer, "lr": recipe.lr, "momentum": recipe.momentum,
                "weight_decay": recipe.weight_decay, "lr_milestones": (), "lr_drop_epochs": recipe.lr_drop_epochs,
                "schedule": t.schedule}
    sgd = t.optimizer == "sgd"
    momentum = (0.9 if t.momentum is None else t.momentum) if sgd else None
    return {"optimizer": t.optimizer, "lr": t.lr, "momentum": momentum,
            "weight_decay": (1e-4 if sgd else 0.0) if t.weight_decay is None else t.weight_decay,
            "lr_milestones": () if t.lr_drop_epochs else t.lr_milestones, "lr_drop_epochs": t.lr_drop_epochs or ()}


def expand(g: GridModel, plugins: Plugins) -> list[Trial]:
    """Training trials first, then every attack of every model (dependency order)."""
    trials, problems = _expand(g, plugins)
    if problems:
        raise ConfigError(problems)
    return trials


def _data_revision(g: GridModel, plugins: Plugins) -> str:
    """The grid's dataset plugin's revision ("" for a dataset the names check reports as unknown)."""
    return plugins.datasets.get(g.data.dataset).revision if g.data.dataset in plugins.datasets.names() else ""


def _expand(g: GridModel, plugins: Plugins, path: Path = Path("grid")) -> tuple[list[Trial], list[tuple[str, str]]]:
    """The trials, and the problems only expansion finds: an attack that gives no trial, targets its
    objective refuses, a transfer source that is no model of the grid."""
    problems: list[tuple[str, str]] = []
    made = [0] * len(g.attack)
    data = DataConfig(**g.data.model_dump(), seed=g.run.seed, revision=_data_revision(g, plugins))
    configs = _train_configs(g, data, plugins)
    externals, external_problems = _external_configs(g, data, plugins, path)
    problems += external_problems
    models = _unique([Trial(c) for c in (configs if g.train.ordered_pairs else merge_orders(configs)) + externals])
    trials: list[Trial] = list(models)
    defended = any(m.config.defense.name != DEFAULT_DEFENSE for m in models)
    for model in models:
        if defended:  # gradient masking is checked, not assumed: every model of the comparison, twins too
            trials += [Trial(c) for c in _masking_checks(g, model, plugins)]
        for i, a in enumerate(g.attack):
            configs, refused = _attack_configs(a, model, g, plugins)
            problems += [(f"{path.name}: attack[{i}].objective", msg) for msg in refused]
            for config in configs:
                if a.source is not None and model.config.external:
                    continue  # transfer sources are models of [train]; a [[model]] is attacked directly
                if a.source is not None:
                    try:
                        source = source_model(a.source, model, models, g, plugins)
                    except ConfigError as exc:
                        problems += [(f"{path.name}: attack[{i}].source", msg) for _, msg in exc.problems]
                        continue
                    if source is None or not set(config.targets) <= set(source.config.tasks):
                        continue  # the model itself, or a target the surrogate cannot attack
                    config = config.model_copy(update={"source_model": source.id})
                made[i] += 1
                trials.append(Trial(config))
        for a in g.analysis:
            trials.append(Trial(AnalysisConfig(
                model=model.id, attack=a.attack, norm=plugins.attacks.get(a.attack).norm, eps=a.eps, steps=a.steps,
                step_size=a.step_size if a.step_size is not None else a.eps / 4, seed=model.config.seed,
                data=model.config.data, batch_size=a.batch_size or g.train.batch_size,
                loss_options=model.config.loss_options)))
    for i, a in enumerate(g.attack):
        if not made[i] and not problems:
            problems.append((f"{path.name}: attack[{i}]", f"gives no trial: its targets fit no model of [train] "
                             f"(objective {a.objective!r}" + (", crafted on another model)" if a.source else ")")))
    return _unique(trials), sorted(set(problems), key=problems.index)


def _unique(trials: list[Trial]) -> list[Trial]:
    """The trials in order, each id once (two keys of a grid may describe the same trial)."""
    unique: dict[str, Trial] = {}
    for t in trials:
        unique.setdefault(t.id, t)
    return list(unique.values())


def merge_orders(configs: list[TrainConfig]) -> list[TrainConfig]:
    """One model for task sets that differ only in their order where the weights do not depend on it.

    Under uniform, sum or explicit weights, ``sd`` and ``ds`` minimise the same loss: they are one
    model (the same distribution; separate trainings add only seed noise). The first of them in the
    grid is trained; it records the other orders (``also_ranked_as``), under whose main task the
    report ranks it too. Optimal and main-aux weights depend on the main task: nothing merges."""
    kept: dict[str, int] = {}
    out: list[TrainConfig] = []
    for c in configs:
        key = c.in_order(tuple(sorted(c.tasks))).id  # equal for equal weights per task, whatever the order
        if key not in kept:
            kept[key] = len(out)
            out.append(c)
            continue
        first = out[kept[key]]
        if c.tasks != first.tasks and c.tasks not in first.also_ranked_as:
            out[kept[key]] = first.model_copy(update={"also_ranked_as": (*first.also_ranked_as, c.tasks)})
    return out


def _train_configs(g: GridModel, data: DataConfig, plugins: Plugins) -> list[TrainConfig]:
    configs = []
    for encoder, task_set, weighting, defense, seed in itertools.product(
            g.train.encoders, g.train.task_sets, g.train.weighting, g.train.defense, g.train.seeds or [g.run.seed]):
        tasks = task_set_names(task_set, plugins)
        label, weights = train_weights(weighting, tasks, g.train.aux_weight, plugins)
        try:
            resolved = resolve_defense(defense, tasks, plugins)
        except (ValueError, TypeError) as exc:  # check_settings has said why, with its key
            raise ConfigError([("train.defense", str(exc))]) from None
        configs.append(TrainConfig(
            encoder=encoder, tasks=tasks, codes=[plugins.tasks.get(t).code for t in tasks], weighting=label,
            weights=weights, epochs=g.train.epochs, batch_size=g.train.batch_size, **optimizer_settings(g.train),
            snapshots=g.train.snapshots, architecture=plugins.encoders.get(encoder).revision, seed=seed, data=data,
            amp=g.train.amp, channels_last=g.train.channels_last, val_every=g.train.val_every,
            head_init=g.train.head_init, defense=resolved,
            loss_options={plugins.tasks.resolve(k): v for k, v in sorted(g.train.loss_options.items())
                          if plugins.tasks.resolve(k) in tasks}))
    return configs


def _external_configs(g: GridModel, data: DataConfig, plugins: Plugins,
                      path: Path) -> tuple[list[TrainConfig], list[tuple[str, str]]]:
    """A measuring trial per ``[[model]]``, and what is wrong with each: its factory must build a
    module here, its weights (relative to the grid file) load into it, and its outputs on one batch
    have each task's shape. Nothing is trained: ``epochs`` is 0 and the weighting ``external``."""
    from mtbench.external import ExternalModelError, build_external, check_outputs
    from mtbench.models import file_sha256

    configs, problems = [], []
    encoders = set(plugins.encoders.names())
    for i, m in enumerate(g.model):
        where = f"{path.name}: model[{i}]"
        if m.name in encoders:
            problems.append((f"{where}.name", f"{m.name!r} is an encoder plugin's name; name the model otherwise"))
        if m.name in [other.name for other in g.model[:i]]:
            problems.append((f"{where}.name", f"{m.name!r} names another [[model]] too"))
        tasks = task_set_names(m.tasks, plugins)
        weights = (path.parent / m.weights).resolve() if m.weights else None
        if weights is not None and not weights.is_file():
            problems.append((f"{where}.weights", f"{weights}: no such file (a path relative to the grid file)"))
            continue
        try:
            model = build_external(m.factory, tasks, weights)
        except ExternalModelError as exc:
            problems.append((f"{where}.{exc.key}", str(exc)))
            continue
        channels = {t: plugins.tasks.get(t).channels for t in tasks}
        problems += [(f"{where}.factory", f"{m.factory}: {p}") for p in check_outputs(model, channels,
                                                                                     g.data.image_size)]
        configs.append(TrainConfig(
            encoder=m.name, tasks=tasks, codes=[plugins.tasks.get(t).code for t in tasks], weighting="external",
            weights={t: 1.0 / len(tasks) for t in tasks}, epochs=0, batch_size=g.train.batch_size, lr=0.0,
            optimizer="none", lr_milestones=(), seed=g.run.seed, data=data, factory=m.factory,
            weights_sha256=file_sha256(weights) if weights else "", weights_path=str(weights or "")))
    return configs, problems


def _masking_checks(g: GridModel, model: Trial, plugins: Plugins) -> list[AttackConfig]:
    """The adaptive attacks (:data:`MASKING_ATTACKS`) on the model's main task at each L-inf eps of the
    grid's own attacks, with their most steps: a defended model whose error under the worst-case
    ensemble exceeds its error under PGD hides its gradients (the report flags it)."""
    budgets: dict[float, int] = {}
    for a in g.attack:
        if a.source is None and plugins.attacks.get(a.name).norm == "linf":
            steps = max(a.steps) if isinstance(a.steps, list) else a.steps
            budgets.update({eps: max(budgets.get(eps, 0), steps) for eps in a.eps})
    sections = [AttackSection(name=name, eps=[eps], steps=steps, targets=[[model.config.tasks[0]]])
                for name in MASKING_ATTACKS if name in plugins.attacks for eps, steps in sorted(budgets.items())]
    return [c for section in sections for c in _attack_configs(section, model, g, plugins)[0]]


def _attack_configs(a: AttackSection, model: Trial, g: GridModel,
                    plugins: Plugins) -> tuple[list[AttackConfig], list[str]]:
    """The attack trials of one ``[[attack]]`` on one model (before a transfer source is chosen), and
    what the objective says of the target sets it refuses."""
    spec = plugins.attacks.get(a.name)
    weights = {plugins.tasks.resolve(k): v for k, v in a.weights.items()} if a.weights else a.weights
    out: list[AttackConfig] = []
    refusals: list[str] = []
    for targets in _targets(a, list(model.config.tasks), plugins):
        if plugins.objectives.get(a.objective).exact_targets not in (None, len(targets)):
            continue  # e.g. 'single' with targets = "all" of a two-task model
        refused = _objective_refuses(plugins, a.objective, targets, weights)
        if refused:
            refusals.append(refused)
            continue
        epochs = [None] if model.config.external else a.epochs or [None]  # a [[model]] keeps no snapshots
        for eps, steps, epoch in itertools.product(a.eps, a.steps if isinstance(a.steps, list) else [a.steps],
                                                   epochs):
            out.append(AttackConfig(
                model=model.id, attack=a.name, norm=spec.norm, eps=eps, steps=steps,
                step_size=a.step_size if a.step_size is not None else eps / 4, random_start=a.random_start,
                restarts=a.restarts, paper_compat=a.paper_compat, objective=a.objective, weights=weights,
                targets=targets, targets_codes=[plugins.tasks.get(t).code for t in targets],
                seed=model.config.seed, data=model.config.data, batch_size=a.batch_size or g.train.batch_size,
                trace=a.trace, options=a.options, loss_options=model.config.loss_options,
                epoch=None if epoch == model.config.epochs else epoch))  # the last epoch is the trained model
    return out, refusals


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
    cfg: TrainConfig = model.config  # type: ignore[assignment]
    tasks = task_set_names(source.tasks, plugins) if source.tasks is not None else list(cfg.tasks)
    weighting = source.weighting if source.weighting is not None else cfg.weighting
    if weighting == "explicit":
        weighting = cfg.weights
    label, _ = train_weights(weighting, tasks, g.train.aux_weight, plugins)
    encoder = source.encoder or cfg.encoder
    table = next((d for d in g.train.defense if resolve_defense(d, list(cfg.tasks), plugins) == cfg.defense), None)
    defense = cfg.defense if table is None else resolve_defense(table, tasks, plugins)  # the same defence's
    for m in models:
        c = m.config
        orders = [list(c.tasks), *map(list, c.also_ranked_as)]
        same = (c.encoder, c.weighting, c.seed, c.epochs, c.defense) == (encoder, label, cfg.seed, cfg.epochs,
                                                                        defense)
        if same and tasks in orders:
            return None if m.id == model.id else m
    raise ConfigError([("attack.source", f"{source.model_dump(exclude_none=True)}: no model of "
                        f"[train] has encoder {encoder!r}, tasks {tasks} and weighting {label!r}")])


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
