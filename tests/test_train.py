"""Training trials validate as often as ``[train] val_every`` asks (the last epoch always), without
changing the trial's id or anything the model becomes; a bad value is refused naming the key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
from helpers import CPU_TINY_DATA, run_cli

from mtbench.configs import setting_id
from mtbench.context import TrialContext
from mtbench.grid import load_grid_text
from mtbench.records import Phase
from mtbench.storage import Store, default_url
from mtbench.train import run_train

TRAIN = CPU_TINY_DATA + """
[train]
encoders = ["resnet18"]
task_sets = ["d"]
epochs = {epochs}
batch_size = 4
"""


def grid_text(epochs: int, val_every: int | None) -> str:
    return TRAIN.format(epochs=epochs) + ("" if val_every is None else f"val_every = {val_every}\n")


def validated_epochs(db: Path) -> dict[int, int]:
    """Epoch -> stored validation rows."""
    with sqlite3.connect(db) as c:
        return dict(c.execute("select step, count(*) from metrics where phase = 'val' group by step"))


def test_val_every_sets_the_epochs_validated_and_keeps_the_trial_id(tmp_path, plugins):
    grid = tmp_path / "grid.toml"
    grid.write_text(grid_text(5, 2))
    out = tmp_path / "r"
    result = run_cli("run", str(grid), "--out", str(out))
    assert result.returncode == 0, result.stderr
    per_epoch = validated_epochs(out / "mtbench.db")
    assert sorted(per_epoch) == [2, 4, 5], "every 2nd epoch, and the last one"
    assert len(set(per_epoch.values())) == 1 and per_epoch[2] > 0, "a validated epoch stores every val metric"

    default = load_grid_text(grid_text(5, None), grid, plugins).train_trials[0]
    every_2 = load_grid_text(grid_text(5, 2), grid, plugins).train_trials[0]
    assert every_2.config.val_every == 2 and default.config.val_every == 1
    assert every_2.id == default.id
    assert setting_id("train", every_2.config, {}) == setting_id("train", default.config, {})
    with sqlite3.connect(out / "mtbench.db") as c:
        assert [r[0] for r in c.execute("select id from trials")] == [default.id]
    grid.write_text(grid_text(5, None))  # the same model validated every epoch: already done
    again = run_cli("run", str(grid), "--out", str(out))
    assert again.returncode == 0 and "1 already done" in again.stdout + again.stderr, again.stdout + again.stderr


def _rows(config, trial_id: str, out: Path, plugins, stop_after: int | None = None) -> list:
    """The trial's metric rows, run in this process; ``stop_after``: stop it (as a kill would) after
    that epoch's state was saved, and return None."""
    class Stop(Exception):
        pass

    done = {"epochs": 0}

    def advance(n: int = 1) -> None:
        done["epochs"] += n
        if n and stop_after is not None and done["epochs"] >= stop_after:
            raise Stop

    ctx = TrialContext(plugins, Store(default_url(out)), out, torch.device("cpu"), lambda description, total: advance)
    try:
        return run_train(config, trial_id, ctx).metrics
    except Stop:
        return None


def _by_key(rows) -> dict:
    return {(r.phase, r.task, r.metric, r.step): r.value for r in rows}


def test_val_every_changes_what_is_validated_not_what_is_trained(tmp_path, plugins):
    """Validation every epoch or every 3rd: the same training losses, test metrics and baseline; the
    validation rows of the epochs validated are the same too. A trial stopped after an epoch
    without validation resumes to the same end."""
    every = {k: load_grid_text(grid_text(4, k), tmp_path / "grid.toml", plugins).train_trials[0] for k in (1, 3)}
    one = _by_key(_rows(every[1].config, every[1].id, tmp_path / "one", plugins))
    three = _by_key(_rows(every[3].config, every[3].id, tmp_path / "three", plugins))
    assert {step for phase, _, _, step in three if phase == Phase.VAL} == {3, 4}
    assert {step for phase, _, _, step in one if phase == Phase.VAL} == {1, 2, 3, 4}
    assert {k for k in one if k[0] != Phase.VAL or k[3] in (3, 4)} == three.keys()
    for key, value in three.items():
        assert value == pytest.approx(one[key], rel=1e-6, abs=1e-6), key

    assert _rows(every[3].config, every[3].id, tmp_path / "resumed", plugins, stop_after=1) is None
    resumed = _by_key(_rows(every[3].config, every[3].id, tmp_path / "resumed", plugins))
    assert resumed.keys() == three.keys()
    for key, value in resumed.items():
        assert value == pytest.approx(three[key], rel=1e-6, abs=1e-6), key


@pytest.mark.parametrize("value, expected", [("0", "greater than or equal to 1"), ("1.5", "valid integer"),
                                             ('"often"', "valid integer")])
def test_a_bad_val_every_is_refused_naming_the_key(tmp_path, value, expected):
    grid = tmp_path / "grid.toml"
    grid.write_text(TRAIN.format(epochs=2) + f"val_every = {value}\n")
    result = run_cli("run", str(grid), "--out", str(tmp_path / "r"), "--dry-run", "--no-calibrate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.val_every" in result.stderr and expected in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()


def test_losses_read_at_the_epoch_end_give_the_same_rows_and_the_same_error(tmp_path, plugins, monkeypatch):
    """On CUDA the training losses are read once an epoch, not after each batch (no wait for the device
    per batch): the same train losses to the bit, and a non-finite loss names the same batch."""
    import mtbench.train as train
    from mtbench.errors import TrainingError
    from mtbench.specs import DefenseRequest

    trial = load_grid_text(grid_text(2, None), tmp_path / "grid.toml", plugins).train_trials[0]
    real = DefenseRequest.losses  # what the training step's defence (none) computes its losses with
    poison = {"at": None, "calls": 0}

    def poisoned(request, images):
        losses = real(request, images)
        if request.model.training:
            poison["calls"] += 1
            if poison["calls"] == poison["at"]:
                losses = {t: v * float("nan") for t, v in losses.items()}
        return losses

    monkeypatch.setattr(DefenseRequest, "losses", poisoned)

    def run(name: str):
        poison.update(at=None, calls=0)
        rows = _by_key(_rows(trial.config, trial.id, tmp_path / name, plugins))
        poison.update(at=3, calls=0)  # 2 batches an epoch: epoch 2's first batch
        with pytest.raises(TrainingError) as failed:
            _rows(trial.config, trial.id, tmp_path / f"{name}-nan", plugins)
        return rows, str(failed.value)

    each_batch, each_error = run("each")
    monkeypatch.setattr(train, "READ_EACH_BATCH", frozenset())
    at_the_end, end_error = run("end")
    train_rows = {k: v for k, v in each_batch.items() if k[0] == Phase.TRAIN}
    assert train_rows and all(at_the_end[k] == v for k, v in train_rows.items())
    assert "training loss became nan at epoch 2, batch 0" in each_error and end_error == each_error


def test_head_init_prior_starts_each_head_at_its_prior(tmp_path, plugins):
    """Under head_init = "prior" the untrained model already predicts the training split's mean depth and
    its class prior for segmentation; the upstream init predicts neither. Only the heads' last layers
    change: the encoder and every other layer are bit-identical to the upstream model of the same seed."""
    from mtbench.baseline import fit_priors
    from mtbench.models import build_model, init_heads_at_prior

    trial = load_grid_text(TRAIN.format(epochs=1).replace('["d"]', '["sd"]') + 'head_init = "prior"\n',
                           tmp_path / "grid.toml", plugins).train_trials[0]
    config = trial.config
    tasks = {t: plugins.tasks.get(t) for t in config.tasks}
    ctx = TrialContext(plugins, Store(default_url(tmp_path / "r")), tmp_path / "r", torch.device("cpu"),
                       lambda description, total: lambda n=1: None)
    data = ctx.open_split(config.data, "train", tasks, config.data.train_samples)
    priors = fit_priors(torch.utils.data.DataLoader(data, batch_size=4), tasks)
    images = torch.stack([data[i][0] for i in range(4)])
    assert 0.1 < float(priors["depth_zbuffer"]) < 1 and priors["segment_semantic"].shape == (17,)
    assert float(priors["segment_semantic"].exp().sum()) == pytest.approx(1, abs=1e-5)
    labels = torch.cat([target["segment_semantic"][mask["segment_semantic"].bool()] for _, target, mask in data])
    assert int(priors["segment_semantic"].argmax()) == int(torch.mode(labels.long()).values)

    torch.manual_seed(0)
    upstream = build_model(config.encoder, list(config.tasks), plugins).eval()
    torch.manual_seed(0)
    started = build_model(config.encoder, list(config.tasks), plugins)
    init_heads_at_prior(started, priors)
    started.eval()
    with torch.no_grad():
        out, before = started(images), upstream(images)
    for task, prior in priors.items():
        mean_out = out[task].mean((0, 2, 3))
        assert torch.allclose(mean_out, prior, atol=0.05 * prior.abs().max() + 0.02), task
        assert not torch.allclose(before[task].mean((0, 2, 3)), prior, atol=0.05 * prior.abs().max() + 0.02), task
    changed = {k for k, v in started.state_dict().items() if not torch.equal(v, upstream.state_dict()[k])}
    last = {t: [n for n, m in started.decoders[t].named_modules() if isinstance(m, torch.nn.Conv2d)][-1]
            for t in config.tasks}
    assert changed == {f"decoders.{t}.{last[t]}.{p}" for t in config.tasks for p in ("weight", "bias")}, changed


def test_head_init_is_a_key_of_the_model_and_upstream_keeps_old_ids(tmp_path, plugins):
    """head_init = "prior" is another model (another trial id and setting); "upstream", the default,
    keeps the id trials had before the key existed; a bad value is refused naming the key."""
    default = load_grid_text(TRAIN.format(epochs=2), tmp_path / "grid.toml", plugins).train_trials[0]
    upstream = load_grid_text(TRAIN.format(epochs=2) + 'head_init = "upstream"\n', tmp_path / "grid.toml",
                              plugins).train_trials[0]
    prior = load_grid_text(TRAIN.format(epochs=2) + 'head_init = "prior"\n', tmp_path / "grid.toml",
                           plugins).train_trials[0]
    assert upstream.id == default.id and "head_init" not in default.config.model_dump(mode="json",
                                                                                        exclude_defaults=True)
    assert prior.id != default.id and prior.config.head_init == "prior"
    assert setting_id("train", prior.config, {}) != setting_id("train", default.config, {})
    grid = tmp_path / "bad.toml"
    grid.write_text(TRAIN.format(epochs=2) + 'head_init = "zeros"\n')
    result = run_cli("run", str(grid), "--out", str(tmp_path / "r"), "--dry-run", "--no-calibrate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.head_init" in result.stderr and "'upstream', 'prior' or 'scaled'" in result.stderr, result.stderr


def test_head_init_scaled_predicts_standardised_labels_and_its_checkpoint_reloads(tmp_path, plugins):
    """Under head_init = "scaled" a regression head ends in a LabelScale holding the training split's label
    mean and standard deviation: the untrained model predicts the mean depth, the layers before the scale
    predict about zero, segmentation keeps its plain prior; a trained model's checkpoint (label scales
    included) reloads to the same outputs, and its id differs from prior's."""
    from mtbench.baseline import fit_label_stats
    from mtbench.models import LabelScale, build_model, init_heads_at_prior, load_checkpoint

    text = TRAIN.format(epochs=1).replace('["d"]', '["sd"]') + 'head_init = "scaled"\n'
    trial = load_grid_text(text, tmp_path / "grid.toml", plugins).train_trials[0]
    prior = load_grid_text(text.replace('"scaled"', '"prior"'), tmp_path / "grid.toml", plugins).train_trials[0]
    assert trial.id != prior.id and trial.config.head_init == "scaled"
    config = trial.config
    tasks = {t: plugins.tasks.get(t) for t in config.tasks}
    ctx = TrialContext(plugins, Store(default_url(tmp_path / "r")), tmp_path / "r", torch.device("cpu"),
                       lambda description, total: lambda n=1: None)
    data = ctx.open_split(config.data, "train", tasks, config.data.train_samples)
    priors, stds = fit_label_stats(torch.utils.data.DataLoader(data, batch_size=4), tasks)
    depths = torch.cat([target["depth_zbuffer"][mask["depth_zbuffer"].bool()] for _, target, mask in data])
    assert set(stds) == {"depth_zbuffer"}  # classification heads are not scaled
    assert float(stds["depth_zbuffer"]) == pytest.approx(float(depths.double().std(unbiased=False)), rel=1e-4)
    assert float(priors["depth_zbuffer"]) == pytest.approx(float(depths.double().mean()), rel=1e-5)

    torch.manual_seed(0)
    model = build_model(config.encoder, list(config.tasks), plugins)
    init_heads_at_prior(model, priors, stds)
    model.eval()
    images = torch.stack([data[i][0] for i in range(4)])
    with torch.no_grad():
        out, raw = model(images), model.decoders["depth_zbuffer"](model.encoder(images * 2 - 1))
    assert list(model.label_scales) == ["depth_zbuffer"] and isinstance(model.label_scales["depth_zbuffer"], LabelScale)
    assert float(out["depth_zbuffer"].mean()) == pytest.approx(float(priors["depth_zbuffer"]),
                                                              abs=0.5 * float(stds["depth_zbuffer"]))
    assert abs(float(raw.mean())) < 0.5  # the head itself predicts the standardised label, about 0
    assert torch.allclose(out["depth_zbuffer"], priors["depth_zbuffer"] + stds["depth_zbuffer"] * raw)
    assert torch.allclose(out["segment_semantic"].mean((0, 2, 3)), priors["segment_semantic"], atol=0.3)

    _rows(config, trial.id, tmp_path / "r", plugins)
    weights = tmp_path / "r" / "checkpoints" / f"{trial.id}.safetensors"
    loaded = load_checkpoint(weights).eval()
    assert list(loaded.label_scales) == ["depth_zbuffer"]
    assert float(loaded.label_scales["depth_zbuffer"].std) == pytest.approx(float(stds["depth_zbuffer"]), rel=1e-5)
    with torch.no_grad():
        head = loaded.decoders["depth_zbuffer"](loaded.encoder(images * 2 - 1))
        assert torch.equal(loaded(images)["depth_zbuffer"], loaded.label_scales["depth_zbuffer"](head))


def test_a_checkpoint_says_what_it_is_and_follows_the_umask(tmp_path, plugins):
    """The sidecar JSON of a checkpoint copied away from its database still gives the image size,
    weighting, epochs and versions; both files are as group-readable as the umask allows."""
    import json
    import os

    from mtbench import __version__

    trial = load_grid_text(grid_text(1, None), tmp_path / "grid.toml", plugins).train_trials[0]
    previous = os.umask(0o027)
    try:
        _rows(trial.config, trial.id, tmp_path / "r", plugins)
    finally:
        os.umask(previous)
    weights = tmp_path / "r" / "checkpoints" / f"{trial.id}.safetensors"
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert {k: sidecar[k] for k in ("image_size", "weighting", "epochs", "head_init")} == {
        "image_size": 32, "weighting": "uniform", "epochs": 1, "head_init": "upstream"}
    assert sidecar["versions"]["mtbench"] == __version__ and sidecar["versions"]["torch"]
    assert sidecar["encoder"] == "resnet18" and sidecar["tasks"] == ["depth_zbuffer"]
    assert {oct(p.stat().st_mode & 0o777) for p in (weights, weights.with_suffix(".json"))} == {oct(0o640)}
