"""Per-epoch training state, so a killed training trial resumes at its last finished epoch.

Tensors (model, optimiser moments, random-number-generator states) go to a safetensors file and
everything else (epoch, metric rows so far, scheduler and optimiser settings) to a JSON file beside
it; never pickle. Both are written to temporary names and renamed, so a kill mid-write leaves the
previous epoch's state intact; the safetensors metadata names the trial and epoch, so a kill
between the two renames (new tensors, old JSON) is caught. The state belongs to one trial id; it is
deleted when the trial ends.

The state is checked before it is used: ``load_state`` reads and checks both files before it
changes the model, optimiser, scheduler or random generators, so a state it rejects leaves them as
built. It raises

- ``CorruptState`` when a file cannot be read or is incomplete: truncated or garbage safetensors,
  invalid JSON, JSON keys missing or of the wrong type, tensors missing, unexpected or of another
  shape or dtype than the model's and optimiser's, one file of the pair missing, or the two files
  from different epochs;
- ``RefusedState`` when it is readable but not this trial's: another trial id, an epoch the trial
  never saves (state is written after epochs 1 to epochs-1 only), metric rows not covering exactly
  epochs 1 to that epoch, optimiser param groups or settings (kind, initial lr, momentum, weight
  decay...) or lr milestones other than the trial's configuration gives.

The caller (``train.run_train``) then moves the pair aside with ``set_aside``, to
``<name>.corrupt-<timestamp>`` or ``<name>.refused-<timestamp>`` (never deleted: mtbench keeps what
it cannot read, for a person to look at), warns naming the file and the reason, and trains the
trial from epoch 1. Restarting costs at most the epochs already trained; refusing to run would
block the trial until a person deletes files by hand, and using a state that does not fit would
store results that belong to no configuration.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

ROW_KEYS = {"split", "phase", "task", "attacked", "metric", "step", "value"}
META_KEYS = ("trial", "epoch", "rows", "param_groups", "optim_scalars", "scheduler")
SCHEDULER_SETTINGS = ("milestones", "gamma", "base_lrs")  # from the config; the rest moves with the epochs
IMPLEMENTATION_SETTINGS = ("fused", "foreach", "capturable", "differentiable")  # how torch computes the same update


class BadState(Exception):
    """A resume file that cannot be used; ``path`` is the file at fault, ``label`` names its set-aside copy."""

    label = "bad"

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} {reason}")
        self.path, self.reason = path, reason


class CorruptState(BadState):
    """The file cannot be read, is incomplete, or does not fit the model's tensors."""

    label = "corrupt"


class RefusedState(BadState):
    """The file is readable but belongs to another trial or configuration."""

    label = "refused"


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
            "optim_scalars": scalars, "scheduler": _scheduler_json(scheduler)}
    tensor_path, meta_path = paths(folder, trial_id)
    save_file(tensors, str(tensor_path) + ".tmp", metadata={"trial": trial_id, "epoch": str(epoch)})
    Path(str(meta_path) + ".tmp").write_text(json.dumps(meta))
    # tensors first: a kill between the two renames leaves new tensors beside the old JSON, which
    # load_state tells by the epoch in the tensors' metadata
    os.replace(str(tensor_path) + ".tmp", tensor_path)
    os.replace(str(meta_path) + ".tmp", meta_path)


def load_state(folder: Path, trial_id: str, epochs: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler, generator: torch.Generator) -> tuple[int, list[dict[str, Any]]] | None:
    """Restore the last finished epoch's state; returns (epoch, metric rows), or None if there is none.

    ``optimizer`` and ``scheduler`` are fresh ones built from the trial's config: the state must
    match their settings. Raises ``BadState`` (nothing changed) when the state cannot be used."""
    tensor_path, meta_path = paths(folder, trial_id)
    if not tensor_path.is_file() and not meta_path.is_file():
        return None
    for path, other in ((tensor_path, meta_path), (meta_path, tensor_path)):
        if not other.is_file():
            raise CorruptState(path, f"has no {other.name} beside it")
    meta = _read_meta(meta_path, trial_id, epochs)
    epoch = meta["epoch"]
    tensors, written = _read_tensors(tensor_path)
    if written != {"trial": trial_id, "epoch": str(epoch)}:
        raise CorruptState(tensor_path, f"was written for {written or 'no trial and epoch'}, but {meta_path.name} "
                                        f"is trial {trial_id}'s epoch {epoch}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    _check_tensors(tensor_path, tensors, {**{f"model.{k}": v for k, v in model.state_dict().items()},
                                          "rng.torch": torch.get_rng_state(), "rng.loader": generator.get_state()},
                   params)
    _check_settings(meta_path, meta, optimizer, scheduler)
    optim_state = _optimizer_state(tensor_path, meta_path, tensors, meta["optim_scalars"], optimizer, params)

    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict({"state": optim_state, "param_groups": meta["param_groups"]})
    sched = dict(meta["scheduler"])
    sched["milestones"] = Counter({int(k): v for k, v in sched["milestones"].items()})
    scheduler.load_state_dict(sched)
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.loader"])
    return epoch, meta["rows"]


def set_aside(folder: Path, trial_id: str, label: str) -> list[Path]:
    """Rename the trial's state files to ``<name>.<label>-<timestamp>`` and return the new paths.

    Never deletes: a state mtbench cannot use may still tell a person what went wrong."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = []
    for path in paths(folder, trial_id):
        if path.is_file():
            target, n = path.with_name(f"{path.name}.{label}-{stamp}"), 1
            while target.exists():  # set aside twice within a second: keep both
                target, n = path.with_name(f"{path.name}.{label}-{stamp}-{n}"), n + 1
            path.rename(target)
            kept.append(target)
    return kept


def clear_state(folder: Path, trial_id: str) -> None:
    for path in paths(folder, trial_id):
        path.unlink(missing_ok=True)
        Path(str(path) + ".tmp").unlink(missing_ok=True)  # left by a kill mid-write


def _scheduler_json(scheduler) -> dict[str, Any]:
    """The scheduler's state as JSON would give it back (milestone Counter to a dict of strings)."""
    state = {k: (dict(v) if k == "milestones" else v) for k, v in scheduler.state_dict().items()}
    return json.loads(json.dumps(state))


def _read_meta(path: Path, trial_id: str, epochs: int) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptState(path, f"is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CorruptState(path, "is not a JSON object")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise CorruptState(path, f"lacks {', '.join(missing)}")
    if meta["trial"] != trial_id:
        raise RefusedState(path, f"belongs to trial {meta['trial']!r}, not {trial_id}")
    epoch = meta["epoch"]
    if type(epoch) is not int or not 1 <= epoch < epochs:
        raise RefusedState(path, f"is at epoch {epoch!r}, but this trial of {epochs} epoch(s) saves state only "
                                 f"after epochs 1 to {epochs - 1}")
    rows = meta["rows"]
    if not (isinstance(rows, list) and all(_row_ok(r, epoch) for r in rows)
            and {r["step"] for r in rows} == set(range(1, epoch + 1))):
        raise RefusedState(path, f"has metric rows that are not those of epochs 1 to {epoch}")
    if not (isinstance(meta["optim_scalars"], dict) and all(isinstance(v, dict) for v in meta["optim_scalars"].values())
            and isinstance(meta["scheduler"], dict) and isinstance(meta["scheduler"].get("milestones"), dict)
            and isinstance(meta["param_groups"], list) and all(isinstance(g, dict) for g in meta["param_groups"])):
        raise CorruptState(path, "has optim_scalars, scheduler or param_groups of the wrong type")
    return meta


def _row_ok(row: Any, epoch: int) -> bool:
    return (isinstance(row, dict) and row.keys() == ROW_KEYS and type(row["step"]) is int
            and 1 <= row["step"] <= epoch and isinstance(row["value"], (int, float)))


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
            return tensors, f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptState(path, f"is not a readable safetensors file ({exc})") from None


def _names(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                   params: list[torch.Tensor]) -> None:
    """Every expected tensor is there with its shape and dtype; optimiser tensors fit their parameter."""
    missing = expected.keys() - tensors.keys()
    if missing:
        raise CorruptState(path, f"lacks {_names(missing)}")
    wrong = {k for k, v in expected.items() if tensors[k].shape != v.shape or tensors[k].dtype != v.dtype}
    for key in tensors.keys() - expected.keys():
        match = re.fullmatch(r"optim\.(\d+)\.(\w+)", key)
        index = int(match[1]) if match else len(params)
        if index >= len(params) or not (tensors[key].numel() == 1 if match[2] == "step"
                                        else tensors[key].shape == params[index].shape):
            wrong.add(key)
    if wrong:
        raise CorruptState(path, f"has tensors that do not fit the model: {_names(wrong)}")


def _optimizer_state(tensor_path: Path, meta_path: Path, tensors: dict[str, torch.Tensor],
                     scalars: dict[str, dict[str, Any]], optimizer: torch.optim.Optimizer,
                     params: list[torch.Tensor]) -> dict[int, dict[str, Any]]:
    """The optimiser's per-parameter state; each parameter has none or all of what the optimizer keeps."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(params[int(index)].device) if name != "step" else value
    for index, values in scalars.items():
        if not index.isdigit() or int(index) >= len(params):
            raise CorruptState(meta_path, f"has optimiser state for parameter {index!r}, which the model lacks")
        state.setdefault(int(index), {}).update(values)
    kept = _state_names(optimizer)
    partial = [str(i) for i, values in state.items() if values.keys() != kept]
    if partial:
        raise CorruptState(tensor_path, f"has incomplete optimiser state (not {', '.join(sorted(kept))}) for "
                                        f"parameter(s) {_names(partial)}")
    return state


def _state_names(optimizer: torch.optim.Optimizer) -> set[str]:
    """What the optimizer keeps per parameter, found by one step of a copy on a one-element parameter,
    so that any optimizer class and setting (Adam's amsgrad, SGD's momentum) is right."""
    p = torch.zeros(1, requires_grad=True)
    p.grad = torch.zeros(1)
    probe = type(optimizer)([p], **optimizer.defaults)
    probe.step()
    return set(probe.state[p])


def _check_settings(path: Path, meta: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler) -> None:
    """The optimiser's param groups and the lr schedule are those the trial's config builds."""
    fresh = json.loads(json.dumps(optimizer.state_dict()["param_groups"]))
    saved = meta["param_groups"]
    if len(saved) != len(fresh) or any(s.keys() != f.keys() or s["params"] != f["params"]
                                       for s, f in zip(saved, fresh)):
        raise RefusedState(path, f"has optimiser param groups that do not fit the {type(optimizer).__name__} "
                                 "optimizer of this trial")
    differ = [f"{k} {s[k]!r} (config: {f[k]!r})" for s, f in zip(saved, fresh) for k in f
              if k != "lr" and k not in IMPLEMENTATION_SETTINGS and s[k] != f[k]]
    if differ or not all(isinstance(s["lr"], (int, float)) and s["lr"] > 0 for s in saved):
        raise RefusedState(path, f"has optimiser settings other than the trial's: {', '.join(differ) or 'lr'}")
    fresh_sched, saved_sched = _scheduler_json(scheduler), meta["scheduler"]
    differ = [f"{k} {saved_sched.get(k)!r} (config: {fresh_sched[k]!r})" for k in SCHEDULER_SETTINGS
              if saved_sched.get(k) != fresh_sched[k]]
    if differ or saved_sched.get("last_epoch") != meta["epoch"]:
        raise RefusedState(path, "has an lr schedule other than the trial's: "
                                 f"{', '.join(differ) or 'last_epoch is not the epoch'}")
