"""mtbench-extras: one task, one attack and one defence, registered exactly like mtbench's own plugins."""

from mtbench import hookimpl
from mtbench_extras.colorization import COLORIZATION
from mtbench_extras.mifgsm import MI_FGSM
from mtbench_extras.noise import NOISE_AT


@hookimpl
def mtbench_register_tasks():
    return [COLORIZATION]


@hookimpl
def mtbench_register_attacks():
    return [MI_FGSM]


@hookimpl
def mtbench_register_defenses():
    return [NOISE_AT]
