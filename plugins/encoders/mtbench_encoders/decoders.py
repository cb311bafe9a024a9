"""MTRobust's Taskonomy decoder for the ResNets: a feature map back to input resolution, no skips.

Layer by layer the ``Decoder`` of ``models/taskonomy_models.py`` in github.com/columbia/MTRobust
(commit 99d1793; itself from tstandley/taskgrouping's ``resnet_taskonomy.py``), per-task
``output_channels`` and ``base_match`` = the encoder's channels.
"""

from __future__ import annotations

from torch import nn

from mtbench_encoders.xception import init_like_upstream


def up_stage(c_in: int, c_out: int) -> list[nn.Module]:
    """2x2 transposed conv (stride 2) + BN + ReLU, then 3x3 conv + BN + ReLU; both convs with bias."""
    return [
        nn.ConvTranspose2d(c_in, c_out, 2, stride=2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    ]


class ResNetDecoder(nn.Sequential):
    """Up-stages in -> 256 -> 128 -> 64 -> 48, a last 2x2 transposed conv to 32 + BN + ReLU (no 3x3 conv
    after it) and a 3x3 conv to the task's channels; no output activation.

    That is MTRobust's ``downscale=1`` decoder (five up-samplings: stride 32). ``stride=16`` gives its
    ``downscale=2`` variant, which drops the 48-channel stage.
    """

    WIDTHS = (256, 128, 64, 48)
    LAST = 32

    def __init__(self, in_channels: int, out_channels: int, stride: int = 32):
        if stride not in (16, 32):
            raise ValueError(f"MTRobust's decoder upsamples 16x or 32x, not {stride}x")
        widths = self.WIDTHS if stride == 32 else self.WIDTHS[:-1]
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += up_stage(c, w)
            c = w
        layers += [nn.ConvTranspose2d(c, self.LAST, 2, stride=2), nn.BatchNorm2d(self.LAST), nn.ReLU(inplace=True),
                   nn.Conv2d(self.LAST, out_channels, 3, padding=1)]
        super().__init__(*layers)
        init_like_upstream(self)  # MTRobust's ResNet re-initialises every Conv2d and BN of the model the same way
