"""The flat view of trials that reports group by: status columns plus fields of the JSON config.

Configs are parsed by Arrow's JSON reader against a fixed schema, all rows at once, so 100k trials
flatten in about 0.1 s from either source (database or Parquet mirror).
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from sqlalchemy import select

from mtbench.storage.schema import trials

# report column -> (JSON key in the trial config, Arrow type)
CONFIG_FIELDS: dict[str, tuple[str, pa.DataType]] = {
    "encoder": ("encoder", pa.string()), "codes": ("codes", pa.list_(pa.string())),
    "task_names": ("tasks", pa.list_(pa.string())), "weighting": ("weighting", pa.string()),
    "epochs": ("epochs", pa.int64()), "seed": ("seed", pa.int64()), "model": ("model", pa.string()),
    "source_model": ("source_model", pa.string()), "attack": ("attack", pa.string()),
    "norm": ("norm", pa.string()), "eps": ("eps", pa.float64()), "steps": ("steps", pa.int64()),
    "objective": ("objective", pa.string()), "targets": ("targets_codes", pa.list_(pa.string())),
}
LIST_SEPARATORS = {"codes": "", "targets": "", "task_names": ","}  # ["s", "d"] is shown "sd"
STATUS_COLUMNS = ("id", "kind", "status", "suspect", "run_id", "duration_s")


def trial_info_query():
    """The status columns and the raw config of every trial."""
    return select(*(trials.c[c] for c in STATUS_COLUMNS), trials.c.config)


def flatten(table: pa.Table) -> pa.Table:
    """Add the ``CONFIG_FIELDS`` columns to a trials table (the raw ``config`` stays, last)."""
    keep = [c for c in STATUS_COLUMNS if c in table.column_names]
    out = table.select(keep)
    schema = pa.schema([(key, kind) for key, kind in CONFIG_FIELDS.values()])
    if table.num_rows:
        text = "\n".join(table["config"].to_pylist()).encode()
        parsed = pj.read_json(io.BytesIO(text), parse_options=pj.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"))
    else:
        parsed = schema.empty_table()
    for column, (key, _) in CONFIG_FIELDS.items():
        values = parsed[key] if key in parsed.column_names else pa.nulls(table.num_rows, schema.field(key).type)
        if column in LIST_SEPARATORS:
            values = pc.binary_join(values, LIST_SEPARATORS[column])
        out = out.append_column(column, values)
    return out.append_column("config", table["config"]) if "config" in table.column_names else out
