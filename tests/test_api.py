"""The Python API (``mtbench.run``, ``attack``, ``load_batch``, ``load_model``, ``results``): loaded lazily,
and each doing what its command does, on real tiny trials."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import REPO, TINY_GRID

import mtbench
from mtbench.errors import CheckpointError, MtbenchError
from mtbench.report.flat import RESULTS_SCHEMA


def _python(code: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)


def test_import_mtbench_and_reading_results_load_no_torch(real_results):
    code = ("import sys, mtbench\n"
            "assert 'torch' not in sys.modules, 'import mtbench loaded torch'\n"
            f"frame = mtbench.results({str(real_results)!r})\n"
            "assert 'torch' not in sys.modules, 'mtbench.results loaded torch'\n"
            "print(len(frame))")
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 0


def test_the_issues_one_liner_prints_the_flat_table(real_results):
    result = _python("import mtbench; print(mtbench.results('results').head())", cwd=real_results.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trial_id" in result.stdout and "[5 rows x" in result.stdout


def test_results_are_one_typed_frame_from_the_database_or_the_mirror(real_results):
    frame = mtbench.results(real_results)
    assert list(frame.columns) == RESULTS_SCHEMA.names
    assert str(frame["seed"].dtype) == "Int64" and str(frame["steps"].dtype) == "Int64"  # nulls keep the type
    assert str(frame["attacked"].dtype) == "boolean" and str(frame["finished_at"].dtype) == "datetime64[us, UTC]"
    mirrored = mtbench.results(real_results / "parquet")
    key = ["trial_id", "task", "metric"]
    assert frame.sort_values(key).reset_index(drop=True).equals(mirrored.sort_values(key).reset_index(drop=True))
    v = frame.query("kind == 'attack' and metric == 'error' and attacked_tasks.str.len() == 1 and attacked")
    assert v.rel_vuln.notna().all() and len(v) > 0


def _batch(real_results, tasks=("d", "s")):
    (root,) = (real_results / "data").glob("synthetic-*")
    return mtbench.load_batch(root, list(tasks), n=4, image_size=32, dataset="synthetic")


def _model(real_results, codes: str = "ds"):
    frame = mtbench.results(real_results)
    model_id = frame[(frame.kind == "train") & (frame.codes == codes)].model_id.iloc[0]
    return mtbench.load_model(real_results / "checkpoints" / f"{model_id}.safetensors")


def test_attack_stays_in_the_ball_raises_the_loss_and_repeats_with_its_seed(real_results):
    model = _model(real_results)
    images, targets, masks = _batch(real_results)
    assert images.shape == (4, 3, 32, 32) and set(targets) == {"depth_zbuffer", "segment_semantic"}
    out = mtbench.attack(model, images, targets, masks=masks, eps=8 / 255, steps=3, attacked=["d"],
                         random_start=True, seed=3)
    delta = out.adversarial - images
    assert delta.abs().max() <= 8 / 255 + 1e-6 and out.adversarial.min() >= 0 and out.adversarial.max() <= 1
    assert out.adv["depth_zbuffer"]["loss"] >= out.clean["depth_zbuffer"]["loss"]
    assert out.vulnerability("depth_zbuffer") == pytest.approx(
        (out.adv["depth_zbuffer"]["error"] - out.clean["depth_zbuffer"]["error"]) / out.clean["depth_zbuffer"]["error"])
    again = mtbench.attack(model, images, targets, masks=masks, eps=8 / 255, steps=3, attacked=["d"],
                           random_start=True, seed=3)
    assert torch.equal(again.adversarial, out.adversarial)
    assert not model.training  # left as it was found: eval, as load_model returns it


def test_attack_at_eps_0_gives_the_clean_result(real_results):
    model = _model(real_results)
    images, targets, masks = _batch(real_results)
    out = mtbench.attack(model, images, targets, masks=masks, eps=0.0, steps=2)
    assert torch.equal(out.adversarial, images)
    assert out.adv == out.clean


def test_attack_names_missing_targets(real_results):
    model = _model(real_results)
    images, targets, _ = _batch(real_results, tasks=("d",))
    with pytest.raises(MtbenchError, match=r"no targets for task\(s\) \['segment_semantic'\]"):
        mtbench.attack(model, images, targets, tasks=["d", "s"])


def test_load_model_refuses_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint missing"):
        mtbench.load_model(tmp_path / "none.safetensors")


def test_run_runs_a_grid_file_once(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(TINY_GRID.format(task_sets='["d"]'))
    summary = mtbench.run(grid, out=tmp_path / "results", quiet=True)
    assert len(summary.done) == 2 and not summary.failed  # one training, one attack
    again = mtbench.run(grid, out=tmp_path / "results", quiet=True)
    assert again.done == [] and sorted(again.skipped) == sorted(summary.done)
    assert len(mtbench.results(tmp_path / "results").query("kind == 'attack' and metric == 'error'")) == 1


def test_everything_public_is_listed():
    assert set(mtbench.API) <= set(mtbench.__all__)
    for name in mtbench.__all__:
        assert getattr(mtbench, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        mtbench.fit  # noqa: B018
    assert (REPO / "docs" / "api.md").is_file()
