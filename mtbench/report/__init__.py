"""Reports from the database or its Parquet mirror. Imports no torch, so it starts fast."""

from mtbench.report.leaderboard import Tables, attack_rows, load_tables, model_rows

__all__ = ["Tables", "attack_rows", "load_tables", "model_rows"]
