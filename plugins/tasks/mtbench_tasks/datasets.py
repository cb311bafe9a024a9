"""Dataset plugins: the real Taskonomy layout (``taskonomy``) and generated scenes (``synthetic``).

Both open the same :class:`mtbench.data.TaskonomyDataset`, so synthetic data goes through the
same decoding as real data.
"""

from __future__ import annotations

from pathlib import Path

from mtbench import DatasetSpec
from mtbench.data import TaskonomyDataset, load_splits
from mtbench.data.synthetic import SynthConfig, check_replaceable, generate_once
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


def check_taskonomy(data: dict) -> None:
    root = data.get("root")
    if not root:
        raise DataError("[data] root: the taskonomy dataset needs the folder of the download")
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"{root}: dataset folder {what} ([data] root)")


def prepare_taskonomy(data: dict, cache_dir: Path) -> Path:
    check_taskonomy(data)
    return Path(data["root"]).expanduser()


def synth_config(data: dict) -> SynthConfig:
    return SynthConfig(
        size=int(data.get("synth_size") or data["image_size"]),
        train=int(data["train_samples"]),
        val=int(data.get("val_samples") or 0),
        test=int(data["test_samples"]),
        seed=int(data.get("seed") or 0),
    )


def check_synthetic(data: dict) -> None:
    """A ``root`` must be new, empty or a dataset mtbench made: it is (re)generated in place."""
    if data.get("root"):
        check_replaceable(Path(data["root"]).expanduser())


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
                "indoor scenes ray-cast in numpy, written in the official Taskonomy layout (the default)",
                check=check_synthetic),
    DatasetSpec("taskonomy", prepare_taskonomy, open_split,
                "the official Taskonomy download: <root>/<building>/<domain>/point_P_view_V_domain_<domain>.png",
                check=check_taskonomy),
)
