"""Parquet mirror of the tables, for pandas, polars or DuckDB. Rewritten whole, atomically."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mtbench.storage.files import write_files
from mtbench.storage.schema import READERS_MAY_LACK, metadata

TABLES = ("runs", "trials", "models", "metrics", "samples")


def export_parquet(store, folder: Path, derived: Mapping[str, Callable[[], pa.Table]] | None = None) -> list[Path]:
    """Write ``<folder>/<table>.parquet`` for every table, and for every table ``derived`` makes
    (name -> a function of nothing: the flat results table, built by the report layer, which
    storage does not import); returns the files written.

    All tables are written before any replaces its old file, so a full disk leaves the old mirror
    whole rather than half old, half new."""
    folder = Path(folder)
    tables = {name: _arrow_table(store, name) for name in TABLES}
    tables.update({name: make() for name, make in (derived or {}).items()})
    writers = {folder / f"{name}.parquet": partial(pq.write_table, table) for name, table in tables.items()}
    write_files(writers, "the Parquet mirror")
    return list(writers)


def _arrow_table(store, name: str) -> pa.Table:
    """Every column of the table; one added later (``trials.versions``) is text even where all its
    values are NULL (an older database), so that the mirror's schema does not depend on the data."""
    rows = store.table_rows(name)
    columns = metadata.tables[name].columns
    return pa.Table.from_pydict({c.name: pa.array([r[c.name] for r in rows],
                                                  type=pa.string() if c.info.get(READERS_MAY_LACK) else None)
                                 for c in columns})


def read_parquet(folder: Path, name: str) -> list[dict[str, Any]]:
    path = Path(folder) / f"{name}.parquet"
    if not path.is_file():
        return []
    return pq.read_table(path).to_pylist()
