"""A two-task model written with plain torch, as a model trained outside mtbench would be.

Nothing here imports mtbench: a grid names ``build`` in a ``[[model]]`` (see
``examples/external-model.toml``), and mtbench attacks, analyses and reports the module it returns.
The contract: images in [0, 1] in, ``{task name: output}`` out, each output (batch, the task's
channels, height, width): 17 class logits for segment_semantic, 1 channel for depth_zbuffer.
"""

import torch
from torch import nn


class TinyMTL(nn.Module):
    """A small shared encoder-decoder with one 1x1 head per task."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        self.encoder = nn.Sequential(block(3, width, 1), block(width, 2 * width, 2), block(2 * width, 2 * width, 2))
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False),
                                     block(2 * width, width, 1))
        self.heads = nn.ModuleDict({"segment_semantic": nn.Conv2d(width, 17, 1),
                                    "depth_zbuffer": nn.Conv2d(width, 1, 1)})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.decoder(self.encoder(images * 2 - 1))
        return {task: head(features) for task, head in self.heads.items()}


def build() -> nn.Module:
    """The grid's factory: no arguments, an untrained module (the grid's ``weights`` are loaded into it)."""
    torch.manual_seed(0)
    return TinyMTL()
