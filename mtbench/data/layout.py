"""The official Taskonomy on-disk format: folder layout, file names, PNG bit depths.

``<root>/<building>/<domain>/point_<P>_view_<V>_domain_<domain>.png``; the same
(building, P, V) across domains is one sample.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtbench.errors import DataError
from mtbench.specs import Domain

# Labels are resized nearest (a class index must stay a class), continuous maps bilinearly as MTRobust's
# loader (skimage, interpolation order 1), the image by area.
DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("rgb", 8, 3, "area"),
        Domain("segment_semantic", 8, 1, "nearest"),
        Domain("depth_zbuffer", 16, 1, "bilinear"),
        Domain("depth_euclidean", 16, 1, "bilinear"),
        Domain("normal", 8, 3, "bilinear"),
        Domain("keypoints2d", 16, 1, "bilinear"),
        Domain("keypoints3d", 16, 1, "bilinear"),
        Domain("edge_texture", 16, 1, "bilinear"),
        Domain("edge_occlusion", 16, 1, "bilinear"),
        Domain("principal_curvature", 8, 3, "bilinear"),
        Domain("reshading", 8, 1, "bilinear"),
    )
}

_NAME = re.compile(r"^point_(\d+)_view_(\d+)_domain_([a-z0-9_]+)\.png$")


def file_name(point: int, view: int, domain: str) -> str:
    return f"point_{point}_view_{view}_domain_{domain}.png"


def parse_file_name(name: str) -> tuple[int, int, str] | None:
    """``(point, view, domain)`` for an official file name, else None."""
    m = _NAME.match(name)
    return (int(m[1]), int(m[2]), m[3]) if m else None


def read_png(path: Path, domain: Domain) -> np.ndarray:
    """Read one PNG and check it is in the domain's format (H x W, or H x W x C for colour).

    Raises :class:`DataError` naming the file for a missing or corrupt file or a wrong bit depth
    or channel count.
    """
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: file missing (domain {domain.name!r})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable PNG ({exc})") from None
    if domain.bits == 16:
        if mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise DataError(f"{path}: expected a 16-bit single-channel PNG for {domain.name!r}, found mode {mode!r}")
        arr = arr.astype(np.uint16)
    elif domain.channels == 1:
        if mode not in ("L", "P"):
            raise DataError(f"{path}: expected an 8-bit single-channel PNG for {domain.name!r}, found mode {mode!r}")
    elif mode != "RGB":
        raise DataError(f"{path}: expected an 8-bit RGB PNG for {domain.name!r}, found mode {mode!r}")
    return arr


_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "area": Image.Resampling.BOX,
             "bilinear": Image.Resampling.BILINEAR}


def resize(arr: np.ndarray, size: int, how: str) -> np.ndarray:
    """Square-resize keeping dtype: ``nearest`` for labels, ``bilinear`` for continuous maps, ``area``
    (box filter) for images. 16-bit data is interpolated in float and rounded back."""
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    resample = _RESAMPLE[how]
    if arr.dtype == np.uint16:
        if how == "nearest":  # Pillow resizes 16-bit data in mode I
            return np.asarray(Image.fromarray(arr.astype(np.int32)).resize((size, size), resample)).astype(np.uint16)
        out = np.asarray(Image.fromarray(arr.astype(np.float32)).resize((size, size), resample))
        return np.clip(np.rint(out), 0, 65535).astype(np.uint16)
    return np.asarray(Image.fromarray(arr).resize((size, size), resample))
