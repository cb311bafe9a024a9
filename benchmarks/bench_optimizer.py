"""The optimiser step, fused against torch's per-tensor loop, on the README main job's model.

``train.make_optimizer`` builds Adam and SGD with ``fused=True`` on CPU and CUDA (``train.can_fuse``).
This times, in one process and interleaved, the bare training loop of ``bench_train.py`` (the main
job's ResNet18 [s+d], 64 px, batch 16, its own batches pre-loaded) with the optimiser mtbench builds and
with the same optimiser as torch's loop (``fused=None, foreach=False``): the epoch, and the optimiser
steps alone within it. It also checks that both reach the same weights after the epoch.

    python benchmarks/bench_optimizer.py [--repeats 3] [--train-samples 256] [--optimizer adam sgd]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from bench_train import Bare, Job, sync

from mtbench.threads import apply, plan


class TimedStep:
    """Wraps an optimiser's step to add up the seconds spent in it."""

    def __init__(self, opt: torch.optim.Optimizer, device: torch.device):
        self.opt, self.device, self.seconds = opt, device, 0.0

    def step(self, closure=None):
        sync(self.device)
        start = time.perf_counter()
        self.opt.step(closure)
        sync(self.device)
        self.seconds += time.perf_counter() - start

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)


def bare_loop(job: Job, batches: list, optimizer: str, fused: bool) -> Bare:
    """bench_train's bare loop with the job's config but ``optimizer``; the loop's optimiser unless ``fused``."""
    job.config = job.config.model_copy(update={"optimizer": optimizer, "lr": 1e-3 if optimizer == "adam" else 0.01,
                                               "momentum": None if optimizer == "adam" else 0.9})
    bare = Bare(job, batches)
    if not fused:
        bare.opt = type(bare.opt)(bare.model.parameters(), **{**bare.opt.defaults, "fused": None, "foreach": False})
    bare.opt = TimedStep(bare.opt, job.device)
    return bare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-samples", type=int, default=256)
    ap.add_argument("--optimizer", nargs="+", choices=["adam", "sgd"], default=["adam", "sgd"])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    budget = apply(plan(1))
    print(f"{budget.describe()}; torch {torch.__version__}, device {args.device}; "
          f"load average {os.getloadavg()[0]:.2f} before")
    with tempfile.TemporaryDirectory(prefix="mtbench-bench-optimizer-") as tmp:
        job = Job(Path(tmp), SimpleNamespace(device=args.device, train_samples=args.train_samples, epochs=1),
                  "contiguous", False)
        job.context().dataset_root(job.config.data)
        batches = list(job.loader(job.train_set(), 0))
        print(f"job: ResNet18 [s+d], 64 px, batch 16, {len(batches)} batches an epoch; median of {args.repeats} "
              "epochs after one warm-up, the two optimisers interleaved")
        print(f"\n{'optimiser':<10} {'loop s/ep':>9} {'fused s/ep':>10} {'ratio':>6} {'loop step':>10} "
              f"{'fused step':>10} {'ratio':>6} {'max |w diff|':>12}")
        for name in args.optimizer:
            loops = {fused: bare_loop(job, batches, name, fused) for fused in (False, True)}
            epochs: dict[bool, list[float]] = {False: [], True: []}
            steps: dict[bool, list[float]] = {False: [], True: []}
            for repeat in range(args.repeats + 1):
                for fused, bare in loops.items():
                    bare.opt.seconds = 0.0
                    seconds, _ = bare.epoch()
                    if repeat:  # the first epoch warms up
                        epochs[fused].append(seconds)
                        steps[fused].append(bare.opt.seconds / len(batches))
            diff = max((a - b).abs().max().item() for a, b in
                       zip(loops[False].model.parameters(), loops[True].model.parameters()))
            e = {f: statistics.median(v) for f, v in epochs.items()}
            s = {f: statistics.median(v) for f, v in steps.items()}
            print(f"{name:<10} {e[False]:>9.2f} {e[True]:>10.2f} {e[False] / e[True]:>5.2f}x {s[False] * 1e3:>8.0f}ms "
                  f"{s[True] * 1e3:>8.0f}ms {s[False] / s[True]:>5.2f}x {diff:>12.2e}")
    print(f"ratio: loop / fused (above 1: fused is faster); load average {os.getloadavg()[0]:.2f} after")
    print(f"max |w diff|: the largest weight difference after {args.repeats + 1} epochs of the same batches "
          "(float rounding, grown by training)")


if __name__ == "__main__":
    main()
