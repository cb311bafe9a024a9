"""Batch-norm folding: the attack's model computes the same function and gradients as the original."""

import pytest
import torch
from torch import nn

from mtbench.fold import fold_batchnorm
from mtbench.models import build_model


def _trained_stats_model(encoder, plugins, dtype=torch.float32):
    torch.manual_seed(0)
    model = build_model(encoder, ["segment_semantic", "depth_zbuffer"], plugins).to(dtype)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics far from the (0, 1) defaults
            model(torch.rand(4, 3, 64, 64, dtype=dtype) * 3)
    return model.eval()


# The U-Net in float64: its skips bring the input within a few layers of the output, and in float32 the
# folded model's input gradients then differ from the original's by up to 2% of their largest value at a
# few per cent of the pixels (its encoder and decoder, each alone, agree to 1e-6); in float64 to 1e-15.
@pytest.mark.parametrize(("encoder", "dtype"), [("resnet18", torch.float32), ("resnet18_unet", torch.float64),
                                                ("xception", torch.float32)])
def test_folded_model_matches_outputs_and_input_gradients(encoder, dtype, plugins):
    model = _trained_stats_model(encoder, plugins, dtype)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original must be left alone"
    assert all(not p.requires_grad for p in folded.parameters())

    x = torch.rand(2, 3, 64, 64, dtype=dtype)
    grads = []
    for m in (model, folded):
        xx = x.clone().requires_grad_(True)
        out = m(xx)
        grads.append((out, torch.autograd.grad(sum(o.square().sum() for o in out.values()), xx)[0]))
    (out_a, g_a), (out_b, g_b) = grads
    for task in out_a:
        scale = out_a[task].abs().max()
        assert (out_a[task] - out_b[task]).abs().max() <= 1e-5 * scale
    assert (g_a - g_b).abs().max() <= 1e-4 * g_a.abs().max()


def test_untraceable_module_is_kept_unfolded():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # control flow on values: torch.fx cannot trace it
                return self.bn(self.conv(x))
            return x

    wrapper = nn.Sequential(Branchy()).eval()
    folded = fold_batchnorm(wrapper)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(folded(x), wrapper(x))
    assert isinstance(folded[0].bn, nn.BatchNorm2d)
