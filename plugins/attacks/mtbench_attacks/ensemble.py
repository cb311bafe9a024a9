"""The worst case over several attacks, per sample (AutoAttack's principle, for dense tasks).

Every member attack runs on the whole batch; each sample keeps the member whose adversarial image
raises the attacked tasks' errors most, scored as the sum over attacked tasks of
err_adv / err_clean (each task's own error metric, so tasks of different scales count alike).
``AttackResult.info["winner"]`` holds the winning member's index per sample, and
``info["members"]`` the members' names. Members are this package's attacks of the same norm;
``options = {members = [...]}`` in a grid changes them.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch

from mtbench import AttackRequest, AttackResult, AttackSpec
from mtbench_attacks import apgd, pgd

DEFAULT_MEMBERS = {"linf": ("pgd-linf", "apgd-linf"), "l2": ("pgd-l2", "apgd-l2")}
FLOOR = 1e-8


def _members() -> dict[str, AttackSpec]:
    return {a.name: a for a in (*pgd.ATTACKS, *apgd.ATTACKS)}


def attacked_error_ratio(req: AttackRequest, images: torch.Tensor, clean_errors: dict[str, torch.Tensor]):
    """Per sample: sum over attacked tasks of err(images) / err(clean)."""
    with torch.no_grad():
        outputs = req.model(images)
        score = torch.zeros(images.shape[0], device=images.device)
        for t in req.attacked:
            spec = req.tasks[t]
            err = spec.metric(spec.error_metric).fn(outputs[t], req.targets[t], req.masks[t])
            score += err / clean_errors[t].clamp_min(FLOOR)
    return score


def worst_case(candidates: list[torch.Tensor], scores: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the candidate with the highest score (the first on ties) and its index."""
    winner = torch.stack(scores).argmax(0)  # (B,)
    stacked = torch.stack(candidates)  # (M, B, C, H, W)
    index = winner.view(1, -1, *([1] * (stacked.dim() - 2))).expand(1, *stacked.shape[1:])
    return stacked.gather(0, index)[0], winner


def ensemble(req: AttackRequest, norm: str) -> AttackResult:
    names = tuple(req.options.get("members", DEFAULT_MEMBERS[norm]))
    available = _members()
    unknown = [n for n in names if n not in available or available[n].norm != norm]
    if unknown:
        raise ValueError(f"ensemble-{norm}: members must be {norm} attacks among {sorted(available)}; got {unknown}")
    with torch.no_grad():
        outputs = req.model(req.images)
        clean_errors = {t: req.tasks[t].metric(req.tasks[t].error_metric).fn(outputs[t], req.targets[t], req.masks[t])
                        for t in req.attacked}
    candidates, scores = [], []
    for name in names:
        member_request = replace(req, trace=False)
        adv = available[name].run(member_request).adversarial.detach()
        candidates.append(adv)
        scores.append(attacked_error_ratio(req, adv, clean_errors))
    adversarial, winner = worst_case(candidates, scores)
    return AttackResult(adversarial=adversarial, trace=[], info={"winner": winner, "members": list(names)})


ATTACKS = (
    AttackSpec("ensemble-linf", "linf", partial(ensemble, norm="linf"),
               "per sample, the worst of several L-inf attacks (default pgd-linf, apgd-linf) by the attacked errors"),
    AttackSpec("ensemble-l2", "l2", partial(ensemble, norm="l2"),
               "per sample, the worst of several L2 attacks (default pgd-l2, apgd-l2) by the attacked errors"),
)
