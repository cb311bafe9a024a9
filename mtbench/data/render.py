"""Ray-cast one view of a synthetic room into every Taskonomy domain (numpy only).

One ray per pixel finds the nearest surface: the room's walls, floor and ceiling, the window (sky) and
the primitives of the scene (boxes, ellipsoids, cylinders). Every domain comes from those hits, so the
eleven tasks describe one geometry:

- rgb: textured albedo lit by the room's coloured point lights (Lambert + a specular highlight, hard
  shadows) and an ambient term, exposed automatically, with sensor noise;
- segment_semantic: the class of the hit object (background 1, sky 0), and 0 on a one-pixel band where
  an object's label meets another label, as Taskonomy's uncertain pixels;
- depth_zbuffer, depth_euclidean: distance along the view axis and along the ray, 1/512 m, 65535 for sky;
- normal: the surface normal in the camera frame (x right, y up, z towards the camera);
- reshading: Lambertian shading under a point light at the camera (from the normals and distances);
- edge_texture: Sobel edges of the slightly smoothed grey image; edge_occlusion: depth discontinuities;
- keypoints2d: the Harris corner response of the image; keypoints3d: that of the normals and depth,
  compressed and spread into a density of corners;
- principal_curvature: the two principal curvatures of the hit surface (spheres and cylinders curve,
  planes are flat) and the creases where a surface's normal turns.
"""

from __future__ import annotations

import math

import numpy as np

from mtbench.data.scenes import FOV_DEGREES, ROOM_SURFACES, Material, Prim, Scene, camera_for, camera_rays, rot_y

NO_DEPTH = 65535
EPS = 1e-4
SPARSE_SMOOTHING = 4
"""Binomial passes over the edge maps at 64 px (about a Gaussian of sigma 1.4 px; the same share of the
view at any size: passes grow with the size squared), v5; the keypoint and curvature maps, v5's too,
get ``WIDE_SMOOTHING`` since v6.

A Taskonomy label resized from 512 px to 64 px gives each pixel the density of the edges or corners in
its 8 x 8 source pixels; drawn at 64 px as one-pixel lines, these maps were so sparse that a model
trained with the tasks' L1 loss predicts the background everywhere (its median) and never beats the
mean. Smoothed, they hold where edges, corners and curved surfaces are, which a model can learn: in
10-epoch runs of one seed, texture edges went from 1.02x their constant predictor's error to 0.78x,
curvature from 0.92x to 0.82x."""
OCCLUSION_WIDTH = 4
"""Occlusion edges are widened by this many pixels at 64 px (one 4-neighbour dilation each; in proportion
at other sizes) before smoothing (v5): a depth jump is a band, not a line one pixel wide (occlusion
edges: 1.10x -> 0.94x their constant's error in a 10-epoch run)."""
WIDE_SMOOTHING = 16
"""Binomial passes over the keypoint and curvature maps at 64 px (about a Gaussian of sigma 2.8 px; in
proportion at other sizes), v6: wider than the edges' ``SPARSE_SMOOTHING``. In 16-epoch runs of
single-task ResNet18s (two training seeds), curvature went from 0.79x its constant predictor's error
(4 passes) to 0.57x."""
KEYPOINT2D_GAIN = 3_000
KEYPOINT3D_GAIN = 30
"""Both keypoint maps are a density of corners (v6): the square root of a Harris corner response (of the
image for 2D keypoints, of the normals and depth for 3D ones) smoothed by ``WIDE_SMOOTHING``, times the
map's gain, square-rooted again and clipped to the top of the map's range.

Before v6 the responses were scaled linearly (3D: times 3; 2D: times 14,000) and smoothed as the edge
maps: 98% of the 3D map's pixels were at or below the middle of its range (the median decoded to
-0.999) and 1.1% saturated at +1, so under the task's L1 loss every model predicted that background,
whose test MSE is 1.06x the mean's; a quarter of the 2D map's pixels saturated at +1. Compressed and
spread, each map says how near and how strong the corners are, which a model learns: single-task
ResNet18s, 16 epochs, two training seeds, went from 1.06x their constant predictor's error to 0.72x (3D;
smoothing 8 or 24 passes gave 0.82x and 0.75x, tanh instead of the square root 0.88x) and from 0.82x
to 0.58x (2D; gain 1,000 gave 0.60x)."""


# ----------------------------------------------------------------------------- intersections (own frame)


def _box(o, d, ext):
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-ext - o) / d, (ext - o) / d
    tmin = np.minimum(t1, t2)
    axis = np.argmax(tmin, axis=-1)
    t_near = np.max(tmin, axis=-1)
    t_far = np.min(np.maximum(t1, t2), axis=-1)
    ok = (t_near < t_far) & (t_near > EPS)
    t = np.where(ok, t_near, np.inf)
    n = np.zeros_like(d)
    rows = np.arange(len(d))
    n[rows, axis] = -np.sign(d[rows, axis])
    p = o + np.where(ok, t, 0)[:, None] * d
    u = np.choose(axis, [p[:, 2], p[:, 0], p[:, 0]])
    v = np.choose(axis, [p[:, 1], p[:, 2], p[:, 1]])
    return t, n, np.stack([u, v], -1), np.zeros((len(d), 2))


def _ellipsoid(o, d, ext):
    oe, de = o / ext, d / ext
    a = (de * de).sum(-1)
    b = 2 * (oe * de).sum(-1)
    c = (oe * oe).sum(-1) - 1
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    ok = (disc > 0) & (t > EPS)
    t = np.where(ok, t, np.inf)
    p = o + np.where(ok, t, 0)[:, None] * d
    n = p / ext ** 2
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    r = 0.5 * (ext[0] + ext[2])
    uv = np.stack([np.arctan2(p[:, 2], p[:, 0]) * r, p[:, 1]], -1)
    curv = np.tile([1.0 / ext.min(), 1.0 / ext.max()], (len(d), 1))
    return t, n, uv, curv


def _cylinder(o, d, ext):
    rx, h, rz = ext
    ox, oz, dx, dz = o[:, 0] / rx, o[:, 2] / rz, d[:, 0] / rx, d[:, 2] / rz
    a = dx * dx + dz * dz
    b = 2 * (ox * dx + oz * dz)
    c = ox * ox + oz * oz - 1
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        side = (disc > 0) & (ts > EPS) & (np.abs(o[:, 1] + ts * d[:, 1]) <= h)
        ts = np.where(side, ts, np.inf)
        tc = np.minimum((h - o[:, 1]) / d[:, 1], (-h - o[:, 1]) / d[:, 1])
    pc = o + np.where(np.isfinite(tc), tc, 0)[:, None] * d
    cap = (tc > EPS) & ((pc[:, 0] / rx) ** 2 + (pc[:, 2] / rz) ** 2 <= 1)
    tc = np.where(cap, tc, np.inf)
    on_cap = tc < ts
    t = np.minimum(ts, tc)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    n_side = np.stack([p[:, 0] / rx ** 2, np.zeros(len(d)), p[:, 2] / rz ** 2], -1)
    n_side /= np.linalg.norm(n_side, axis=-1, keepdims=True) + 1e-12
    n_cap = np.zeros_like(d)
    n_cap[:, 1] = np.sign(p[:, 1])
    n = np.where(on_cap[:, None], n_cap, n_side)
    r = 0.5 * (rx + rz)
    uv = np.where(on_cap[:, None], p[:, [0, 2]], np.stack([np.arctan2(p[:, 2], p[:, 0]) * r, p[:, 1]], -1))
    curv = np.where(on_cap[:, None], 0.0, np.stack([np.full(len(d), 1.0 / r), np.zeros(len(d))], -1))
    return t, n, uv, curv


_SHAPES = {"box": _box, "ellipsoid": _ellipsoid, "cylinder": _cylinder}


def _candidates(prim: Prim, origins: np.ndarray, dirs: np.ndarray, t_max: np.ndarray) -> np.ndarray:
    """Indices of the rays that pass the primitive's bounding sphere before ``t_max``."""
    oc = origins - prim.centre
    if len(oc) == 1:  # one origin (a camera): a matrix-vector product
        b = dirs @ oc[0]
        c = float(oc[0] @ oc[0]) - prim.radius ** 2
    else:
        b = np.einsum("ij,ij->i", dirs, oc)
        c = np.einsum("ij,ij->i", oc, oc) - prim.radius ** 2
    disc = b * b - c
    ok = disc > 0
    root = np.sqrt(np.maximum(disc, 0))
    return np.nonzero(ok & (-b + root > EPS) & (-b - root < t_max))[0]


def _intersect(prim: Prim, origins: np.ndarray, dirs: np.ndarray):
    """Hits of some rays (world frame) with one primitive: t, world normal, texture uv, curvatures."""
    o = rot_y(origins - prim.centre, -prim.yaw)
    d = rot_y(dirs, -prim.yaw)
    swap = [0, 2, 1] if prim.axis == 2 else [0, 1, 2]
    t, n, uv, curv = _SHAPES[prim.kind](o[:, swap], d[:, swap], prim.ext)
    return t, rot_y(n[:, swap], prim.yaw), uv, curv


def trace(scene: Scene, origin: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
    """Nearest hit of each ray (N, 3) from ``origin``: t, normal, surface id (0-5 room, 6+ primitives),
    sky flag, texture coordinates and curvatures."""
    lo = np.array([-scene.half[0], 0.0, -scene.half[1]])
    hi = np.array([scene.half[0], scene.height, scene.half[1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axes = np.maximum((lo - origin) / dirs, (hi - origin) / dirs)
    axis = np.argmin(t_axes, axis=-1)
    rows = np.arange(len(dirs))
    t = t_axes[rows, axis]
    normal = np.zeros_like(dirs)
    sign = -np.sign(dirs[rows, axis])
    normal[rows, axis] = sign
    surface = np.select([(axis == 0) & (sign < 0), axis == 0, (axis == 2) & (sign < 0), axis == 2, sign > 0],
                        [0, 1, 2, 3, 4], 5)
    hit = origin + t[:, None] * dirs
    uv = np.where((axis == 0)[:, None], hit[:, [2, 1]], np.where((axis == 2)[:, None], hit[:, [0, 1]], hit[:, [0, 2]]))
    wall, u0, u1, y0, y1 = scene.window
    along = hit[:, 2] / scene.half[1] if wall < 2 else hit[:, 0] / scene.half[0]
    sky = (surface == wall) & (along > u0) & (along < u1) & (hit[:, 1] > y0) & (hit[:, 1] < y1)
    curv = np.zeros((len(dirs), 2))
    for k, prim in enumerate(scene.prims):
        idx = _candidates(prim, origin[None], dirs, t)
        if len(idx) == 0:
            continue
        tk, nk, uvk, ck = _intersect(prim, np.broadcast_to(origin, (len(idx), 3)), dirs[idx])
        closer = tk < t[idx]
        idx = idx[closer]
        t[idx], normal[idx], uv[idx], curv[idx] = tk[closer], nk[closer], uvk[closer], ck[closer]
        surface[idx] = ROOM_SURFACES + k
        sky[idx] = False
    return {"t": t, "normal": normal, "surface": surface, "sky": sky, "uv": uv, "curv": curv,
            "hit": origin + t[:, None] * dirs}


def _shadowed(scene: Scene, points: np.ndarray, to_light: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """True where a primitive lies between a point and the light."""
    out = np.zeros(len(points), bool)
    for prim in scene.prims:
        idx = _candidates(prim, points, to_light, dist)
        idx = idx[~out[idx]]
        if len(idx):
            tk = _intersect(prim, points[idx], to_light[idx])[0]
            out[idx[tk < dist[idx] - 1e-3]] = True
    return out


# ----------------------------------------------------------------------------- textures


def _pattern(material: Material, uv: np.ndarray, footprint: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """The material's texture in [-1, 1] at surface coordinates ``uv`` (metres), faded out where a period
    spans fewer than four pixels (``footprint``: metres per pixel), so that textures never alias."""
    f = material.freq
    if material.texture == "plain" or f <= 0:
        return np.zeros(len(uv))
    fade = np.clip((0.5 - f * footprint) / 0.25, 0, 1)
    u, v = 2 * math.pi * f * uv[:, 0], 2 * math.pi * f * uv[:, 1]
    if material.texture == "hstripes":
        p = np.tanh(2.5 * np.sin(v + phases[0]))
    elif material.texture == "vstripes":
        p = np.tanh(2.5 * np.sin(u + phases[0]))
    elif material.texture == "checks":
        p = np.tanh(4 * np.sin(u + phases[0]) * np.sin(v + phases[1]))
    elif material.texture == "grain":
        p = np.sin(u + 1.6 * np.sin(v / 6 + phases[0]) + phases[1])
    elif material.texture == "noise":
        p = sum(np.sin(np.cos(phases[k]) * u + np.sin(phases[k]) * v + phases[k + 3]) for k in range(3)) / 2
        fade2 = np.clip((0.5 - 2 * f * footprint) / 0.25, 0, 1)
        p = np.clip(p + 0.5 * fade2 * np.sin(2 * (np.sin(phases[1]) * u - np.cos(phases[1]) * v) + phases[5]), -1, 1)
    else:
        raise ValueError(f"unknown texture {material.texture!r}")
    return fade * p


# ----------------------------------------------------------------------------- image filters


def _sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.pad(img, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return gx / 8, gy / 8


def _smooth(img: np.ndarray, passes: int = 1) -> np.ndarray:
    """Binomial [1 2 1]/4 blur, ``passes`` times (about a Gaussian of sigma sqrt(passes / 2))."""
    for _ in range(passes):
        p = np.pad(img, 1, mode="edge")
        img = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
        img = (img[:, :-2] + 2 * img[:, 1:-1] + img[:, 2:]) / 4
    return img


def _harris(tensor: tuple[np.ndarray, np.ndarray, np.ndarray], passes: int) -> np.ndarray:
    sxx, syy, sxy = (_smooth(x, passes) for x in tensor)
    return np.clip(sxx * syy - sxy ** 2 - 0.05 * (sxx + syy) ** 2, 0, None)


def _corner_density(response: np.ndarray, passes: int, gain: float) -> np.ndarray:
    """A keypoint map in [0, 1]: the corner response spread and compressed (see ``KEYPOINT3D_GAIN``)."""
    return np.clip(np.sqrt(_smooth(response, passes) * gain), 0, 1)


def _occlusion(dist: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Occlusion edges: pixels in front of a 4-neighbour of another surface at least 4% farther, graded by
    the jump (1 at 20%; 1.5 at most)."""
    d = np.pad(dist, 1, mode="edge")
    s = np.pad(surface, 1, mode="edge")
    h, w = dist.shape
    out = np.zeros_like(dist)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nd, ns = d[dy:dy + h, dx:dx + w], s[dy:dy + h, dx:dx + w]
        jump = (nd - dist) / dist
        out = np.maximum(out, np.where((ns != surface) & (jump > 0.04), np.clip(jump / 0.2, 0, 1.5), 0))
    return out


def _to16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 65535), 0, 65535).astype(np.uint16)


def _to8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- rendering


def render(scene: Scene, rng: np.random.Generator, size: int, focus: int) -> dict[str, np.ndarray]:
    """Every Taskonomy domain of one view of ``scene`` looking at object ``focus``, as the arrays that go
    into the PNGs."""
    origin, basis = camera_for(scene, scene.objects[focus], rng)
    dirs = camera_rays(basis, size).reshape(-1, 3)
    hit = trace(scene, origin, dirs)
    t, normal, surface, sky, pos = hit["t"], hit["normal"], hit["surface"], hit["sky"], hit["hit"]
    shape = (size, size)
    solid = ~sky

    # appearance: each surface's material and texture; labels from the hit primitive
    materials = scene.surfaces + [p.material for p in scene.prims]
    labels = np.array([1] * ROOM_SURFACES + [p.label for p in scene.prims])
    phases = [np.zeros(6)] * ROOM_SURFACES + [p.phases for p in scene.prims]
    cos_view = np.abs((normal * dirs).sum(-1))
    pixel = 2 * math.tan(math.radians(FOV_DEGREES) / 2) / size
    footprint = t * pixel / np.maximum(cos_view, 0.25)
    albedo = np.zeros_like(dirs)
    gloss = np.zeros(len(t))
    for s in np.nonzero(np.bincount(surface[solid]))[0]:
        m = (surface == s) & solid
        mat = materials[s]
        pattern = _pattern(mat, hit["uv"][m], footprint[m], phases[s])
        albedo[m] = np.asarray(mat.colour) * (1 + mat.contrast * pattern)[:, None]
        gloss[m] = mat.gloss

    # lighting: coloured point lights with shadows and highlights, plus ambient; automatic exposure
    diffuse = np.tile(scene.ambient, (len(t), 1))
    specular = np.zeros_like(dirs)
    lift = pos + normal * 1e-3
    for light in scene.lights:
        to_light = light.position - pos
        dist = np.linalg.norm(to_light, axis=-1)
        ldir = to_light / dist[:, None]
        lambert = np.clip((normal * ldir).sum(-1), 0, 1)
        lit = solid & (lambert > 0)
        shadow = np.zeros(len(t), bool)
        shadow[lit] = _shadowed(scene, lift[lit], ldir[lit], dist[lit])
        energy = light.power * 4.0 / (1 + 0.25 * dist ** 2) * ~shadow
        half = ldir - dirs
        half /= np.linalg.norm(half, axis=-1, keepdims=True) + 1e-12
        spec = np.clip((normal * half).sum(-1), 0, 1) ** 40 * gloss * (lambert > 0)
        diffuse += light.colour * (lambert * energy)[:, None]
        specular += light.colour * (spec * energy)[:, None]
    radiance = albedo * diffuse + 0.5 * specular
    lum = radiance @ np.array([0.299, 0.587, 0.114])
    exposure = 0.85 / max(float(np.percentile(lum[solid], 95)) if solid.any() else 1.0, 1e-3)
    rgb = np.clip(radiance * exposure, 0, 1)
    up = -dirs[:, 1]
    sky_rgb = np.stack([0.55 + 0.25 * up, 0.72 + 0.15 * up, np.full(len(t), 0.97)], -1)
    rgb = np.where(sky[:, None], np.clip(sky_rgb, 0, 1), rgb)
    rgb = np.clip(rgb + rng.normal(0, 0.012, rgb.shape), 0, 1).reshape(size, size, 3)

    # semantic labels: sky uncertain, and an uncertain band where an object's label meets another
    label = np.where(sky, 0, labels[surface]).reshape(shape)
    p = np.pad(label, 1, mode="edge")
    border = (p[1:-1, 2:] != label) | (p[1:-1, :-2] != label) | (p[2:, 1:-1] != label) | (p[:-2, 1:-1] != label)
    label = np.where(border & (label > 1), 0, label)

    # geometry: depth, camera-frame normals, reshading under a light at the camera
    forward = -basis[2]
    dist_e = t.reshape(shape)
    dist_z = (t * (dirs @ forward)).reshape(shape)
    sky2 = sky.reshape(shape)
    depth_e = np.where(sky2, NO_DEPTH, np.clip(np.rint(dist_e * 512), 0, 64000)).astype(np.uint16)
    depth_z = np.where(sky2, NO_DEPTH, np.clip(np.rint(dist_z * 512), 0, 64000)).astype(np.uint16)
    n_cam = np.where(sky[:, None], 0.0, normal @ basis.T).reshape(size, size, 3)
    facing = np.clip(-(normal * dirs).sum(-1), 0, 1).reshape(shape)
    reshading = np.where(sky2, 0.0, 0.9 * facing / np.sqrt(1 + 0.04 * dist_e ** 2) + 0.05)

    # edges and keypoints: of the image (2D) and of the geometry (3D)
    grey = _smooth(rgb @ np.array([0.299, 0.587, 0.114]))
    gx, gy = _sobel(grey)
    edge_tex = np.clip(np.hypot(gx, gy) * 3.0, 0, 1)
    dist_m = np.where(sky2, 20.0, dist_e)
    dx, dy = _sobel(dist_m)
    occlusion = _occlusion(dist_m, surface.reshape(shape))
    nx, ny = zip(*(_sobel(n_cam[..., c]) for c in range(3)))
    normal_change = np.sqrt(sum(a * a + b * b for a, b in zip(nx, ny)))
    harris2d = np.sqrt(_harris((gx * gx, gy * gy, gx * gy), 1))
    gxx = sum(a * a for a in nx) + dx * dx * 4
    gyy = sum(b * b for b in ny) + dy * dy * 4
    gxy = sum(a * b for a, b in zip(nx, ny)) + dx * dy * 4
    harris3d = np.sqrt(_harris((gxx, gyy, gxy), 1))

    # principal curvature: spheres and cylinders curve (1/radius), planes are flat, creases turn sharply
    curv = hit["curv"].reshape(size, size, 2)
    crease = _smooth(np.clip(normal_change, 0, 1) * (occlusion == 0))
    curvature = np.stack([127 + np.clip(curv[..., 0] * 9 + crease * 50, 0, 128),
                          127 + np.clip(curv[..., 1] * 9 + crease * 20, 0, 128), np.full(shape, 127.0)], -1)
    curvature = np.where(sky2[..., None], 127.0, curvature)
    passes = max(1, round(SPARSE_SMOOTHING * (size / 64) ** 2))
    wide_passes = max(1, round(WIDE_SMOOTHING * (size / 64) ** 2))
    curvature[..., :2] = np.stack([_smooth(curvature[..., c], wide_passes) for c in range(2)], -1)
    for _ in range(max(1, round(OCCLUSION_WIDTH * size / 64))):
        p = np.pad(occlusion, 1, mode="edge")
        occlusion = np.maximum.reduce([p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])

    return {
        "rgb": _to8(rgb),
        "segment_semantic": label.astype(np.uint8),
        "depth_zbuffer": depth_z,
        "depth_euclidean": depth_e,
        "normal": _to8((n_cam + 1) / 2),
        "reshading": _to8(np.clip(reshading, 0, 1)),
        "principal_curvature": np.clip(np.rint(curvature), 0, 255).astype(np.uint8),
        "edge_texture": _to16(_smooth(edge_tex, passes) * 0.08),  # decodes to [0, 0.08] before the clip
        "edge_occlusion": _to16(_smooth(occlusion, passes) * 0.00625),
        "keypoints2d": _to16(_corner_density(harris2d, wide_passes, KEYPOINT2D_GAIN) * 0.005),
        "keypoints3d": _to16(_corner_density(harris3d, wide_passes, KEYPOINT3D_GAIN)),
    }
