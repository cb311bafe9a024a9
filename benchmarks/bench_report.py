"""Report speed on a large database: 100k trials and about 1M metric rows.

Goal: `mtbench report` (the default leaderboard + models view) prints in under 2 s. The database is
built once with made-up results (``mtbench.storage.fixture``) and kept under --db for reruns.

    python benchmarks/bench_report.py [--models 10000] [--attacks-per-model 9] [--db /tmp/mtbench-bench.db]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mtbench.storage import Store
from mtbench.storage.fixture import ResultsWriter

TASKS = {"s": "segment_semantic", "d": "depth_zbuffer", "D": "depth_euclidean", "n": "normal", "E": "edge_occlusion"}


def build(db: Path, n_models: int, attacks_per_model: int) -> None:
    rng = random.Random(0)
    w = ResultsWriter(Store(f"sqlite:///{db}"))
    codes = list(TASKS)
    for i in range(n_models):
        main, aux = rng.sample(codes, 2)
        tasks = {main: TASKS[main], aux: TASKS[aux]}
        model = w.add_model(tasks, {c: rng.random() for c in tasks}, const_err={c: 1.0 for c in tasks},
                            encoder=rng.choice(["resnet18", "resnet50", "xception"]), seed=i % 3,
                            weighting=rng.choice(["uniform", "optimal"]), epochs=rng.choice([10, 20]))
        for a in range(attacks_per_model):
            targets = [main, main + aux, aux][a % 3]
            w.add_attack(model, targets, {n: rng.random() for n in tasks.values()},
                         eps=[2 / 255, 4 / 255, 8 / 255][a // 3 % 3], steps=10,
                         trace={n: [rng.random() for _ in range(3)] for n in tasks.values()})
        if i % 1000 == 999:
            w.flush()
    w.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--attacks-per-model", type=int, default=9)
    ap.add_argument("--db", type=Path, default=Path("/tmp/mtbench-bench-report.db"))
    args = ap.parse_args()
    if not args.db.exists():
        t0 = time.perf_counter()
        build(args.db, args.models, args.attacks_per_model)
        print(f"built {args.db} in {time.perf_counter() - t0:.1f}s")
    with sqlite3.connect(args.db) as c:
        n_trials = c.execute("select count(*) from trials").fetchone()[0]
        n_metrics = c.execute("select count(*) from metrics").fetchone()[0]
    print(f"{n_trials:,} trials, {n_metrics:,} metric rows")
    for label, extra in (("default view", []), ("leaderboard, --targets all, csv", ["--targets", "all", "--format",
                                                                                  "csv", "--view", "leaderboard"])):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "mtbench.cli", "report", str(args.db), *extra],
                                    capture_output=True, text=True)
            best = min(best, time.perf_counter() - t0)
            assert result.returncode == 0, result.stderr
        print(f"mtbench report ({label}): {best:.2f}s wall, whole process, best of 3 (goal < 2 s)")


if __name__ == "__main__":
    main()
