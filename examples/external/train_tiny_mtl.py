"""Train ``tiny_mtl.TinyMTL`` outside mtbench and save its weights, for ``examples/external-model.toml``.

    mtbench data synth --out data/tiny --samples 256 --test-samples 32 --size 64
    python examples/external/train_tiny_mtl.py data/tiny examples/external/tiny_mtl.safetensors

The training loop is plain torch; mtbench is used only to read the Taskonomy-format data
(``mtbench.load_batch``), as any loader of that layout could.
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from tiny_mtl import build

import mtbench


def main(root: str, out: str, epochs: int = 8, samples: int = 256) -> None:
    images, targets, masks = mtbench.load_batch(root, ["s", "d"], n=samples, split="train", dataset="synthetic")
    seg, depth = targets["segment_semantic"], targets["depth_zbuffer"]
    seg_valid, depth_valid = masks["segment_semantic"], masks["depth_zbuffer"]
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(images))
        for batch in order.split(16):
            pred = model(images[batch])
            seg_loss = F.cross_entropy(pred["segment_semantic"], seg[batch, 0].long(), reduction="none")
            seg_loss = (seg_loss * seg_valid[batch, 0]).sum() / seg_valid[batch].sum().clamp_min(1)
            depth_loss = ((pred["depth_zbuffer"] - depth[batch]).abs() * depth_valid[batch]).sum() \
                / depth_valid[batch].sum().clamp_min(1)
            opt.zero_grad()
            (seg_loss + depth_loss).backward()
            opt.step()
        print(f"epoch {epoch + 1}: segmentation {seg_loss.item():.3f}, depth {depth_loss.item():.4f}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
