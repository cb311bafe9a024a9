"""A synthetic Taskonomy: indoor-like rooms rendered by a numpy ray caster, written in the official layout.

Each building is one room (walls, floor, ceiling, an open window showing sky, a point light and
furniture-like boxes and spheres of the 16 Taskonomy object classes). Each sample is one camera
pose in that room. Every domain is derived from the same ray hits, so labels are physically
consistent with the image: depth and normals from geometry, reshading from the light, edges and
keypoints from the rendered image and the geometry, semantic labels from the hit object.
Deterministic per seed. Only numpy and Pillow: no torch import here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from mtbench.data.layout import file_name
from mtbench.data.render import render
from mtbench.data.scenes import make_scene
from mtbench.errors import DataError
from mtbench.storage.files import follow_umask

META_FILE = "synthetic.json"


@dataclass(frozen=True)
class SynthConfig:
    """What determines a generated dataset (stored in ``synthetic.json`` beside it)."""

    size: int = 64
    train: int = 64
    val: int = 0
    test: int = 32
    seed: int = 0
    samples_per_building: int = 8
    version: int = 6  # bump when the renderer changes, so old folders are regenerated (3: mtbench.data.scenes;
    # 4: nearer cameras, fewer objects a room; 5: smoothed edge, keypoint and curvature maps; 6: keypoint
    # maps as densities of corners, keypoint and curvature maps smoothed wider)

    def buildings(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for split, n in (("train", self.train), ("val", self.val), ("test", self.test)):
            k = math.ceil(n / self.samples_per_building)
            out[split] = [f"synth-{split}-{i:03d}" for i in range(k)]
        return out

    def samples_in(self, split: str, building_index: int) -> int:
        n = getattr(self, split)
        return min(self.samples_per_building, n - building_index * self.samples_per_building)


def _write_building(args: tuple[Path, SynthConfig, str, int, int]) -> int:
    out, cfg, building, building_seed, n = args
    scene = make_scene(np.random.default_rng([cfg.seed, building_seed]))
    for i in range(n):
        point, view = i // 2, i % 2  # two views of each point: two cameras on one object of interest
        focus = scene.order[point % len(scene.order)]
        domains = render(scene, np.random.default_rng([cfg.seed, building_seed, i]), cfg.size, focus)
        for domain, arr in domains.items():
            folder = out / building / domain
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(folder / file_name(point, view, domain), compress_level=1)
    return n


def generate(out: Path, cfg: SynthConfig, workers: int | None = None,
             progress: Callable[[int], None] | None = None) -> Path:
    """Write the dataset to ``out`` (atomically: a crash leaves no half-written folder behind).

    ``progress(n)`` is called with the number of samples each finished building added.
    """
    out = Path(out)
    check_replaceable(out)
    jobs = []
    for split, names in cfg.buildings().items():
        for i, name in enumerate(names):
            building_seed = {"train": 0, "val": 1, "test": 2}[split] * 100_000 + i
            jobs.append((name, building_seed, cfg.samples_in(split, i)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    follow_umask(tmp, 0o777)  # mkdtemp makes it private; the dataset follows the umask like its files
    try:
        args = [(tmp, cfg, name, seed, n) for name, seed, n in jobs]
        workers = workers or min(len(args), os.cpu_count() or 1)
        if workers <= 1:
            results = map(_write_building, args)
        else:
            pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"))
            results = pool.map(_write_building, args)
        for n in results:
            if progress:
                progress(n)
        (tmp / "splits.json").write_text(json.dumps(cfg.buildings(), indent=1))
        (tmp / META_FILE).write_text(json.dumps(asdict(cfg), indent=1))
        _replace_folder(tmp, out)
    finally:
        if workers > 1:
            pool.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def is_synthetic_folder(out: Path) -> bool:
    """True if ``out`` carries mtbench's marker of a synthetic dataset (its ``synthetic.json``)."""
    try:
        meta = json.loads((Path(out) / META_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and {"size", "seed", "version"} <= meta.keys()


def check_replaceable(out: Path) -> None:
    """Refuse to write a dataset over anything but a new or empty folder or one of mtbench's own.

    mtbench never deletes what it did not create: a folder of papers or a results folder given as
    the dataset's root must stay as it is."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; a synthetic dataset needs a new or empty folder of its "
                        "own ([data] root or `data synth --out`)")
    if is_synthetic_folder(out) or not any(out.iterdir()):
        return
    raise DataError(f"{out}: this folder holds files and is not a synthetic dataset made by mtbench (it has no "
                    f"{META_FILE}); mtbench replaces only its own datasets, so give a new or empty folder "
                    "([data] root or `data synth --out`)")


def _replace_folder(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``; an old dataset there (checked again: mtbench's own) is removed only after."""
    check_replaceable(out)
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
        out.rename(old / "data")
        new.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(out)  # onto nothing, or onto an empty folder (rename replaces an empty directory)


def generate_once(out: Path, cfg: SynthConfig, **kwargs) -> Path:
    """Generate unless a finished dataset with ``cfg`` is there, holding a lock file meanwhile, so that
    concurrent workers never replace a folder another one is reading."""
    import fcntl

    out = Path(out)
    if is_generated(out, cfg):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not is_generated(out, cfg):
            generate(out, cfg, **kwargs)
    return out


def is_generated(out: Path, cfg: SynthConfig) -> bool:
    """True if ``out`` holds a finished dataset made with exactly ``cfg``."""
    try:
        return json.loads((Path(out) / META_FILE).read_text()) == asdict(cfg)
    except (FileNotFoundError, json.JSONDecodeError):
        return False
