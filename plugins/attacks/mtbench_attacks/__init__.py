"""Built-in mtbench plugin: PGD (L-inf, L2), FGSM and the basic multi-task objectives."""

from mtbench import hookimpl

from mtbench_attacks.objectives import OBJECTIVES
from mtbench_attacks.pgd import ATTACKS


@hookimpl
def mtbench_register_attacks():
    return list(ATTACKS)


@hookimpl
def mtbench_register_objectives():
    return list(OBJECTIVES)
