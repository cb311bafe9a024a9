"""Built-in mtbench plugin: the eleven Taskonomy tasks and the two Taskonomy-format datasets."""

from mtbench import hookimpl
from mtbench_tasks.datasets import DATASETS
from mtbench_tasks.tasks import TASKS


@hookimpl
def mtbench_register_tasks():
    return list(TASKS)


@hookimpl
def mtbench_register_datasets():
    return list(DATASETS)
