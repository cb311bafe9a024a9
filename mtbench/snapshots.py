"""Weight snapshots: a training trial keeps its weights at listed epochs (``train.snapshots``) so that
attacks can use the model at earlier epochs (``attack.epochs``) without training it again.

A snapshot lives beside the final checkpoint; the final checkpoint's config lists every snapshot's
SHA-256. Whether a stored model has the snapshots a grid asks for is checked before any work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mtbench.configs import OnModelConfig

if TYPE_CHECKING:
    from mtbench.grid import Grid
    from mtbench.storage import Store


def snapshot_path(checkpoint: Path, epoch: int) -> Path:
    """Where a training trial keeps its weights at ``epoch``: beside its final checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.epoch{epoch}{checkpoint.suffix}")


def stored_snapshots(checkpoint: Path) -> dict[int, str]:
    """Epoch -> SHA-256 of the snapshots a final checkpoint's config lists (none for older checkpoints)."""
    try:
        config = json.loads(Path(checkpoint).with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {int(epoch): sha for epoch, sha in (config.get("snapshots") or {}).items()}


def missing_snapshots(grid: Grid, store: Store, out: Path) -> list[tuple[str, str]]:
    """The grid's trials on a snapshot that a model already trained (stored as done) did not keep:
    training it again would be needed, and mtbench never replaces a stored trial by itself."""
    wanted: dict[str, set[int]] = {}
    for trial in grid.trials:
        config = trial.config
        if isinstance(config, OnModelConfig) and config.epoch is not None:
            wanted.setdefault(config.model, set()).add(config.epoch)
    problems = []
    for model, epochs in wanted.items():
        row = store.model(model)
        if row is None:
            continue  # not trained yet: it will keep what train.snapshots lists
        checkpoint = Path(row["checkpoint"])
        kept = stored_snapshots(checkpoint if checkpoint.is_absolute() else Path(out) / checkpoint)
        lacking = sorted(epochs - set(kept))
        if lacking:
            problems.append((f"{grid.path.name}: attack.epochs",
                             f"the stored model of training trial {model} ({store.trial_config(model).label()}) "
                             f"kept no snapshot at epoch {', '.join(map(str, lacking))} (it kept "
                             f"{sorted(kept) or 'none'}); run this grid into another results folder, or attack "
                             "only the epochs it kept"))
    return problems
