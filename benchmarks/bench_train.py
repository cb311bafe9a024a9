"""Training speed: an epoch of mtbench's training trial against a bare loop of the same steps, and the
data pipeline against the step, on the README main job's model.

The job: ResNet18 with the U-Net decoder (``resnet18_unet``) and tasks s and d (the quickstart's two-task
model; ``--encoder resnet18`` times the paper's decoder), 64 px synthetic images,
batch 16, ``--train-samples`` training and 32 test (validation) samples, generated once into a
temporary folder before any timing. In one process, with this process's thread budget
(``mtbench.threads``, as ``mtbench run`` applies it), for each memory layout (contiguous,
channels-last) and each number of data-loader workers:

- (a) **bare loop**: the model ``mtbench.models.build_model`` builds, its optimiser
  (``train.make_optimizer``), each task's loss and weight, over the trial's own batches pre-loaded in
  memory (images in the model's layout): forward, the weighted loss, backward, optimiser step. Its
  time per epoch is the median epoch, after one warm-up epoch.
- (b) **mtbench's training trial**: ``mtbench.train.run_train`` through a real ``TrialContext`` and
  store, for E and 2E epochs, each in a fresh results folder; its time per epoch is
  (median time of 2E - median time of E) / E. Everything done per epoch is in it (data loading,
  losses, logging, resume state); what a trial does once (data opening, model building, test
  evaluation, the constant predictor, the checkpoint) cancels out. Validation is once, after the last
  epoch, as in the main job (``val_every = 10`` of 10 epochs), and cancels out too. The median epoch between two
  progress ticks (epochs 2 onwards) is printed beside it as a check.
- the **loader ratio**: samples/s of one pass of a fresh training DataLoader alone (a new dataset
  object, so every PNG is decoded: the first epoch's cost, the worst) over the samples/s of (a).

Goals: b/a <= 1.15 and the loader ratio >= 3 in every row; the exit status is 1 if one is missed.
Runs are interleaved (a, then b at E, then b at 2E, ``--repeats`` times) so that a change in the
machine's load falls on each alike; the figures are trustworthy only on an idle machine (the load
average is printed before and after).

Loader workers: the thread budget decides them (none below 4 threads a worker process). By default a
row is timed with the budget's count; ``--loader-workers 0 1`` times others too, each taken from
the budget's intra-op threads and marked "outside the budget". On CUDA (``--device cuda``) the
trial's loaders pin memory and copy batches asynchronously, and ``--amp`` adds mixed-precision
rows; on a CPU those paths are not taken, and are not measured.

    python benchmarks/bench_train.py [--epochs 2] [--repeats 3] [--train-samples 256]
                                     [--layouts contiguous channels-last] [--loader-workers 0 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import mtbench
from mtbench.context import TrialContext
from mtbench.data.synthetic import META_FILE
from mtbench.grid import load_grid_text
from mtbench.models import build_model
from mtbench.plugins import get_plugins
from mtbench.specs import with_loss_options
from mtbench.storage import Store, default_url
from mtbench.threads import apply, plan
from mtbench.train import make_optimizer, run_train

GRID = """
[run]
name = "bench-train"
seed = 0
device = "{device}"

[data]
dataset = "synthetic"
root = "{root}"
image_size = 64
train_samples = {train_samples}
test_samples = 32

[train]
encoders = ["{encoder}"]
task_sets = ["sd"]
epochs = {epochs}
batch_size = 16
lr = 1e-3
val_every = {val_every}
channels_last = {channels_last}
amp = {amp}
"""
B_OVER_A = 1.15
LOADER_RATIO = 3.0


@dataclass
class Row:
    layout: str
    workers: int
    amp: bool
    in_budget: bool
    bare_s: list[float]
    trial_s: dict[int, list[float]]
    ticks_s: list[float]
    loader_sps: list[float]
    bare_cpu: list[float]
    trial_cpu: dict[int, list[float]]

    def a(self, cpu: bool = False) -> float:
        return statistics.median(self.bare_cpu if cpu else self.bare_s)

    def b(self, epochs: int, cpu: bool = False) -> float:
        runs = self.trial_cpu if cpu else self.trial_s
        return (statistics.median(runs[2 * epochs]) - statistics.median(runs[epochs])) / epochs

    def label(self) -> str:
        return (f"{self.layout}{', amp' if self.amp else ''}, {self.workers} loader worker(s)"
                f"{'' if self.in_budget else ' (outside the budget)'}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Job:
    """The grid's training trial at E and 2E epochs, its tasks and data, and one results folder per run."""

    def __init__(self, tmp: Path, args, layout: str, amp: bool):
        self.tmp, self.plugins, self.device = tmp, get_plugins(), torch.device(args.device)
        self.trials = {}
        for epochs in (args.epochs, 2 * args.epochs):
            text = GRID.format(device=args.device, encoder=args.encoder, root=tmp / "data",
                               train_samples=args.train_samples, epochs=epochs, val_every=2 * args.epochs,
                               channels_last=str(layout == "channels-last").lower(), amp=str(amp).lower())
            self.trials[epochs] = load_grid_text(text, tmp / "grid.toml", self.plugins).train_trials[0]
        self.config = self.trials[args.epochs].config
        self.tasks = with_loss_options({t: self.plugins.tasks.get(t) for t in self.config.tasks},
                                       self.config.loss_options)

    def context(self, progress=None) -> TrialContext:
        out = Path(tempfile.mkdtemp(prefix="out-", dir=self.tmp))
        ctx = TrialContext(self.plugins, Store(default_url(out)), out, self.device)
        if progress is not None:
            ctx.progress = progress
        return ctx

    def train_set(self):
        """A fresh dataset object: nothing decoded yet."""
        return self.context().open_split(self.config.data, "train", self.tasks, self.config.data.train_samples)

    def loader(self, dataset, workers: int) -> DataLoader:
        """The training loader as ``run_train`` makes it."""
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.config.seed), num_workers=workers,
                          pin_memory=self.device.type == "cuda")

    def trial(self, epochs: int) -> tuple[float, float, list[float]]:
        """Seconds of one run_train of ``epochs`` in a fresh folder, this process's CPU seconds, and the
        seconds between its epoch ticks."""
        ticks: list[float] = []

        def progress(description: str, total: int):
            def advance(n: int = 1) -> None:
                if n:
                    sync(self.device)
                    ticks.append(time.perf_counter())
            return advance

        trial = self.trials[epochs]
        ctx = self.context(progress)
        start, cpu = time.perf_counter(), time.process_time()
        run_train(trial.config, trial.id, ctx)
        sync(self.device)
        return time.perf_counter() - start, time.process_time() - cpu, [b - a for a, b in zip(ticks, ticks[1:])]


class Bare:
    """The bare loop: the trial's model, optimiser, losses and weights on pre-loaded batches."""

    def __init__(self, job: Job, batches: list):
        config, device = job.config, job.device
        torch.manual_seed(config.seed)
        self.model = build_model(config.encoder, list(config.tasks), job.plugins).to(device)
        layout = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=layout).train()
        self.opt, _ = make_optimizer(config, self.model.parameters())
        self.use_amp = config.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.tasks, self.weights, self.device = job.tasks, config.weights, device
        self.batches = [(images.to(device).contiguous(memory_format=layout), {t: v.to(device) for t, v in y.items()},
                         {t: v.to(device) for t, v in m.items()}) for images, y, m in batches]

    def epoch(self) -> tuple[float, float]:
        """Seconds of one epoch, and this process's CPU seconds."""
        sync(self.device)
        start, cpu = time.perf_counter(), time.process_time()
        for images, targets, masks in self.batches:
            with torch.autocast(self.device.type, enabled=self.use_amp):
                outputs = self.model(images)
                total = sum(self.weights[t] * spec.loss(outputs[t], targets[t], masks[t]).mean()
                            for t, spec in self.tasks.items())
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        sync(self.device)
        return time.perf_counter() - start, time.process_time() - cpu


def loader_pass(job: Job, workers: int) -> float:
    """Samples/s of one pass of a fresh training loader over a fresh dataset (every sample decoded)."""
    dataset = job.train_set()
    start = time.perf_counter()
    n = sum(batch[0].shape[0] for batch in job.loader(dataset, workers))
    return n / (time.perf_counter() - start)


def measure(tmp: Path, args, layout: str, amp: bool, workers: int, in_budget: bool) -> Row:
    job = Job(tmp, args, layout, amp)
    batches = list(job.loader(job.train_set(), 0))  # the trial's first epoch's batches, in its order
    bare = Bare(job, batches)
    bare.epoch()  # warm-up
    row = Row(layout, workers, amp, in_budget, [], {args.epochs: [], 2 * args.epochs: []}, [], [], [],
              {args.epochs: [], 2 * args.epochs: []})
    for r in range(args.repeats):
        for _ in range(args.epochs):
            seconds, cpu = bare.epoch()
            row.bare_s.append(seconds)
            row.bare_cpu.append(cpu)
        for epochs in (args.epochs, 2 * args.epochs):
            seconds, cpu, ticks = job.trial(epochs)
            row.trial_s[epochs].append(seconds)
            row.trial_cpu[epochs].append(cpu)
            row.ticks_s += ticks
        row.loader_sps.append(loader_pass(job, workers))
        print(f"  {row.label()}, run {r + 1}: bare epoch {statistics.median(row.bare_s[-args.epochs:]):.2f} s, "
              f"trial {args.epochs} epochs {row.trial_s[args.epochs][-1]:.1f} s, "
              f"{2 * args.epochs} epochs {row.trial_s[2 * args.epochs][-1]:.1f} s, "
              f"loader {row.loader_sps[-1]:.0f} samples/s", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="resnet18_unet", help="the main job's (default) or another encoder")
    ap.add_argument("--epochs", type=int, default=2, help="E: the trial is timed at E and 2E epochs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-samples", type=int, default=256)
    ap.add_argument("--layouts", nargs="+", choices=["contiguous", "channels-last"],
                    default=["contiguous", "channels-last"])
    ap.add_argument("--loader-workers", type=int, nargs="+", default=None,
                    help="loader workers per row (default: the thread budget's)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--amp", action="store_true", help="also rows with mixed precision (CUDA only)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device here")
    budget = apply(plan(1))
    print(f"{budget.describe()}; mtbench from {Path(mtbench.__file__).parent}, torch {torch.__version__}, "
          f"device {args.device}")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) before starting"
          + ("" if os.getloadavg()[0] < 0.5 else ": the machine is busy, the figures are provisional"))
    if args.device == "cpu":
        print("not measured here: pinned memory, asynchronous copies and AMP (CUDA paths; no CUDA device in use)")
    counts = args.loader_workers if args.loader_workers is not None else [budget.loader_workers]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mtbench-bench-train-") as tmp:
        tmp_path = Path(tmp)
        job = Job(tmp_path, args, "contiguous", False)
        job.context().dataset_root(job.config.data)  # generated once, before any timing
        made_at = (tmp_path / "data" / META_FILE).stat().st_mtime_ns
        print(f"job: {args.encoder} [s+d], 64 px, batch 16, {args.train_samples} training and 32 validation samples; "
              f"the trial at {args.epochs} and {2 * args.epochs} epochs, {args.repeats} runs each")
        for layout in args.layouts:
            for amp in ([False, True] if args.amp and args.device == "cuda" else [False]):
                for workers in counts:
                    apply(budget if workers == budget.loader_workers else
                          replace(budget, loader_workers=workers, intra_op=max(1, budget.share - workers)))
                    rows.append(measure(tmp_path, args, layout, amp, workers, workers == budget.loader_workers))
        if (tmp_path / "data" / META_FILE).stat().st_mtime_ns != made_at:
            sys.exit("a trial generated the data again: the grids' [data] differ")
    apply(budget)

    n = args.train_samples
    width = max(len(row.label()) for row in rows)
    print(f"\n{'layout, loader workers':<{width}} {'(a) s/ep':>8} {'(b) s/ep':>8} {'ticks':>6} {'b/a':>5} "
          f"{'loader/s':>8} {'step/s':>7} {'loader':>7} {'cpu b/a':>7}")
    missed = []
    for row in rows:
        a, b = row.a(), row.b(args.epochs)
        ratio = statistics.median(row.loader_sps) / (n / a)
        by_cpu = row.workers == 0 and args.device == "cpu"
        cpu = f"{row.b(args.epochs, cpu=True) / row.a(cpu=True):.2f}" if by_cpu else "-"
        print(f"{row.label():<{width}} {a:>8.2f} {b:>8.2f} {statistics.median(row.ticks_s):>6.2f} {b / a:>5.2f} "
              f"{statistics.median(row.loader_sps):>8.0f} {n / a:>7.1f} {ratio:>6.1f}x {cpu:>7}")
        if b / a > B_OVER_A:
            missed.append(f"b/a <= {B_OVER_A} ({row.label()}: {b / a:.2f})")
        if ratio < LOADER_RATIO:
            missed.append(f"loader ratio >= {LOADER_RATIO:g}x ({row.label()}: {ratio:.1f}x)")
    print("(a) the bare loop's median epoch; (b) the trial's epoch, (2E - E) / E; ticks: its median epoch between "
          "progress ticks;\nloader: one decoding pass of a fresh training loader, samples/s, over (a)'s; cpu b/a: "
          "b/a in this process's CPU seconds\n(rows without loader workers; less sensitive to other programs' load "
          "than the goal's wall-clock b/a)")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after")
    print(f"goal b/a <= {B_OVER_A} and loader >= {LOADER_RATIO:g}x in every row: "
          + ("met" if not missed else "MISSED: " + "; ".join(missed)))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
