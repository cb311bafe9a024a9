"""Where trials live: SQLAlchemy tables (SQLite by default, any URL) and their Parquet mirror."""

from mtbench.storage.db import DatabaseMissing, Store, default_url
from mtbench.storage.parquet import export_parquet, read_parquet

__all__ = ["DatabaseMissing", "Store", "default_url", "export_parquet", "read_parquet"]
