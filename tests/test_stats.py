"""The two-level bootstrap of ``mtbench.stats`` on cases whose interval can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtbench.stats import bootstrap_ci, two_level_bootstrap


def mean_of_means(groups: list[list[np.ndarray]]) -> float:
    return float(np.mean([u.mean() for units in groups for u in units]))


def test_two_seeds_constant_within_give_the_seed_spread():
    """Seed A scores 0 on every sample, seed B 1: drawing the seeds gives 0, 1/2 or 1 with chances
    1/4, 1/2, 1/4, so the 95% interval is [0, 1]. A bootstrap of the pooled samples alone would
    give a narrow interval around 1/2: it misses the training-seed variance."""
    groups = [[np.zeros(20), np.ones(20)]]
    assert two_level_bootstrap(groups, mean_of_means) == (0.0, 1.0)
    pooled = np.concatenate(groups[0])
    low, high = bootstrap_ci(lambda idx: float(pooled[idx].mean()), len(pooled))
    assert 0.3 < low < high < 0.7


def test_one_seed_resamples_the_test_samples_only():
    """One unit of two samples 0 and 1: the resampled mean is 0, 1/2 or 1 (chances 1/4, 1/2, 1/4)."""
    assert two_level_bootstrap([[np.array([0.0, 1.0])]], mean_of_means) == (0.0, 1.0)
    assert two_level_bootstrap([[np.full(5, 0.3)]], mean_of_means) == pytest.approx((0.3, 0.3))


def test_groups_are_strata_held_fixed():
    """Each group is always present with its one constant unit: the statistic never moves."""
    groups = [[np.zeros(3)], [np.full(3, 2.0)]]
    assert two_level_bootstrap(groups, mean_of_means) == (1.0, 1.0)


def test_seed_draw_frequencies():
    """The middle value (one of each seed) comes up about half the time: the seeds are drawn with
    replacement, each resample as many as there are."""
    seen = []
    two_level_bootstrap([[np.zeros(4), np.ones(4)]], lambda g: seen.append(mean_of_means(g)) or 0.0, resamples=4000)
    assert np.mean(np.isclose(seen, 0.5)) == pytest.approx(0.5, abs=0.03)


def test_rows_of_a_unit_are_drawn_together():
    """Paired columns (the same test sample in two trials) stay paired: their difference is constant."""
    unit = np.column_stack([np.arange(10.0), np.arange(10.0) + 1])
    low, high = two_level_bootstrap([[unit]], lambda g: float(np.mean(g[0][0][:, 1] - g[0][0][:, 0])))
    assert (low, high) == (1.0, 1.0)


def test_nothing_finite_is_nan():
    assert all(math.isnan(x) for x in two_level_bootstrap([[np.zeros(3)]], lambda g: math.nan))
    assert all(math.isnan(x) for x in two_level_bootstrap([], mean_of_means))
