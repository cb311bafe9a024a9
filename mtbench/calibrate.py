"""Time a training step and an attack step on this machine, so that ``run --dry-run`` can estimate a
grid's time (:mod:`mtbench.cost` counts the steps).

Why a measurement and not a table of FLOPs: what a step costs depends on the device, the torch
build, the thread count and the layers' kernels far more than on MACs. The measurement is short: a
real model of the grid's encoder and tasks (random weights, random images and targets), one warm-up
step, then the median of 3 timed steps (2 where a step takes over :data:`SLOW_S`). On a CPU it runs on
at most :data:`CPU_PIXELS` pixels a batch (2 images at 256 px, the trial's batch of 16 at 64 px) and
the time per sample is scaled to the grid's batches; on a GPU, at the trials' own batch sizes.

Times are cached in the user's cache folder (``$XDG_CACHE_HOME/mtbench/calibration.json``, default
``~/.cache/mtbench/``), never in a results folder, keyed by everything that changes them (the probe:
encoder, its revision, image size, tasks, batch; the machine: device, torch version, threads), so a
repeated dry-run measures nothing. Delete the file to measure again. This module imports torch only
when it measures or names the device.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtbench.console import say
from mtbench.cost import CostPlan, Probe, cache_note, estimate, pending_work, probes
from mtbench.errors import MtbenchError

if TYPE_CHECKING:
    from rich.console import Console

    from mtbench.grid import Grid
    from mtbench.plugins import Plugins

CPU_PIXELS = 2 * 256 * 256
"""The images a step is timed on, on a CPU, in pixels: 2 at 256 px (a big encoder's step takes seconds),
16 at 64 px (the quickstart's batch: the time per sample of a CPU depends on the batch at small sizes)."""
TIMED_STEPS = 3
SLOW_S = 2.0
"""A step slower than this (the warm-up's time) is timed twice, not three times."""
CACHE_FILE = "calibration.json"


def cache_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/mtbench/calibration.json`` (an absolute XDG_CACHE_HOME only, as the XDG
    specification says), else ``~/.cache/mtbench/calibration.json``."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "mtbench" / CACHE_FILE


@dataclass(frozen=True)
class Machine:
    """The device a run of the grid would use here, and what else changes a step's time."""

    device: Any  # torch.device
    name: str
    torch: str
    threads: int

    @property
    def pixels(self) -> int | None:
        """The most pixels a step is timed on (``cost.timed_batch``): :data:`CPU_PIXELS` on a CPU; on a
        GPU (None) the trials' own batches, as its time per sample depends on the batch."""
        return CPU_PIXELS if self.device.type == "cpu" else None

    def key(self, probe: Probe) -> str:
        return json.dumps({**probe.key(), "device": self.name, "torch": self.torch, "threads": self.threads},
                          sort_keys=True)


def this_machine(device_setting: str) -> Machine:
    """The grid's ``[run] device`` resolved as a run would resolve it (``mtbench.models.resolve_device``)."""
    import torch

    from mtbench.models import resolve_device
    from mtbench.provenance import device_name

    device = resolve_device(device_setting)
    return Machine(device, device_name(device), torch.__version__, torch.get_num_threads())


class Cache:
    """The calibration file: key -> {seconds a batch, the timed steps, when}. An unreadable file is
    treated as empty (it is only a cache); writing it replaces it atomically."""

    def __init__(self, path: Path):
        self.path = path
        try:
            entries = json.loads(path.read_text())
            self.entries: dict[str, dict[str, Any]] = entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            self.entries = {}

    def seconds(self, key: str) -> float | None:
        entry = self.entries.get(key)
        value = entry.get("seconds") if isinstance(entry, dict) else None
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    def measured(self, key: str) -> str:
        """When the entry was measured (ISO 8601, UTC), or "" if unknown."""
        entry = self.entries.get(key)
        return str(entry.get("measured", "")) if isinstance(entry, dict) else ""

    def put(self, key: str, steps: Sequence[float]) -> None:
        self.entries[key] = {"seconds": statistics.median(steps), "steps": list(steps),
                             "measured": datetime.now(UTC).isoformat(timespec="seconds")}

    def save(self) -> None:
        """Merge with what another dry-run may have written meanwhile, then replace the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**Cache(self.path).entries, **self.entries}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(merged, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def time_step(probe: Probe, device: Any, plugins: Plugins) -> list[float]:
    """Seconds of each timed step of ``probe`` (after one warm-up step) on ``device``."""
    import torch

    step = _train_step(probe, device, plugins) if probe.phase == "train" else _attack_step(probe, device, plugins)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed() -> float:
        start = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - start

    warm = timed()
    return [timed() for _ in range(TIMED_STEPS if warm < SLOW_S else TIMED_STEPS - 1)]


def _fake(probe: Probe, device: Any, plugins: Plugins):
    """The probe's model (random weights), its tasks with the model's loss options, and a random batch."""
    import torch

    from mtbench.models import build_model
    from mtbench.specs import with_loss_options
    from mtbench.testing import fake_batch

    torch.manual_seed(0)
    options = probe.config.loss_options if probe.config else {}
    tasks = with_loss_options({t: plugins.tasks.get(t) for t in probe.tasks}, options)
    model = build_model(probe.encoder, list(probe.tasks), plugins).to(device)
    return model, tasks, fake_batch(probe.tasks, probe.image_size, probe.batch, plugins)


def _train_step(probe: Probe, device: Any, plugins: Plugins) -> Callable[[], None]:
    """One step as ``mtbench.train.run_train`` takes it: the model's optimiser, weights, amp and layout."""
    import torch

    from mtbench.train import make_optimizer, per_task_losses

    model, tasks, batch = _fake(probe, device, plugins)
    if probe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt, _ = make_optimizer(probe.config, model.parameters())
    weights = {t: (probe.config.weights if probe.config else {}).get(t, 1.0) for t in tasks}
    use_amp = probe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    def step() -> None:
        with torch.autocast(device.type, enabled=use_amp):
            _, losses = per_task_losses(model, batch, tasks, device)
            total = sum(weights[t] * losses[t].mean() for t in tasks)
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
    return step


def _attack_step(probe: Probe, device: Any, plugins: Plugins) -> Callable[[], None]:
    """One attack step as the evaluator's model takes it (``prepare_for_attack``: folded, channels-last,
    frozen): every task's loss, the input gradient of their sum."""
    import torch

    from mtbench.evaluate import prepare_for_attack

    model, tasks, (images, targets, masks) = _fake(probe, device, plugins)
    fast, x = prepare_for_attack(model.eval(), images.to(device))
    for p in fast.parameters():
        p.requires_grad_(False)
    targets = {t: v.to(device) for t, v in targets.items()}
    masks = {t: v.to(device) for t, v in masks.items()}

    def step() -> None:
        point = x.detach().requires_grad_(True)
        outputs = fast(point)
        total = sum(spec.loss(outputs[t], targets[t], masks[t]).sum() for t, spec in tasks.items())
        torch.autograd.grad(total, point)
    return step


def estimate_grid(grid: Grid, statuses: Mapping[str, str], plugins: Plugins, measure: bool = True,
                  console: Console | None = None, environ: Mapping[str, str] | None = None) -> CostPlan:
    """The cost of the grid's trials not yet done, timed from the cache and (``measure``) by timing the
    steps the cache lacks on this machine, which are then cached. The times are unknown where the
    grid's device is not here (``cuda`` on a machine without one) or ``measure`` is off and the
    cache lacks them."""
    works = pending_work(grid.trials, statuses)
    try:
        machine = this_machine(grid.settings.run.device)
    except MtbenchError as exc:
        return estimate(works, {}, CPU_PIXELS, [f"time unknown: {exc}"])
    needed = probes(works, machine.pixels)
    path = cache_path(environ)
    cache = Cache(path)
    timings = {p: s for p in needed if (s := cache.seconds(machine.key(p))) is not None}
    missing = [p for p in needed if p not in timings]
    if not needed:
        return estimate(works, timings, machine.pixels)
    batches = ", ".join(f"{b} at {px} px" for b, px in sorted({(p.batch, p.image_size) for p in needed}))
    notes = [f"step times of {machine.name} ({machine.threads} thread{'s' * (machine.threads > 1)}, torch "
             f"{machine.torch}) on batches of {batches}, per sample"]
    measured, started = 0, time.perf_counter()
    if missing and measure:
        with _status(console, "calibrating") as update:
            for i, p in enumerate(missing, 1):
                update(f"calibrating {i} of {len(missing)}: {p.describe()}")
                try:
                    steps = time_step(p, machine.device, plugins)
                except (RuntimeError, MtbenchError) as exc:  # e.g. out of GPU memory: the run would fail too
                    notes.append(f"time unknown: {p.describe()} failed: {str(exc).splitlines()[0]}")
                    continue
                cache.put(machine.key(p), steps)
                timings[p] = statistics.median(steps)
                measured += 1
        if measured:
            try:
                cache.save()
            except OSError as exc:
                notes.append(f"the step times could not be cached in {path} ({exc.strerror}); the next dry-run "
                             "measures them again")
    elif missing:
        lacking = ", ".join(sorted({f"{p.encoder} at {p.image_size} px" for p in missing}))
        notes.append(f"time unknown: --no-calibrate, and {path} lacks step times of {lacking} on this machine")
    if timings:
        since = min((cache.measured(machine.key(p)) for p in timings), default="")
        notes.append(cache_note(path, measured, len(timings) - measured, time.perf_counter() - started, since))
    return estimate(works, timings, machine.pixels, notes)


@contextmanager
def _status(console: Console | None, text: str) -> Iterator[Callable[[str], None]]:
    """A status line on ``console`` while measuring (rich shows it only on a terminal)."""
    if console is None:
        yield lambda _: None
        return
    if not console.is_terminal:  # a log: one plain line a step timed
        yield lambda line: say(console, line)
        return
    with console.status(text) as shown:
        yield shown.update
