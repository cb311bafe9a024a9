"""Learnability of the built-in data: each trained model's clean test error over its constant predictor's.

Runs a grid (``examples/learnability.toml`` by default: one single-task ResNet18 per Taskonomy task at
64 px; ``--quickstart``: the README's main job) in a fresh results folder, times it, then prints one row
per (model, task, training seed): the clean error on the test split, the error of the task's best
constant predictor (the majority class, or the mean label, fitted on the training split), their ratio
and whether the goal is met. Goals (issue #21): the learnability grid, every ratio <= 0.75; the
quickstart, every ratio <= 0.6 and segmentation's (dataset-level 1 - mIoU) <= 0.75. The exit status is
1 if one is missed. ``--markdown`` prints the table as docs/data.md shows it.

One run's ratio moves by about +-0.1 with the training seed, so a goal judged on one run passes or fails
by chance near its line. ``--set train.seeds=[0,1,2,3]`` (any ``mtbench run --set``) trains each model
from several seeds on the same data; the table then has a row per seed and a line per (model, task)
with the mean and the range of its ratios. ``--curve`` adds each model's ratio at every validated epoch
(``--set train.val_every=5``; a grid without a val split validates on the test split, the same yardstick):
how many epochs a task needs.

    python benchmarks/bench_learnability.py [--quickstart] [--set KEY=VALUE ...] [--workers N] [--curve]
                                            [--out DIR] [--no-run] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEGMENTATION = "segment_semantic"


def goal(task: str, quickstart: bool) -> float:
    """The largest clean error / constant error ratio that counts as learnt."""
    return 0.75 if not quickstart or task == SEGMENTATION else 0.6


def run_grid(grid: Path, out: Path, overrides: Sequence[str] = (), workers: int = 1) -> float:
    """``mtbench run GRID --out OUT [--set ...] [--workers N]`` in a subprocess; its wall time in seconds."""
    command = [sys.executable, "-m", "mtbench.cli", "run", str(grid), "--out", str(out), "--workers", str(workers)]
    for override in overrides:
        command += ["--set", override]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"mtbench run {grid} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _trials(db: sqlite3.Connection) -> dict[str, dict]:
    """Finished training trials: id -> {config, setting (id), model}. A model is named by its task codes,
    followed by its setting id's first characters where the database holds it in several settings."""
    found = {tid: {"config": json.loads(config), "setting": setting} for tid, config, setting in
             db.execute("select id, config, setting_id from trials where kind = 'train' and status = 'done'")}
    settings_of: dict[str, set[str]] = {}
    for trial in found.values():
        settings_of.setdefault("".join(trial["config"]["codes"]), set()).add(trial["setting"])
    for trial in found.values():
        codes = "".join(trial["config"]["codes"])
        trial["model"] = codes if len(settings_of[codes]) == 1 else f"{codes} [{trial['setting'][:6]}]"
    return found


def _names(trial: dict, task: str) -> dict:
    config = trial["config"]
    return {"model": trial["model"], "task": task, "code": config["codes"][config["tasks"].index(task)],
            "seed": config["seed"], "size": len(config["codes"])}


def rows(out: Path) -> list[dict]:
    """Per training trial and task: its codes, seed, epochs, clean error and constant error on the test split."""
    with sqlite3.connect(out / "mtbench.db") as db:
        trials = _trials(db)
        errors = db.execute("select trial_id, task, phase, value from metrics where metric = 'error' "
                            "and phase in ('clean', 'baseline')").fetchall()
    found: dict[tuple[str, str], dict[str, float]] = {}
    for tid, task, phase, value in errors:
        if tid in trials:
            found.setdefault((tid, task), {})[phase] = value
    table = []
    for (tid, task), values in found.items():
        config = trials[tid]["config"]
        table.append({**_names(trials[tid], task), "epochs": config["epochs"],
                      "train_samples": config["data"]["train_samples"], "clean": values["clean"],
                      "constant": values["baseline"], "ratio": values["clean"] / values["baseline"]})
    return sorted(table, key=lambda r: (r["size"], r["model"], r["code"], r["seed"]))


def curve(out: Path) -> dict[tuple[str, str], dict[int, list[float]]]:
    """(model, task code) -> epoch -> the ratios of its seeds at that epoch's validation,
    where the validation ran on the test split (a grid without a val split): the final row's yardstick."""
    from mtbench.plugins import get_plugins

    tasks = get_plugins().tasks
    with sqlite3.connect(out / "mtbench.db") as db:
        trials = _trials(db)
        baseline = {(tid, task): value for tid, task, value in db.execute(
            "select trial_id, task, value from metrics where phase = 'baseline' and metric = 'error'")}
        validated = db.execute("select trial_id, task, metric, step, value from metrics where phase = 'val' "
                               "and split = 'test'").fetchall()
    found: dict[tuple[int, str, str], dict[int, list[float]]] = {}
    for tid, task, metric, epoch, value in validated:
        # validation stores each metric by its own name; the task's error metric is the clean phase's "error"
        if tid in trials and (tid, task) in baseline and task in tasks and metric == tasks.get(task).error_metric:
            names = _names(trials[tid], task)
            found.setdefault((names["size"], names["model"], names["code"]), {}).setdefault(epoch, []).append(
                value / baseline[(tid, task)])
    return {(model, code): per_epoch for (_, model, code), per_epoch in sorted(found.items())}


def by_model(table: list[dict]) -> dict[tuple[str, str, str], list[float]]:
    """(model, task code, task) -> the ratios of its seeds. A model is one setting (see ``_trials``): only
    its seeds are pooled, never two settings (another encoder, lr, ...) of the same tasks."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in table:
        groups.setdefault((r["model"], r["code"], r["task"]), []).append(r["ratio"])
    return groups


def print_table(table: list[dict], quickstart: bool, markdown: bool) -> None:
    seeds = len({r["seed"] for r in table}) > 1
    w = max(8, *(len(r["model"]) for r in table))
    seed_head = ("seed",) if seeds else ()
    if markdown:
        print("| " + " | ".join(("model", "task", *seed_head, "clean error", "constant's", "ratio", "goal")) + " |")
        print("|---|---|" + ("---:|" if seeds else "") + "---:|---:|---:|---|")
    else:
        print(f"{'model':{w}} {'task':22} " + ("seed " if seeds else "")
              + f"{'clean':>9} {'constant':>9} {'ratio':>6}  goal")
    for r in table:
        target = goal(r["task"], quickstart)
        ok = r["ratio"] <= target
        if markdown:
            cells = (r["model"], f"{r['code']}: {r['task']}", *((str(r["seed"]),) if seeds else ()),
                     f"{r['clean']:.4g}", f"{r['constant']:.4g}", f"{r['ratio']:.2f}",
                     f"<= {target}: {'met' if ok else '**missed**'}")
            print("| " + " | ".join(cells) + " |")
        else:
            print(f"{r['model']:{w}} {r['task']:22} " + (f"{r['seed']:4} " if seeds else "")
                  + f"{r['clean']:9.4g} {r['constant']:9.4g} {r['ratio']:6.2f}  "
                  + f"<= {target} {'met' if ok else 'MISSED'}")


def print_means(table: list[dict], quickstart: bool, markdown: bool) -> None:
    """Per (model, task), the mean and range of its seeds' ratios; only where a model has several seeds."""
    groups = {key: ratios for key, ratios in by_model(table).items() if len(ratios) > 1}
    if not groups:
        return
    w = max(8, *(len(model) for model, _, _ in groups))
    print()
    if markdown:
        print("| model | task | seeds | mean ratio | range | goal on the mean |")
        print("|---|---|---:|---:|---|---|")
    else:
        print(f"{'model':{w}} {'task':22} seeds  mean  range        goal on the mean")
    for (model, code, task), ratios in groups.items():
        target, mean = goal(task, quickstart), statistics.fmean(ratios)
        ok = mean <= target
        if markdown:
            print(f"| {model} | {code}: {task} | {len(ratios)} | {mean:.2f} | {min(ratios):.2f}-{max(ratios):.2f} | "
                  f"<= {target}: {'met' if ok else '**missed**'} |")
        else:
            print(f"{model:{w}} {task:22} {len(ratios):5} {mean:5.2f}  {min(ratios):.2f}-{max(ratios):.2f}    "
                  f"<= {target} {'met' if ok else 'MISSED'}")


def print_curve(found: dict[tuple[str, str], dict[int, list[float]]], markdown: bool) -> None:
    """Ratio (mean over the model's seeds) at each validated epoch, one row per (model, task)."""
    print()
    if not found:
        print("no validation on the test split to draw a curve from (--set train.val_every=K, and no val split)")
        return
    epochs = sorted({e for per_epoch in found.values() for e in per_epoch})
    w = max(8, *(len(model) for model, _ in found))
    if markdown:
        print("| model | task | " + " | ".join(f"epoch {e}" for e in epochs) + " |")
        print("|---|---|" + "---:|" * len(epochs))
    else:
        print("ratio at each validated epoch (mean over seeds):")
        print(f"{'model':{w}} {'task':5} " + " ".join(f"{e:>6}" for e in epochs))
    for (model, code), per_epoch in found.items():
        cells = [f"{statistics.fmean(per_epoch[e]):.2f}" if e in per_epoch else "-" for e in epochs]
        if markdown:
            print(f"| {model} | {code} | " + " | ".join(cells) + " |")
        else:
            print(f"{model:{w}} {code:5} " + " ".join(f"{c:>6}" for c in cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quickstart", action="store_true", help="the README's main job instead of the learnability grid")
    ap.add_argument("--grid", type=Path, help="another grid (goals as for the learnability grid)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="change a value of the grid, as `mtbench run --set` (repeatable), e.g. train.seeds=[0,1,2,3]")
    ap.add_argument("--workers", type=int, default=1, help="worker processes, as `mtbench run --workers`")
    ap.add_argument("--curve", action="store_true", help="also print the ratio at every validated epoch")
    ap.add_argument("--out", type=Path, help="results folder (default: a temporary one)")
    ap.add_argument("--no-run", action="store_true", help="read --out as it is, run nothing")
    ap.add_argument("--markdown", action="store_true", help="print the tables as markdown")
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
                  f"({os.cpu_count()} cores, {args.workers} worker(s)"
                  + "".join(f", --set {o}" for o in args.overrides) + ") ...", flush=True)
            wall = run_grid(grid, out, args.overrides, args.workers)
        table = rows(out)
        found = curve(out) if args.curve else {}
    if not table:
        sys.exit(f"{out}: no finished training trial")
    missed = [r for r in table if r["ratio"] > goal(r["task"], args.quickstart)]
    print_table(table, args.quickstart, args.markdown)
    print_means(table, args.quickstart, args.markdown)
    if args.curve:
        print_curve(found, args.markdown)
    budgets = sorted({(r["epochs"], r["train_samples"]) for r in table})
    seeds = sorted({r["seed"] for r in table})
    print(f"{len({r['model'] for r in table})} model(s), "
          + " or ".join(f"{epochs} epochs of {samples} samples" for epochs, samples in budgets)
          + f", training seed(s) {', '.join(map(str, seeds))}" + (f"; {wall:.0f} s wall" if wall is not None else "")
          + f"; errors: 1 - dataset mIoU for {SEGMENTATION}, the task's error metric otherwise")
    print(f"goals, run by run: {len(table) - len(missed)} of {len(table)} met" + ("; missed: "
          + ", ".join(f"{r['model']}/{r['code']}" + (f" seed {r['seed']}" if len(seeds) > 1 else "")
                      + f" {r['ratio']:.2f}" for r in missed) if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
