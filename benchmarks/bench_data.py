"""Synthetic data speed: generation and loading (all 11 tasks, 256 px) against a ResNet18 training step.

Goal: 1,000 samples at 256 px generated in under 2 minutes on 2 cores; loading faster than a
ResNet18 training step consumes. ``--samples`` scales the generation part down for a quick look.

    python benchmarks/bench_data.py [--samples 1000] [--size 256] [--batch 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mtbench.data import TaskonomyDataset, load_splits
from mtbench.data.synthetic import SynthConfig, generate
from mtbench.models import build_model
from mtbench.plugins import get_plugins


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    p = get_plugins()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        t = time.perf_counter()
        generate(root, SynthConfig(size=args.size, train=args.samples, test=0))
        gen = time.perf_counter() - t
        print(f"generation: {args.samples} samples at {args.size}px in {gen:.1f}s = {args.samples / gen:.1f} samples/s "
              f"(1,000 would take {1000 / (args.samples / gen):.0f}s; goal < 120s)")
        tasks = {s.spec.name: s.spec for s in p.tasks}
        ds = TaskonomyDataset(root, load_splits(root)["train"], tasks, args.size, cache=False)
        n = min(len(ds), 64)
        t = time.perf_counter()
        for i in range(n):
            ds[i]
        load = n / (time.perf_counter() - t)
        print(f"loading (decode all 11 tasks from PNG, one process): {load:.1f} samples/s")
    model = build_model("resnet18", list(tasks), p)
    opt = torch.optim.Adam(model.parameters())
    x = torch.rand(args.batch, 3, args.size, args.size)
    targets = {k: torch.zeros(args.batch, 1 if v.classification else v.channels, args.size, args.size)
               for k, v in tasks.items()}
    masks = {k: torch.ones(args.batch, 1, args.size, args.size, dtype=torch.bool) for k in tasks}

    def step():
        out = model(x)
        loss = sum(tasks[k].loss(out[k], targets[k], masks[k]).mean() for k in tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(2):
        step()
    consume = 2 * args.batch / (time.perf_counter() - t)
    print(f"ResNet18 11-task training consumes {consume:.1f} samples/s -> loading/consuming = {load / consume:.1f}x "
          "(goal > 1)")


if __name__ == "__main__":
    main()
