"""Decoders: a feature map back to input resolution, one per task (no skip connections)."""

from __future__ import annotations

from torch import nn


def up_stage(c_in: int, c_out: int) -> nn.Sequential:
    """2x2 transposed conv (stride 2) + BN + ReLU, then 3x3 conv + BN + ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UpsamplingDecoder(nn.Sequential):
    """MTRobust's decoder: one up-stage per factor of 2 of the encoder's stride, then a 3x3 conv.

    For the ResNets (stride 32) that is five stages, in -> 256 -> 128 -> 64 -> 48 -> 32; for
    Xception (stride 16) the first four widths. No output activation.
    """

    WIDTHS = (256, 128, 64, 48, 32)

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        stages = stride.bit_length() - 1
        if 2 ** stages != stride or not 1 <= stages <= len(self.WIDTHS):
            raise ValueError(f"decoder needs a power-of-two stride between 2 and 32, got {stride}")
        widths = self.WIDTHS[len(self.WIDTHS) - stages:] if stages < len(self.WIDTHS) else self.WIDTHS
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers.append(up_stage(c, w))
            c = w
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        super().__init__(*layers)
