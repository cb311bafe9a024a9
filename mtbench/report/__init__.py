"""Reports from the database or its Parquet mirror. Imports no torch, so it starts fast.

The names below load on first use (PEP 562): the CLI imports the light modules of this package
(``render``, ``assemble``) when it starts, and Arrow only when a report is actually built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtbench.report import leaderboard, paper, render
    from mtbench.report.frames import Frames, load_frames
    from mtbench.report.leaderboard import Filters
    from mtbench.report.render import Section

_WHERE = {"Filters": "mtbench.report.leaderboard", "Frames": "mtbench.report.frames",
          "load_frames": "mtbench.report.frames", "Section": "mtbench.report.render"}
_SUBMODULES = ("leaderboard", "paper", "render")

__all__ = ["Filters", "Frames", "Section", "leaderboard", "load_frames", "paper", "render"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
