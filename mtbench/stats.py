"""Small statistics for reports and the advisor: rank correlations and bootstrap intervals.

Pure Python and numpy (no torch), so reports stay fast to start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; NaN when fewer than two points or either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        return math.nan
    a, b = np.asarray(x, float), np.asarray(y, float)
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else math.nan


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the ranks."""
    return pearson(ranks(x), ranks(y))


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over resamples of ``range(n)`` with replacement."""
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)], float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def relative_increase(clean: np.ndarray, adv: np.ndarray) -> float:
    """(mean adv - mean clean) / mean clean: the paper's relative vulnerability (ratio of means)."""
    c = float(np.mean(clean))
    return (float(np.mean(adv)) - c) / c if c > 1e-12 else math.nan


Groups = Sequence[Sequence[np.ndarray]]
"""Strata (kept fixed) of units (training seeds, resampled) of rows (test samples, resampled)."""


def two_level_bootstrap(groups: Groups, statistic: Callable[[list[list[np.ndarray]]], float], resamples: int = 1000,
                        level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic`` under a stratified two-level bootstrap.

    Within each group (a setting, held fixed), its units (training seeds) are drawn with
    replacement, then the rows (test samples) of each drawn unit with replacement: so the interval
    carries the variance of training as well as of the test set. With one unit per group only
    the rows vary (the interval covers test-sample variation only). ``statistic`` gets the same
    nesting as ``groups``, resampled. NaN, NaN when no resample gives a finite value.
    """
    if not groups or any(len(units) == 0 for units in groups):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for b in range(resamples):
        drawn = []
        for units in groups:
            picks = rng.integers(0, len(units), len(units)) if len(units) > 1 else [0]
            drawn.append([units[u][rng.integers(0, len(units[u]), len(units[u]))] for u in picks])
        values[b] = statistic(drawn)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))
