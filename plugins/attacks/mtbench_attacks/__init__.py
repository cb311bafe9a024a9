"""Built-in mtbench plugin: PGD (L-inf, L2), FGSM, Auto-PGD, the ensemble, and the objectives."""

from mtbench import hookimpl
from mtbench_attacks import apgd, ensemble, pgd
from mtbench_attacks.objectives import OBJECTIVES


@hookimpl
def mtbench_register_attacks():
    return [*pgd.ATTACKS, *apgd.ATTACKS, *ensemble.ATTACKS]


@hookimpl
def mtbench_register_objectives():
    return list(OBJECTIVES)
