"""Encoders, decoders and models: shapes, strides, paper sizes, training, checkpoints."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from mtbench.errors import CheckpointError
from mtbench.models import build_model, count_parameters, load_checkpoint, save_checkpoint

PAPER_PARAMS_M = {"resnet18": 14.19, "resnet50": 29.66, "xception": 4.33, "resnet152": 64.30, "wide_resnet50_2": 72.99}


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet152", "wide_resnet50_2", "xception",
                                  "resnet18_unet", "resnet50_unet", "resnet152_unet", "wide_resnet50_2_unet"])
def test_encoder_shape_and_stride(plugins, name):
    spec = plugins.encoders.get(name)
    with torch.device("meta"):
        features = spec.build()(torch.zeros(1, 3, 64, 64))
    assert features.shape == (1, spec.out_channels, 64 // spec.stride, 64 // spec.stride)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_parameter_counts_match_paper(plugins, name):
    with torch.device("meta"):
        model = build_model(name, ["depth_zbuffer", "depth_euclidean"], plugins)  # two 1-channel decoders
    assert count_parameters(model) / 1e6 == pytest.approx(PAPER_PARAMS_M[name], rel=0.005)


def test_model_outputs_at_input_resolution(plugins):
    model = build_model("xception", ["segment_semantic", "normal"], plugins).eval()
    out = model(torch.rand(2, 3, 48, 48))
    assert out["segment_semantic"].shape == (2, 17, 48, 48) and out["normal"].shape == (2, 3, 48, 48)
    with pytest.raises(ValueError, match="not divisible by the encoder's stride 16"):
        model(torch.rand(1, 3, 40, 40))


def test_two_task_model_trains(plugins, synth_root):
    from mtbench.data import TaskonomyDataset, load_splits

    torch.manual_seed(0)
    tasks = {t: plugins.tasks.get(t) for t in ("segment_semantic", "depth_zbuffer")}
    ds = TaskonomyDataset(synth_root, load_splits(synth_root)["train"], tasks, 32)
    images = torch.stack([ds[i][0] for i in range(8)])
    targets = {t: torch.stack([ds[i][1][t] for i in range(8)]) for t in tasks}
    masks = {t: torch.stack([ds[i][2][t] for i in range(8)]) for t in tasks}
    model = build_model("resnet18", list(tasks), plugins)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for _ in range(15):
        out = model(images)
        loss = sum(tasks[t].loss(out[t], targets[t], masks[t]).mean() for t in tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_round_trip_and_refusals(plugins, tmp_path):
    model = build_model("resnet18", ["segment_semantic", "depth_zbuffer"], plugins).eval()
    path = tmp_path / "m.safetensors"
    sha = save_checkpoint(model, path, {"encoder": "resnet18", "tasks": ["segment_semantic", "depth_zbuffer"]})
    loaded = load_checkpoint(path, sha, plugins).eval()
    x = torch.rand(1, 3, 32, 32)
    a, b = model(x), loaded(x)
    assert all(torch.equal(a[t], b[t]) for t in a)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_checkpoint(path, sha, plugins)
    path.write_bytes(pickle.dumps(model.state_dict()))
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(path, None, plugins)
    with pytest.raises(CheckpointError, match="checkpoint missing"):
        load_checkpoint(tmp_path / "nope.safetensors", None, plugins)


def test_models_info_command():
    """At the paper's 256 px the command prints the upstream Xception's size and cost (tests/data) beside
    the paper's 4.33 M."""
    from helpers import run_cli

    upstream = json.loads((Path(__file__).parent / "data" / "xception_upstream_layers.json").read_text())
    result = run_cli("models", "info", "xception", "dD", "--size", "256")
    assert result.returncode == 0, result.stderr
    for figure in (f"{upstream['parameters'] / 1e6:.2f}", f"{upstream['macs_256'] / 1e9:.2f}", "4.33"):
        assert f" {figure} " in result.stdout, (figure, result.stdout)
