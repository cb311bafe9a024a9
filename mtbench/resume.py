"""Per-epoch training state, so a killed training trial resumes at its last finished epoch.

Tensors (model, optimiser moments, random-number-generator states) go to a safetensors file and
everything else (epoch, metric rows so far, scheduler and optimiser settings) to a JSON file beside
it; never pickle. Both are written to temporary names and renamed, so a kill mid-write leaves the
previous epoch's state intact. The state belongs to one trial id; it is deleted when the trial ends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def paths(folder: Path, trial_id: str) -> tuple[Path, Path]:
    return folder / f"{trial_id}.resume.safetensors", folder / f"{trial_id}.resume.json"


def save_state(folder: Path, trial_id: str, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler, generator: torch.Generator, rows: list[dict[str, Any]]) -> None:
    """Write the state after ``epoch``: tensors to safetensors, the rest to JSON, both atomically."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().contiguous().cpu()
                                        for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.loader"] = generator.get_state()
    meta = {"trial": trial_id, "epoch": epoch, "rows": rows, "param_groups": opt["param_groups"],
            "optim_scalars": scalars,
            "scheduler": {k: (dict(v) if k == "milestones" else v) for k, v in scheduler.state_dict().items()}}
    tensor_path, meta_path = paths(folder, trial_id)
    save_file(tensors, str(tensor_path) + ".tmp")
    Path(str(meta_path) + ".tmp").write_text(json.dumps(meta))
    os.replace(str(tensor_path) + ".tmp", tensor_path)  # tensors first: the JSON says the pair is complete
    os.replace(str(meta_path) + ".tmp", meta_path)


def load_state(folder: Path, trial_id: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
               generator: torch.Generator) -> tuple[int, list[dict[str, Any]]] | None:
    """Restore the last finished epoch's state; returns (epoch, metric rows) or None if there is none."""
    from safetensors.torch import load_file

    tensor_path, meta_path = paths(folder, trial_id)
    if not (tensor_path.is_file() and meta_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("trial") != trial_id:
        return None
    tensors = load_file(str(tensor_path))
    device = next(model.parameters()).device
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device) if name != "step" else value
    for index, values in meta["optim_scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched = dict(meta["scheduler"])
    if "milestones" in sched:
        from collections import Counter

        sched["milestones"] = Counter({int(k): v for k, v in sched["milestones"].items()})
    scheduler.load_state_dict(sched)
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.loader"])
    return meta["epoch"], meta["rows"]


def clear_state(folder: Path, trial_id: str) -> None:
    for path in paths(folder, trial_id):
        path.unlink(missing_ok=True)
