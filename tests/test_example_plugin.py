"""The example third-party distribution under examples/plugins: pip-install it, see it in
`mtbench plugins`, run its own tests and a grid that uses its task, attack and defence (with no change
to mtbench), uninstall it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from helpers import REPO, run_cli

EXAMPLE = REPO / "examples" / "plugins" / "mtbench-extras"


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture
def installed_example():
    result = pip("install", "--no-deps", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    try:
        yield
    finally:
        assert pip("uninstall", "-y", "mtbench-extras").returncode == 0


def test_example_plugin_end_to_end(installed_example, tmp_path):
    listing = run_cli("plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    provided = {(r["kind"], r["name"]): r["provider"] for r in rows}
    assert provided[("task", "colorization")] == provided[("attack", "mi-fgsm")] == "mtbench-extras 0.1.0"
    assert provided[("defense", "noise-at")] == "mtbench-extras 0.1.0"

    own_tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                               capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr

    out = tmp_path / "results"
    run = run_cli("run", str(EXAMPLE / "grid.toml"), "--out", str(out))
    assert run.returncode == 0, run.stderr
    # four models (c and cd, each without and with noise-at); mi-fgsm on c, and on c and on d of each cd model;
    # and, since the grid trains a defence, APGD and the ensemble on each model's main task (the masking check)
    assert "18 trial(s) run" in run.stderr
    with sqlite3.connect(out / "mtbench.db") as c:
        defenses = [json.loads(cfg)["defense"]["name"] for cfg, in c.execute(
            "select config from trials where kind = 'train' and status = 'done'")]
    assert sorted(defenses) == ["noise-at", "noise-at", "none", "none"]
    report = json.loads(run_cli("report", "--out", str(out), "--view", "attacks", "--format", "json").stdout)
    attacks = next(v for k, v in report.items() if k.startswith("Attacks"))
    assert {r["attack"] for r in attacks} == {"mi-fgsm", "apgd-linf", "ensemble-linf"} and any("v_c" in r
                                                                                               for r in attacks)


def test_without_the_example_its_names_are_unknown(tmp_path):
    grid = (EXAMPLE / "grid.toml").read_text()
    path = tmp_path / "grid.toml"
    path.write_text(grid)
    result = run_cli("run", str(path), "--out", str(tmp_path / "r"), "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mi-fgsm" in result.stderr and "noise-at" in result.stderr
