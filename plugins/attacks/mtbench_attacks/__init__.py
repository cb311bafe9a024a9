"""Built-in mtbench plugin: PGD (L-inf, L2), FGSM, Auto-PGD, the ensemble, the objectives, and the defences
(none, pgd-at, gat) that train against them."""

from mtbench import hookimpl
from mtbench_attacks import apgd, ensemble, pgd
from mtbench_attacks.defenses import DEFENSES
from mtbench_attacks.objectives import OBJECTIVES


@hookimpl
def mtbench_register_attacks():
    return [*pgd.ATTACKS, *apgd.ATTACKS, *ensemble.ATTACKS]


@hookimpl
def mtbench_register_objectives():
    return list(OBJECTIVES)


@hookimpl
def mtbench_register_defenses():
    return list(DEFENSES)
