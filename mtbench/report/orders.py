"""One trained model ranked under each of its main tasks (``train.ordered_pairs = false``).

Under weights that do not depend on the main task, ``sd`` and ``ds`` are one model: the grid trains
it once, as the order listed first, and records the other orders (``TrainConfig.also_ranked_as``).
Here each other order becomes a *view*: trial rows for the model and for every trial on it, with the
ids, settings and configs a separate training of that order would have had, and a ``trained_as``
column naming the trial that really ran; their metric rows are the real trial's. Every section of
the report then shows the paper's two cells (main task s, main task d) without knowing about
merging, and says where a cell's model was trained as another order.

A view whose id is a trial that really ran (the order was trained too, e.g. ``ordered_pairs =
true`` in another grid) is not made: the real trial stands for itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mtbench.configs import TrainConfig, parse_config, setting_id
from mtbench.report.frames import Frames

TRAINED_AS = "trained_as"
"""Column of a view's rows: the id of the trial that ran (NULL for trials that ran themselves)."""


def with_orders(frames: Frames) -> Frames:
    """``frames`` with a view per extra order of every merged model, and the ``trained_as`` column."""
    t = frames.trials
    out = t.append_column(TRAINED_AS, pa.nulls(t.num_rows, pa.string()))
    if t.num_rows == 0 or "config" not in t.column_names:
        return replace(frames, trials=out)
    merged = t.filter(pc.and_(pc.equal(t["kind"], "train"),
                              pc.match_substring_regex(t["config"], r'"also_ranked_as":\s*\[\s*\[')))
    if merged.num_rows == 0:
        return replace(frames, trials=out)
    on_models = t.filter(pc.is_in(t["model"], value_set=merged["id"])).to_pylist()
    ids = set(t["id"].to_pylist())
    rows: list[dict[str, Any]] = []
    real: dict[str, str] = {}  # view id -> the trial that ran
    for model_row in merged.to_pylist():
        config = parse_config("train", model_row["config"])
        assert isinstance(config, TrainConfig)
        for order in config.also_ranked_as:
            view = config.in_order(order)
            if view.id in ids or view.id in real:
                continue
            model_setting = setting_id("train", view, {})
            rows.append(_view_row(model_row, view, model_setting, {"codes": "".join(view.codes),
                                                                   "task_names": ",".join(view.tasks)}))
            real[view.id] = model_row["id"]
            for r in (r for r in on_models if r["model"] == model_row["id"]):
                trial = _on_view(parse_config(r["kind"], r["config"]), view)
                if trial.id not in ids and trial.id not in real:
                    columns = {"model": view.id}
                    if getattr(trial, "targets", None) is not None:
                        columns.update(targets="".join(trial.targets_codes), target_names=",".join(trial.targets))
                    rows.append(_view_row(r, trial, setting_id(r["kind"], trial, {view.id: model_setting}), columns))
                    real[trial.id] = r["id"]
    trials = pa.concat_tables([out, pa.Table.from_pylist(rows, schema=out.schema)])

    def read_metrics(phase: str, metric: str | None, trial_ids: Sequence[str] | None) -> pa.Table:
        return _answer(lambda wanted: frames.read_metrics(phase, metric, wanted), trial_ids, real)

    def read_samples(trial_ids: Sequence[str], metric: str) -> pa.Table:
        return _answer(lambda wanted: frames.read_samples(wanted, metric), trial_ids, real)

    return replace(frames, trials=trials, models=_sizes(frames.models, real), read_metrics=read_metrics,
                   read_samples=read_samples)


def _on_view(trial: Any, view: TrainConfig) -> Any:
    """A trial on the model as the same trial on its view: an attack on all its tasks lists them in
    the view's order, as it would have on a model trained in that order."""
    update: dict[str, Any] = {"model": view.id}
    if set(getattr(trial, "targets", ())) == set(view.tasks):
        update.update(targets=view.tasks, targets_codes=view.codes)
    return trial.model_copy(update=update)


def _view_row(row: dict[str, Any], config: Any, setting: str, columns: dict[str, Any]) -> dict[str, Any]:
    """A trial's row as the view's: its id, setting and config, ``trained_as`` the trial that ran."""
    return {**row, **columns, "id": config.id, "setting_id": setting, "config": json.dumps(config.record()),
            TRAINED_AS: row["id"]}


def _sizes(models: pa.Table, real: dict[str, str]) -> pa.Table:
    """The models table with a row per view of a model: its parameters and MACs are the model's."""
    if models.num_rows == 0:
        return models
    by_id = {r["trial_id"]: r for r in models.to_pylist()}
    extra = [{**by_id[ran], "trial_id": view} for view, ran in real.items() if ran in by_id]
    return pa.concat_tables([models, pa.Table.from_pylist(extra, schema=models.schema)]) if extra else models


def _answer(read: Callable[[list[str] | None], pa.Table], asked: Sequence[str] | None,
            real: dict[str, str]) -> pa.Table:
    """Metric or sample rows of the trials ``asked`` (None: all), a view's being its real trial's."""
    asked_set = None if asked is None else set(asked)
    table = read(None if asked_set is None else sorted({real.get(i, i) for i in asked_set}))
    pairs = [(ran, view) for view, ran in real.items() if asked_set is None or view in asked_set]
    if pairs and table.num_rows:
        copies = table.join(pa.table({"trial_id": [p[0] for p in pairs], "view": [p[1] for p in pairs]}),
                            "trial_id", join_type="inner")
        copies = copies.drop_columns(["trial_id"]).rename_columns(
            ["trial_id" if c == "view" else c for c in copies.drop_columns(["trial_id"]).column_names])
        if asked_set is not None:  # a real trial wanted only for its views is not itself an answer
            table = table.filter(pc.is_in(table["trial_id"], value_set=pa.array(sorted(asked_set), pa.string())))
        table = pa.concat_tables([table, copies.select(table.column_names)])
    return table


__all__ = ["TRAINED_AS", "with_orders"]
