"""Multi-task models (one shared encoder, one decoder per task) and their checkpoints.

Checkpoints are a safetensors file plus a JSON file with the model's config; never pickle. The
SHA-256 of the weights is stored with the training trial, so a tampered file is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mtbench.defaults import PAPER_SIZES
from mtbench.errors import CheckpointError, ConfigError, MtbenchError
from mtbench.external import ExternalModelError, build_external
from mtbench.plugins import Plugins, get_plugins


class MultiTaskModel(nn.Module):
    """``forward(x) -> {task: prediction}`` at the input's resolution, for images in [0, 1].

    The [0, 1] -> [-1, 1] normalisation of the paper lives here, so attacks and eps work in
    pixel units.
    """

    def __init__(self, encoder: nn.Module, decoders: Mapping[str, nn.Module], stride: int):
        super().__init__()
        self.encoder = encoder
        self.decoders = nn.ModuleDict(dict(decoders))
        self.label_scales = nn.ModuleDict()  # head_init = "scaled": per regression task, see LabelScale
        self.stride = stride

    @property
    def tasks(self) -> list[str]:
        return list(self.decoders)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"image size {h}x{w} is not divisible by the encoder's stride {self.stride}")
        features = self.encoder(x * 2 - 1)
        out = {task: decoder(features) for task, decoder in self.decoders.items()}
        for task, scale in self.label_scales.items():
            out[task] = scale(out[task])
        return out


class LabelScale(nn.Module):
    """A regression head's last step under ``head_init = "scaled"``: ``mean + std * z`` per channel, with
    the training split's label mean and standard deviation (fixed buffers, saved with the weights).

    The layers before it predict the label standardised. Adam moves every weight by about the learning
    rate whatever the gradient's size, so a head that outputs depth (log depths that vary by a few
    hundredths) directly is moved by more than the label's whole spread in its first steps, and spends a
    short run recovering; in standardised units a step is a small change of the prediction."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float().view(1, -1, 1, 1))
        self.register_buffer("std", std.detach().clone().float().view(1, -1, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * z

    @classmethod
    def add_from_state(cls, model: MultiTaskModel, state: Mapping[str, torch.Tensor]) -> None:
        """Give ``model`` the label scales a saved state holds (``label_scales.<task>.mean``), so that the
        state loads strictly into it; a state without them adds none."""
        prefix, suffix = "label_scales.", ".mean"
        for key, mean in state.items():
            if key.startswith(prefix) and key.endswith(suffix):
                channels = mean.numel()
                model.label_scales[key[len(prefix):-len(suffix)]] = cls(torch.zeros(channels), torch.ones(channels))


def build_model(encoder: str, tasks: Sequence[str], plugins: Plugins | None = None) -> MultiTaskModel:
    plugins = plugins or get_plugins()
    enc = plugins.encoders.get(encoder)
    decoders = {t: enc.build_decoder(plugins.tasks.get(t).channels) for t in tasks}
    return MultiTaskModel(enc.build(), decoders, enc.stride)


PRIOR_WEIGHT_SCALE = 0.1
"""Under ``head_init = "prior"``, a head's last layer keeps this fraction of its initial weights: its first
outputs are the prior plus a little of the image, not the prior drowned in the initialisation's noise."""


@torch.no_grad()
def init_heads_at_prior(model: MultiTaskModel, priors: Mapping[str, torch.Tensor],
                        stds: Mapping[str, torch.Tensor] | None = None) -> None:
    """Start each task head's last layer (the last Conv2d, ConvTranspose2d or Linear with a bias whose
    outputs are the task's channels) at ``priors[task]``: its bias set to it, its weights scaled by
    :data:`PRIOR_WEIGHT_SCALE`. A task in ``stds`` (``head_init = "scaled"``) instead gets a
    :class:`LabelScale` after its head and a zero bias: its head predicts the standardised label, starting
    at the mean. A head without such a layer cannot start at a prior: an error names it."""
    stds = stds or {}
    for task, prior in priors.items():
        layers = [m for m in model.decoders[task].modules()
                  if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and m.bias is not None]
        if not layers or layers[-1].bias.numel() != prior.numel():
            mode = "scaled" if stds else "prior"
            raise ConfigError(f"train.head_init = \"{mode}\": the {task} head ends in no Conv2d, ConvTranspose2d "
                              f"or Linear layer with a bias of its {prior.numel()} channel(s); use head_init = "
                              "\"upstream\" with this encoder")
        layers[-1].weight.mul_(PRIOR_WEIGHT_SCALE)
        if task in stds:
            layers[-1].bias.zero_()
            model.label_scales[task] = LabelScale(prior, stds[task].clamp_min(1e-6)).to(layers[-1].bias.device)
        else:
            layers[-1].bias.copy_(prior.to(layers[-1].bias))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one forward pass at 3 x size x size, measured by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops() // 2


@dataclass
class ModelSize:
    """One model's cost beside the paper's (``paper_*``: None for an encoder the paper did not measure)."""

    encoder: str
    params_m: float
    macs_g: float
    paper_params_m: float | None = None
    paper_macs_g: float | None = None


def model_sizes(encoders: Sequence[str], tasks: Sequence[str], size: int,
                plugins: Plugins | None = None) -> list[ModelSize]:
    """Parameters and MACs of each encoder with one decoder per task at 3 x size x size (``mtbench
    models info``); every size is checked against the encoders' strides before any model is built."""
    plugins = plugins or get_plugins()
    for name in encoders:
        stride = plugins.encoders.get(name).stride
        if size % stride:
            raise MtbenchError(f"--size: {size} is not a multiple of the stride {stride} of encoder {name!r}")
    rows = []
    for name in encoders:
        model = build_model(name, tasks, plugins)
        paper = PAPER_SIZES.get(name, (None, None))
        rows.append(ModelSize(name, count_parameters(model) / 1e6, count_macs(model, size) / 1e9, *paper))
    return rows


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: Path, config: Mapping) -> str:
    """Write weights and config atomically, both complete before either replaces an old file (a
    full disk leaves no half checkpoint, and raises a ``CheckpointError``); returns the weights' SHA-256."""
    from mtbench.storage.files import write_files

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    text = json.dumps(dict(config), indent=1, sort_keys=True)
    write_files({path: lambda tmp: _write_safetensors(state, tmp),
                 path.with_suffix(".json"): lambda tmp: tmp.write_text(text)}, "the checkpoint", CheckpointError)
    return _sha256(path)


def _write_safetensors(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """safetensors reports a failed write (a full disk) as its own error; callers expect an OSError."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from mtbench.storage.files import follow_umask

    try:
        save_file(dict(state), str(path), metadata={"format": "mtbench-1"})
    except SafetensorError as exc:
        raise OSError(str(exc)) from None
    follow_umask(path)  # safetensors creates the file private


def file_sha256(path: Path) -> str:
    """The SHA-256 of a checkpoint file, as stored with its training trial."""
    return _sha256(Path(path))


def load_checkpoint(path: Path, sha256: str | None = None, plugins: Plugins | None = None,
                    device: str | torch.device = "cpu") -> MultiTaskModel:
    """Rebuild a model from its JSON config and load the weights, refusing anything but an intact
    safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint missing (was the results folder moved or cleaned?)")
    if sha256 is not None and _sha256(path) != sha256:
        raise CheckpointError(f"{path}: checkpoint does not match the SHA-256 stored with its training trial "
                              "(tampered with or overwritten); delete the training trial to retrain it")
    try:
        config = json.loads(path.with_suffix(".json").read_text())
        state = load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"{path.with_suffix('.json')}: model config missing") from None
    except (SafetensorError, json.JSONDecodeError, OSError) as exc:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc}); mtbench never loads pickles") from None
    try:
        if config.get("factory"):  # a [[model]]: its module from the factory, its weights from here
            model = build_external(config["factory"], config["tasks"])
        else:
            model = build_model(config["encoder"], config["tasks"], plugins)
            LabelScale.add_from_state(model, state)
        model.load_state_dict(state)
    except ExternalModelError as exc:
        raise CheckpointError(f"{path}: a model trained elsewhere, whose factory fails here ({exc})") from None
    except (KeyError, RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the model in its config ({exc})") from None
    return model.to(device)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError([("[run] device", "'cuda' was asked for but no CUDA device is available")])
    return torch.device(name)
