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
from mtbench.errors import DataError

META_FILE = "synthetic.json"
NO_DEPTH = 65535
# class id (1..16) -> (shape, size range in metres (w, h, d)) for the Taskonomy object classes
OBJECT_CLASSES = {
    1: ("sphere", (0.12, 0.3, 0.12)),  # bottle
    2: ("box", (0.5, 0.9, 0.5)),  # chair
    3: ("box", (1.8, 0.8, 0.9)),  # couch
    4: ("sphere", (0.35, 0.6, 0.35)),  # potted plant
    5: ("box", (1.6, 0.5, 2.0)),  # bed
    6: ("box", (1.4, 0.75, 0.9)),  # dining table
    7: ("box", (0.4, 0.45, 0.6)),  # toilet
    8: ("box", (1.0, 0.6, 0.1)),  # tv
    9: ("box", (0.5, 0.3, 0.4)),  # microwave
    10: ("box", (0.6, 0.9, 0.6)),  # oven
    11: ("box", (0.3, 0.2, 0.2)),  # toaster
    12: ("box", (0.6, 0.25, 0.5)),  # sink
    13: ("box", (0.7, 1.8, 0.7)),  # refrigerator
    14: ("box", (0.25, 0.3, 0.05)),  # book
    15: ("sphere", (0.3, 0.3, 0.3)),  # clock
    16: ("sphere", (0.25, 0.4, 0.25)),  # vase
}


@dataclass(frozen=True)
class SynthConfig:
    """What determines a generated dataset (stored in ``synthetic.json`` beside it)."""

    size: int = 64
    train: int = 64
    val: int = 0
    test: int = 32
    seed: int = 0
    samples_per_building: int = 8
    version: int = 2  # bump when the renderer changes, so old folders are regenerated

    def buildings(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for split, n in (("train", self.train), ("val", self.val), ("test", self.test)):
            k = math.ceil(n / self.samples_per_building)
            out[split] = [f"synth-{split}-{i:03d}" for i in range(k)]
        return out

    def samples_in(self, split: str, building_index: int) -> int:
        n = getattr(self, split)
        return min(self.samples_per_building, n - building_index * self.samples_per_building)


# ----------------------------------------------------------------------------- scene and rays


@dataclass
class Room:
    half: np.ndarray  # half extents in x and z; floor at y=0, ceiling at y=height
    height: float
    window: tuple[int, float, float, float, float]  # wall index, u0, u1, y0, y1
    light: np.ndarray
    wall_albedo: np.ndarray  # 6 x 3
    objects: list[dict]


def make_room(rng: np.random.Generator) -> Room:
    half = np.array([rng.uniform(2.0, 3.5), rng.uniform(2.0, 3.5)])
    height = rng.uniform(2.5, 3.2)
    wall = int(rng.integers(0, 4))
    u0 = rng.uniform(-0.8, 0.2)
    window = (wall, u0, u0 + rng.uniform(0.5, 0.9), rng.uniform(0.8, 1.1), rng.uniform(1.9, 2.3))
    light = np.array([rng.uniform(-1, 1) * half[0] * 0.6, height - 0.3, rng.uniform(-1, 1) * half[1] * 0.6])
    wall_albedo = rng.uniform(0.45, 0.9, size=(6, 3))
    wall_albedo[4] = rng.uniform(0.25, 0.55, size=3)  # floor darker
    objects = []
    for _ in range(int(rng.integers(7, 12))):
        cls = int(rng.integers(1, 17))
        shape, (w, h, d) = OBJECT_CLASSES[cls]
        scale = rng.uniform(1.2, 1.8)
        ext = np.array([w, h, d]) * scale / 2
        centre = np.array([
            rng.uniform(-half[0] + ext[0] + 0.2, half[0] - ext[0] - 0.2),
            ext[1] + (rng.uniform(0.4, 1.0) if shape == "sphere" and rng.random() < 0.5 else 0.0),
            rng.uniform(-half[1] + ext[2] + 0.2, half[1] - ext[2] - 0.2),
        ])
        objects.append({
            "cls": cls, "shape": shape, "ext": ext, "centre": centre,
            "yaw": rng.uniform(0, math.pi), "albedo": rng.uniform(0.15, 0.95, size=3),
            "stripes": rng.uniform(4, 14),
        })
    return Room(half, height, window, light, wall_albedo, objects)


def camera_rays(rng: np.random.Generator, room: Room, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin (3,), unit ray directions (H, W, 3) and the camera basis rows (right, up, back)."""
    origin = np.array([rng.uniform(-0.7, 0.7) * room.half[0], rng.uniform(1.1, 1.7),
                       rng.uniform(-0.7, 0.7) * room.half[1]])
    # Aim roughly at one object, as Taskonomy's cameras look at points of interest: views of
    # bare walls would make a constant "background" prediction unbeatable for segmentation.
    to = room.objects[int(rng.integers(len(room.objects)))]["centre"] - origin
    yaw = math.atan2(to[0], to[2]) + rng.uniform(-0.3, 0.3)
    pitch = float(np.clip(math.atan2(to[1], math.hypot(to[0], to[2])) + rng.uniform(-0.1, 0.1), -0.6, 0.1))
    fwd = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    half_fov = math.tan(math.radians(70) / 2)
    s = (np.arange(size) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(s * half_fov, -s * half_fov)
    dirs = fwd + u[..., None] * right + v[..., None] * up
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    return origin, dirs, np.stack([right, up, -fwd])


def _rot_y(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([c * v[..., 0] + s * v[..., 2], v[..., 1], -s * v[..., 0] + c * v[..., 2]], axis=-1)


def trace(room: Room, origin: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
    """Nearest hit per ray: distance t, world normal, surface id (0-5 room, 6+ objects), sky flag."""
    lo = np.array([-room.half[0], 0.0, -room.half[1]])
    hi = np.array([room.half[0], room.height, room.half[1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axes = np.maximum((lo - origin) / dirs, (hi - origin) / dirs)
    axis = np.argmin(t_axes, axis=-1)
    t = np.take_along_axis(t_axes, axis[..., None], -1)[..., 0]
    normal = np.zeros_like(dirs)
    sign = -np.sign(np.take_along_axis(dirs, axis[..., None], -1)[..., 0])
    np.put_along_axis(normal, axis[..., None], sign[..., None], -1)
    # surface ids: 0 +x wall, 1 -x wall, 2 +z wall, 3 -z wall, 4 floor, 5 ceiling
    surface = np.select(
        [(axis == 0) & (sign < 0), axis == 0, (axis == 2) & (sign < 0), axis == 2, sign > 0],
        [0, 1, 2, 3, 4], 5)
    hit = origin + t[..., None] * dirs
    wall, u0, u1, y0, y1 = room.window
    along = hit[..., 2] / room.half[1] if wall < 2 else hit[..., 0] / room.half[0]
    sky = (surface == wall) & (along > u0) & (along < u1) & (hit[..., 1] > y0) & (hit[..., 1] < y1)
    for k, obj in enumerate(room.objects):
        o = _rot_y(origin - obj["centre"], -obj["yaw"])
        d = _rot_y(dirs, -obj["yaw"])
        if obj["shape"] == "box":
            with np.errstate(divide="ignore", invalid="ignore"):
                t1, t2 = (-obj["ext"] - o) / d, (obj["ext"] - o) / d
            tmin = np.minimum(t1, t2)
            near_axis = np.argmax(tmin, axis=-1)
            t_near = np.max(tmin, axis=-1)
            t_far = np.min(np.maximum(t1, t2), axis=-1)
            ok = (t_near < t_far) & (t_near > 1e-4)
            n_local = np.zeros_like(d)
            np.put_along_axis(n_local, near_axis[..., None],
                              -np.sign(np.take_along_axis(d, near_axis[..., None], -1)), -1)
            t_obj = t_near
        else:  # ellipsoid with the object's extents
            oe, de = o / obj["ext"], d / obj["ext"]
            a = (de * de).sum(-1)
            b = 2 * (oe * de).sum(-1)
            c = (oe * oe).sum(-1) - 1
            disc = b * b - 4 * a * c
            ok = disc > 0
            t_obj = (-b - np.sqrt(np.where(ok, disc, 0))) / (2 * a)
            ok &= t_obj > 1e-4
            p = o + t_obj[..., None] * d
            n_local = p / obj["ext"] ** 2
            n_local /= np.linalg.norm(n_local, axis=-1, keepdims=True) + 1e-12
        closer = ok & (t_obj < t)
        t = np.where(closer, t_obj, t)
        normal = np.where(closer[..., None], _rot_y(n_local, obj["yaw"]), normal)
        surface = np.where(closer, 6 + k, surface)
        sky &= ~closer
    return {"t": t, "normal": normal, "surface": surface, "sky": sky, "hit": origin + t[..., None] * dirs}


# ----------------------------------------------------------------------------- image filters


def _sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.pad(img, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return gx / 8, gy / 8


def _box3(img: np.ndarray) -> np.ndarray:
    p = np.pad(img, 1, mode="edge")
    return sum(p[i:i + img.shape[0], j:j + img.shape[1]] for i in range(3) for j in range(3)) / 9


def _to16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 65535), 0, 65535).astype(np.uint16)


def _to8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- rendering


def render(room: Room, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """Every Taskonomy domain of one view, as the arrays that go into the PNGs."""
    origin, dirs, basis = camera_rays(rng, room, size)
    hit = trace(room, origin, dirs)
    t, normal, surface, sky, pos = hit["t"], hit["normal"], hit["surface"], hit["sky"], hit["hit"]

    # depth in 1/512 m, 65535 where the ray leaves through the window
    forward = -basis[2]
    dist_e = np.where(sky, np.inf, t)
    dist_z = np.where(sky, np.inf, t * (dirs @ forward))
    depth_e = np.where(sky, NO_DEPTH, np.clip(np.rint(dist_e * 512), 0, 64000)).astype(np.uint16)
    depth_z = np.where(sky, NO_DEPTH, np.clip(np.rint(dist_z * 512), 0, 64000)).astype(np.uint16)

    # shading from one point light plus ambient
    to_light = room.light - pos
    light_dist = np.linalg.norm(to_light, axis=-1, keepdims=True)
    lambert = np.clip((normal * to_light / light_dist).sum(-1), 0, 1)
    shade = 0.25 + 0.75 * lambert * np.clip(3.0 / (1 + 0.15 * light_dist[..., 0] ** 2), 0, 1.2)
    shade = np.where(sky, 0, shade)

    # albedo with a texture per surface (stripes and grain), so edges exist that geometry lacks
    albedo = np.empty_like(dirs)
    label = np.where(surface >= 6, 0, 1).astype(np.int32)
    grain = rng.uniform(-0.04, 0.04, size=t.shape)
    for s in range(6):
        m = surface == s
        stripe = 0.08 * (np.sin(pos[..., 0] * 9 + pos[..., 2] * 9) > 0.6) if s == 4 else 0.0
        albedo[m] = room.wall_albedo[s] * (1 - stripe if np.isscalar(stripe) else 1 - stripe[m][:, None])
    for k, obj in enumerate(room.objects):
        m = surface == 6 + k
        stripes = 0.15 * (np.sin(pos[..., 1][m] * obj["stripes"] * 3) > 0.3)
        albedo[m] = obj["albedo"] * (1 - stripes[:, None])
        label[m] = obj["cls"] + 1  # on-disk labels: 2..17 are the 16 object classes
    rgb = np.clip(albedo * shade[..., None] + grain[..., None], 0, 1)
    sky_rgb = np.stack([0.55 + 0.2 * -dirs[..., 1], 0.75 + 0.1 * -dirs[..., 1], np.full(t.shape, 0.98)], -1)
    rgb = np.where(sky[..., None], np.clip(sky_rgb, 0, 1), rgb)

    # semantic labels: sky uncertain, and an uncertain band where labels change
    label = np.where(sky, 0, label)
    p = np.pad(label, 1, mode="edge")
    border = (p[1:-1, 2:] != label) | (p[1:-1, :-2] != label) | (p[2:, 1:-1] != label) | (p[:-2, 1:-1] != label)
    label = np.where(border & (label > 1), 0, label)

    # normals in the camera frame (x right, y up, z towards the camera), 127.5 = 0
    n_cam = normal @ basis.T
    n_cam = np.where(sky[..., None], 0.0, n_cam)

    grey = rgb @ np.array([0.299, 0.587, 0.114])
    gx, gy = _sobel(grey)
    edge_tex = np.hypot(gx, gy)
    dist_m = np.where(sky, 20.0, dist_e)
    dx, dy = _sobel(dist_m)
    occlusion = np.clip(np.hypot(dx, dy) / 0.5, 0, 1.5) * (np.hypot(dx, dy) > 0.05)
    nx, ny = zip(*(_sobel(n_cam[..., c]) for c in range(3)))
    normal_change = np.sqrt(sum(a * a + b * b for a, b in zip(nx, ny)))
    # Harris corner response of the image (2D keypoints) and of the normals (3D keypoints)
    sxx, syy, sxy = _box3(gx * gx), _box3(gy * gy), _box3(gx * gy)
    harris = np.clip(sxx * syy - sxy ** 2 - 0.05 * (sxx + syy) ** 2, 0, None)
    harris = harris / (harris.max() + 1e-12)
    corners3d = _box3(normal_change) * (occlusion > 0) + 0.5 * _box3(occlusion) * normal_change

    # principal curvature: ellipsoids curve, planes are flat, creases bend sharply
    curv1 = np.zeros(t.shape)
    for k, obj in enumerate(room.objects):
        if obj["shape"] == "sphere":
            curv1[surface == 6 + k] = 1.0 / float(obj["ext"].mean())
    curv2 = curv1 * 0.8
    crease = np.clip(normal_change, 0, 1) * (occlusion == 0)
    curvature = np.stack([
        127 + np.clip(curv1 * 12 + crease * 100, 0, 128),
        127 + np.clip(curv2 * 12 + crease * 40, 0, 128),
        np.full(t.shape, 127.0),
    ], -1)
    curvature = np.where(sky[..., None], 127.0, curvature)

    return {
        "rgb": _to8(rgb),
        "segment_semantic": label.astype(np.uint8),
        "depth_zbuffer": depth_z,
        "depth_euclidean": depth_e,
        "normal": _to8((n_cam + 1) / 2),
        "reshading": _to8(np.clip(lambert * 0.85 + 0.1, 0, 1) * (~sky)),
        "principal_curvature": np.clip(np.rint(curvature), 0, 255).astype(np.uint8),
        "edge_texture": _to16(np.clip(edge_tex * 0.08, 0, 1)),  # decodes to [0, 0.08] before the clip
        "edge_occlusion": _to16(occlusion * 0.00625),
        "keypoints2d": _to16(harris * 0.005),
        "keypoints3d": _to16(np.clip(corners3d, 0, 1)),
    }


def _write_building(args: tuple[Path, SynthConfig, str, int, int]) -> int:
    out, cfg, building, building_seed, n = args
    rng = np.random.default_rng([cfg.seed, building_seed])
    room = make_room(rng)
    for i in range(n):
        point, view = i // 2, i % 2
        domains = render(room, np.random.default_rng([cfg.seed, building_seed, i]), cfg.size)
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
