"""Dataset plugins: the real Taskonomy layout (``taskonomy``) and generated scenes (``synthetic``).

Both open the same :class:`mtbench.data.TaskonomyDataset`, so synthetic data goes through the
same decoding as real data.
"""

from __future__ import annotations

from pathlib import Path

from mtbench import DataConfig, DatasetSpec
from mtbench.data import TaskonomyDataset, load_splits
from mtbench.data.synthetic import SynthConfig, check_replaceable, generate_once
from mtbench.errors import DataError


def _buildings(root: Path, data: DataConfig, split: str) -> list[str]:
    explicit = {"train": data.train_buildings, "val": data.val_buildings, "test": data.test_buildings}[split]
    if explicit:
        return list(explicit)
    splits = load_splits(root, data.split_file)
    if split not in splits or not splits[split]:
        raise DataError(f"{root}: the split file names no {split!r} buildings")
    return splits[split]


def open_split(root: Path, data: DataConfig, split: str, tasks, image_size: int, limit: int | None = None):
    split_at = getattr(data, "point_split", None)
    if split_at is None:
        return TaskonomyDataset(root, _buildings(Path(root), data, split), tasks, image_size, limit=limit)
    # the original code's split: one building, point id < N trains, the rest tests; it had no
    # validation split, so "val" is the test points (validation only logs, it selects nothing)
    points = (None, split_at) if split == "train" else (split_at, None)
    return TaskonomyDataset(root, [_point_split_building(data)], tasks, image_size, limit=limit, points=points)


def _point_split_building(data: DataConfig) -> str:
    """The one building that ``point_split`` splits (the grid checks this before any work)."""
    named = {b for bs in (data.train_buildings, data.val_buildings, data.test_buildings) for b in bs or ()}
    if len(named) != 1 or data.split_file:
        raise DataError(f"[data] point_split splits the points of one building given in train_buildings; "
                        f"found buildings {sorted(named)}{' and a split_file' if data.split_file else ''}")
    return named.pop()


def check_taskonomy(data: DataConfig) -> None:
    if not data.root:
        raise DataError("[data] root: the taskonomy dataset needs the folder of the download")
    root = Path(data.root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"{root}: dataset folder {what} ([data] root)")


def prepare_taskonomy(data: DataConfig, cache_dir: Path) -> Path:
    check_taskonomy(data)
    return Path(data.root).expanduser()


def synth_config(data: DataConfig) -> SynthConfig:
    return SynthConfig(size=data.synth_size or data.image_size, train=data.train_samples, val=data.val_samples,
                       test=data.test_samples, seed=data.seed)


def check_synthetic(data: DataConfig) -> None:
    """A ``root`` must be new, empty or a dataset mtbench made: it is (re)generated in place."""
    if data.root:
        check_replaceable(Path(data.root).expanduser())


def prepare_synthetic(data: DataConfig, cache_dir: Path) -> Path:
    """Generate on first use into the root (or a cache folder named after the settings); reuse after."""
    cfg = synth_config(data)
    if data.root:
        root = Path(data.root).expanduser()
    else:
        root = Path(cache_dir) / f"synthetic-{cfg.size}px-{cfg.train}-{cfg.val}-{cfg.test}-seed{cfg.seed}"
    return generate_once(root, cfg)  # several workers may arrive at once


DATASETS = (
    DatasetSpec("synthetic", prepare_synthetic, open_split,
                "indoor scenes ray-cast in numpy, written in the official Taskonomy layout (the default)",
                check=check_synthetic, revision=f"v{SynthConfig.version}"),
    DatasetSpec("taskonomy", prepare_taskonomy, open_split,
                "the official Taskonomy download: <root>/<building>/<domain>/point_P_view_V_domain_<domain>.png",
                check=check_taskonomy),
)
