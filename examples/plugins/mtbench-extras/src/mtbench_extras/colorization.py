"""Colourisation as a dense task: predict each pixel's chromaticity from the image.

The label is derived from the RGB image itself, so any Taskonomy-layout folder (real or synthetic)
serves it without new files: only the ``rgb`` domain is read.
"""

from __future__ import annotations

import numpy as np
import torch

from mtbench import MetricSpec, TaskSpec
from mtbench.data import DOMAINS


def decode(raw) -> tuple[np.ndarray, np.ndarray]:
    """(2, H, W) chromaticity (r, g) / (r + g + b); pixels too dark to have a colour are masked."""
    rgb = raw["rgb"].astype(np.float32)
    total = rgb.sum(-1)
    chroma = rgb[..., :2] / np.maximum(total, 1.0)[..., None]
    return chroma.transpose(2, 0, 1), (total > 30)[None]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype).expand_as(values)
    return (values * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


def loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    """Per-sample masked L1."""
    return _masked_mean((pred - target).abs(), mask)


def hue_accuracy(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of valid pixels whose dominant channel (r, g or b) is predicted right."""
    def dominant(c: torch.Tensor) -> torch.Tensor:
        return torch.cat([c, 1 - c.sum(1, keepdim=True)], 1).argmax(1, keepdim=True)

    return _masked_mean((dominant(pred) == dominant(target)).float(), mask)


COLORIZATION = TaskSpec(
    name="colorization", code="c", channels=2, domains=(DOMAINS["rgb"],), decode=decode, loss=loss,
    metrics=(MetricSpec("chroma_mae", loss, False, "mean absolute chromaticity error"),
             MetricSpec("hue_accuracy", hue_accuracy, True, "share of pixels with the right dominant channel")),
    error_metric="chroma_mae", description="predict (r, g) / (r + g + b) of each pixel",
)
