"""The built-in encoders against their upstream definitions: Standley et al.'s Xception (layer list
recorded from the upstream file in tests/data) and MTRobust's ResNet decoder (layer by layer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mtbench.fold import fold_batchnorm
from mtbench.models import build_model, count_macs, count_parameters
from mtbench.testing import check_encoder

UPSTREAM = json.loads((Path(__file__).parent / "data" / "xception_upstream_layers.json").read_text())
TWO_DEPTHS = ["depth_zbuffer", "depth_euclidean"]  # two 1-channel decoders, as the upstream record and the paper


def layer_list(model: nn.Module, size: int) -> list[tuple[str, list[list[int]]]]:
    """(type, parameter shapes) of every module that owns parameters, in the order the forward calls
    them: how tests/data/xception_upstream_layers.json lists the upstream model."""
    layers: list[tuple[str, list[list[int]]]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: layers.append(
                 (type(m).__name__, [list(p.shape) for p in m.parameters(recurse=False)])))
             for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, size, size))
    for h in hooks:
        h.remove()
    return layers


def test_xception_layers_match_upstream_in_order(plugins):
    model = build_model("xception", TWO_DEPTHS, plugins)
    expected = [(layer["type"], layer["shapes"]) for layer in UPSTREAM["layers"]]
    got = layer_list(model, 32)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"layer {i} (upstream {UPSTREAM['layers'][i]['module']}): {g} != {e}"
    # every parameter is called in the forward pass: none left out of the comparison
    assert count_parameters(model) == UPSTREAM["parameters"]


def test_xception_macs_match_upstream_at_256(plugins):
    model = build_model("xception", TWO_DEPTHS, plugins)
    assert count_macs(model, 256) == pytest.approx(UPSTREAM["macs_256"], rel=0.01)


def test_xception_stride_and_contract(plugins):
    spec = plugins.encoders.get("xception")
    assert (spec.stride, spec.out_channels) == (16, 256)
    check_encoder(spec, size=32)
    features = spec.build().eval()(torch.rand(1, 3, 48, 64))
    assert features.shape == (1, 256, 3, 4)
    with pytest.raises(ValueError, match="stride 16"):
        build_model("xception", ["depth_zbuffer"], plugins)(torch.rand(1, 3, 40, 40))


def test_xception_batchnorms_all_fold(plugins):
    """The decoder stays traceable by torch.fx, so attacks get the folded fast path."""
    model = build_model("xception", ["depth_zbuffer"], plugins).eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x)["depth_zbuffer"], folded(x)["depth_zbuffer"], rtol=1e-4, atol=1e-5)


def mtrobust_decoder(base_match: int, output_channels: int) -> list[tuple[str, list[list[int]]]]:
    """MTRobust's ``Decoder`` (models/taskonomy_models.py, commit 99d1793, ``downscale=1``), its layers
    in forward order as (type, parameter shapes); torch's defaults: convs with bias."""
    def upconv(c_in: int, c_out: int) -> tuple[str, list[list[int]]]:
        return "ConvTranspose2d", [[c_in, c_out, 2, 2], [c_out]]

    def conv3(c_in: int, c_out: int) -> tuple[str, list[list[int]]]:
        return "Conv2d", [[c_out, c_in, 3, 3], [c_out]]

    def bn(c: int) -> tuple[str, list[list[int]]]:
        return "BatchNorm2d", [[c], [c]]

    relu = ("ReLU", [])
    return [
        upconv(base_match, 256), bn(256), relu, conv3(256, 256), bn(256), relu,  # upconv0 .. bn_decode0
        upconv(256, 128), bn(128), relu, conv3(128, 128), bn(128), relu,  # upconv1 .. bn_decode1
        upconv(128, 64), bn(64), relu, conv3(64, 64), bn(64), relu,  # upconv2 .. bn_decode2
        upconv(64, 48), bn(48), relu, conv3(48, 48), bn(48), relu,  # upconv3 .. bn_decode3
        upconv(48, 32), bn(32), relu, conv3(32, output_channels),  # upconv4, bn_upconv4, relu, conv_decode4
    ]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet152", "wide_resnet50_2"])
@pytest.mark.parametrize("task_channels", [1, 17])
def test_resnet_decoder_matches_mtrobust_layer_by_layer(plugins, name, task_channels):
    spec = plugins.encoders.get(name)
    with torch.device("meta"):
        decoder = spec.build_decoder(task_channels)
    leaves = [m for m in decoder.modules() if not any(True for _ in m.children())]  # however they are grouped
    got = [(type(m).__name__, [list(p.shape) for p in m.parameters(recurse=False)]) for m in leaves]
    assert got == mtrobust_decoder(spec.out_channels, task_channels)


def test_unet_trunk_is_the_resnet_trunk_and_packs_every_stage_losslessly(plugins):
    """resnet18_unet's trunk computes resnet18's features (same layers, same initialisation) and packs its
    stem and stages 1-3 into channels that the decoder unpacks back to the stages' own maps."""
    from torch.nn import functional as F

    from mtbench_encoders.unet import BASIC, STRIDES, packed_channels

    torch.manual_seed(0)
    plain = plugins.encoders.get("resnet18").build().eval()
    torch.manual_seed(0)
    pyramid = plugins.encoders.get("resnet18_unet").build().eval()
    x = torch.rand(2, 3, 64, 64)
    stages = []
    hooks = [m.register_forward_hook(lambda m, i, o: stages.append(o))
             for m in (pyramid.stem, *pyramid.stages)]
    with torch.no_grad():
        packed = pyramid(x)
        assert torch.equal(packed[:, :512], plain(x))
    for h in hooks:
        h.remove()
    assert packed_channels(BASIC) == 512 + 4 * 256 + 16 * 128 + 64 * 64 + 256 * 64
    assert packed.shape == (2, packed_channels(BASIC), 2, 2)
    start = 512
    for stage, channels, stride in zip(reversed(stages[:-1]), reversed(BASIC[:-1]), reversed(STRIDES[:-1])):
        size = channels * (32 // stride) ** 2
        assert torch.equal(F.pixel_shuffle(packed[:, start:start + size], 32 // stride), stage)
        start += size
    assert start == packed.shape[1]


def test_unet_decoder_reads_the_high_resolution_stages(plugins):
    """The skips reach the output: MTRobust's decoder cannot see the stem's map, this one's output moves
    with it, pixel by pixel (the gradient of one output pixel is concentrated near that pixel)."""
    spec = plugins.encoders.get("resnet18_unet")
    torch.manual_seed(0)
    decoder = spec.build_decoder(1).eval()
    packed = torch.zeros(1, spec.out_channels, 2, 2, requires_grad=True)
    out = decoder(packed)
    assert out.shape == (1, 1, 64, 64)
    out[0, 0, 5, 5].backward()
    stem = torch.nn.functional.pixel_shuffle(packed.grad[:, -64 * 256:], 16)[0].abs().sum(0)  # (32, 32)
    assert stem.sum() > 0, "the stem's skip does not reach the output"
    near, far = stem[:6, :6].sum(), stem[8:, 8:].sum()
    assert far == 0 < near, "the stem's skip should act locally (a 3x3 conv after it, then one more)"
    check_encoder(spec, size=64)


def test_unet_models_have_the_paper_model_size_but_other_ids(plugins):
    """The additive skips cost no parameters where channels match (ResNet18: only the stem's 64 -> 48
    projection); the revision keeps their trials apart from the paper decoder's."""
    with torch.device("meta"):
        paper = count_parameters(build_model("resnet18", TWO_DEPTHS, plugins))
        unet = count_parameters(build_model("resnet18_unet", TWO_DEPTHS, plugins))
    assert unet - paper == 2 * (64 * 48 + 2 * 48)  # per decoder: a 1x1 conv without bias, and its BN
    assert plugins.encoders.get("resnet18_unet").revision != plugins.encoders.get("resnet18").revision
