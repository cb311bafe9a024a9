"""Helpers for testing mtbench and its plugins without training anything.

``tiny_encoder_spec()`` is a two-layer encoder small enough for unit tests; ``tiny_model`` builds
a multi-task model on it; ``fake_batch`` makes a random batch with targets and masks shaped for
any task set; ``check_task`` verifies a task spec's contract on such a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtbench.models import MultiTaskModel
from mtbench.plugins import Plugins, get_plugins
from mtbench.specs import EncoderSpec, TaskSpec


class TinyEncoder(nn.Sequential):
    def __init__(self, width: int = 8):
        super().__init__(
            nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
        )


class TinyDecoder(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 4):
        layers: list[nn.Module] = []
        c = in_channels
        while stride > 1:
            layers += [nn.ConvTranspose2d(c, 8, 2, 2), nn.ReLU()]
            c, stride = 8, stride // 2
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        super().__init__(*layers)


def tiny_encoder_spec(width: int = 8) -> EncoderSpec:
    return EncoderSpec("tiny", width, 4, lambda: TinyEncoder(width), lambda ch: TinyDecoder(width, ch, 4),
                       "a 2-layer encoder for tests")


def tiny_model(tasks: Sequence[str], plugins: Plugins | None = None, seed: int = 0) -> MultiTaskModel:
    plugins = plugins or get_plugins()
    torch.manual_seed(seed)
    spec = tiny_encoder_spec()
    return MultiTaskModel(spec.build(), {t: spec.build_decoder(plugins.tasks.get(t).channels) for t in tasks},
                          spec.stride).eval()


def fake_targets(spec: TaskSpec, batch: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random target and mask for one task: class indices or values in [-1, 1]."""
    if spec.classification:
        target = torch.randint(0, spec.channels, (batch, 1, size, size), generator=g).float()
    else:
        target = torch.rand(batch, spec.channels, size, size, generator=g) * 2 - 1
    return target, torch.rand(batch, 1, size, size, generator=g) > 0.1


def fake_batch(tasks: Sequence[str], size: int = 16, batch: int = 2, plugins: Plugins | None = None,
               seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Images in [0, 1] with random targets and masks for every task."""
    plugins = plugins or get_plugins()
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    pairs = {t: fake_targets(plugins.tasks.get(t), batch, size, g) for t in tasks}
    return images, {t: p[0] for t, p in pairs.items()}, {t: p[1] for t, p in pairs.items()}


def check_task(spec: TaskSpec, batch: int = 2, size: int = 16) -> None:
    """Assert a task spec's contract: loss and metrics per sample (B,) and finite, the error metric
    among the metrics, and a zero loss for a perfect regression prediction."""
    g = torch.Generator().manual_seed(0)
    target, mask = fake_targets(spec, batch, size, g)
    pred = torch.randn(batch, spec.channels, size, size, generator=g)
    loss = spec.loss(pred, target, mask)
    assert loss.shape == (batch,), f"{spec.name}: loss must be per sample (B,), got {tuple(loss.shape)}"
    assert torch.isfinite(loss).all(), f"{spec.name}: loss is not finite"
    for m in spec.metrics:
        v = m.fn(pred, target, mask)
        assert v.shape == (batch,), f"{spec.name}.{m.name}: metric must be per sample (B,), got {tuple(v.shape)}"
        assert torch.isfinite(v).all(), f"{spec.name}.{m.name}: metric is not finite"
    assert spec.error_metric in {m.name for m in spec.metrics}, f"{spec.name}: error_metric is not a metric"
    if not spec.classification:
        assert torch.allclose(spec.loss(target, target, mask), torch.zeros(batch)), f"{spec.name}: perfect != 0"
