"""The small Taskonomy Xception encoder (stride 16).

Architecture after Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions"
(CVPR 2017): an entry flow of strided blocks, a middle flow of residual blocks of depthwise-
separable convolutions and an exit convolution, narrowed as in the "small" Xception that
Standley et al. ("Which Tasks Should Be Learned Together in Multi-task Learning?", ICML 2020)
used on Taskonomy and MTRobust/Ghamizi et al. reused. Entry widths 24-48-96-192-512, three
middle blocks of width 512 and one separable exit convolution: we reconstructed the layout from
those papers' descriptions so that encoder + two one-channel decoders has the published 4.33M
parameters (we get 4.313M, -0.4%); the upstream file was not available offline, so individual
layer widths may differ from it.
"""

from __future__ import annotations

from torch import nn


class SeparableConv2d(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_in, kernel, stride, kernel // 2, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )


class Block(nn.Module):
    """``reps`` x (ReLU, separable conv, BN), a max-pool when strided, and a residual skip."""

    def __init__(self, c_in: int, c_out: int, reps: int, stride: int = 1, start_with_relu: bool = True):
        super().__init__()
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if c_in != c_out or stride != 1 else nn.Identity()
        )
        layers: list[nn.Module] = []
        c = c_in
        for i in range(reps):
            if i > 0 or start_with_relu:
                layers.append(nn.ReLU(inplace=False))
            layers += [SeparableConv2d(c, c_out), nn.BatchNorm2d(c_out)]
            c = c_out
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x):
        return self.rep(x) + self.skip(x)


class XceptionTaskonomySmall(nn.Module):
    out_channels = 512
    stride = 16

    def __init__(self, middle_blocks: int = 3):
        super().__init__()
        self.entry = nn.Sequential(
            nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True),
            nn.Conv2d(24, 48, 3, 1, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True),
            Block(48, 96, 2, 2, start_with_relu=False),
            Block(96, 192, 2, 2),
            Block(192, 512, 2, 2),
        )
        self.middle = nn.Sequential(*(Block(512, 512, 3, 1) for _ in range(middle_blocks)))
        self.exit = nn.Sequential(
            SeparableConv2d(512, 512), nn.BatchNorm2d(512), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.exit(self.middle(self.entry(x)))
