"""The small Taskonomy Xception of Standley et al. and its own decoder (stride 16).

A port of ``XceptionTaskonomySmall`` (``Encoder`` and ``Decoder``) from
``model_definitions/xception_taskonomy_small.py`` in github.com/tstandley/taskgrouping (commit
bb1496e), the model of "Which Tasks Should Be Learned Together in Multi-task Learning?" (ICML 2020)
that MTRobust / Ghamizi et al. reused. Layer shapes and the order the forward pass calls them are
those of the upstream file, checked against ``tests/data/xception_upstream_layers.json``:

- encoder: 3x3 stem convs 3 -> 24 (stride 2) -> 48; three entry blocks to 96, 192, 512 channels,
  each downsampling with a strided 2x2 convolution (not a pool); four middle blocks of two 3x3
  separable convolutions at 512; a separable exit convolution to 256 channels, BN and ReLU;
- decoder: a 16-channel skip branch (separable conv + BN on the encoder's features, bilinearly
  resized to the output resolution) concatenated with the main path, four 2x2 transposed convs
  96 -> 64 -> 64 -> 32 -> 32 with separable convs between them, a 5x5 separable conv 48 -> task.

Upstream resizes the skip to a fixed 256 x 256; here it is resized by the stride, 16, to the main
path's resolution: the same at the paper's 256 px, and the model runs at any multiple of 16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 16
"""Stem conv (2) and three strided entry blocks (2 each); the decoder's four 2x2 up-convs undo it."""


def init_like_upstream(module: nn.Module) -> None:
    """Upstream's initialisation, kept because training results depend on it: every ``Conv2d``
    weight ~ N(0, 2 / (k * k * out_channels)), BN weight 1 and bias 0; other layers keep torch's."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SeparableConv2d(nn.Sequential):
    """Depthwise k x k conv then pointwise 1x1 conv, both without bias: Xception's cheap conv."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3):
        super().__init__(
            nn.Conv2d(c_in, c_in, kernel, padding=kernel // 2, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )


class Block(nn.Module):
    """Residual block: ``reps`` x (ReLU, 3x3 separable conv, BN), then a strided 2x2 conv (with bias)
    when it downsamples; the skip is a 1x1 conv + BN where the shape changes, else the identity."""

    def __init__(self, c_in: int, c_out: int, reps: int = 2, downsample: bool = False, first_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(reps):
            if i > 0 or first_relu:
                layers.append(nn.ReLU(inplace=i > 0))  # the first keeps the block's input for the skip
            layers += [SeparableConv2d(c_in if i == 0 else c_out, c_out), nn.BatchNorm2d(c_out)]
        if downsample:
            layers.append(nn.Conv2d(c_out, c_out, 2, stride=2))
        self.rep = nn.Sequential(*layers)
        stride = 2 if downsample else 1
        self.skip: nn.Module = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if c_in != c_out or downsample else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + self.skip(x)


class XceptionTaskonomySmall(nn.Sequential):
    """The encoder: (B, 3, H, W) in [-1, 1] -> (B, 256, H/16, W/16), after a ReLU."""

    out_channels = 256
    stride = STRIDE

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True),
            nn.Conv2d(24, 48, 3, padding=1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True),
            Block(48, 96, downsample=True, first_relu=False),
            Block(96, 192, downsample=True),
            Block(192, 512, downsample=True),
            *(Block(512, 512) for _ in range(4)),
            SeparableConv2d(512, self.out_channels), nn.BatchNorm2d(self.out_channels), nn.ReLU(),
        )
        init_like_upstream(self)


def _up(c_in: int, c_out: int) -> list[nn.Module]:
    """2x2 transposed conv, stride 2 (with bias, as upstream), then BN."""
    return [nn.ConvTranspose2d(c_in, c_out, 2, stride=2), nn.BatchNorm2d(c_out)]


class XceptionDecoder(nn.Module):
    """Upstream's per-task decoder: the encoder's 256-channel features to ``out_channels`` at 16x
    their resolution; no output activation."""

    SKIP_CHANNELS = 16

    def __init__(self, out_channels: int, in_channels: int = XceptionTaskonomySmall.out_channels):
        super().__init__()
        relu = nn.ReLU(inplace=True)
        self.skip = nn.Sequential(SeparableConv2d(in_channels, self.SKIP_CHANNELS), nn.BatchNorm2d(self.SKIP_CHANNELS))
        self.main = nn.Sequential(
            SeparableConv2d(in_channels, 96), nn.BatchNorm2d(96),
            *_up(96, 96), relu, SeparableConv2d(96, 64), nn.BatchNorm2d(64), relu,
            *_up(64, 64), relu, SeparableConv2d(64, 64, 5), nn.BatchNorm2d(64), relu,
            *_up(64, 32), relu, SeparableConv2d(32, 32, 5), nn.BatchNorm2d(32), relu,
            *_up(32, 32),
        )
        # ReLU after the concatenation: the resized skip is rectified after, not before, the resize
        self.head = nn.Sequential(nn.ReLU(), SeparableConv2d(32 + self.SKIP_CHANNELS, out_channels, 5))
        init_like_upstream(self)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        skip = self.skip(features)
        x = self.main(features)
        # a constant factor rather than x's size keeps the module traceable by torch.fx (batch-norm folding)
        skip = F.interpolate(skip, scale_factor=float(STRIDE), mode="bilinear", align_corners=False)
        return self.head(torch.cat([x, skip], 1))
