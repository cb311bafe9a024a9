"""``mtbench data show``: a grid of samples (rows) x domains (columns), decoded as the tasks see them.

Each sample goes through :class:`mtbench.data.TaskonomyDataset`, that is through the tasks' own
``decode``: what is drawn is the model's input and each task's target and valid-pixel mask, never a
second reading of the PNGs. Invalid (masked-out) pixels are drawn magenta.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbench.data.layout import DOMAINS, file_name, read_png
from mtbench.data.loader import SPLIT_FILE, TaskonomyDataset, load_splits, scan
from mtbench.errors import DataError
from mtbench.specs import TaskSpec
from mtbench.storage.files import write_files

PANEL_INCHES = 1.2
DPI = 100
MASKED = np.array([1.0, 0.0, 1.0])
# 17 classes: background grey, then distinct colours (no magenta: that marks masked pixels)
CLASS_COLOURS = np.array([
    [0.75, 0.75, 0.75], [0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
    [0.58, 0.4, 0.74], [0.55, 0.34, 0.29], [0.0, 0.75, 0.75], [0.5, 0.5, 0.0], [0.74, 0.74, 0.13],
    [0.09, 0.75, 0.81], [0.68, 0.78, 0.91], [1.0, 0.73, 0.47], [0.6, 0.87, 0.54], [1.0, 0.6, 0.59],
    [0.2, 0.2, 0.5], [0.5, 0.0, 0.0],
])


@dataclass
class Shown:
    path: Path
    samples: list[str]  # "building point P view V" of each row
    columns: list[str]  # "rgb" and each task's name
    pixels: tuple[int, int]  # width, height of the PNG


def default_tasks(root: Path, tasks: Mapping[str, TaskSpec]) -> dict[str, TaskSpec]:
    """The tasks whose domains are all in the folder's first building."""
    index = scan(root)
    present = set().union(*(d for samples in index.values() for d in samples.values())) if index else set()
    return {name: spec for name, spec in tasks.items() if {d.name for d in spec.domains} <= present}


def split_buildings(root: Path, split: str | None) -> list[str]:
    """The buildings of ``split`` (``splits.json``); without a split file and a split, every building."""
    if split is None and not (Path(root) / SPLIT_FILE).exists():
        return sorted(scan(root))
    splits = load_splits(root)
    name = split or "train"
    if not splits.get(name):
        raise DataError(f"{root}: the split file names no {name!r} buildings (it has {sorted(splits)})")
    return splits[name]


def native_size(root: Path, buildings: Sequence[str]) -> int:
    """The height of the first rgb image of the buildings: the size the files were written at."""
    for building, samples in scan(root, buildings).items():
        for key in sorted(samples, key=lambda k: (k.point, k.view)):
            path = Path(root) / building / "rgb" / file_name(key.point, key.view, "rgb")
            return int(read_png(path, DOMAINS["rgb"]).shape[0])
    raise DataError(f"{root}: no samples in buildings {list(buildings)}")


def draw_samples(root: Path, out: Path, tasks: Mapping[str, TaskSpec], samples: int = 4,
                 split: str | None = None, size: int | None = None) -> Shown:
    """Draw ``samples`` samples of a split, spread over its buildings, one column per domain, into ``out``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    if not tasks:
        raise DataError(f"{root}: no task has all its domains in this folder; name some with --tasks")
    buildings = split_buildings(root, split)
    size = size or native_size(root, buildings)
    dataset = TaskonomyDataset(root, buildings, tasks, size, cache=False)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(samples, len(dataset))).round().astype(int))
    rows = [dataset[int(i)] for i in picks]
    labels = [f"{k.building} p{k.point} v{k.view}" for k in (dataset.keys[int(i)] for i in picks)]
    columns = ["rgb"] + list(tasks)
    panels = [[image.permute(1, 2, 0).numpy()] for image, _, _ in rows]
    for name, spec in tasks.items():
        targets = [targets[name].numpy() for _, targets, _ in rows]
        masks = [masks[name].numpy()[0] for _, _, masks in rows]
        for row, target, mask in zip(panels, targets, masks):
            row.append(_colour(spec, target, mask, _range(spec, targets, masks)))
    png = _figure(panels, labels, [c if c == "rgb" else f"{tasks[c].code}: {c}" for c in columns])
    write_files({Path(out): lambda tmp: tmp.write_bytes(png)}, "the figure", DataError)
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        pixels = img.size
    return Shown(Path(out), labels, columns, pixels)


def _range(spec: TaskSpec, targets: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[float, float]:
    """One value range per column (over the valid pixels of all its samples), so rows compare."""
    if spec.classification:
        return 0.0, float(spec.channels - 1)
    values = np.concatenate([t[:, m].ravel() for t, m in zip(targets, masks)]) if targets else np.zeros(1)
    if values.size == 0:
        return -1.0, 1.0
    lo, hi = np.percentile(values, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def _colour(spec: TaskSpec, target: np.ndarray, mask: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """An H x W x 3 picture of one decoded target: classes by colour, 3 channels as RGB, 2 as red and
    green, 1 as grey; masked pixels magenta."""
    lo, hi = value_range
    if spec.classification:
        rgb = CLASS_COLOURS[np.clip(target[0].astype(int), 0, len(CLASS_COLOURS) - 1)]
    else:
        scaled = np.clip((target - lo) / (hi - lo), 0, 1)
        if scaled.shape[0] >= 3:
            rgb = scaled[:3].transpose(1, 2, 0)
        elif scaled.shape[0] == 2:
            rgb = np.stack([scaled[0], scaled[1], np.zeros_like(scaled[0])], -1)
        else:
            rgb = np.repeat(scaled[0][..., None], 3, -1)
    return np.where(mask[..., None], rgb, MASKED)


def _figure(panels: list[list[np.ndarray]], labels: list[str], titles: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(panels), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * PANEL_INCHES, n_rows * PANEL_INCHES + 0.35),
                             squeeze=False, gridspec_kw={"wspace": 0.04, "hspace": 0.08})
    for r, row in enumerate(panels):
        for c, picture in enumerate(row):
            ax = axes[r][c]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=6)
            if c == 0:
                ax.set_ylabel(labels[r], fontsize=5)
    fig.subplots_adjust(left=0.04, right=0.995, top=1 - 0.3 / (n_rows * PANEL_INCHES + 0.35), bottom=0.01)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()
