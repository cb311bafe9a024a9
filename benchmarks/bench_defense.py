"""Defence cost: a ``pgd-at`` training epoch with k attack steps against a clean (``none``) epoch of the same
model, and ``gat`` with its curvature regulariser beside them.

The job: ResNet18 with tasks s and d, 64 px synthetic images (generated once into a temporary folder
before any timing), batch 16, ``--train-samples`` training samples pre-loaded in memory. An epoch is
what a training trial does per batch: the defence's request (``mtbench.defend.defense_request``, with
its attack handle), the defence's loss, backward and the optimiser step, on the model in train mode.
Each defence has its own model, built from the same seed; their epochs are interleaved (none, pgd-at,
gat, ``--repeats`` times, after one warm-up step each) so that a change in the machine's load falls on
each alike, and the median epoch is compared.

Goal: pgd-at / none <= k + 1.15 (k crafting steps, each a forward and an input-gradient backward with the
parameters frozen, plus the training step itself); the exit status is 1 if it is missed. gat's ratio is
reported, not judged: its regulariser differentiates input gradients (a double backward).

    python benchmarks/bench_defense.py [--steps 3] [--train-samples 32] [--repeats 2] [--curvature 1.0]

About 2 minutes on 2 idle cores with the defaults (gat's double backward takes half of it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import mtbench
from mtbench.context import TrialContext
from mtbench.defend import batch_generator, defense_request
from mtbench.grid import load_grid_text
from mtbench.models import build_model
from mtbench.plugins import get_plugins
from mtbench.specs import with_loss_options
from mtbench.storage import Store, default_url
from mtbench.threads import apply, plan
from mtbench.train import make_optimizer

GRID = """
[run]
name = "bench-defense"
device = "{device}"
[data]
dataset = "synthetic"
root = "{root}"
image_size = 64
train_samples = {train_samples}
test_samples = 16
[train]
encoders = ["resnet18"]
task_sets = ["sd"]
epochs = 1
batch_size = 16
defense = ["none", {{name = "pgd-at", steps = {steps}}}, {{name = "gat", steps = {steps}, curvature = {curvature}}}]
"""
SLACK = 1.15


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Run:
    """One defence's training: its model, optimiser and loss, over the pre-loaded batches."""

    def __init__(self, config, plugins, batches, device: torch.device):
        torch.manual_seed(config.seed)
        self.config, self.plugins, self.device = config, plugins, device
        self.model = build_model(config.encoder, list(config.tasks), plugins).to(device).train()
        self.opt, _ = make_optimizer(config, self.model.parameters())
        self.tasks = with_loss_options({t: plugins.tasks.get(t) for t in config.tasks}, config.loss_options)
        self.defense = plugins.defenses.get(config.defense.name)
        self.batches, self.epochs = batches, 0

    def epoch(self, batches: int | None = None) -> float:
        """Seconds of one epoch (of its first ``batches`` only: a warm-up)."""
        self.epochs += 1
        sync(self.device)
        start = time.perf_counter()
        for index, batch in enumerate(self.batches[:batches]):
            request = defense_request(self.model, batch, self.tasks, self.config.weights, self.config.defense.options,
                                      self.plugins, batch_generator(self.config.seed, self.epochs, index))
            step = self.defense.loss(request)
            self.opt.zero_grad(set_to_none=True)
            step.total.backward()
            self.opt.step()
        sync(self.device)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="k: attack steps of pgd-at and gat")
    ap.add_argument("--train-samples", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--curvature", type=float, default=1.0, help="gat's regulariser weight")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device here")
    budget = apply(plan(1))
    device = torch.device(args.device)
    print(f"{budget.describe()}; mtbench from {Path(mtbench.__file__).parent}, torch {torch.__version__}, "
          f"device {args.device}")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) before starting"
          + ("" if os.getloadavg()[0] < 0.5 else ": the machine is busy, the figures are provisional"))
    plugins = get_plugins()
    with tempfile.TemporaryDirectory(prefix="mtbench-bench-defense-") as tmp:
        text = GRID.format(device=args.device, root=Path(tmp) / "data", train_samples=args.train_samples,
                           steps=args.steps, curvature=args.curvature)
        configs = [t.config for t in load_grid_text(text, Path(tmp) / "grid.toml", plugins).train_trials]
        ctx = TrialContext(plugins, Store(default_url(Path(tmp) / "out")), Path(tmp) / "out", device)
        first = configs[0]
        tasks = with_loss_options({t: plugins.tasks.get(t) for t in first.tasks}, first.loss_options)
        data = ctx.open_split(first.data, "train", tasks, first.data.train_samples)  # generated once, here
        batches = [(x.to(device), {t: v.to(device) for t, v in y.items()}, {t: v.to(device) for t, v in m.items()})
                   for x, y, m in DataLoader(data, batch_size=first.batch_size)]
        print(f"job: ResNet18 [s+d], 64 px, batch 16, {args.train_samples} training samples in memory; "
              f"k = {args.steps} attack steps; {args.repeats} timed epochs per defence after a warm-up step")
        runs = {c.defense.label(): Run(c, plugins, batches, device) for c in configs}
        for run in runs.values():
            run.epoch(batches=1)  # warm-up: one step
        times: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.repeats):
            for name, run in runs.items():
                times[name].append(run.epoch())
            print(f"  run {r + 1}: " + ", ".join(f"{name} {times[name][-1]:.2f} s" for name in runs), flush=True)
    apply(budget)

    clean = statistics.median(times[configs[0].defense.label()])
    width = max(map(len, runs))
    print(f"\n{'defence':<{width}} {'s/epoch':>8} {'x none':>7}")
    for name in runs:
        print(f"{name:<{width}} {statistics.median(times[name]):>8.2f} {statistics.median(times[name]) / clean:>7.2f}")
    ratio = statistics.median(times[configs[1].defense.label()]) / clean
    goal = args.steps + SLACK
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after")
    print(f"goal pgd-at (k = {args.steps}) <= {goal:.2f} x none: " + ("met" if ratio <= goal else
                                                                     f"MISSED ({ratio:.2f})")
          + f"; gat with curvature {args.curvature:g} (reported, not judged): "
            f"{statistics.median(times[configs[2].defense.label()]) / clean:.2f} x none")
    sys.exit(0 if ratio <= goal else 1)


if __name__ == "__main__":
    main()
