"""Read samples in the Taskonomy layout into ``(image, targets, masks)`` for a set of tasks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mtbench.data.layout import DOMAINS, file_name, parse_file_name, read_png, resize
from mtbench.errors import DataError
from mtbench.specs import TaskSpec

SPLIT_FILE = "splits.json"


@dataclass(frozen=True)
class SampleKey:
    building: str
    point: int
    view: int


def scan(root: Path, buildings: Sequence[str] | None = None) -> dict[str, dict[SampleKey, set[str]]]:
    """Index a folder: building -> sample -> domains present."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    index: dict[str, dict[SampleKey, set[str]]] = {}
    for bdir in sorted(p for p in root.iterdir() if p.is_dir()):
        if buildings is not None and bdir.name not in buildings:
            continue
        samples: dict[SampleKey, set[str]] = {}
        for ddir in sorted(p for p in bdir.iterdir() if p.is_dir()):
            for f in ddir.iterdir():
                parsed = parse_file_name(f.name)
                if parsed and parsed[2] == ddir.name:
                    samples.setdefault(SampleKey(bdir.name, parsed[0], parsed[1]), set()).add(ddir.name)
        index[bdir.name] = samples
    return index


def load_splits(root: Path, split_file: Path | None = None) -> dict[str, list[str]]:
    """Buildings per split, from ``split_file`` or ``<root>/splits.json`` (``{"train": [...], ...}``)."""
    path = Path(split_file) if split_file else Path(root) / SPLIT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: split file missing; "
                        "give [data] train_buildings/test_buildings or a split_file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a valid JSON split file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the split file ({exc.strerror})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError(f"{path}: expected an object mapping split names to lists of buildings")
    return {k: [str(b) for b in v] for k, v in data.items()}


def _in_range(point: int, points: tuple[int | None, int | None]) -> bool:
    low, high = points
    return (low is None or point >= low) and (high is None or point < high)


class TaskonomyDataset(Dataset):
    """Samples of some buildings, decoded for some tasks, at a square ``image_size``.

    Only the domains the tasks need are read. Decoded samples can be kept in memory
    (``cache=True``), which suits the small datasets of laptop grids. ``points = (low, high)`` keeps the
    samples whose point id is in [low, high) (None: unbounded), for a split of the points of a building.
    """

    def __init__(
        self,
        root: Path,
        buildings: Sequence[str],
        tasks: Mapping[str, TaskSpec],
        image_size: int,
        limit: int | None = None,
        cache: bool = True,
        points: tuple[int | None, int | None] = (None, None),
    ):
        self.root = Path(root)
        self.tasks = dict(tasks)
        self.image_size = image_size
        self.domains = ["rgb"] + sorted({d.name for t in self.tasks.values() for d in t.domains} - {"rgb"})
        index = scan(self.root, buildings)
        missing = [b for b in buildings if b not in index]
        if missing:
            raise DataError(f"{self.root}: building folder(s) {missing} not found")
        keys: list[SampleKey] = []
        for b in buildings:
            for key, present in sorted(index[b].items(), key=lambda kv: (kv[0].point, kv[0].view)):
                lacking = [d for d in self.domains if d not in present]
                if lacking:
                    raise DataError(
                        f"{self.root / b}: sample point {key.point} view {key.view} lacks domain(s) {lacking} "
                        f"(expected {self._path(key, lacking[0])})"
                    )
                if _in_range(key.point, points):
                    keys.append(key)
        if limit is not None:
            keys = keys[:limit]
        if not keys:
            low, high = points
            which = "" if points == (None, None) else f" with point id in [{low or 0}, {high or 'inf'})"
            raise DataError(f"{self.root}: no samples{which} in buildings {list(buildings)}")
        self.keys = keys
        self._cache: dict[int, tuple] | None = {} if cache else None

    def _path(self, key: SampleKey, domain: str) -> Path:
        return self.root / key.building / domain / file_name(key.point, key.view, domain)

    def __len__(self) -> int:
        return len(self.keys)

    def read_raw(self, i: int) -> dict[str, np.ndarray]:
        """The raw arrays of sample ``i``, checked for format and size, resized to ``image_size``."""
        key = self.keys[i]
        raw: dict[str, np.ndarray] = {}
        shape = None
        for name in self.domains:
            path = self._path(key, name)
            arr = read_png(path, DOMAINS[name])
            if shape is None:
                shape = arr.shape[:2]
            elif arr.shape[:2] != shape:
                raise DataError(f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from the sample's rgb "
                                f"{shape[1]}x{shape[0]}")
            raw[name] = resize(arr, self.image_size, DOMAINS[name].resample)
        return raw

    def __getitem__(self, i: int):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        raw = self.read_raw(i)
        image = torch.from_numpy(raw["rgb"].astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
        targets, masks = {}, {}
        for name, task in self.tasks.items():
            target, mask = task.decode(raw)
            targets[name] = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
            masks[name] = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
        item = (image, targets, masks)
        if self._cache is not None:
            self._cache[i] = item
        return item
