"""Learnability of the built-in data: each trained model's clean test error over its constant predictor's.

Runs a grid (``examples/learnability.toml`` by default: one single-task ResNet18 per Taskonomy task at
64 px; ``--quickstart``: the README's main job) in a fresh results folder, times it, then prints one row
per (model, task): the clean error on the test split, the error of the task's best constant predictor
(the majority class, or the mean label, fitted on the training split), their ratio and whether the
goal is met. Goals (issue #21): the learnability grid, every ratio <= 0.75; the quickstart, every
ratio <= 0.6 and segmentation's (dataset-level 1 - mIoU) <= 0.75. The exit status is 1 if one is
missed. ``--markdown`` prints the table as docs/data.md shows it.

    python benchmarks/bench_learnability.py [--quickstart] [--out DIR] [--no-run] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEGMENTATION = "segment_semantic"


def goal(task: str, quickstart: bool) -> float:
    """The largest clean error / constant error ratio that counts as learnt."""
    return 0.75 if not quickstart or task == SEGMENTATION else 0.6


def run_grid(grid: Path, out: Path) -> float:
    """``mtbench run GRID --out OUT`` in a subprocess; its wall time in seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mtbench.cli", "run", str(grid), "--out", str(out)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"mtbench run {grid} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def rows(out: Path) -> list[dict]:
    """Per training trial and task: its codes, epochs, clean error and constant error on the test split."""
    with sqlite3.connect(out / "mtbench.db") as db:
        trials = {tid: json.loads(config) for tid, config in
                  db.execute("select id, config from trials where kind = 'train' and status = 'done'")}
        errors = db.execute("select trial_id, task, phase, value from metrics where metric = 'error' "
                            "and phase in ('clean', 'baseline')").fetchall()
    found: dict[tuple[str, str], dict[str, float]] = {}
    for tid, task, phase, value in errors:
        if tid in trials:
            found.setdefault((tid, task), {})[phase] = value
    table = []
    for (tid, task), values in found.items():
        config = trials[tid]
        code = config["codes"][config["tasks"].index(task)]
        table.append({"model": "".join(config["codes"]), "task": task, "code": code, "epochs": config["epochs"],
                      "train_samples": config["data"]["train_samples"], "clean": values["clean"],
                      "constant": values["baseline"], "ratio": values["clean"] / values["baseline"]})
    return sorted(table, key=lambda r: (len(r["model"]), r["model"], r["code"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quickstart", action="store_true", help="the README's main job instead of the learnability grid")
    ap.add_argument("--grid", type=Path, help="another grid (goals as for the learnability grid)")
    ap.add_argument("--out", type=Path, help="results folder (default: a temporary one)")
    ap.add_argument("--no-run", action="store_true", help="read --out as it is, run nothing")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = ap.parse_args()
    grid = args.grid or REPO / "examples" / ("quickstart.toml" if args.quickstart else "learnability.toml")
    with tempfile.TemporaryDirectory(prefix="bench-learnability-") as tmp:
        out = args.out or Path(tmp) / "results"
        if args.no_run:
            if not (out / "mtbench.db").exists():
                sys.exit(f"{out}: no mtbench.db to read (--no-run reads a finished --out)")
            wall = None
        else:
            print(f"running {grid.relative_to(REPO) if grid.is_relative_to(REPO) else grid} into {out} "
                  f"({os.cpu_count()} cores) ...", flush=True)
            wall = run_grid(grid, out)
        table = rows(out)
    if not table:
        sys.exit(f"{out}: no finished training trial")
    missed = [r for r in table if r["ratio"] > goal(r["task"], args.quickstart)]
    if args.markdown:
        print("| model | task | clean error | constant's | ratio | goal |")
        print("|---|---|---:|---:|---:|---|")
        for r in table:
            mark = "met" if r["ratio"] <= goal(r["task"], args.quickstart) else "**missed**"
            print(f"| {r['model']} | {r['code']}: {r['task']} | {r['clean']:.4g} | {r['constant']:.4g} | "
                  f"{r['ratio']:.2f} | <= {goal(r['task'], args.quickstart)}: {mark} |")
    else:
        print(f"{'model':8} {'task':22} {'clean':>9} {'constant':>9} {'ratio':>6}  goal")
        for r in table:
            ok = r["ratio"] <= goal(r["task"], args.quickstart)
            print(f"{r['model']:8} {r['task']:22} {r['clean']:9.4g} {r['constant']:9.4g} {r['ratio']:6.2f}  "
                  f"<= {goal(r['task'], args.quickstart)} {'met' if ok else 'MISSED'}")
    epochs = sorted({(r["epochs"], r["train_samples"]) for r in table})
    print(f"{len({r['model'] for r in table})} model(s), {epochs[0][0]} epochs of {epochs[0][1]} samples"
          + (f", {wall:.0f} s wall" if wall is not None else "")
          + f"; errors: 1 - dataset mIoU for {SEGMENTATION}, the task's error metric otherwise")
    print(f"goals: {len(table) - len(missed)} of {len(table)} met" + ("; missed: "
          + ", ".join(f"{r['model']}/{r['code']} {r['ratio']:.2f}" for r in missed) if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
