"""What the synthetic rooms hold: materials, the 16 Taskonomy object classes, room layouts, lights, cameras.

Scene statistics follow indoor data: each object class has its own shape (a box, a sphere, a cylinder or
a composite of them), a characteristic size, a placement (on the floor, against a wall, on a table or
counter, hung on a wall) and an appearance (a colour and a texture drawn from the class's distribution,
with jitter per instance). A few classes are deliberately alike: chair and dining table share their
wood, microwave and oven their metal, toilet, sink and refrigerator are white, bottle and vase are
small round things on tables. Rooms have pale walls, a wood, tile or carpet floor, a window, a kitchen
counter and sometimes a rug or a door (background, label 1), and one to three lights of different colours.
Sizes of the smallest classes are exaggerated (x1.3-1.6) so that each class covers pixels at 64 px.

Only numpy: no torch import here. Everything is drawn from the ``numpy.random.Generator`` passed in,
so a seed gives the same scene on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

FOV_DEGREES = 70.0
NEAR_FILL = 0.85
"""A camera stands at most as far from its object of interest as makes the object this share of the view's
width (v4; it was 0.3 in v3, where the object was often a small part of a busy view)."""
ROOM_SURFACES = 6  # surface ids 0..5: +x wall, -x wall, +z wall, -z wall, floor, ceiling; objects from 6


@dataclass(frozen=True)
class Material:
    """An albedo and a texture: ``albedo * (1 + contrast * pattern)``, pattern in [-1, 1] over the surface."""

    colour: tuple[float, float, float]
    texture: str = "plain"  # plain, hstripes, vstripes, checks, noise, grain
    freq: float = 0.0  # cycles per metre along the surface
    contrast: float = 0.0
    gloss: float = 0.0  # strength of the specular highlight
    jitter: float = 0.06  # per-instance colour jitter (log-normal sigma per channel)

    def instance(self, rng: np.random.Generator) -> Material:
        """This material as one object instance has it: colour, brightness and frequency jittered."""
        colour = np.asarray(self.colour) * np.exp(rng.normal(0, self.jitter, 3)) * rng.uniform(0.9, 1.1)
        return replace(self, colour=tuple(np.clip(colour, 0.02, 1.0).tolist()),
                       freq=self.freq * rng.uniform(0.85, 1.2))


@dataclass(frozen=True)
class ObjectClass:
    name: str
    build: str  # the builder of its parts (see PARTS)
    size: tuple[float, float, float]  # typical width, height, depth in metres
    placement: str  # floor, wall-floor (back to a wall), table (on a table or the counter), wall (hung)
    materials: tuple[Material, ...]  # the parts' materials; the first is the main one
    height: tuple[float, float] = (0.0, 0.0)  # hung objects: range of their bottom's height


WOOD = Material((0.56, 0.33, 0.16), "grain", 4.0, 0.2, 0.1)
METAL = Material((0.56, 0.57, 0.6), "plain", 0.0, 0.0, 0.5, 0.03)
CERAMIC = Material((0.93, 0.93, 0.91), "plain", 0.0, 0.0, 0.6, 0.02)
DARK = Material((0.08, 0.08, 0.1), "plain", 0.0, 0.0, 0.7, 0.1)

# class id (1..16; on disk 2..17) -> the class. Taskonomy's order: bottle, chair, couch, potted plant, bed,
# dining table, toilet, tv, microwave, oven, toaster, sink, refrigerator, book, clock, vase.
CLASSES: dict[int, ObjectClass] = {
    1: ObjectClass("bottle", "bottle", (0.16, 0.5, 0.16), "table",
                   (Material((0.15, 0.6, 0.25), "plain", 0, 0, 0.8, 0.08), Material((0.85, 0.85, 0.8)))),
    2: ObjectClass("chair", "chair", (0.5, 0.95, 0.5), "floor", (WOOD,)),
    3: ObjectClass("couch", "couch", (2.0, 0.85, 0.95), "wall-floor",
                   (Material((0.68, 0.14, 0.18), "checks", 2.5, 0.2, 0.0, 0.08),)),
    4: ObjectClass("potted plant", "plant", (0.55, 1.0, 0.55), "floor",
                   (Material((0.4, 0.62, 0.1), "noise", 4.0, 0.35, 0.05, 0.08),
                    Material((0.72, 0.38, 0.22), "hstripes", 5.0, 0.1))),
    5: ObjectClass("bed", "bed", (1.6, 0.65, 2.1), "wall-floor",
                   (Material((0.22, 0.32, 0.78), "vstripes", 1.5, 0.25, 0.0, 0.08), WOOD,
                    Material((0.92, 0.92, 0.9), "plain", 0, 0, 0.1, 0.02))),
    6: ObjectClass("dining table", "table", (1.4, 0.76, 0.9), "floor", (WOOD,)),
    7: ObjectClass("toilet", "toilet", (0.45, 0.8, 0.7), "wall-floor", (CERAMIC,)),
    8: ObjectClass("tv", "tv", (1.1, 0.65, 0.08), "wall",
                   (DARK, Material((0.12, 0.16, 0.3), "noise", 2.0, 0.3, 0.9, 0.1)), (0.9, 1.3)),
    9: ObjectClass("microwave", "microwave", (0.56, 0.34, 0.42), "table", (METAL, DARK)),
    10: ObjectClass("oven", "oven", (0.65, 0.9, 0.64), "wall-floor", (METAL, DARK)),
    11: ObjectClass("toaster", "box", (0.36, 0.26, 0.24), "table",
                    (Material((0.92, 0.48, 0.08), "hstripes", 8.0, 0.2, 0.6, 0.06),)),
    12: ObjectClass("sink", "sink", (0.62, 0.25, 0.48), "wall", (CERAMIC, METAL), (0.7, 0.8)),
    13: ObjectClass("refrigerator", "fridge", (0.78, 1.85, 0.72), "wall-floor",
                    (Material((0.7, 0.8, 0.88), "plain", 0, 0, 0.4, 0.04), METAL)),
    14: ObjectClass("book", "books", (0.42, 0.3, 0.22), "table",
                    (Material((0.55, 0.2, 0.6), "hstripes", 10.0, 0.25, 0.0, 0.12),)),
    15: ObjectClass("clock", "clock", (0.46, 0.46, 0.07), "wall",
                    (Material((0.92, 0.8, 0.25), "checks", 6.0, 0.15, 0.1, 0.06), DARK), (1.7, 2.0)),
    16: ObjectClass("vase", "vase", (0.3, 0.5, 0.3), "table",
                    (Material((0.08, 0.55, 0.6), "hstripes", 6.0, 0.3, 0.6, 0.08),)),
}

# Room types, as in indoor data: which classes a room holds and how many. Classes are far from equally
# common, as in Taskonomy's labels: chairs, couches, beds, tables and plants fill rooms, a toaster or a
# clock is rare; and they co-occur by room (a toilet with a sink, an oven with a refrigerator).
ROOM_TYPES: dict[str, tuple[float, str, dict[int, float]]] = {
    # name: (share of rooms, the background furniture that holds table-top objects, {class: expected count});
    # a count c is floor(c) objects plus one more with probability c - floor(c)
    "living room": (0.4, "sideboard", {3: 1.0, 2: 1.5, 4: 1.2, 8: 0.6, 6: 0.3, 16: 0.3, 14: 0.3, 15: 0.2}),
    "kitchen": (0.2, "counter", {6: 1.0, 2: 2.5, 13: 0.8, 10: 0.3, 9: 0.3, 12: 0.3, 1: 0.4, 11: 0.15, 4: 0.3}),
    "bedroom": (0.3, "nightstand", {5: 1.0, 2: 0.6, 4: 0.6, 8: 0.3, 14: 0.3, 15: 0.2, 16: 0.2}),
    "bathroom": (0.1, "vanity", {7: 1.0, 12: 0.8, 1: 0.3, 16: 0.2, 4: 0.3}),
}
CLUTTER = 0.6
"""A room holds this share of its room type's expected objects: fewer objects in a view, each seen larger
(v4; at 1.0, 64 px views were too busy for a model trained for seconds to tell the classes apart)."""
OBJECT_SCALE = 1.8
"""Every object is this much larger than its class's real size, so that objects cover pixels at 64 px."""
SUPPORTS = {"counter": ((1.2, 2.4), 0.9, 0.6), "sideboard": ((1.0, 1.8), 0.6, 0.45),
            "nightstand": ((0.45, 0.6), 0.55, 0.45), "vanity": ((0.6, 1.0), 0.85, 0.5)}

WALL_PAINT = [(0.86, 0.84, 0.78), (0.78, 0.82, 0.84), (0.86, 0.8, 0.74), (0.8, 0.84, 0.76), (0.9, 0.9, 0.88)]
FLOORS = [Material((0.62, 0.52, 0.4), "grain", 3.0, 0.15), Material((0.74, 0.74, 0.72), "checks", 2.0, 0.12),
          Material((0.45, 0.45, 0.5), "noise", 4.0, 0.1)]
CABINETS = [Material((0.82, 0.8, 0.74), "vstripes", 1.7, 0.06, 0.1, 0.03),
            Material((0.42, 0.32, 0.24), "grain", 4.0, 0.15)]
RUGS = [Material((0.6, 0.5, 0.3), "checks", 3.0, 0.3, 0.0, 0.2),
        Material((0.35, 0.4, 0.35), "noise", 5.0, 0.3, 0.0, 0.2)]


@dataclass
class Prim:
    """One ray-traced primitive: ``kind`` box, ellipsoid or cylinder (axis y, or z with ``axis=2``),
    half extents ``ext`` in its own frame, turned by ``yaw`` about the vertical, and what it shows."""

    kind: str
    centre: np.ndarray
    ext: np.ndarray
    yaw: float
    material: Material
    label: int  # on-disk label: 1 background, 2..17 the object classes
    obj: int = -1  # index of its object in Scene.objects, -1 for background furniture
    axis: int = 1
    phases: np.ndarray = field(default_factory=lambda: np.zeros(6))  # of the noise texture

    @property
    def radius(self) -> float:
        return float(np.linalg.norm(self.ext))


@dataclass
class SceneObject:
    cls: int
    centre: np.ndarray  # world position of its middle
    front: np.ndarray  # unit horizontal direction it faces
    size: np.ndarray  # width, height, depth as built


@dataclass
class Light:
    position: np.ndarray
    colour: np.ndarray
    power: float


@dataclass
class Scene:
    half: np.ndarray  # half extents of the room in x and z; floor at y = 0
    height: float
    window: tuple[int, float, float, float, float]  # wall, u0, u1 (fractions of the half wall), y0, y1
    surfaces: list[Material]  # the room's six surfaces
    lights: list[Light]
    ambient: np.ndarray
    prims: list[Prim] = field(default_factory=list)
    objects: list[SceneObject] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # the objects in the order views look at them


# ----------------------------------------------------------------------------- parts of each class


def _part(kind, x, y, z, hx, hy, hz, mat=0, axis=1):
    return kind, np.array([x, y, z]), np.array([hx, hy, hz]), mat, axis


def _legs(w, d, h, r=0.04):
    return [_part("box", sx * (w / 2 - r), h / 2, sz * (d / 2 - r), r, h / 2, r) for sx in (-1, 1) for sz in (-1, 1)]


def parts(build: str, w: float, h: float, d: float, rng: np.random.Generator) -> list[tuple]:
    """The parts of one object in its own frame: floor-centre at the origin, facing +z."""
    if build == "box":
        return [_part("box", 0, h / 2, 0, w / 2, h / 2, d / 2)]
    if build == "bottle":
        body = 0.65 * h
        return [_part("cylinder", 0, body / 2, 0, w / 2, body / 2, d / 2),
                _part("cylinder", 0, body + (h - body) / 2, 0, w / 5, (h - body) / 2, d / 5),
                _part("cylinder", 0, h - 0.02, 0, w / 4.5, 0.025, d / 4.5, 1)]
    if build == "vase":
        return [_part("ellipsoid", 0, 0.38 * h, 0, w / 2, 0.38 * h, d / 2),
                _part("cylinder", 0, 0.8 * h, 0, w / 4, 0.2 * h, d / 4)]
    if build == "plant":
        pot = 0.35 * h
        return [_part("cylinder", 0, pot / 2, 0, 0.3 * w, pot / 2, 0.3 * d, 1),
                _part("ellipsoid", 0, pot + (h - pot) / 2, 0, w / 2, (h - pot) / 2, d / 2)]
    if build == "chair":
        seat = 0.47
        return [_part("box", 0, seat, 0, w / 2, 0.03, d / 2),
                _part("box", 0, seat + (h - seat) / 2, -d / 2 + 0.03, w / 2, (h - seat) / 2, 0.03)] + _legs(w, d, seat)
    if build == "table":
        return [_part("box", 0, h - 0.03, 0, w / 2, 0.03, d / 2)] + _legs(w, d, h - 0.06, 0.045)
    if build == "couch":
        seat = 0.45 * h
        return [_part("box", 0, seat / 2, 0.05, w / 2 - 0.15, seat / 2, d / 2 - 0.05),
                _part("box", 0, h / 2, -d / 2 + 0.1, w / 2, h / 2, 0.1),
                _part("box", -w / 2 + 0.08, 0.33 * h, 0, 0.08, 0.33 * h, d / 2),
                _part("box", w / 2 - 0.08, 0.33 * h, 0, 0.08, 0.33 * h, d / 2)]
    if build == "bed":
        frame, mattress = 0.3 * h, 0.25 * h
        top = frame + mattress
        return [_part("box", 0, frame / 2, 0, w / 2, frame / 2, d / 2, 1),
                _part("box", 0, frame + mattress / 2, -0.3 * d, w / 2 - 0.03, mattress / 2, 0.2 * d, 2),
                _part("box", 0, frame + mattress / 2, 0.2 * d, w / 2 - 0.02, mattress / 2 + 0.01, 0.3 * d - 0.02),
                _part("ellipsoid", 0, top + 0.06, -0.4 * d, 0.3 * w, 0.07, 0.08 * d, 2),
                _part("box", 0, 0.75 * h + 0.25, -d / 2 + 0.03, w / 2, 0.25 + 0.25 * h, 0.03, 1)]
    if build == "toilet":
        bowl = 0.5 * h
        return [_part("cylinder", 0, bowl / 2, 0.08, w / 2, bowl / 2, d / 2 - 0.08),
                _part("box", 0, bowl + (h - bowl) / 2 - 0.05, -d / 2 + 0.09, w / 2, (h - bowl) / 2 + 0.05, 0.09)]
    if build == "tv":
        return [_part("box", 0, h / 2, 0, w / 2, h / 2, d / 2),
                _part("box", 0, h / 2, d / 2, w / 2 - 0.04, h / 2 - 0.04, 0.01, 1)]
    if build == "microwave":
        return [_part("box", 0, h / 2, 0, w / 2, h / 2, d / 2),
                _part("box", -0.08 * w, h / 2, d / 2, 0.3 * w, 0.32 * h, 0.01, 1)]
    if build == "oven":
        return [_part("box", 0, h / 2, 0, w / 2, h / 2, d / 2),
                _part("box", 0, 0.4 * h, d / 2, 0.38 * w, 0.22 * h, 0.01, 1),
                _part("box", 0, 0.93 * h, d / 2, 0.45 * w, 0.03, 0.012, 1)]
    if build == "sink":
        return [_part("box", 0, h / 2, 0, w / 2, h / 2, d / 2),
                _part("cylinder", 0, h + 0.08, -d / 2 + 0.06, 0.025, 0.08, 0.025, 1)]
    if build == "fridge":
        split = 0.62 * h
        return [_part("box", 0, split / 2, 0, w / 2, split / 2 - 0.01, d / 2),
                _part("box", 0, split + (h - split) / 2, 0, w / 2, (h - split) / 2 - 0.01, d / 2),
                _part("box", w / 2 - 0.08, split - 0.25, d / 2 + 0.02, 0.02, 0.2, 0.02, 1),
                _part("box", w / 2 - 0.08, split + 0.2, d / 2 + 0.02, 0.02, 0.15, 0.02, 1)]
    if build == "books":
        out, x, k = [], -w / 2, 0
        while x < w / 2 - 0.04:
            t = rng.uniform(0.04, 0.08)
            bh = h * rng.uniform(0.8, 1.0)
            out.append(_part("box", x + t / 2, bh / 2, 0, t / 2 - 0.003, bh / 2, d / 2, 100 + k))
            x, k = x + t, k + 1
        return out
    if build == "clock":
        r = w / 2
        return [_part("cylinder", 0, r, d / 2 + 0.005, r * 0.88, d / 2, r * 0.88, 0, axis=2),
                _part("cylinder", 0, r, d / 2 - 0.005, r, d / 2, r, 1, axis=2)]
    raise ValueError(f"unknown builder {build!r}")


BOOK_COLOURS = [(0.55, 0.2, 0.6), (0.45, 0.15, 0.5), (0.7, 0.3, 0.65), (0.4, 0.22, 0.6), (0.6, 0.15, 0.45)]


def rot_y(v: np.ndarray, angle: float) -> np.ndarray:
    """``v`` (..., 3) turned by ``angle`` about the vertical (y) axis."""
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([c * v[..., 0] + s * v[..., 2], v[..., 1], -s * v[..., 0] + c * v[..., 2]], axis=-1)


def _yaw_facing(front: np.ndarray) -> float:
    """The yaw that turns the object's +z (its front) to ``front``."""
    return math.atan2(front[0], front[2])


# ----------------------------------------------------------------------------- room layout


class _Floor:
    """Occupied floor: discs (centre, radius), so that objects stand apart."""

    def __init__(self, half: np.ndarray):
        self.half = half
        self.discs: list[tuple[np.ndarray, float]] = []

    def free(self, xz: np.ndarray, r: float, inside: bool = True) -> bool:
        """No disc within ``r`` (+10 cm) of ``xz``; with ``inside``, the disc also within the walls
        (objects against a wall are placed inside by construction)."""
        if inside and np.any(np.abs(xz) + r > self.half - 0.05):
            return False
        return all(np.linalg.norm(xz - c) > 0.85 * (r + rc) for c, rc in self.discs)

    def take(self, xz: np.ndarray, r: float) -> None:
        self.discs.append((xz, r))


def _wall_frame(wall: int, half: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Inward normal and along-direction of a wall, and half its length. Walls: +x, -x, +z, -z."""
    normal = [np.array([-1.0, 0, 0]), np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), np.array([0, 0, 1.0])][wall]
    along = np.array([0, 0, 1.0]) if wall < 2 else np.array([1.0, 0, 0])
    return normal, along, float(half[1] if wall < 2 else half[0])


def _wall_point(wall: int, half: np.ndarray, u: float, depth: float) -> np.ndarray:
    """The floor point ``depth`` metres off ``wall``, at ``u`` metres along it (x, 0, z)."""
    normal, along, _ = _wall_frame(wall, half)
    on_wall = -normal * (half[0] if wall < 2 else half[1])
    return on_wall + along * u + normal * depth


def make_scene(rng: np.random.Generator) -> Scene:
    """One room of a random type: its size, surfaces, window, lights, background furniture and objects."""
    half = np.array([rng.uniform(1.9, 2.8), rng.uniform(1.9, 2.8)])
    height = rng.uniform(2.5, 3.0)
    paint = Material(tuple(np.array(WALL_PAINT[rng.integers(len(WALL_PAINT))]).tolist()), "noise", 2.0, 0.03,
                     0.0, 0.03)
    surfaces = [paint.instance(rng) for _ in range(4)]
    surfaces.append(FLOORS[rng.integers(len(FLOORS))].instance(rng))
    surfaces.append(Material((0.93, 0.93, 0.92), jitter=0.01))
    window_wall = int(rng.integers(0, 4))
    u0 = rng.uniform(-0.8, 0.2)
    window = (window_wall, u0, u0 + rng.uniform(0.4, 0.7), rng.uniform(0.8, 1.0), rng.uniform(1.9, 2.2))
    lights = []
    for _ in range(int(rng.integers(1, 4))):
        warmth = rng.uniform(0, 0.7)
        colour = (1 - warmth) * np.array([0.85, 0.92, 1.0]) + warmth * np.array([1.0, 0.8, 0.58])
        pos = np.array([rng.uniform(-0.7, 0.7) * half[0], height - rng.uniform(0.2, 0.6),
                        rng.uniform(-0.7, 0.7) * half[1]])
        lights.append(Light(pos, colour, rng.uniform(0.8, 1.3)))
    ambient = rng.uniform(0.22, 0.32) * np.array([1.0, 1.0, 1.0]) * np.exp(rng.normal(0, 0.04, 3))
    scene = Scene(half, height, window, surfaces, lights, ambient)
    floor = _Floor(half)

    names = list(ROOM_TYPES)
    shares = np.array([ROOM_TYPES[n][0] for n in names])
    room_type = names[rng.choice(len(names), p=shares / shares.sum())]
    _, support, contents = ROOM_TYPES[room_type]

    # background furniture: the room's counter, sideboard, nightstand or vanity against a wall other than the
    # window's (it holds the table-top objects), maybe a rug and a door
    counter_wall = int((window_wall + rng.integers(1, 4)) % 4)
    _, _, wall_half = _wall_frame(counter_wall, half)
    lengths, top, depth = SUPPORTS[support]
    length = min(rng.uniform(*lengths), 2 * wall_half - 0.4)
    u = rng.uniform(-wall_half + length / 2 + 0.1, wall_half - length / 2 - 0.1)
    counter = _place(scene, floor, 0, "box", (length, top, depth), counter_wall, u, CABINETS[rng.integers(2)], rng)
    supports = [counter]
    if rng.random() < 0.5:
        rug = RUGS[rng.integers(len(RUGS))].instance(rng)
        size = np.array([rng.uniform(0.6, 1.1), 0.005, rng.uniform(0.5, 0.9)])
        scene.prims.append(Prim("box", np.array([rng.uniform(-0.4, 0.4) * half[0], 0.005,
                                                 rng.uniform(-0.4, 0.4) * half[1]]), size, rng.uniform(0, math.pi),
                                rug, 1, phases=rng.uniform(0, 2 * math.pi, 6)))
    if rng.random() < 0.6:
        wall = int(rng.integers(0, 4))
        normal, along, wall_half = _wall_frame(wall, half)
        pos = _wall_point(wall, half, rng.uniform(-wall_half + 0.6, wall_half - 0.6), 0.0) + np.array([0, 1.02, 0])
        scene.prims.append(Prim("box", pos, np.array([0.45, 1.02, 0.02]), _yaw_facing(normal),
                                Material((0.55, 0.4, 0.28), "vstripes", 1.5, 0.1).instance(rng), 1))

    # the objects: each of the room type's classes with its probability (at least one object), tables first
    # so that table-top objects have somewhere to stand
    counts = {c: CLUTTER * n for c, n in contents.items()}
    classes = [c for c, n in counts.items() for _ in range(int(n) + (rng.random() < n % 1))]
    classes = classes or [int(rng.choice(list(contents)))]
    classes.sort(key=lambda c: CLASSES[c].placement != "floor" or c != 6)
    for cls in classes:
        placed = _place_object(scene, floor, supports, cls, rng)
        if placed is not None and cls == 6:
            supports.append(placed)
    scene.order = [int(i) for i in rng.permutation(len(scene.objects))]
    return scene


def _add_parts(scene: Scene, cls: int, origin: np.ndarray, yaw: float, size: np.ndarray, label: int,
               materials: list[Material], rng: np.random.Generator, build: str) -> list[Prim]:
    """Turn the builder's parts into world primitives of one object (or of background furniture)."""
    obj = len(scene.objects) if label > 1 else -1
    made = []
    for kind, offset, ext, mat, axis in parts(build, *size, rng):
        if mat >= 100:  # a book of the row: its own cover colour
            material = replace(materials[0], colour=BOOK_COLOURS[rng.integers(len(BOOK_COLOURS))]).instance(rng)
        else:
            material = materials[mat]
        centre = origin + rot_y(offset, yaw)
        made.append(Prim(kind, centre, ext, yaw, material, label, obj, axis, rng.uniform(0, 2 * math.pi, 6)))
    scene.prims += made
    if label > 1:
        scene.objects.append(SceneObject(cls, origin + np.array([0, size[1] / 2, 0]),
                                         rot_y(np.array([0.0, 0, 1]), yaw), size))
    return made


def _place(scene: Scene, floor: _Floor, cls: int, build: str, size, wall: int, u: float, material: Material,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Background furniture with its back to ``wall``; returns its top (centre, half extents, yaw) as a support."""
    size = np.asarray(size, float)
    normal, _, _ = _wall_frame(wall, scene.half)
    origin = _wall_point(wall, scene.half, u, size[2] / 2)
    floor.take(origin[[0, 2]], float(np.hypot(size[0], size[2]) / 2))
    yaw = _yaw_facing(normal)
    _add_parts(scene, cls, origin, yaw, size, 1, [material.instance(rng)], rng, build)
    return origin + np.array([0, size[1], 0]), size / 2, yaw


def _base(obj: SceneObject) -> np.ndarray:
    """The middle of an object's footprint (where it stands)."""
    return obj.centre - np.array([0, obj.size[1] / 2, 0])


def _place_object(scene: Scene, floor: _Floor, supports: list, cls: int, rng: np.random.Generator):
    """Place one object of class ``cls`` by its class's placement; None if it found no room."""
    spec = CLASSES[cls]
    stretch = np.array([rng.uniform(0.9, 1.1), 1, rng.uniform(0.9, 1.1)])
    size = np.array(spec.size) * OBJECT_SCALE * rng.uniform(0.85, 1.15) * stretch
    materials = [m.instance(rng) for m in spec.materials]
    label = cls + 1
    r = float(np.hypot(size[0], size[2]) / 2)
    placement = spec.placement
    if placement == "wall-floor":  # against a wall, it takes a strip along it, not a disc of its diagonal
        r = float(max(size[0], size[2]) / 2 * 0.8)
    if placement == "table":
        for _ in range(12):
            top, ext, yaw = supports[rng.integers(len(supports))]
            local = np.array([rng.uniform(-1, 1) * max(ext[0] - size[0] / 2 - 0.03, 0), 0,
                              rng.uniform(-1, 1) * max(ext[2] - size[2] / 2 - 0.03, 0)])
            origin = top + rot_y(local, yaw)
            on_tables = [o for o in scene.objects if CLASSES[o.cls].placement == "table"]
            if all(np.linalg.norm(origin - _base(o)) > r + 0.5 * max(o.size[0], o.size[2]) for o in on_tables):
                _add_parts(scene, cls, origin, yaw + rng.uniform(-0.4, 0.4), size, label, materials, rng, spec.build)
                return top
        placement = "floor" if cls in (1, 16, 14) else None  # no table space left: bottles, vases, books on the floor
        if placement is None:
            return None
    if placement == "wall":
        for _ in range(12):
            wall = int(rng.integers(0, 4))
            if wall == scene.window[0]:
                continue
            normal, _, wall_half = _wall_frame(wall, scene.half)
            if wall_half < size[0]:
                continue
            u = rng.uniform(-wall_half + size[0], wall_half - size[0])
            origin = _wall_point(wall, scene.half, u, size[2] / 2) + np.array([0, rng.uniform(*spec.height), 0])
            if cls == 12 and not floor.free(origin[[0, 2]], r, inside=False):
                continue
            if cls == 12:
                floor.take(origin[[0, 2]], r)
            _add_parts(scene, cls, origin, _yaw_facing(normal), size, label, materials, rng, spec.build)
            return None
        return None
    for _ in range(40):
        if placement == "wall-floor":
            wall = int(rng.integers(0, 4))
            normal, _, wall_half = _wall_frame(wall, scene.half)
            if wall_half - size[0] / 2 - 0.1 <= -wall_half + size[0] / 2 + 0.1:
                continue
            u = rng.uniform(-wall_half + size[0] / 2 + 0.1, wall_half - size[0] / 2 - 0.1)
            origin = _wall_point(wall, scene.half, u, size[2] / 2 + 0.02)
            yaw = _yaw_facing(normal)
        else:
            origin = np.array([rng.uniform(-1, 1) * (scene.half[0] - r), 0, rng.uniform(-1, 1) * (scene.half[1] - r)])
            yaw = rng.uniform(-math.pi, math.pi)
            if cls == 2 and len(supports) > 1:  # a chair pulled up to the dining table, facing it
                top, ext, tyaw = supports[-1]
                side = rng.integers(4)
                offset = [np.array([0, 0, ext[2] + 0.3]), np.array([0, 0, -ext[2] - 0.3]),
                          np.array([ext[0] + 0.3, 0, 0]), np.array([-ext[0] - 0.3, 0, 0])][side]
                offset = offset + np.array([rng.uniform(-0.3, 0.3), 0, rng.uniform(-0.1, 0.1)]) * (side < 2)
                origin = np.array([top[0], 0, top[2]]) + rot_y(offset, tyaw)
                to_table = np.array([top[0], 0, top[2]]) - origin
                yaw = _yaw_facing(to_table / (np.linalg.norm(to_table) + 1e-9))
        if floor.free(origin[[0, 2]], r * (0.8 if cls == 2 else 1.0), inside=placement == "floor"):
            floor.take(origin[[0, 2]], r)
            _add_parts(scene, cls, origin, yaw, size, label, materials, rng, spec.build)
            if cls == 6:
                return origin + np.array([0, size[1], 0]), np.array([size[0] / 2, 0, size[2] / 2]), yaw
            return None
    return None


# ----------------------------------------------------------------------------- cameras


def camera_for(scene: Scene, focus: SceneObject, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A camera (origin, basis rows right, up, back) looking at ``focus``, as Taskonomy's cameras look at
    points of interest: from in front of it, from across the room (so that its neighbours are in view too),
    but near enough that it fills most of the view (:data:`NEAR_FILL`)."""
    half_fov = math.tan(math.radians(FOV_DEGREES) / 2)
    extent = float(max(focus.size[0], focus.size[1]))
    origin = None
    for _ in range(16):
        angle = rng.uniform(-1.0, 1.0)
        direction = rot_y(focus.front, angle)
        with np.errstate(divide="ignore"):
            room = np.min(np.abs((np.sign(direction[[0, 2]]) * scene.half - focus.centre[[0, 2]])
                                 / np.where(direction[[0, 2]] == 0, 1e-9, direction[[0, 2]])))
        near = extent / (2 * half_fov * NEAR_FILL) + 0.1
        dist = min(rng.uniform(0.55, 0.95) * (room - 0.3), near)
        dist = max(dist, extent / (2 * half_fov * 1.1) + 0.1)  # never so near that it overflows the view
        origin = focus.centre + direction * dist
        origin[1] = np.clip(focus.centre[1] + rng.uniform(0.1, 0.8), 0.6, min(1.8, scene.height - 0.3))
        origin[[0, 2]] = np.clip(origin[[0, 2]], -scene.half + 0.25, scene.half - 0.25)
        if all(np.any(np.abs(rot_y(origin - p.centre, -p.yaw)) > p.ext + 0.1) for p in scene.prims):
            break
    assert origin is not None
    to = focus.centre - origin
    yaw = math.atan2(to[0], to[2]) + rng.uniform(-0.15, 0.15)
    pitch = math.atan2(to[1], math.hypot(to[0], to[2])) + rng.uniform(-0.08, 0.08)
    fwd = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return origin, np.stack([right, up, -fwd])


def camera_rays(basis: np.ndarray, size: int) -> np.ndarray:
    """Unit ray directions (H, W, 3) of a pinhole camera with the basis rows (right, up, back)."""
    half_fov = math.tan(math.radians(FOV_DEGREES) / 2)
    s = (np.arange(size) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(s * half_fov, -s * half_fov)
    dirs = -basis[2] + u[..., None] * basis[0] + v[..., None] * basis[1]
    return dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
