"""mtbench-extras: one task and one attack, registered exactly like mtbench's own plugins."""

from mtbench import hookimpl
from mtbench_extras.colorization import COLORIZATION
from mtbench_extras.mifgsm import MI_FGSM


@hookimpl
def mtbench_register_tasks():
    return [COLORIZATION]


@hookimpl
def mtbench_register_attacks():
    return [MI_FGSM]
