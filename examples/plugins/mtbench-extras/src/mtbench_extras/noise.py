"""Gaussian-noise training (``noise-at``): each training batch is seen with added Gaussian noise of
standard deviation ``sigma`` (clipped to [0, 1]), mixed with the clean batch by ``noisy_weight``.
A cheap baseline for adversarial training: it crafts nothing.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from mtbench.specs import DefenseOptionError, DefenseRequest, DefenseSpec, DefenseStep

DEFAULTS = {"sigma": 8 / 255, "noisy_weight": 1.0}


def _number(option: str, value) -> float:
    """A number, or a fraction written as a string ("8/255"), in [0, 1]."""
    try:
        value = float(Fraction(value.replace(" ", ""))) if isinstance(value, str) else value
    except (ValueError, ZeroDivisionError):
        raise DefenseOptionError(option, f"expected a number or a fraction like '8/255', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise DefenseOptionError(option, f"expected a number in [0, 1], got {value!r}")
    return float(value)


def validate(options, tasks) -> dict:
    for option in options:
        if option not in DEFAULTS:
            raise DefenseOptionError(option, f"noise-at has no option {option!r} (it takes: {', '.join(DEFAULTS)})")
    return {k: _number(k, options.get(k, default)) for k, default in DEFAULTS.items()}


def loss(req: DefenseRequest) -> DefenseStep:
    sigma, w = req.options["sigma"], req.options["noisy_weight"]
    noise = torch.randn(req.images.shape, generator=req.generator).to(req.images.device)
    noisy = req.losses((req.images + sigma * noise).clamp(0, 1))
    if w < 1:
        clean = req.losses(req.images)
        noisy = {t: (1 - w) * clean[t] + w * noisy[t] for t in req.tasks}
    return DefenseStep(req.weighted(noisy), noisy)


NOISE_AT = DefenseSpec(name="noise-at", loss=loss, validate=validate,
                       description="training on Gaussian-noised images (sigma), mixed with clean ones")
