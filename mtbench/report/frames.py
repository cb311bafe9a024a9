"""What reports read, as Arrow tables: all trials (flattened) and models up front, metric rows on
demand, filtered by phase, metric and trial ids in SQL or in the Parquet reader, never row by row.

Trials come as ``mtbench.storage.trial_info`` flattens them, from either source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from sqlalchemy import select

from mtbench.errors import MtbenchError
from mtbench.records import Phase
from mtbench.storage.schema import metrics, models, runs, samples
from mtbench.storage.trial_info import flatten, trial_info_query

METRIC_COLUMNS = ("trial_id", "task", "step", "value")
ALL_METRICS_COLUMNS = ("trial_id", "task", "metric", "step", "value")
"""What ``read_metrics(phase, None, ...)`` returns: every metric of a phase, named."""
SAMPLE_COLUMNS = ("trial_id", "sample", "task", "metric", "clean", "adv")
MetricReader = Callable[[str, str | None, Sequence[str] | None], pa.Table]
SampleReader = Callable[[Sequence[str], str], pa.Table]


@dataclass
class Frames:
    """The report's inputs: trial info, models, the runs (grids), and a reader of metric rows."""

    trials: pa.Table
    models: pa.Table
    runs: pa.Table
    read_metrics: MetricReader
    """``read_metrics(phase, metric, trial_ids or None)`` -> table of trial_id, task, step, value; with
    ``metric=None``, every metric of the phase, with a ``metric`` column (``ALL_METRICS_COLUMNS``)."""
    read_samples: SampleReader
    """``read_samples(trial_ids, metric)`` -> per-sample clean and adversarial values of every task."""


def load_frames(source: str) -> Frames:
    """``source``: a database URL, a SQLite file, a results folder, or a Parquet folder. A model
    trained once for several task orders is there once per order (:mod:`mtbench.report.orders`)."""
    from mtbench.report.orders import with_orders

    return with_orders(_load(source))


def _load(source: str) -> Frames:
    path = Path(source)
    if path.is_dir() and (path / "trials.parquet").is_file():
        return _from_parquet(path)
    if path.is_dir() and (path / "parquet" / "trials.parquet").is_file() and not (path / "mtbench.db").is_file():
        return _from_parquet(path / "parquet")
    if path.is_dir() and (path / "mtbench.db").is_file():
        source = f"sqlite:///{path / 'mtbench.db'}"
    elif "://" not in source:
        if not path.is_file():
            raise MtbenchError(f"{source}: no database or Parquet folder here (run `mtbench run` first, or pass --db)")
        source = f"sqlite:///{path}"
    return _from_sql(source)


def _from_sql(url: str) -> Frames:
    """Read-only: a report never creates, upgrades or alters the database it reads."""
    from mtbench.storage import Store

    store = Store(url, read_only=True)
    engine = store.engine

    def read_metrics(phase: Phase | str, metric: str | None, trial_ids: Sequence[str] | None) -> pa.Table:
        phase = Phase(phase).value  # a misspelt phase is an error, not an empty table
        query = select(*(metrics.c[c] for c in _metric_columns(metric))).where(metrics.c.phase == phase)
        if metric is not None:
            query = query.where(metrics.c.metric == metric)
        if trial_ids is not None:
            query = query.where(metrics.c.trial_id.in_(list(trial_ids)))
        with store.guard(), engine.connect() as c:
            return _arrow(c, query)

    def read_samples(trial_ids: Sequence[str], metric: str) -> pa.Table:
        query = select(*(samples.c[c] for c in SAMPLE_COLUMNS)).where(samples.c.trial_id.in_(list(trial_ids)),
                                                                        samples.c.metric == metric)
        with store.guard(), engine.connect() as c:
            return _arrow(c, query)

    with store.guard(), engine.connect() as c:
        return Frames(trials=flatten(_arrow(c, trial_info_query(store.absent))), models=_arrow(c, select(models)),
                      runs=_arrow(c, select(runs)), read_metrics=read_metrics, read_samples=read_samples)


def _metric_columns(metric: str | None) -> tuple[str, ...]:
    return METRIC_COLUMNS if metric is not None else ALL_METRICS_COLUMNS


def _arrow(connection, query) -> pa.Table:
    """A query's rows as an Arrow table, column by column. The SQL goes to the driver as compiled
    text, skipping SQLAlchemy's per-value result processing (the slow part for a million rows)."""
    compiled = query.compile(connection.engine, compile_kwargs={"literal_binds": True})
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(str(compiled))
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    finally:
        cursor.close()
    columns = list(zip(*rows)) if rows else [[] for _ in names]
    return pa.table({n: pa.array(list(col)) for n, col in zip(names, columns)})


def _from_parquet(folder: Path) -> Frames:
    import pyarrow.parquet as pq

    def read(name: str, filters=None, columns=None) -> pa.Table:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            return pa.table({})
        try:
            return pq.read_table(path, filters=filters, columns=columns)
        except (pa.ArrowException, OSError) as exc:
            raise MtbenchError(f"{path}: not a readable Parquet file ({exc}); `mtbench export` rewrites the "
                               "mirror from the database") from None

    def read_metrics(phase: Phase | str, metric: str | None, trial_ids: Sequence[str] | None) -> pa.Table:
        phase = Phase(phase).value
        filters = [("phase", "=", phase)] + ([("metric", "=", metric)] if metric is not None else [])
        if trial_ids is not None:
            filters.append(("trial_id", "in", list(trial_ids)))
        columns = _metric_columns(metric)
        table = read("metrics", filters, list(columns))
        return table if table.num_rows else pa.table({c: [] for c in columns})

    def read_samples(trial_ids: Sequence[str], metric: str) -> pa.Table:
        table = read("samples", [("trial_id", "in", list(trial_ids)), ("metric", "=", metric)], list(SAMPLE_COLUMNS))
        return table if table.num_rows else pa.table({c: [] for c in SAMPLE_COLUMNS})

    return Frames(trials=flatten(read("trials")), models=read("models"), runs=read("runs"),
                  read_metrics=read_metrics, read_samples=read_samples)
