"""Split values of aggregated metrics: the constant predictor's error uses the same aggregate as a model's."""

from __future__ import annotations

import pytest
import torch

from mtbench.baseline import evaluate_constants


def test_constant_predictor_error_is_the_dataset_error(plugins):
    """The constant predicts class 1. Sample A: label 1111 (I = U = 4 for class 1); sample B: label 2222
    (class 1: I = 0, U = 4; class 2: I = 0, U = 4). Over the split class 1 has 4 / 8 and class 2 0 / 4:
    error 1 - (1/2 + 0) / 2 = 3/4, where the mean of per-sample errors (0 and 1) would be 1/2."""
    seg = plugins.tasks.get("segment_semantic")
    tasks = {seg.name: seg}
    constants = {seg.name: torch.nn.functional.one_hot(torch.tensor(1), 17).float()}
    batches = [(torch.zeros(1, 3, 1, 4), {seg.name: torch.full((1, 1, 1, 4), float(c))},
                {seg.name: torch.ones(1, 1, 1, 4, dtype=torch.bool)}) for c in (1, 2)]
    values = evaluate_constants(constants, batches, tasks)[seg.name]
    assert values["error"] == pytest.approx(3 / 4)
    assert values["miou_dataset"] == pytest.approx(1 / 4)
    assert values["miou"] == pytest.approx(1 / 2)  # a mean of per-sample values stays one
