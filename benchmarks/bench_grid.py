"""Grid throughput: `mtbench run GRID --workers K` side by side, whole processes, on this machine's CPUs.

The grid: four independent ResNet18 trainings at 32 px on synthetic data (generated once, before
timing, and shared by every run through ``[data] root``), each attacked by PGD. Each K runs 3
times into a fresh results folder (median); ``--workers 1`` runs with torch's threads as mtbench
sets them by default, so a ratio below 1 is what the extra workers bring.

Goals: on 2 or more cores, ``--workers 2`` <= 1.0x the time of ``--workers 1``; on 8 or more
cores, ``--workers 4`` >= 3x faster than ``--workers 1``. A goal that does not apply to this
machine is skipped with the reason; the exit status is 1 if one that applies is missed.

    python benchmarks/bench_grid.py [--repeats 3] [--epochs 3] [--train-samples 96] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mtbench.data.synthetic import META_FILE
from mtbench.threads import available_cores

GRID = """
[run]
name = "bench-grid"
seed = 0
device = "cpu"

[data]
dataset = "synthetic"
root = "{root}"
image_size = 32
train_samples = {train_samples}
test_samples = 16

[train]
encoders = ["resnet18"]
task_sets = ["s", "d", "n", "sd"]  # four models, none waiting for another
epochs = {epochs}
batch_size = 16

[[attack]]
name = "pgd-linf"
eps = ["4/255", "8/255"]
steps = 10
step_size = "2/255"
targets = "all"
"""


def mtbench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbench.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def timed_run(grid: Path, out: Path, workers: int) -> float:
    """Seconds for one whole `mtbench run` into a fresh folder (fails loudly if the run fails)."""
    t = time.perf_counter()
    done = mtbench("run", str(grid), "--out", str(out), "--workers", str(workers))
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"--workers {workers} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    cores, source = available_cores()
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-samples", type=int, default=96)
    default_k = [1, 2] + ([4, cores] if cores >= 8 else [])
    ap.add_argument("--workers", type=int, nargs="+", default=default_k, help="worker counts to time (1 included)")
    args = ap.parse_args()
    ks = sorted({1, *args.workers})
    print(f"{cores} cores ({source}); load average {os.getloadavg()[0]:.2f} (1 min) before starting")
    for var in ("MTBENCH_THREADS", "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(var):
            print(f"note: {var}={os.environ[var]} is set and changes the threads each worker gets")
    with tempfile.TemporaryDirectory(prefix="mtbench-bench-grid-") as tmp:
        tmp_path = Path(tmp)
        grid = tmp_path / "grid.toml"
        grid.write_text(GRID.format(root=tmp_path / "data", train_samples=args.train_samples, epochs=args.epochs))
        made = mtbench("data", "synth", "--out", str(tmp_path / "data"), "--samples", str(args.train_samples),
                       "--test-samples", "16", "--size", "32", "--seed", "0")
        if made.returncode != 0:
            sys.exit(f"data synth failed:\n{made.stderr}")
        made_at = (tmp_path / "data" / META_FILE).stat().st_mtime_ns
        print(f"grid: 4 ResNet18 trainings ({args.epochs} epochs, {args.train_samples} samples at 32 px), "
              f"8 PGD attack trials; {args.repeats} runs per worker count, median")
        times: dict[int, list[float]] = {k: [] for k in ks}
        for r in range(args.repeats):
            for k in ks:  # interleaved, so that a change in the machine's load falls on every k alike
                times[k].append(timed_run(grid, tmp_path / f"out-{k}-{r}", k))
                print(f"  run {r + 1}, --workers {k}: {times[k][-1]:.1f} s", flush=True)
                if (tmp_path / "data" / META_FILE).stat().st_mtime_ns != made_at:
                    sys.exit("the run generated its data again: `data synth` and the grid's [data] differ")
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{'workers':>8} {'median s':>9} {'runs s':>22} {'vs --workers 1':>15}")
    for k in ks:
        runs = " ".join(f"{t:.1f}" for t in times[k])
        print(f"{k:>8} {median[k]:>9.1f} {runs:>22} {median[k] / median[1]:>14.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after")

    missed = []

    def goal(name: str, applies: str | None, ok: bool | None) -> None:
        if applies is not None:
            print(f"goal {name}: skipped ({applies})")
        else:
            print(f"goal {name}: {'met' if ok else 'MISSED'}")
            if not ok:
                missed.append(name)

    goal("--workers 2 <= 1.0x --workers 1",
         f"this machine has {cores} core(s); the goal needs 2 or more" if cores < 2 else
         "--workers 2 was not timed" if 2 not in median else None,
         2 in median and median[2] <= median[1])
    goal("--workers 4 >= 3x faster than --workers 1",
         f"this machine has {cores} core(s); the goal needs 8 or more" if cores < 8 else
         "--workers 4 was not timed" if 4 not in median else None,
         4 in median and median[1] / median[4] >= 3.0)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
