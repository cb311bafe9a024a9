"""How many threads each worker process runs, so that the workers on one machine share its cores.

Why: torch starts with one intra-op thread per core in every process, so ``--workers N`` ran N x
cores threads. OpenMP threads spin while they wait for each other, and oversubscribed they wait
for a core: on 2 cores, ``--workers 2`` took 72 s where ``--workers 1`` took 15 s.

The cores: ``SLURM_CPUS_PER_TASK`` inside a Slurm job (what the job was given, whatever the node
has), else the CPUs this process may run on (``os.sched_getaffinity``: taskset's or a container's
CPU set), else ``os.cpu_count()``. The N worker processes on them (``mtbench run --workers N``:
this process and N - 1 helpers; ``--executor local``: N jobs; a Slurm job: 1) each get a *share*
of ``max(1, cores // N)`` threads. Within a share:

- data-loader worker processes of a training (:func:`loader_workers`): none below 4 threads a
  share, where decoding in the training process costs less than giving it a core; else one per 4
  threads, at most 4. Each runs one thread (torch sets that in its loader workers);
- intra-op threads (``torch.set_num_threads``: the threads of one convolution or matrix
  product): the rest of the share;
- inter-op threads (``torch.set_num_interop_threads``: independent ops run side by side, which
  mtbench's models hardly do): 1, or 2 from 8 threads a share.

What overrides the computed share, most explicit first:

- ``MTBENCH_THREADS=K``: every worker process's share is K, whatever the cores and the workers
  (to oversubscribe on purpose, or for ``mtbench worker`` processes started by hand side by side);
- ``OMP_NUM_THREADS``, when the user set it: an upper bound, never raised. ``OMP_NUM_THREADS=1
  mtbench run`` keeps one thread a worker, as torch alone would, with ``--workers 1`` too; with
  ``--workers 4`` on 16 cores and ``OMP_NUM_THREADS=8`` each worker still gets 4.

Helpers get their share from the process that starts them: :meth:`ThreadBudget.env` sets
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` (so that their torch starts
with it) and ``MTBENCH_THREAD_BUDGET`` (internal: the budget itself, which they apply as it is).
Each worker process logs its split once, e.g. ``worker 1 of 2: 1 intra-op thread, 1 inter-op
thread, 0 data-loader workers (2 cores from sched_getaffinity)``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from mtbench.errors import MtbenchError

THREADS_VAR = "MTBENCH_THREADS"
"""The user's explicit share per worker process."""
BUDGET_VAR = "MTBENCH_THREAD_BUDGET"
"""Internal: the budget a helper process applies, set by the process that starts it."""
LIBRARY_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""What the thread pools of torch and its BLAS libraries read when they start."""
LOADER_FROM = 4
"""The smallest share that gets data-loader workers (one per this many threads)."""
MAX_LOADER_WORKERS = 4


@dataclass(frozen=True)
class ThreadBudget:
    """One worker process's share of the machine, and how it is split."""

    share: int
    """Threads this process may keep busy: intra-op threads plus data-loader workers."""
    intra_op: int
    inter_op: int
    loader_workers: int
    cores: int
    """The cores the workers share."""
    source: str
    """Where ``cores`` (or the share) came from, for the log line."""
    workers: int = 1
    """Worker processes sharing ``cores``."""
    index: int = 1
    """This process's number among them (1: the process that started the others)."""

    def for_worker(self, index: int) -> ThreadBudget:
        """The same split for another of the workers."""
        return replace(self, index=index)

    def env(self) -> dict[str, str]:
        """The environment a worker process started with this budget needs."""
        return {**{var: str(self.intra_op) for var in LIBRARY_VARS}, BUDGET_VAR: json.dumps(asdict(self))}

    def describe(self) -> str:
        """One line for the worker's log."""
        return (f"worker {self.index} of {self.workers}: {_count(self.intra_op, 'intra-op thread')}, "
                f"{_count(self.inter_op, 'inter-op thread')}, {_count(self.loader_workers, 'data-loader worker')} "
                f"({self.source})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _positive(text: str | None) -> int | None:
    """The leading positive integer of an environment value ("4", or OpenMP's nested "4,2"), else None."""
    try:
        value = int((text or "").split(",")[0].strip())
    except ValueError:
        return None
    return value if value > 0 else None


def available_cores(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """The cores this process's workers share, and where the number came from."""
    environ = os.environ if environ is None else environ
    slurm = _positive(environ.get("SLURM_CPUS_PER_TASK"))
    if slurm is not None:
        return slurm, "SLURM_CPUS_PER_TASK"
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)), "sched_getaffinity"
    return os.cpu_count() or 1, "os.cpu_count"


def split(share: int) -> tuple[int, int, int]:
    """A share's (intra-op threads, inter-op threads, data-loader workers)."""
    loaders = 0 if share < LOADER_FROM else min(MAX_LOADER_WORKERS, share // LOADER_FROM)
    return share - loaders, 1 if share < 8 else 2, loaders


def plan(workers: int = 1, cores: int | None = None, environ: Mapping[str, str] | None = None) -> ThreadBudget:
    """The budget of each of ``workers`` processes sharing ``cores`` (default: :func:`available_cores`),
    after the user's ``MTBENCH_THREADS`` and ``OMP_NUM_THREADS`` (see the module's docstring)."""
    environ = os.environ if environ is None else environ
    workers = max(1, workers)
    if cores is None:
        cores, source = available_cores(environ)
    else:
        source = "given"
    source = f"{_count(cores, 'core')} from {source}"
    explicit = environ.get(THREADS_VAR)
    if explicit is not None and explicit.strip():
        share = int(explicit) if explicit.strip().isdigit() else 0
        if share < 1:
            raise MtbenchError(f"{THREADS_VAR}={explicit!r}: expected a positive number of threads per worker process")
        source = f"{THREADS_VAR}={share}; {source}"
    else:
        share = max(1, cores // workers)
        cap = _positive(environ.get("OMP_NUM_THREADS"))
        if cap is not None and cap < share:
            share = cap
            source = f"{source}, at most OMP_NUM_THREADS={cap}"
    intra, inter, loaders = split(share)
    return ThreadBudget(share, intra, inter, loaders, cores, source, workers)


def inherited(environ: Mapping[str, str] | None = None) -> ThreadBudget | None:
    """The budget the process that started this one chose for it (None: it was started otherwise)."""
    text = (os.environ if environ is None else environ).get(BUDGET_VAR)
    if not text:
        return None
    try:
        return ThreadBudget(**json.loads(text))
    except (TypeError, ValueError) as exc:
        raise MtbenchError(f"{BUDGET_VAR}: not a thread budget ({exc}); unset it") from None


_applied: ThreadBudget | None = None


def apply(budget: ThreadBudget) -> ThreadBudget:
    """Set this process's torch thread pools to the budget; returns it as applied.

    The inter-op pool can be sized only before its first use: where that has happened (a second
    :func:`apply` in one process), it stays as it is and the returned budget says so."""
    global _applied
    import torch

    torch.set_num_threads(budget.intra_op)
    with contextlib.suppress(RuntimeError):  # inter-op work already started, or the pool was sized before
        torch.set_num_interop_threads(budget.inter_op)
    _applied = replace(budget, intra_op=torch.get_num_threads(), inter_op=torch.get_num_interop_threads())
    return _applied


def applied() -> ThreadBudget | None:
    """The budget this process applied (None: none, e.g. mtbench used as a library)."""
    return _applied


def loader_workers() -> int:
    """Data-loader worker processes a training in this process may start (0 where no budget was applied)."""
    return _applied.loader_workers if _applied is not None else 0
