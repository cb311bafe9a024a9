"""Cost of a gradient analysis: M per-task input gradients (one forward, M backward passes) against
one forward + backward of the whole model, on the same prepared 5-task ResNet18 and batch.
Goal: <= (M + 1.2) x one forward + backward.

    python benchmarks/bench_analysis.py [--size 64] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch
from bench_pgd import best_of

from mtbench.analysis import gradient_statistics, input_gradients
from mtbench.evaluate import prepare_for_attack
from mtbench.models import build_model
from mtbench.plugins import get_plugins
from mtbench.testing import fake_batch

TASKS = ["segment_semantic", "depth_zbuffer", "depth_euclidean", "normal", "edge_occlusion"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    p = get_plugins()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    images, targets, masks = fake_batch(TASKS, args.size, args.batch, p)
    model, x = prepare_for_attack(build_model("resnet18", TASKS, p).to(device).eval(), images.to(device))
    targets = {k: v.to(device) for k, v in targets.items()}
    masks = {k: v.to(device) for k, v in masks.items()}
    tasks = {t: p.tasks.get(t) for t in TASKS}

    def one_pass():
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        torch.autograd.grad(sum(tasks[t].loss(out[t], targets[t], masks[t]).sum() for t in TASKS), xi)

    def analysis():
        gradient_statistics(input_gradients(model, x, targets, masks, tasks))

    for fn in (one_pass, analysis):
        fn()
    base, cost = best_of(one_pass, args.repeats), best_of(analysis, args.repeats)
    m = len(TASKS)
    print(f"device {device}, ResNet18 {m} tasks, batch {args.batch} at {args.size}px, best of {args.repeats}")
    print(f"one forward + backward {base:.3f}s; analysis ({m} input gradients + statistics) {cost:.3f}s "
          f"-> {cost / base:.2f}x (goal <= {m + 1.2:.1f}x)")


if __name__ == "__main__":
    main()
