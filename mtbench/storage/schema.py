"""The tables. Metrics are long form: one row per (trial, split, phase, task, metric, step).

``phase`` says what a metric row measures: one of :class:`mtbench.records.Phase`, whose members
document each; ``trials.status`` is one of :class:`mtbench.records.TrialStatus`; ``trials.config``
is a typed configuration's ``record()`` (:mod:`mtbench.configs`).

``mtbench_meta`` holds the schema version, so that an mtbench too old for a database refuses it
instead of misreading it. Databases made before the table existed are version 1.
"""

from sqlalchemy import BigInteger, Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

SCHEMA_VERSION = 5
"""1: the five tables below; 2: adds ``mtbench_meta`` and the metrics (phase, metric, trial) index;
3: trial ids follow the written trial-id policy (``mtbench.configs``; ``mtbench.storage.migrate``);
4: ``trials.versions``, the versions a finished trial was made with (``mtbench.provenance``);
5: ``trials.setting_id``, the trial's setting (``mtbench.configs.setting_id``): what reports group by."""

READERS_MAY_LACK = "readers_may_lack"
"""``Column.info`` flag: a column added later that readers of an older database read as NULL
(instead of asking for an upgrade), since nothing stored before could have filled it."""

meta = Table(
    "mtbench_meta", metadata,
    Column("key", String(40), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200)),
    Column("grid_path", Text),
    Column("grid_text", Text),
    Column("mtbench_version", String(40)),
    Column("host", String(200)),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("status", String(20)),
)

trials = Table(
    "trials", metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("label", Text),
    Column("parent", String(32)),
    Column("config", Text, nullable=False),
    Column("status", String(20), nullable=False),  # a TrialStatus
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker", String(200)),
    Column("run_id", Integer),
    Column("mtbench_version", String(40)),
    Column("seed", Integer),
    Column("started_at", Float),
    Column("heartbeat_at", Float),
    Column("finished_at", Float),
    Column("duration_s", Float),
    Column("error", Text),
    Column("checks", Text),
    Column("suspect", Boolean, default=False),
    # JSON of mtbench.provenance.current() when the trial finished; NULL: stored before schema 4 (unknown)
    Column("versions", Text, info={READERS_MAY_LACK: True}),
    # mtbench.configs.setting_id: the id less seeds and execution keys, parents by their setting; trials
    # averaged together share it. NULL: read from a database older than schema 5 (the report computes it)
    Column("setting_id", String(32), info={READERS_MAY_LACK: True}),
)

models = Table(
    "models", metadata,
    Column("trial_id", String(32), ForeignKey("trials.id"), primary_key=True),
    Column("encoder", String(100)),
    Column("tasks", Text),
    Column("weighting", String(40)),
    Column("epochs", Integer),
    Column("checkpoint", Text),
    Column("sha256", String(64)),
    Column("parameters", BigInteger),
    Column("macs", BigInteger),  # 6e9 for a ResNet18 at 256 px: beyond PostgreSQL's 32-bit INTEGER
    Column("image_size", Integer),
)

metrics = Table(
    "metrics", metadata,
    Column("trial_id", String(32), ForeignKey("trials.id"), index=True, nullable=False),
    Column("split", String(20)),
    Column("phase", String(20)),
    Column("task", String(100)),
    Column("attacked", Boolean),
    Column("metric", String(100)),
    Column("step", Integer),
    Column("value", Float),
    Index("ix_metrics_phase_metric_trial", "phase", "metric", "trial_id"),  # what reports filter by
)

samples = Table(
    "samples", metadata,
    Column("trial_id", String(32), ForeignKey("trials.id"), index=True, nullable=False),
    Column("sample", Integer),
    Column("task", String(100)),
    Column("attacked", Boolean),
    Column("metric", String(100)),
    Column("clean", Float),
    Column("adv", Float),
)

RESULT_TABLES = ("runs", "trials", "models", "metrics", "samples")
"""The tables every mtbench database has had since version 1: how a database without
``mtbench_meta`` is recognised as an mtbench one."""
