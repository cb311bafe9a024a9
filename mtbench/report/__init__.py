"""Reports from the database or its Parquet mirror. Imports no torch, so it starts fast."""

from mtbench.report import leaderboard, paper, render
from mtbench.report.frames import Frames, load_frames
from mtbench.report.leaderboard import Filters
from mtbench.report.render import Section

__all__ = ["Filters", "Frames", "Section", "leaderboard", "load_frames", "paper", "render"]
