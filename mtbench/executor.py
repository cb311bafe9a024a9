"""Hand workers to a scheduler through submitit: Slurm on a cluster, submitit's local executor for
tests. mtbench schedules nothing itself: each job is one ``mtbench worker`` loop that claims trials
from the shared database until none is left, so jobs may start, die or be requeued in any order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtbench.errors import MtbenchError


def worker_job(grid: str, out: str, db: str | None) -> int:
    """What each job runs: a worker on the grid; returns how many trials it ran."""
    from mtbench.grid import load_grid
    from mtbench.plugins import get_plugins
    from mtbench.runner import run_grid
    from mtbench.storage import Store, default_url

    plugins = get_plugins()
    store = Store(db or default_url(Path(out)))
    return len(run_grid(load_grid(Path(grid), plugins), store, Path(out), plugins, export=False).done)


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
    executor = submitit.AutoExecutor(folder=folder, cluster=None if kind == "slurm" else "local")
    parameters = slurm_parameters(settings)
    if kind != "slurm":  # the local executor knows only the generic parameters
        parameters = {k: v for k, v in parameters.items() if k in ("timeout_min", "gpus_per_node", "cpus_per_task")}
    executor.update_parameters(name="mtbench-worker", **parameters)
    jobs = executor.map_array(worker_job, [str(grid)] * count, [str(out)] * count, [db] * count)
    if wait:
        for job in jobs:
            job.result()  # raises with the job's traceback if a worker crashed
    return [job.job_id for job in jobs]
