"""Synthetic generator -> Taskonomy loader round trip, determinism, bad files, data check."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from mtbench.data import TaskonomyDataset, load_splits
from mtbench.data.synthetic import SynthConfig, generate
from mtbench.errors import DataError

ALL = "sdDnkKeEprA"


def open_all(plugins, root, split="train", size=32):
    tasks = {plugins.tasks.resolve(c): plugins.tasks.get(plugins.tasks.resolve(c)) for c in ALL}
    return TaskonomyDataset(root, load_splits(root)[split], tasks, size, cache=False)


def test_layout_and_round_trip(plugins, synth_root):
    files = sorted(p.relative_to(synth_root).as_posix() for p in synth_root.rglob("*.png"))
    assert "synth-train-000/rgb/point_0_view_0_domain_rgb.png" in files
    assert len(files) == 24 * 11  # 11 domains (the autoencoder reads rgb)
    ds = open_all(plugins, synth_root)
    assert len(ds) == 16
    image, targets, masks = ds[0]
    assert image.shape == (3, 32, 32) and image.min() >= 0 and image.max() <= 1
    for name, target in targets.items():
        spec = plugins.tasks.get(name)
        assert target.shape == (1 if spec.classification else spec.channels, 32, 32), name
        assert masks[name].shape == (1, 32, 32) and masks[name].dtype.is_floating_point is False
    assert targets["segment_semantic"].max() <= 16 and targets["segment_semantic"].min() >= 0
    assert targets["normal"].min() >= -1 and targets["normal"].max() <= 1
    assert targets["depth_euclidean"].min() >= 0 and targets["depth_euclidean"].max() <= 1
    # a window shows sky somewhere in the dataset (2 of its 24 views): invalid depth is masked out
    views = [view for split in ("train", "test") for view in open_all(plugins, synth_root, split)]
    assert any(not bool(masks["depth_euclidean"].all()) for _, _, masks in views)
    # labels are consistent with geometry: z-buffer depth never exceeds euclidean depth
    assert bool((targets["depth_zbuffer"] <= targets["depth_euclidean"] + 1e-6).all())


def test_resize_on_load(plugins, synth_root):
    image, targets, _ = open_all(plugins, synth_root, size=16)[0]
    assert image.shape == (3, 16, 16) and targets["segment_semantic"].shape == (1, 16, 16)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path):
    cfg = SynthConfig(size=16, train=4, test=0, seed=3, samples_per_building=4)
    a, b = generate(tmp_path / "a", cfg, workers=1), generate(tmp_path / "b", cfg, workers=2)
    assert _digest(a) == _digest(b)
    c = generate(tmp_path / "c", SynthConfig(size=16, train=4, test=0, seed=4, samples_per_building=4), workers=1)
    assert _digest(c) != _digest(a)


@pytest.fixture
def broken_copy(synth_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    return root


def png_path(root, domain, b="synth-train-000", p=0, v=0):
    return root / b / domain / f"point_{p}_view_{v}_domain_{domain}.png"


def test_corrupt_png_names_file(plugins, broken_copy):
    path = png_path(broken_copy, "normal")
    path.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{path}: not a readable PNG"):
        open_all(plugins, broken_copy)[0]


def test_wrong_bit_depth_names_file(plugins, broken_copy):
    path = png_path(broken_copy, "depth_zbuffer")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    with pytest.raises(DataError, match=f"{path}: expected a 16-bit"):
        open_all(plugins, broken_copy)[0]


def test_wrong_size_names_file(plugins, broken_copy):
    path = png_path(broken_copy, "reshading")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path)
    with pytest.raises(DataError, match=f"{path}: size 16x16 differs"):
        open_all(plugins, broken_copy)[0]


def test_missing_file_names_sample(plugins, broken_copy):
    png_path(broken_copy, "keypoints3d").unlink()
    with pytest.raises(DataError, match="point 0 view 0 lacks domain.*keypoints3d"):
        open_all(plugins, broken_copy)


def test_data_check_command(broken_copy):
    ok = run_cli("data", "check", str(broken_copy))
    assert ok.returncode == 0 and "24 sample(s), 0 problem(s)" in ok.stdout
    png_path(broken_copy, "normal").write_bytes(b"junk")
    bad = run_cli("data", "check", str(broken_copy))
    assert bad.returncode == 1 and "not a readable PNG" in bad.stdout and "1 problem(s)" in bad.stdout


def test_data_check_reports_every_missing_domain(broken_copy):
    gone = [png_path(broken_copy, "normal"), png_path(broken_copy, "keypoints3d", p=1),
            png_path(broken_copy, "rgb", p=2)]
    for path in gone:
        path.unlink()
    shutil.rmtree(broken_copy / "synth-train-001" / "edge_texture")
    result = run_cli("data", "check", str(broken_copy))
    assert result.returncode == 1 and "4 problem(s)" in result.stdout, result.stdout
    for path in gone:
        assert f"problem {path}: file missing" in result.stdout
    assert f"problem {broken_copy / 'synth-train-001' / 'edge_texture'}: no edge_texture files" in result.stdout


@pytest.mark.parametrize("building", [None, "empty-building"])
def test_data_check_empty_folder_is_a_problem(tmp_path, building):
    root = tmp_path / "data"
    (root / (building or "")).mkdir(parents=True)
    result = run_cli("data", "check", str(root))
    assert result.returncode == 1 and "0 sample(s), 1 problem(s)" in result.stdout, result.stdout
    assert ("no sample files" if building else "no building folders") in result.stdout


def test_data_check_names_long_paths_whole(synth_root, tmp_path):
    """Captured output (not a terminal) keeps each long path on one line, brackets and all."""
    root = tmp_path / ("[bold]out[1]" + "x" * 120) / ("[/]" + "y" * 100) / "data"
    shutil.copytree(synth_root, root)
    path = png_path(root, "normal")
    path.write_bytes(b"junk")
    result = run_cli("data", "check", str(root), env={"COLUMNS": "80"})
    assert result.returncode == 1 and len(str(path)) > 200
    assert f"problem {path}: not a readable PNG" in result.stdout.splitlines()[-2], result.stdout
    assert f"{root}: 3 building(s)" in result.stdout.splitlines()


def test_only_needed_domains_are_read(plugins, broken_copy):
    shutil.rmtree(broken_copy / "synth-train-000" / "normal")
    shutil.rmtree(broken_copy / "synth-train-001" / "normal")
    ds = TaskonomyDataset(broken_copy, ["synth-train-000", "synth-train-001"],
                          {"depth_zbuffer": plugins.tasks.get("depth_zbuffer")}, 32)
    assert ds.domains == ["rgb", "depth_euclidean", "depth_zbuffer"] and len(ds) == 16


def write_building(root, building, points, size=2, depth=None, labels=None):
    """Real PNGs in the official layout: rgb, 16-bit depths and 8-bit labels for each (point, view 0)."""
    depth = np.zeros((size, size), np.uint16) if depth is None else depth
    labels = np.ones((size, size), np.uint8) if labels is None else labels
    arrays = {"rgb": np.zeros((size, size, 3), np.uint8), "depth_zbuffer": depth, "depth_euclidean": depth,
              "segment_semantic": labels}
    for domain, arr in arrays.items():
        (root / building / domain).mkdir(parents=True, exist_ok=True)
        for p in points:
            Image.fromarray(arr).save(root / building / domain / f"point_{p}_view_0_domain_{domain}.png")


def test_continuous_maps_resize_bilinearly_and_labels_nearest(plugins, tmp_path):
    depth = np.array([[0, 1000], [0, 1000]], np.uint16)
    labels = np.array([[2, 5], [2, 5]], np.uint8)
    write_building(tmp_path, "x", [0], depth=depth, labels=labels)
    tasks = {t: plugins.tasks.get(t) for t in ("depth_zbuffer", "segment_semantic")}
    raw = TaskonomyDataset(tmp_path, ["x"], tasks, 4, cache=False).read_raw(0)
    assert raw["depth_zbuffer"][0].tolist() == [0, 250, 750, 1000]  # Pillow's bilinear: centres at 1/4, 3/4
    assert raw["depth_zbuffer"].dtype == np.uint16
    assert raw["segment_semantic"][0].tolist() == [2, 2, 5, 5]  # a label stays a label


def test_point_split_of_one_building(plugins, tmp_path):
    """point_split = 3: points 0-2 train, 3-4 test (and val, as the original code had none)."""
    from mtbench import DataConfig
    from mtbench_tasks.datasets import open_split

    write_building(tmp_path, "x", [0, 1, 2, 3, 4])
    write_building(tmp_path, "y", [0, 1])  # another building, not used
    data = DataConfig(dataset="taskonomy", root=str(tmp_path), train_buildings=["x"], point_split=3, seed=0)
    tasks = {"depth_zbuffer": plugins.tasks.get("depth_zbuffer")}
    points = {split: [(k.building, k.point) for k in open_split(tmp_path, data, split, tasks, 2).keys]
              for split in ("train", "val", "test")}
    assert points == {"train": [("x", 0), ("x", 1), ("x", 2)], "val": [("x", 3), ("x", 4)],
                      "test": [("x", 3), ("x", 4)]}
    with pytest.raises(DataError, match=r"point id in \[9, inf\)"):
        open_split(tmp_path, data.model_copy(update={"point_split": 9}), "test", tasks, 2)
    with pytest.raises(DataError, match="one building"):
        open_split(tmp_path, data.model_copy(update={"train_buildings": ["x", "y"]}), "train", tasks, 2)


def test_data_show_draws_samples_by_domain(synth_root, tmp_path):
    """One row per sample, one column for rgb and one per task, decoded by the tasks: the segmentation
    panel holds the colours of the classes in the labels, masked pixels are magenta."""
    from mtbench.data.show import CLASS_COLOURS, DPI, PANEL_INCHES

    out = tmp_path / "show.png"
    result = run_cli("data", "show", str(synth_root), "--out", str(out), "--samples", "8", "--tasks", "sdn",
                     "--split", "test")  # the test split: the 8 samples of synth-test-000
    assert result.returncode == 0, result.stderr
    assert "8 sample(s) x 4 column(s) (rgb, segment_semantic, depth_zbuffer, normal)" in result.stdout
    with Image.open(out) as img:
        assert img.size == (round(4 * PANEL_INCHES * DPI), round((8 * PANEL_INCHES + 0.35) * DPI))
        pixels = {tuple(p) for p in np.asarray(img.convert("RGB")).reshape(-1, 3)}
    labels = {int(v) for p in (synth_root / "synth-test-000" / "segment_semantic").glob("*.png")
              for v in np.unique(np.asarray(Image.open(p)))}
    shown = {c - 1 for c in labels if c >= 2} | ({0} if 1 in labels else set())
    drawn = np.array(sorted(pixels), dtype=int)

    def is_drawn(colour: np.ndarray) -> bool:  # matplotlib may round a channel the other way
        return bool((np.abs(drawn - colour * 255).max(1) <= 1).any())

    assert len(shown) >= 2 and all(is_drawn(CLASS_COLOURS[c]) for c in shown), shown
    assert not is_drawn(CLASS_COLOURS[16])  # the class of label 17 (vase) is in no test label of this seed
    assert (255, 0, 255) in pixels  # uncertain labels and sky: masked


def test_data_show_refuses_a_missing_folder(tmp_path):
    result = run_cli("data", "show", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2 and "dataset folder does not exist" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.png").exists()


def test_a_generated_dataset_follows_the_umask(tmp_path):
    """On a shared cluster a group reads the data: the folder is not left private as mkdtemp makes it."""
    import os

    previous = os.umask(0o027)
    try:
        root = generate(tmp_path / "data", SynthConfig(size=16, train=2, test=0, seed=0), workers=1)
    finally:
        os.umask(previous)
    assert root.stat().st_mode & 0o777 == 0o750
    image = next(root.glob("*/rgb/*.png"))
    assert image.stat().st_mode & 0o777 == 0o640 and image.parent.stat().st_mode & 0o777 == 0o750
