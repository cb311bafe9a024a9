"""Hand workers to a scheduler through submitit: Slurm on a cluster, submitit's local executor for
tests. mtbench schedules nothing itself: each job is one ``mtbench worker`` loop that claims trials
from the shared database until none is left, so jobs may start, die or be requeued in any order.

A job that Slurm stops gives its trial in flight back: ``scancel``, preemption and the time limit
itself send SIGTERM, which the runner treats as Ctrl-C (:mod:`mtbench.signals`). The signal
submitit asks for 90 s before the time limit (SIGUSR2, which some clusters also send on
preemption) does the same here, and then submitit requeues the job if it was preempted or ends it
if its time is up. Rerunning ``mtbench run ... --executor slurm`` submits workers for what is left.

Threads (:mod:`mtbench.threads`): a Slurm job uses the cores it was given (``SLURM_CPUS_PER_TASK``,
the grid's ``[executor] cpus``), whatever the node has; submitit's local executor runs all its
jobs on this machine at once, so each gets its share of this machine's cores.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from mtbench.errors import MtbenchError
from mtbench.threads import ThreadBudget


def worker_job(grid: str, out: str, db: str | None, threads: ThreadBudget | None = None) -> int:
    """What each job runs: a worker on the grid; returns how many trials it ran.

    ``threads``: the job's share of the machine, from the process that submitted it (None: the
    cores the scheduler gave the job, :func:`mtbench.threads.plan`)."""
    import os
    import sys

    from mtbench.threads import LIBRARY_VARS, apply, plan

    budget = threads or plan(1)
    os.environ.update({var: str(budget.intra_op) for var in LIBRARY_VARS})  # before torch starts, if it has not

    from mtbench.grid import load_grid
    from mtbench.plugins import get_plugins
    from mtbench.runner import run_grid
    from mtbench.storage import Store, default_url

    print(apply(budget).describe(), file=sys.stderr, flush=True)

    # submitit's SIGUSR2 handler (time limit near, or preemption) raises inside whatever runs, so
    # the trial in flight would be stored as failed; ours gives the trial back first, then lets
    # submitit decide: requeue a preempted job, end a timed-out one
    submitit_handler = signal.signal(signal.SIGUSR2, _time_limit_near)
    plugins = get_plugins()
    store = Store(db or default_url(Path(out)))
    try:
        return len(run_grid(load_grid(Path(grid), plugins), store, Path(out), plugins, export=False).done)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        if signum == signal.SIGUSR2 and callable(submitit_handler):
            submitit_handler(signum, None)  # requeues and exits, or raises "timed-out and not checkpointable"
        # an Exception, not an interruption, so that submitit records why the job ended
        raise MtbenchError(f"worker stopped by {signal.Signals(signum).name}: the trial in flight went back "
                           "to pending; rerun `mtbench run ... --executor slurm` for what is left") from None


def _time_limit_near(signum: int, _frame: Any) -> None:
    """SIGUSR2 from Slurm (submitit asks for ``--signal=USR2@90``): time limit near, or preemption."""
    from mtbench.signals import Interrupted

    raise Interrupted(signum)


def slurm_parameters(settings: dict[str, Any]) -> dict[str, Any]:
    """The grid's [executor] table in submitit's names."""
    names = {"partition": "slurm_partition", "gpus": "gpus_per_node", "time_min": "timeout_min", "mem_gb": "mem_gb",
             "cpus": "cpus_per_task", "array_parallelism": "slurm_array_parallelism", "account": "slurm_account",
             "qos": "slurm_qos"}
    return {names[k]: v for k, v in settings.items() if v is not None and k in names}


def submit_workers(kind: str, grid: Path, out: Path, db: str | None, count: int, settings: dict[str, Any],
                   wait: bool) -> list[str]:
    """Submit ``count`` worker jobs as one job array; returns their job ids (and waits if asked)."""
    try:
        import submitit
    except ImportError:
        raise MtbenchError("--executor needs submitit: pip install 'mtbench[slurm]'") from None
    folder = Path(out) / "jobs" / "%j"
    try:  # never guess: without Slurm, --executor slurm must not fall back to local jobs
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if kind == "slurm" else "local")
    except RuntimeError as exc:
        raise MtbenchError(f"--executor {kind}: {exc}") from None
    parameters = slurm_parameters(settings)
    if kind != "slurm":  # the local executor knows only the generic parameters
        parameters = {k: v for k, v in parameters.items() if k in ("timeout_min", "gpus_per_node", "cpus_per_task")}
    executor.update_parameters(name="mtbench-worker", **parameters)
    budgets: list[ThreadBudget | None] = [None] * count  # a Slurm job: its own cores
    if kind != "slurm":  # local jobs all run at once on this machine: each gets its share
        from mtbench.threads import plan

        shared = plan(count)
        budgets = [shared.for_worker(k + 1) for k in range(count)]
    jobs = executor.map_array(worker_job, [str(grid)] * count, [str(out)] * count, [db] * count, budgets)
    if wait:
        for job in jobs:
            job.result()  # raises with the job's traceback if a worker crashed
    return [job.job_id for job in jobs]
