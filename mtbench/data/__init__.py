"""Taskonomy-format data: the on-disk layout, a loader, and a generator of synthetic scenes.

Real and synthetic data share one decode path: the generator writes PNGs in the official layout
and the loader reads them back through the tasks' own ``decode`` functions.
"""

from mtbench.data.layout import DOMAINS, file_name, parse_file_name, read_png, resize
from mtbench.data.loader import TaskonomyDataset, load_splits, scan

__all__ = [
    "DOMAINS",
    "TaskonomyDataset",
    "file_name",
    "load_splits",
    "parse_file_name",
    "read_png",
    "resize",
    "scan",
]
