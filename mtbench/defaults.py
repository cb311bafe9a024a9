"""The built-in plugins that defaults and the paper's presets name, in one place.

The core knows no concrete plugin: it reads these names from here and looks them up in the
registries like any other. ``check_defaults`` runs when ``mtbench run`` or ``mtbench worker``
starts, so an installation without the built-ins says which default is missing instead of failing
deep inside a trial. This module imports neither torch nor a plugin: the report uses it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtbench.errors import PluginError

if TYPE_CHECKING:
    from mtbench.plugins import Plugins

PAPER_ATTACK = "pgd-linf"
"""The paper's attack (PGD under the L-inf norm): the default of ``[[analysis]]`` and of reports."""

DEFAULT_DATASET = "synthetic"
"""The dataset of a grid that names none: generated scenes, so a first run needs no download."""

DEFAULT_OBJECTIVE = "sum"
"""How attacked losses combine unless a grid says otherwise (the paper's joint attack)."""

PLAIN_OBJECTIVES = ("sum", "mean", "single")
"""The paper's PGD objectives; the others (e.g. ``relative`` = WGD) are adaptive attacks."""

WEIGHTED_OBJECTIVE = "weighted"
"""The objective that needs explicit task weights in a grid."""

PAPER_ENCODER = "resnet18"
"""The encoder of the paper's Tables 1 and 2."""

ADVICE_ENCODER = "resnet50"
"""The encoder ``mtbench advise`` assumes you will finally train."""

SURROGATE_ENCODER = "resnet18"
"""The small encoder of the advisor's surrogate proxy."""

DEFAULT_DEFENSE = "none"
"""The defence of a grid that names none: today's training, the weighted sum of the task losses."""

KIT_TASKS = ("segment_semantic", "depth_zbuffer")
"""The tasks ``mtbench.testing.check_attack`` attacks unless told: one classification, one regression."""

PAPER_SIZES: dict[str, tuple[float, float]] = {
    "resnet18": (14.19, 6.09), "resnet50": (29.66, 9.90), "xception": (4.33, 3.64),
    "resnet152": (64.30, 19.64), "wide_resnet50_2": (72.99, 19.45),
}
"""Encoder -> (parameters in millions, GMACs) of the paper's two-decoder models at 256 px."""

REQUIRED = {"attack": (PAPER_ATTACK,), "objective": (DEFAULT_OBJECTIVE, WEIGHTED_OBJECTIVE),
            "dataset": (DEFAULT_DATASET,), "defense": (DEFAULT_DEFENSE,)}
"""What a run needs registered, by plugin kind, whatever its grid says (defaults fill gaps)."""


def check_defaults(plugins: Plugins) -> None:
    """Raise ``PluginError`` naming every default that no installed plugin provides."""
    registries = plugins.by_kind()
    missing = [f"{kind} {name!r}" for kind, names in REQUIRED.items() for name in names
               if name not in registries[kind]]
    if missing:
        raise PluginError(f"the defaults of mtbench need {', '.join(missing)}, which no installed plugin registers "
                          "(reinstall mtbench: `pip install -e .` registers the built-ins)")


MASKING_ATTACKS = ("apgd-linf", "ensemble-linf")
"""The adaptive attacks every model of a grid with a defence also gets, on its main task at the grid's L-inf
budgets: a defended model whose error under the ensemble exceeds its error under PGD by more than
``MASKING_MARGIN`` (relative) is flagged, its robustness an artefact of masked gradients."""

MASKING_MARGIN = 0.10

PAPER_ADAPTIVE_ATTACK = "apgd-linf"
"""The paper's Auto-PGD (the ``apgd`` column of its Table 2; an adaptive attack of ``mtbench claims``)."""

WGD_OBJECTIVE = "wgd-original"
"""The objective that makes PGD the paper's WGD as its code computed it: each task's loss divided by its
batch mean at the attack's start (``relative`` divides each sample by its own clean loss instead)."""

SUMMED_OBJECTIVES = ("sum", "single")
"""Plain objectives whose value is the attacked tasks' summed loss, which the first-order theory predicts."""
