"""Built-in defences: ``none`` (the weighted sum of the task losses), ``pgd-at`` (Madry et al. 2018's
adversarial training, with any attack and objective) and ``gat`` (Ghamizi et al., ICML 2023: adversarial
examples of the main task, clean and adversarial losses of every task, and an optional cross-task
curvature regulariser on the input gradients).

Options are resolved once per model (``validate``): defaults filled in, fractions as numbers, the
attacked tasks as task names (``main`` depends on the task order, so ``sd`` and ``ds`` are other models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import torch

from mtbench.specs import DefenseOptionError, DefenseRequest, DefenseSpec, DefenseStep, TaskSpec


def none(req: DefenseRequest) -> DefenseStep:
    """Today's training step: the weighting's sum of the clean losses."""
    losses = req.losses(req.images)
    return DefenseStep(req.weighted(losses), losses)


def _number(option: str, value: Any, low: float, high: float, low_open: bool = False) -> float:
    """A number (or a fraction written "4/255") in [low, high] (low excluded if ``low_open``)."""
    if isinstance(value, str):
        try:
            value = float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise DefenseOptionError(option, f"expected a number or a fraction like '4/255', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DefenseOptionError(option, f"expected a number, got {value!r}")
    if not (low < value if low_open else low <= value) or value > high:
        raise DefenseOptionError(option, f"expected a number in {'(' if low_open else '['}{low:g}, {high:g}], "
                                         f"got {value!r}")
    return float(value)


def _integer(option: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DefenseOptionError(option, f"expected a whole number from {low} to {high}, got {value!r}")
    return value


def _name(option: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise DefenseOptionError(option, f"expected a plugin's name, got {value!r}")
    return value


def _targets(value: Any, tasks: Sequence[TaskSpec]) -> list[str]:
    """"main" (the first task), "all", or task codes or names ("sd", ["s", "normal"]) -> task names, sorted
    (the order of the attacked tasks does not change the examples: the objective sums them)."""
    by_key = {key: t.name for t in tasks for key in (t.name, t.code)}
    if value == "main":
        return [tasks[0].name]
    if value == "all":
        return sorted(t.name for t in tasks)
    items = [value] if isinstance(value, str) and value in by_key else list(value) if isinstance(value, (str, list)) \
        else None
    if not items or not all(isinstance(i, str) for i in items):
        raise DefenseOptionError("targets", f"expected \"main\", \"all\" or task codes or names, got {value!r}")
    missing = [i for i in items if i not in by_key]
    if missing:
        raise DefenseOptionError("targets", f"{missing} are not tasks of the model {[t.name for t in tasks]}")
    return sorted({by_key[i] for i in items})


PGD_AT_DEFAULTS: dict[str, Any] = {"attack": "pgd-linf", "objective": "sum", "eps": 8 / 255, "steps": 10,
                                   "step_size": None, "targets": "main", "adv_weight": 1.0, "random_start": True}
GAT_DEFAULTS: dict[str, Any] = {**{k: v for k, v in PGD_AT_DEFAULTS.items() if k != "targets"}, "adv_weight": 0.5,
                                "curvature": 0.0}


def _resolve(options: Mapping[str, Any], tasks: Sequence[TaskSpec], defaults: Mapping[str, Any],
             name: str) -> dict[str, Any]:
    """Every option of ``defaults`` checked and resolved; an unknown option is refused."""
    for option in options:
        if option not in defaults:
            raise DefenseOptionError(option, f"defence {name!r} has no option {option!r} (it takes: "
                                             f"{', '.join(defaults)})")
    o = {**defaults, **options}
    eps = _number("eps", o["eps"], 0.0, 1.0, low_open=True)
    resolved = {
        "attack": _name("attack", o["attack"]), "objective": _name("objective", o["objective"]), "eps": eps,
        "steps": _integer("steps", o["steps"], 1, 100_000),
        "step_size": eps / 4 if o["step_size"] is None else _number("step_size", o["step_size"], 0.0, 1.0, True),
        "targets": _targets(o.get("targets", "main"), tasks),
        "adv_weight": _number("adv_weight", o["adv_weight"], 0.0, 1.0),
        "random_start": o["random_start"],
    }
    if not isinstance(resolved["random_start"], bool):
        raise DefenseOptionError("random_start", f"expected true or false, got {o['random_start']!r}")
    if "curvature" in defaults:
        resolved["curvature"] = _number("curvature", o["curvature"], 0.0, 1e6)
    return resolved


def _craft(req: DefenseRequest) -> torch.Tensor:
    o = req.options
    return req.craft(attack=o["attack"], objective=o["objective"], eps=o["eps"], steps=o["steps"],
                     step_size=o["step_size"], attacked=o["targets"], random_start=o["random_start"])


def _mix(clean: Mapping[str, torch.Tensor] | None, adversarial: Mapping[str, torch.Tensor] | None,
         weight: float) -> dict[str, torch.Tensor]:
    """Per task, (1 - weight) * clean + weight * adversarial; one of them alone at weight 0 or 1."""
    if adversarial is None:
        return dict(clean or {})
    if clean is None:
        return dict(adversarial)
    return {t: (1 - weight) * clean[t] + weight * adversarial[t] for t in clean}


def pgd_at(req: DefenseRequest) -> DefenseStep:
    """Madry-style adversarial training: the weighting's loss at examples crafted against ``targets``, mixed
    with the clean loss by ``adv_weight`` (1: adversarial only; 0: clean only, nothing crafted)."""
    w = req.options["adv_weight"]
    clean = req.losses(req.images) if w < 1 else None
    adversarial = req.losses(_craft(req)) if w > 0 else None
    losses = _mix(clean, adversarial, w)
    return DefenseStep(req.weighted(losses), losses)


def curvature_penalty(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """Per sample (B,): (1 - cos^2(g1, g2)) * ||g1 - g2||^2 / ||g1 + g2||^2 of two tasks' input gradients:
    zero when they agree, large when they point apart or differ in size."""
    a, b = g1.flatten(1), g2.flatten(1)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
    return (1 - cos**2) * (a - b).pow(2).sum(1) / (a + b).pow(2).sum(1).clamp_min(1e-12)


def gat(req: DefenseRequest) -> DefenseStep:
    """GAT: examples crafted against the main task; the clean and adversarial losses of every task mixed by
    ``adv_weight``; plus ``curvature`` times the mean over auxiliary tasks and samples of
    :func:`curvature_penalty` of the main task's and the auxiliary task's clean input gradients (kept in the
    graph, so that it trains)."""
    o = req.options
    w, weight = o["adv_weight"], o["curvature"]
    main, *aux = list(req.tasks)
    regularise = weight > 0 and bool(aux)
    x = req.images.detach().requires_grad_(regularise)
    clean = req.losses(x) if w < 1 or regularise else None
    penalty = torch.zeros((), device=req.images.device)
    if regularise:
        g1 = torch.autograd.grad(clean[main].sum(), x, create_graph=True)[0]
        penalties = [curvature_penalty(g1, torch.autograd.grad(clean[t].sum(), x, create_graph=True)[0])
                     for t in aux]
        penalty = torch.stack(penalties).mean()
    adversarial = req.losses(_craft(req)) if w > 0 else None
    losses = _mix(clean if w < 1 else None, adversarial, w)
    return DefenseStep(req.weighted(losses) + weight * penalty, losses)


def _validate_pgd_at(options: Mapping[str, Any], tasks: Sequence[TaskSpec]) -> dict[str, Any]:
    return _resolve(options, tasks, PGD_AT_DEFAULTS, "pgd-at")


def _validate_gat(options: Mapping[str, Any], tasks: Sequence[TaskSpec]) -> dict[str, Any]:
    if "targets" in options:
        raise DefenseOptionError("targets", "gat crafts its examples against the main task (the task set's "
                                            "first); use pgd-at for other targets")
    return _resolve(options, tasks, GAT_DEFAULTS, "gat")  # targets: the main task


DEFENSES = (
    DefenseSpec("none", none, "no defence: the weighting's sum of the clean task losses"),
    DefenseSpec("pgd-at", pgd_at, "adversarial training (Madry et al. 2018) with any attack and objective, "
                                  "against the main task, every task or a listed subset; clean/adversarial mix",
                _validate_pgd_at),
    DefenseSpec("gat", gat, "GAT (Ghamizi et al. 2023): main-task examples, clean and adversarial losses of every "
                            "task, optional cross-task input-gradient curvature regulariser", _validate_gat),
)
