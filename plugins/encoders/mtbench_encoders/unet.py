"""A ResNet trunk whose every stage reaches the decoder (a U-Net): not the paper's model.

MTRobust's decoder sees only the trunk's last feature map, at 1/32 of the input: 2x2 at 64 px. From that,
a model trained for a few epochs learns slowly where each thing is. On the built-in data a segmentation
ResNet18 trained for 10 epochs reached 0.84x and 0.90x its constant predictor's error (training seeds
0 and 1) with MTRobust's decoder and 0.47x (both seeds) with this one (docs/data.md). The trunk's layers are
torchvision's ResNet, as in the paper's encoders; only what the decoder reads differs.

The encoder contract is one feature map at ``1/stride`` of the input. The trunk keeps it: it packs the
earlier stages into the channels of its last one (``pixel_unshuffle``, space to depth, lossless), and the
decoder unpacks each where its own resolution matches (``pixel_shuffle``). So attacks, batch-norm
folding and checkpoints see a model like any other.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from mtbench_encoders.decoders import ResNetDecoder
from mtbench_encoders.xception import init_like_upstream

BASIC = (64, 64, 128, 256, 512)
"""Channels of a basic-block ResNet's stem (stride 2, before its max-pooling) and four stages (strides 4,
8, 16, 32)."""
BOTTLENECK = (64, 256, 512, 1024, 2048)
"""The same for the bottleneck ResNets (ResNet50, ResNet152, WideResNet50-2)."""
STRIDES = (2, 4, 8, 16, 32)
LAST = STRIDES[-1]


def packing(stages: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Where each stage lies in the packed feature map, the last stage first: (its first channel, its end,
    its factor 32 / stride). A stage of c channels takes c * factor^2 of them."""
    out, start = [], 0
    for c, stride in reversed(list(zip(stages, STRIDES))):
        factor = LAST // stride
        out.append((start, start + c * factor ** 2, factor))
        start += c * factor ** 2
    return out


def packed_channels(stages: tuple[int, ...]) -> int:
    """Channels of the packed feature map."""
    return packing(stages)[-1][1]


class ResNetPyramid(nn.Module):
    """torchvision's ResNet without pooling and classifier; returns its stem and four stages packed at
    stride 32: ``cat(stage4, unshuffle(stage3, 2), unshuffle(stage2, 4), unshuffle(stage1, 8),
    unshuffle(stem, 16))``."""

    def __init__(self, name: str):
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)  # random init: no downloads
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        h = self.pool(features[0])
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return torch.cat([f if s == LAST else F.pixel_unshuffle(f, LAST // s)
                          for f, s in reversed(list(zip(features, STRIDES)))], 1)


class UNetDecoder(nn.Module):
    """MTRobust's decoder (:class:`~mtbench_encoders.decoders.ResNetDecoder`) with the trunk's stages 3, 2
    and 1 and its stem added to the outputs of its first four up-samplings (LinkNet's additive skips: the
    decoder costs about what MTRobust's does), through a 1x1 conv + BN where their channels differ."""

    def __init__(self, stages: tuple[int, ...], out_channels: int):
        super().__init__()
        (_, self.last_channels, _), *self.skip_slices = packing(stages)
        layers = list(ResNetDecoder(stages[-1], out_channels))  # up-stages of 6 layers: up, BN, ReLU, conv, BN, ReLU
        skips = len(stages) - 1
        self.ups = nn.ModuleList(nn.Sequential(*layers[6 * i:6 * i + 3]) for i in range(skips))
        self.convs = nn.ModuleList(nn.Sequential(*layers[6 * i + 3:6 * i + 6]) for i in range(skips))
        self.rest = nn.Sequential(*layers[6 * skips:])
        self.project = nn.ModuleList(
            nn.Identity() if c == w else nn.Sequential(nn.Conv2d(c, w, 1, bias=False), nn.BatchNorm2d(w))
            for c, w in zip(reversed(stages[:-1]), ResNetDecoder.WIDTHS))
        init_like_upstream(self.project)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        h = packed[:, :self.last_channels]
        for (start, stop, factor), project, up, conv in zip(self.skip_slices, self.project, self.ups, self.convs):
            h = conv(up(h) + project(F.pixel_shuffle(packed[:, start:stop], factor)))
        return self.rest(h)
