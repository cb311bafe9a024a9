"""``--set KEY=VALUE``: keys and values as written on the command line, the TOML written back, and
the effective grid as the run validates, expands and stores it (the user's file unchanged)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import tomllib
from pathlib import Path

import pytest
from helpers import REPO, TINY_GRID, run_cli

from mtbench.errors import ConfigError
from mtbench.overrides import apply_overrides, override_text, parse_key, parse_value, render_toml

GRID = TINY_GRID.format(task_sets='["s"]')


@pytest.mark.parametrize("key, parts", [("train.epochs", ["train", "epochs"]), ("attack[0].eps", ["attack", 0, "eps"]),
                                        ("train.weighting[1].d", ["train", "weighting", 1, "d"]),
                                        ("a[2][3]", ["a", 2, 3])])
def test_keys_as_grid_errors_print_them(key, parts):
    assert parse_key(key) == parts


@pytest.mark.parametrize("key", ["train..epochs", "attack[x].eps", "train.ep ochs", "[0]", "attack.[0]"])
def test_malformed_keys_are_refused(key):
    with pytest.raises(ValueError, match="expected a key such as"):
        parse_key(key)


@pytest.mark.parametrize("text, value", [("2", 2), ("1e-3", 0.001), ("true", True), ('"x y"', "x y"),
                                         ('["s", "d"]', ["s", "d"]), ("{a = 'b'}", {"a": "b"}),
                                         ("sgd", "sgd"), ("8/255", "8/255"), ("my run", "my run"), ("", ""),
                                         ("2\nother = 3", "2\nother = 3")])  # one value, never a second key
def test_values_are_toml_else_text(text, value):
    assert parse_value(text) == value


def test_overrides_change_nest_create_and_append():
    raw = tomllib.loads(GRID)
    done = apply_overrides(raw, ["train.epochs=2", "train.epochs=3", "attack[0].eps=[0.01]", "executor.cpus=2",
                                 "attack[1].name=pgd-l2", "train.weighting=[{d = 1000}]", "train.weighting[0].s=1"])
    assert done["train"]["epochs"] == 3  # the later one wins
    assert done["attack"][0]["eps"] == [0.01] and done["attack"][1] == {"name": "pgd-l2"}
    assert done["executor"] == {"cpus": 2}
    assert done["train"]["weighting"] == [{"d": 1000, "s": 1}]
    assert raw == tomllib.loads(GRID)  # the parsed file itself is left as it was


@pytest.mark.parametrize("spec, words", [("train.epochs.x=1", "train.epochs is a value (2), not a table"),
                                         ("attack[3].eps=1", "attack has 1 entry: [3] is out of range"),
                                         ("train[0]=1", "train is a table, not an array"),
                                         ("attack.eps=1", "attack is an array"),
                                         ("train.epochs", "expected KEY=VALUE")])
def test_overrides_that_cannot_apply_name_the_key(spec, words):
    with pytest.raises(ConfigError) as caught:
        apply_overrides(tomllib.loads(GRID), ["train.epochs=2", spec])
    ((where, message),) = caught.value.problems
    assert where == f"--set {spec.partition('=')[0]}" and words in message


def test_toml_written_back_reads_the_same():
    """Every example grid, and the value types grids may hold, read back equal from render_toml."""
    for path in sorted((REPO / "examples").rglob("*.toml")):
        raw = tomllib.loads(path.read_text())
        assert tomllib.loads(render_toml(raw)) == raw, path
    tricky = {"top": 1, "name": 'quote " backslash \\ newline \n tab \t del \x7f bell \x07 caf\xe9 \u2603',
              "floats": [0.1, 1e-300, 1e300, -0.0, float("inf"), -float("inf"), 2.0], "big": 2**62, "no": False,
              "t": {"key with space": 1, "dotted.key": {"inner": [1, [2, "x"]]}, "empty": {}, "arr": []},
              "when": dt.date(2024, 1, 2), "at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
              "tables": [{"a": 1, "nested": {"b": [{"c": 2}]}}, {"a": 2}], "mixed": [{"a": 1}, 2]}
    assert tomllib.loads(render_toml(tricky)) == tricky


def test_effective_text_lists_its_overrides_and_is_the_text_without_any():
    assert override_text(GRID, [], Path("g.toml")) == GRID
    text = override_text(GRID, ["train.epochs=2", 'run.name="a\\tb"', "data.root=c\nd"], Path("g.toml"))
    assert text.startswith("# g.toml with 3 override(s)") and "#   --set train.epochs=2\n" in text
    assert "#   --set data.root=c\\u000ad\n" in text  # a newline would end the comment
    grid = tomllib.loads(text)
    assert grid["train"]["epochs"] == 2 and grid["run"]["name"] == "a\tb" and grid["data"]["root"] == "c\nd"


def plan(grid: Path, out: Path, *overrides: str) -> dict:
    result = run_cli("run", str(grid), "--out", str(out), "--dry-run", "--no-calibrate", "--format", "json",
                     *(a for o in overrides for a in ("--set", o)))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_dry_run_shows_the_overridden_trials(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    plain = plan(tmp_path / "grid.toml", tmp_path / "r")
    changed = plan(tmp_path / "grid.toml", tmp_path / "r", "train.epochs=2", 'train.task_sets=["s", "d"]',
                   "attack[0].eps=[0.01]")
    assert [t["config"]["epochs"] for t in plain["trials"] if t["kind"] == "train"] == [1]
    train = [t["config"] for t in changed["trials"] if t["kind"] == "train"]
    assert [c["epochs"] for c in train] == [2, 2] and sorted(c["tasks"] for c in train) == [["depth_zbuffer"],
                                                                                          ["segment_semantic"]]
    assert {t["config"]["eps"] for t in changed["trials"] if t["kind"] == "attack"} == {0.01}
    assert (tmp_path / "grid.toml").read_text() == GRID and not (tmp_path / "r").exists()  # a dry run writes nothing


@pytest.mark.parametrize("overrides, words", [
    (["train.epochz=2"], ["grid.toml: train.epochz (from --set): unknown key"]),
    (["train.epochs=two"], ["train.epochs (from --set)", "valid integer"]),
    (["train.epochs=2", "attack[0].steps=[1, 2"], ["attack[0].steps (from --set)"]),
    (["data.image_size=32", "train.encoders=[\"resnet9\"]"], ["train.encoders", "resnet9"]),
    (["attack[4].eps=1"], ["--set attack[4].eps", "out of range"]),
    (["nokey"], ["--set nokey", "expected KEY=VALUE"]),
])
def test_bad_overrides_exit_2_naming_the_key(tmp_path, overrides, words):
    (tmp_path / "grid.toml").write_text(GRID)
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "r"), "--dry-run",
                     *(a for o in overrides for a in ("--set", o)))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert all(w in result.stderr for w in words), result.stderr


def test_the_run_stores_the_effective_grid_and_keeps_the_file(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    out = tmp_path / "r"
    result = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(out), "--set", "attack[0].steps=1",
                     "--set", "run.name=overridden")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(out / "mtbench.db") as c:
        (grid_path, text), = c.execute("select grid_path, grid_text from runs").fetchall()
        configs = [json.loads(r) for r, in c.execute("select config from trials where kind = 'attack'")]
    assert grid_path == str(tmp_path / "grid.toml") and "--set attack[0].steps=1" in text
    assert tomllib.loads(text)["attack"][0]["steps"] == 1 and tomllib.loads(text)["run"]["name"] == "overridden"
    assert [c["steps"] for c in configs] == [1]
    assert (tmp_path / "grid.toml").read_text() == GRID
    (effective,) = (out / "grids").glob("grid-*.toml")  # what other workers would have read
    assert effective.read_text() == text
    again = run_cli("run", str(tmp_path / "grid.toml"), "--out", str(out), "--set", "attack[0].steps=1",
                    "--set", "run.name=overridden")
    assert again.returncode == 0 and "0 trial(s) run, 2 already done" in again.stderr, again.stderr
    assert list((out / "grids").glob("*.toml")) == [effective]  # the same overrides, the same file


def test_worker_takes_set_only_with_a_grid_file(tmp_path):
    result = run_cli("worker", "--out", str(tmp_path / "r"), "--set", "train.epochs=2")
    assert result.returncode == 2 and "--set: give the grid file too" in result.stderr, result.stderr
