"""The eleven Taskonomy tasks, decoded exactly as in shared/TASKONOMY.md.

Each ``decode`` gets the raw (resized) arrays of the domains it names and returns the target as
the model sees it (C x H x W float32) and the valid-pixel mask (1 x H x W bool).
"""

from __future__ import annotations

import math

import numpy as np

from mtbench import MetricSpec, TaskSpec
from mtbench.data import DOMAINS
from mtbench_tasks import metrics as M

DEPTH_VALID_BELOW = 64500  # raw euclidean depth; 65535 is sky / no depth
CURVATURE_MEAN = np.array([123.572, 120.1], dtype=np.float32)
CURVATURE_STD = np.array([31.922, 21.658], dtype=np.float32)

RGB, DEPTH_E = DOMAINS["rgb"], DOMAINS["depth_euclidean"]


def depth_mask(raw) -> np.ndarray:
    return (raw["depth_euclidean"] < DEPTH_VALID_BELOW)[None]


def no_mask(raw) -> np.ndarray:
    return np.ones((1,) + raw["rgb"].shape[:2], dtype=bool)


def _chw(x: np.ndarray) -> np.ndarray:
    return (x[None] if x.ndim == 2 else x.transpose(2, 0, 1)).astype(np.float32)


def _u16(raw, domain: str) -> np.ndarray:
    return raw[domain].astype(np.float32) / 65535.0


def gaussian_blur(img: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Separable Gaussian blur (H x W) equal to ``scipy.ndimage.gaussian_filter(img, sigma)``: radius
    int(truncate * sigma + 0.5), scipy's 'reflect' border (numpy's 'symmetric': the edge pixel repeated),
    in float64. Written out so that decoding needs no scipy."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    out = np.pad(img.astype(np.float64), radius, mode="symmetric")
    out = sum(k[i] * out[i:i + img.shape[0], :] for i in range(len(k)))
    out = sum(k[i] * out[:, i:i + img.shape[1]] for i in range(len(k)))
    return out.astype(np.float32)


def decode_segment(raw):
    labels = raw["segment_semantic"].astype(np.int64)
    classes = np.where(labels >= 2, labels - 1, 0)  # 0,1 -> background 0; 2..17 -> 1..16
    return _chw(classes), (labels > 0)[None]


def decode_depth(domain: str):
    def decode(raw):
        v = raw[domain].astype(np.float32)
        return _chw(np.log1p(v) / math.log(65536.0)), depth_mask(raw)
    return decode


def decode_normal(raw):
    return _chw(raw["normal"].astype(np.float32) / 255.0 * 2 - 1), depth_mask(raw)


def decode_keypoints2d(raw):
    v = np.clip(_u16(raw, "keypoints2d"), 0, 0.005) / 0.005
    return _chw(v * 2 - 1), no_mask(raw)


def decode_keypoints3d(raw):
    return _chw(_u16(raw, "keypoints3d") * 2 - 1), depth_mask(raw)


def decode_edge_texture(raw):
    v = np.clip(_u16(raw, "edge_texture"), 0, 0.08) / 0.08
    return _chw(v * 2 - 1), no_mask(raw)


def decode_edge_occlusion(raw):
    """No clip, then x2-1, then a Gaussian blur of sigma 4 at 256 px (scaled with the image size)."""
    v = _u16(raw, "edge_occlusion") / 0.00625 * 2 - 1
    sigma = 4.0 * v.shape[1] / 256.0
    return _chw(gaussian_blur(v, sigma)), depth_mask(raw)


def decode_curvature(raw):
    """Read in colour (MTRobust's grey read was a bug): first two channels, standardised."""
    c = raw["principal_curvature"][..., :2].astype(np.float32)
    return _chw((c - CURVATURE_MEAN) / CURVATURE_STD), depth_mask(raw)


def decode_reshading(raw):
    v = raw["reshading"]
    v = v[..., 0] if v.ndim == 3 else v
    return _chw(v.astype(np.float32) / 255.0 * 2 - 1), depth_mask(raw)


def decode_autoencoder(raw):
    """The input image in [-1, 1], as MTRobust's autoencoder target (the model's input stays in [0, 1])."""
    return _chw(raw["rgb"].astype(np.float32) / 255.0 * 2 - 1), no_mask(raw)


MSE = MetricSpec("mse", M.mse, False, "mean squared error over valid pixels (the paper's clean error)")
L1 = MetricSpec("l1", M.l1, False, "mean absolute error over valid pixels")
DEPTH_METRICS = (
    MSE, L1,
    MetricSpec("abs_rel", M.abs_rel, False, "mean |d - d*| / d* in metres"),
    MetricSpec("rmse", M.rmse_metres, False, "root mean squared error in metres"),
    MetricSpec("delta1", M.delta1, True, "share of pixels with max(d/d*, d*/d) < 1.25"),
)


def regression_task(name, code, channels, domains, decode, metrics=(MSE, L1), description=""):
    return TaskSpec(
        name=name, code=code, channels=channels, domains=domains, decode=decode, loss=M.l1_loss,
        metrics=metrics, error_metric="mse", description=description,
    )


def D(name):
    return DOMAINS[name]


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="segment_semantic", code="s", channels=17, domains=(D("segment_semantic"),),
        decode=decode_segment, loss=M.cross_entropy_loss, error_metric="error", classification=True,
        metrics=(
            MetricSpec("error", M.seg_error, False,
                       "1 - mIoU over the split (the paper's clean error): each class's intersections summed over "
                       "its summed unions, averaged over the classes present; per sample, the sample's 1 - mIoU",
                       statistics=M.confusion_counts, aggregate=M.error_of_counts),
            MetricSpec("miou", M.miou, True, "mean over samples of each sample's mIoU over its present classes"),
            MetricSpec("miou_dataset", M.miou, True,
                       "mIoU over the split: each class's intersections summed over its summed unions",
                       statistics=M.confusion_counts, aggregate=M.miou_of_counts),
            MetricSpec("miou_batch32_paper", M.miou_all_pixels, True,
                       "the paper code's mIoU: per batch of 32 in split order over every pixel (uncertain ones as "
                       "background), averaged over batches",
                       statistics=M.confusion_counts_all_pixels, aggregate=M.miou_per_batch_of_counts),
            MetricSpec("pixel_acc", M.pixel_accuracy, True, "share of valid pixels classified right"),
        ),
        description="semantic segmentation, 16 object classes + background; cross-entropy",
    ),
    regression_task("depth_zbuffer", "d", 1, (D("depth_zbuffer"), DEPTH_E), decode_depth("depth_zbuffer"),
                    DEPTH_METRICS, "z-buffer depth, log-scaled"),
    regression_task("depth_euclidean", "D", 1, (DEPTH_E,), decode_depth("depth_euclidean"),
                    DEPTH_METRICS, "euclidean depth, log-scaled"),
    regression_task("normal", "n", 3, (D("normal"), DEPTH_E), decode_normal, (
        MSE, L1,
        MetricSpec("angle_mean", M.angle_mean, False, "mean angular error in degrees"),
        MetricSpec("angle_median", M.angle_median, False, "median angular error in degrees"),
        MetricSpec("within_11_25", M.within_11_25, True, "share of pixels within 11.25 degrees"),
    ), "surface normals in the camera frame"),
    regression_task("keypoints2d", "k", 1, (D("keypoints2d"), RGB), decode_keypoints2d,
                    description="2D keypoint (corner) response"),
    regression_task("keypoints3d", "K", 1, (D("keypoints3d"), DEPTH_E), decode_keypoints3d,
                    description="3D keypoint response"),
    regression_task("edge_texture", "e", 1, (D("edge_texture"), RGB), decode_edge_texture,
                    description="texture (image) edges"),
    regression_task("edge_occlusion", "E", 1, (D("edge_occlusion"), DEPTH_E), decode_edge_occlusion,
                    description="occlusion edges, Gaussian-blurred"),
    regression_task("principal_curvature", "p", 2, (D("principal_curvature"), DEPTH_E), decode_curvature,
                    description="principal curvatures (first two channels)"),
    regression_task("reshading", "r", 1, (D("reshading"), DEPTH_E), decode_reshading,
                    description="shading under a canonical light"),
    regression_task("autoencoder", "A", 3, (RGB,), decode_autoencoder,
                    description="reconstruct the input image"),
)
