"""Cost per step of Auto-PGD and of each multi-task objective, relative to PGD with `sum`, on the same
prepared two-task ResNet18 and batch, side by side in one run. Goal: every ratio <= 1.1.

    python benchmarks/bench_adaptive.py [--size 64] [--batch 16] [--steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch
from bench_pgd import best_of

from mtbench.evaluate import prepare_for_attack
from mtbench.models import build_model
from mtbench.plugins import get_plugins
from mtbench.testing import attack_request, fake_batch

TASKS = ["segment_semantic", "depth_zbuffer"]
OBJECTIVES = ("relative", "gradnorm-progress", "gradnorm-lagging", "balanced", "cyclic")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    p = get_plugins()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    images, targets, masks = fake_batch(TASKS, args.size, args.batch, p)
    model = build_model("resnet18", TASKS, p).to(device).eval()
    fast, x = prepare_for_attack(model, images.to(device))
    batch = (x, {k: v.to(device) for k, v in targets.items()}, {k: v.to(device) for k, v in masks.items()})

    def run(attack: str, objective: str):
        def go():
            req = attack_request(model, batch, TASKS, steps=args.steps, objective=objective, plugins=p, trace=False)
            req = type(req)(**{**req.__dict__, "model": fast})
            p.attacks.get(attack).run(req)
        return go

    cases = {"pgd-linf / sum": run("pgd-linf", "sum"), "apgd-linf / sum": run("apgd-linf", "sum")}
    cases.update({f"pgd-linf / {o}": run("pgd-linf", o) for o in OBJECTIVES})
    for fn in cases.values():
        fn()  # warm-up
    times = {name: best_of(fn, args.repeats) for name, fn in cases.items()}
    base = times["pgd-linf / sum"]
    print(f"device {device}, ResNet18 2 tasks, batch {args.batch} at {args.size}px, {args.steps} steps, "
          f"best of {args.repeats}")
    for name, t in times.items():
        print(f"{name:28s} {t:.3f}s  {t / args.steps * 1000:.1f} ms/step  "
              f"ratio to PGD/sum {t / base:.3f} (goal <= 1.1)")


if __name__ == "__main__":
    main()
