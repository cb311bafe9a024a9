"""MI-FGSM (Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018), L-inf.

Each step accumulates the L1-normalised input gradient into a momentum term g and moves by
``step_size * sign(g)``, then projects onto the eps-ball and the [0, 1] box. Deterministic: no
random start.
"""

from __future__ import annotations

import torch

from mtbench import AttackRequest, AttackResult, AttackSpec

MOMENTUM = 1.0


def run(req: AttackRequest) -> AttackResult:
    x = req.images.detach()
    x_adv = x.clone()
    g = torch.zeros_like(x)
    mu = float(req.options.get("momentum", MOMENTUM))
    for _ in range(req.steps):
        x_adv.requires_grad_(True)
        outputs = req.model(x_adv)
        losses = {t: req.tasks[t].loss(outputs[t], req.targets[t], req.masks[t]) for t in req.tasks}
        grad, = torch.autograd.grad(req.objective(losses).sum(), x_adv)
        g = mu * g + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        with torch.no_grad():
            x_adv = x_adv + req.step_size * g.sign()
            x_adv = torch.min(torch.max(x_adv, x - req.eps), x + req.eps).clamp(0, 1)
    return AttackResult(adversarial=x_adv.detach())


MI_FGSM = AttackSpec(name="mi-fgsm", norm="linf", run=run, description="momentum iterative FGSM (Dong et al. 2018)")
