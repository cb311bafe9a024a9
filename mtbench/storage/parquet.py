"""Parquet mirror of the tables, for pandas, polars or DuckDB. Rewritten whole, atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mtbench.storage.schema import metadata

TABLES = ("runs", "trials", "models", "metrics", "samples")


def export_parquet(store, folder: Path) -> list[Path]:
    """Write ``<folder>/<table>.parquet`` for every table; returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TABLES:
        rows = store.table_rows(name)
        columns = [c.name for c in metadata.tables[name].columns]
        table = pa.Table.from_pydict({c: [r[c] for r in rows] for c in columns})
        path = folder / f"{name}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        written.append(path)
    return written


def read_parquet(folder: Path, name: str) -> list[dict[str, Any]]:
    path = Path(folder) / f"{name}.parquet"
    if not path.is_file():
        return []
    return pq.read_table(path).to_pylist()
