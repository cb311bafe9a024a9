"""Dataset plugins: the real Taskonomy layout (``taskonomy``) and generated scenes (``synthetic``).

Both open the same :class:`mtbench.data.TaskonomyDataset`, so synthetic data goes through the
same decoding as real data.
"""

from __future__ import annotations

from pathlib import Path

from mtbench import DatasetSpec
from mtbench.data import TaskonomyDataset, load_splits
from mtbench.data.synthetic import SynthConfig, generate_once
from mtbench.errors import DataError


def _buildings(root: Path, data: dict, split: str) -> list[str]:
    explicit = data.get(f"{split}_buildings")
    if explicit:
        return list(explicit)
    splits = load_splits(root, data.get("split_file"))
    if split not in splits or not splits[split]:
        raise DataError(f"{root}: the split file names no {split!r} buildings")
    return splits[split]


def open_split(root: Path, data: dict, split: str, tasks, image_size: int, limit: int | None = None):
    return TaskonomyDataset(root, _buildings(Path(root), data, split), tasks, image_size, limit=limit)


def prepare_taskonomy(data: dict, cache_dir: Path) -> Path:
    root = data.get("root")
    if not root:
        raise DataError("[data] root: the taskonomy dataset needs the folder of the download")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist ([data] root)")
    return root


def synth_config(data: dict) -> SynthConfig:
    return SynthConfig(
        size=int(data.get("synth_size") or data["image_size"]),
        train=int(data["train_samples"]),
        val=int(data.get("val_samples") or 0),
        test=int(data["test_samples"]),
        seed=int(data.get("seed") or 0),
    )


def prepare_synthetic(data: dict, cache_dir: Path) -> Path:
    """Generate on first use into the root (or a cache folder named after the settings); reuse after."""
    cfg = synth_config(data)
    root = data.get("root")
    if root:
        root = Path(root).expanduser()
    else:
        root = Path(cache_dir) / f"synthetic-{cfg.size}px-{cfg.train}-{cfg.val}-{cfg.test}-seed{cfg.seed}"
    return generate_once(root, cfg)  # several workers may arrive at once


DATASETS = (
    DatasetSpec("synthetic", prepare_synthetic, open_split,
                "indoor scenes ray-cast in numpy, written in the official Taskonomy layout (the default)"),
    DatasetSpec("taskonomy", prepare_taskonomy, open_split,
                "the official Taskonomy download: <root>/<building>/<domain>/point_P_view_V_domain_<domain>.png"),
)
