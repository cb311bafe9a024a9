"""What a running trial may use besides its config: plugins, store, folders, device, progress."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtbench.configs import DataConfig
from mtbench.plugins import Plugins
from mtbench.storage.db import Store


def _no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n=1: None


def _warn_stderr(message: str) -> None:
    """A plain line, not a rich print: a long path in it must stay whole (rich would wrap it). Inside
    the runner's live progress display, rich routes it above the bars."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclass
class TrialContext:
    plugins: Plugins
    store: Store
    out: Path
    device: Any  # torch.device; kept untyped so this module imports no torch
    progress: Callable[[str, int], Callable[[int], None]] = _no_progress
    """``progress(description, total)`` starts an inner bar and returns ``advance(n=1)``."""
    warn: Callable[[str], None] = _warn_stderr
    """``warn(message)`` tells the user about a problem the trial worked around (a resume state set aside)."""

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    @property
    def data_cache(self) -> Path:
        return self.out / "data"

    def dataset_root(self, data: DataConfig) -> Path:
        """Make sure the trial's data exists (generating synthetic data once) and return its folder."""
        return Path(self.plugins.datasets.get(data.dataset).prepare(data, self.data_cache))

    def open_split(self, data: DataConfig, split: str, tasks: dict, limit: int | None):
        spec = self.plugins.datasets.get(data.dataset)
        return spec.open(self.dataset_root(data), data, split, tasks, data.image_size, limit)
