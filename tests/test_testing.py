"""The plugin author's kit: the contract checks pass on every built-in and catch broken plugins."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mtbench.specs import AttackResult
from mtbench.testing import check_attack, check_encoder, check_objective, check_task
from mtbench_attacks.objectives import Relative

pytest_plugins = ["mtbench.pytest_plugin"]


@pytest.mark.parametrize("name", ["pgd-linf", "pgd-l2", "fgsm"])
def test_builtin_attacks_pass(mtbench_plugins, name):
    check_attack(mtbench_plugins.attacks.get(name))


@pytest.mark.parametrize("objective", ["relative", "cyclic"])
def test_builtin_attack_passes_with_an_adaptive_objective(mtbench_plugins, objective):
    check_attack(mtbench_plugins.attacks.get("pgd-linf"), objective=objective)


def test_every_builtin_objective_passes(mtbench_plugins):
    for entry in mtbench_plugins.objectives:
        check_objective(entry.spec)


def _objective(mtbench_plugins, make):
    return dataclasses.replace(mtbench_plugins.objectives.get("sum"), make=make)


def test_batch_mean_objective_is_caught(mtbench_plugins):
    def make(attacked, weights):
        return lambda losses: sum(losses[t] for t in attacked).mean()

    with pytest.raises(AssertionError, match="per sample"):
        check_objective(_objective(mtbench_plugins, make))


def test_objective_mixing_samples_is_caught(mtbench_plugins):
    def make(attacked, weights):
        return lambda losses: sum(losses[t] / losses[t].detach().sum() for t in attacked)

    with pytest.raises(AssertionError, match="other samples"):
        check_objective(_objective(mtbench_plugins, make))


class Sticky(Relative):
    """Keeps its first start: the second batch would be measured from the first batch's losses."""

    def start(self, losses):
        if self.initial is None:
            super().start(losses)


def test_adaptive_objective_that_keeps_its_first_start_is_caught(mtbench_plugins):
    with pytest.raises(AssertionError, match="did not replace the previous start"):
        check_objective(_objective(mtbench_plugins, lambda attacked, weights: Sticky(attacked)))


def test_aggregated_metric_unlike_its_per_sample_form_is_caught(mtbench_plugins):
    seg = mtbench_plugins.tasks.get("segment_semantic")
    wrong = tuple(dataclasses.replace(m, fn=seg.metric("pixel_acc").fn) if m.name == "miou_dataset" else m
                  for m in seg.metrics)
    with pytest.raises(AssertionError, match="miou_dataset.*one-sample case of the aggregate"):
        check_task(dataclasses.replace(seg, metrics=wrong))


@pytest.mark.parametrize("name", ["resnet18", "xception"])
def test_builtin_encoders_pass(mtbench_plugins, name):
    check_encoder(mtbench_plugins.encoders.get(name), size=32)


def test_every_builtin_task_passes(mtbench_plugins):
    for entry in mtbench_plugins.tasks:
        check_task(entry.spec)


def test_attack_leaving_the_ball_is_caught(mtbench_plugins):
    pgd = mtbench_plugins.attacks.get("pgd-linf")
    too_far = dataclasses.replace(pgd, run=lambda req: AttackResult(
        (req.images + 2 * req.eps * torch.sign(torch.randn_like(req.images))).clamp(0, 1)))
    with pytest.raises(AssertionError, match="exceeds eps"):
        check_attack(too_far)


def test_attack_that_is_not_seeded_is_caught(mtbench_plugins):
    def noisy(req):
        return AttackResult((req.images + req.eps * (torch.rand_like(req.images) * 2 - 1)).clamp(0, 1))

    with pytest.raises(AssertionError, match="same seed"):
        check_attack(dataclasses.replace(mtbench_plugins.attacks.get("pgd-linf"), run=noisy))


def test_attack_that_changes_the_model_is_caught(mtbench_plugins):
    def meddling(req):
        with torch.no_grad():
            next(req.model.parameters()).add_(1.0)
        return AttackResult(req.images.clone())

    with pytest.raises(AssertionError, match="changed the model"):
        check_attack(dataclasses.replace(mtbench_plugins.attacks.get("pgd-linf"), run=meddling))


def test_wrong_metric_direction_is_caught(mtbench_plugins):
    seg = mtbench_plugins.tasks.get("segment_semantic")
    flipped = tuple(dataclasses.replace(m, higher_is_better=not m.higher_is_better) if m.name == "miou" else m
                    for m in seg.metrics)
    with pytest.raises(AssertionError, match="miou.*higher_is_better"):
        check_task(dataclasses.replace(seg, metrics=flipped))


def test_batch_mean_loss_is_caught(mtbench_plugins):
    depth = mtbench_plugins.tasks.get("depth_zbuffer")
    with pytest.raises(AssertionError, match="per sample"):
        check_task(dataclasses.replace(depth, loss=lambda p, t, m, **kw: (p - t).abs().mean()))


def test_encoder_with_wrong_stride_is_caught(mtbench_plugins):
    r18 = mtbench_plugins.encoders.get("resnet18")
    with pytest.raises(AssertionError, match="expected"):
        check_encoder(dataclasses.replace(r18, stride=16), size=64)


def test_fixtures(tiny_model_factory, fake_batch_factory):
    model = tiny_model_factory(["depth_zbuffer"])
    images, targets, masks = fake_batch_factory(["depth_zbuffer"], size=16, batch=3)
    assert model(images)["depth_zbuffer"].shape == targets["depth_zbuffer"].shape == (3, 1, 16, 16)
