"""The flat results table: one row per (trial, task, metric), every setting in a typed column.

The store keeps results in long form across three tables (trials with a JSON config, models,
metrics); answering "v of task s under pgd-linf 8/255" there takes a join and JSON extraction. This
table is that join, done once, with a fixed schema (:data:`RESULTS_SCHEMA`): the same columns and
types whatever the data, so that code reading one export reads the next. It is written to the
Parquet mirror as ``results.parquet`` and returned by ``mtbench.results(source)`` as a DataFrame.

Rows, by trial kind (finished trials only):

- ``train``: each task's clean test metrics (``clean``), beside its constant predictor's
  (``constant``); ``adv`` is null.
- ``attack``: each task's metrics on clean (``clean``) and adversarial (``adv``) test images; the
  task-level ``rel_vuln`` and ``delta_loss`` (E[dL]) repeat on every metric row of the task
  (filter ``metric == "error"`` for one row per task and attack). ``error`` is every task's
  error metric under one name.
- ``analysis``: input-gradient statistics on clean and adversarial points.

Model columns (encoder, tasks, weighting, lr, epochs, seed, data) of an attack or analysis row are its
model's; a model trained once for several task orders appears once per order (``trained_as`` names
the trial that ran, see :mod:`mtbench.report.orders`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mtbench.records import Phase
from mtbench.report.frames import Frames

KINDS = ("train", "attack", "analysis")
"""Trial kinds with per-task results (an advice trial ranks tasks; it has none)."""

RESULTS_SCHEMA = pa.schema([
    pa.field("trial_id", pa.string(), nullable=False, metadata={"doc": "the trial (trials.id)"}),
    pa.field("setting_id", pa.string(), metadata={"doc": "trials of one setting differ only in their seeds"}),
    pa.field("kind", pa.string(), nullable=False, metadata={"doc": "train, attack or analysis"}),
    pa.field("model_id", pa.string(), metadata={"doc": "the model's training trial (a train row: itself)"}),
    pa.field("trained_as", pa.string(), metadata={"doc": "a task order ranked from another order's model: "
                                                         "the trial that ran"}),
    pa.field("seed", pa.int64(), metadata={"doc": "the model's seed"}),
    pa.field("data_source", pa.string(), metadata={"doc": "the dataset plugin (synthetic, taskonomy)"}),
    pa.field("data_root", pa.string(), metadata={"doc": "the data folder given in the grid (null: default)"}),
    pa.field("data_revision", pa.string(),
             metadata={"doc": "the dataset plugin's revision (synthetic: its generator's version, v6)"}),
    pa.field("image_size", pa.int64(), metadata={"doc": "square images and labels, pixels"}),
    pa.field("encoder", pa.string(), metadata={"doc": "the encoder plugin (a [[model]]: its name)"}),
    pa.field("tasks", pa.list_(pa.string()), metadata={"doc": "the model's tasks, main task first"}),
    pa.field("codes", pa.string(), metadata={"doc": "the model's task codes, main task first (\"sd\")"}),
    pa.field("weighting", pa.string(), metadata={"doc": "uniform, sum, optimal, main-aux, explicit; external: "
                                                         "a [[model]] trained elsewhere"}),
    pa.field("factory", pa.string(), metadata={"doc": "a [[model]]'s package.module:function"}),
    pa.field("weights_sha256", pa.string(), metadata={"doc": "the SHA-256 of a [[model]]'s weights file"}),
    pa.field("lr", pa.float64(), metadata={"doc": "the model's initial learning rate"}),
    pa.field("epochs", pa.int64(), metadata={"doc": "the model's training epochs (a [[model]]: 0)"}),
    pa.field("attack", pa.string(), metadata={"doc": "the attack plugin (analysis: the one that makes its "
                                                      "adversarial points)"}),
    pa.field("norm", pa.string(), metadata={"doc": "linf or l2"}),
    pa.field("eps", pa.float64(), metadata={"doc": "in pixel units of [0, 1] images (8/255 = 0.0314)"}),
    pa.field("steps", pa.int64(), metadata={"doc": "attack steps"}),
    pa.field("step_size", pa.float64(), metadata={"doc": "attack step size, pixel units"}),
    pa.field("random_start", pa.bool_(), metadata={"doc": "whether the attack starts inside the ball"}),
    pa.field("objective", pa.string(), metadata={"doc": "how the attacked tasks' losses combine"}),
    pa.field("attacked_tasks", pa.list_(pa.string()), metadata={"doc": "the tasks whose losses the attack "
                                                                       "ascends"}),
    pa.field("source_model", pa.string(), metadata={"doc": "transfer: the model that crafted the examples"}),
    pa.field("task", pa.string(), nullable=False, metadata={"doc": "the task this row measures"}),
    pa.field("attacked", pa.bool_(), metadata={"doc": "whether this task was among the attacked ones"}),
    pa.field("metric", pa.string(), nullable=False, metadata={"doc": "error (each task's error metric), loss, "
                                                                     "or one of the task's metrics"}),
    pa.field("clean", pa.float64(), metadata={"doc": "on the clean test images"}),
    pa.field("adv", pa.float64(), metadata={"doc": "on the adversarial test images (train: null)"}),
    pa.field("constant", pa.float64(), metadata={"doc": "the task's constant predictor (fitted on the "
                                                        "training split) on the test split"}),
    pa.field("rel_vuln", pa.float64(), metadata={"doc": "relative vulnerability of the task's error, "
                                                        "(err_adv - err_clean) / err_clean"}),
    pa.field("delta_loss", pa.float64(), metadata={"doc": "E[dL]: mean over samples of |loss_adv - loss_clean|"}),
    pa.field("suspect", pa.bool_(), metadata={"doc": "a check of the trial failed (see mtbench report)"}),
    pa.field("finished_at", pa.timestamp("us", tz="UTC"), metadata={"doc": "when the trial finished"}),
])
"""The columns of the flat table, in order; ``metadata["doc"]`` says what a column holds."""

SOURCE_PHASES = {"train": (Phase.CLEAN, None), "attack": (Phase.CLEAN, Phase.ADV),
                 "analysis": (Phase.ANALYSIS, Phase.ANALYSIS_ADV)}
"""Per kind: the phases whose values are ``clean`` and ``adv``."""


RESULTS_FILE = "results.parquet"


def export_mirror(store, folder: Path) -> list[Path]:
    """The Parquet mirror of ``store`` in ``folder``: its tables and the flat ``results.parquet``, all
    replaced together."""
    from mtbench.report.frames import load_frames
    from mtbench.storage import export_parquet

    return export_parquet(store, folder, {RESULTS_FILE.removesuffix(".parquet"):
                                          lambda: results_table(load_frames(store.url))})


def results_table(frames: Frames) -> pa.Table:
    """The flat table of every finished train, attack and analysis trial in ``frames``."""
    t = frames.trials
    if t.num_rows == 0:
        return RESULTS_SCHEMA.empty_table()
    t = t.filter(pc.and_(pc.equal(t["status"], "done"), pc.is_in(t["kind"], value_set=pa.array(KINDS))))
    trials = {r["id"]: r for r in t.to_pylist()}
    if not trials:
        return RESULTS_SCHEMA.empty_table()
    configs = {i: json.loads(r["config"]) for i, r in trials.items()}
    values = _values(frames, list(trials))
    rows = []
    for trial_id, trial in trials.items():
        config = configs[trial_id]
        model_id = trial_id if trial["kind"] == "train" else config.get("model")
        model = configs.get(model_id) or {}
        clean_phase, adv_phase = SOURCE_PHASES[trial["kind"]]
        clean = values.get((trial_id, clean_phase), {})
        adv = values.get((trial_id, adv_phase), {}) if adv_phase else {}
        constant = values.get((model_id, Phase.BASELINE), {})
        vulnerability = values.get((trial_id, Phase.VULNERABILITY), {})
        if trial["kind"] == "attack":  # every task's error under one name, as training trials store it
            for task, error in _errors(vulnerability).items():
                clean.setdefault((task, "error"), error[0])
                adv.setdefault((task, "error"), error[1])
        attacked = config.get("targets")
        common = _common(trial, config, model, model_id)
        for task, metric in sorted(clean.keys() | adv.keys()):
            if task not in (model.get("tasks") or config.get("tasks") or [task]):
                continue  # e.g. the objective's own E[dL] row: not a task
            rows.append({**common, "task": task, "metric": metric,
                         "attacked": None if attacked is None else task in attacked,
                         "clean": clean.get((task, metric)), "adv": adv.get((task, metric)),
                         "constant": constant.get((task, metric)),
                         "rel_vuln": vulnerability.get((task, "rel_vuln_ratio_of_means")),
                         "delta_loss": vulnerability.get((task, "delta_loss"))})
    return pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)


def _values(frames: Frames, trial_ids: list[str]) -> dict[tuple[str, Phase], dict[tuple[str, str], float]]:
    """``{(trial, phase): {(task, metric): value}}`` at each metric's last step, for the phases the
    table reads (a model's baseline included: models are among the trials, or their rows are absent)."""
    out: dict[tuple[str, Phase], dict[tuple[str, str], float]] = defaultdict(dict)
    phases = (Phase.CLEAN, Phase.ADV, Phase.BASELINE, Phase.VULNERABILITY, Phase.ANALYSIS, Phase.ANALYSIS_ADV)
    for phase in phases:
        table = frames.read_metrics(phase, None, None)
        if table.num_rows == 0:
            continue
        d = table.sort_by([("step", "ascending")]).to_pydict()
        for trial, task, metric, value in zip(d["trial_id"], d["task"], d["metric"], d["value"]):
            out[(trial, phase)][(task, metric)] = value
    return out


def _errors(vulnerability: dict[tuple[str, str], float]) -> dict[str, tuple[float, float]]:
    """Task -> (clean error, adversarial error) from an attack's vulnerability rows."""
    tasks = {task for task, metric in vulnerability if metric == "error_clean"}
    return {t: (vulnerability[(t, "error_clean")], vulnerability.get((t, "error_adv"))) for t in tasks}


def _common(trial: dict[str, Any], config: dict[str, Any], model: dict[str, Any], model_id: str | None) -> dict:
    """The columns every row of one trial shares: its settings and its model's."""
    data = model.get("data") or config.get("data") or {}
    finished = trial.get("finished_at")
    return {
        "trial_id": trial["id"], "setting_id": trial.get("setting_id"), "kind": trial["kind"], "model_id": model_id,
        "trained_as": trial.get("trained_as"), "seed": model.get("seed", config.get("seed")),
        "data_source": data.get("dataset"), "data_root": data.get("root"),
        "data_revision": data.get("revision") or None,
        "image_size": data.get("image_size"), "encoder": model.get("encoder"), "tasks": model.get("tasks"),
        "codes": "".join(model.get("codes") or []) or None, "weighting": model.get("weighting"),
        "factory": model.get("factory") or None, "weights_sha256": model.get("weights_sha256") or None,
        "lr": model.get("lr"), "epochs": model.get("epochs"), "attack": config.get("attack"),
        "norm": config.get("norm"), "eps": config.get("eps"), "steps": config.get("steps"),
        "step_size": config.get("step_size"), "random_start": config.get("random_start"),
        "objective": config.get("objective"), "attacked_tasks": config.get("targets"),
        "source_model": config.get("source_model"), "suspect": bool(trial.get("suspect")),
        "finished_at": None if finished is None else int(finished * 1_000_000),
    }
