"""Leaderboards: trained models with their clean errors, and attacks with relative task vulnerability."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtbench.errors import MtbenchError


@dataclass
class Tables:
    trials: list[dict[str, Any]]
    models: list[dict[str, Any]]
    metrics: list[dict[str, Any]]


def load_tables(source: str) -> Tables:
    """``source``: a database URL, a SQLite file, a results folder, or a Parquet folder."""
    path = Path(source)
    if path.is_dir() and (path / "trials.parquet").is_file():
        from mtbench.storage.parquet import read_parquet

        return Tables(*(read_parquet(path, name) for name in ("trials", "models", "metrics")))
    if path.is_dir() and (path / "mtbench.db").is_file():
        source = f"sqlite:///{path / 'mtbench.db'}"
    elif "://" not in source:
        if not path.is_file():
            raise MtbenchError(f"{source}: no database or Parquet folder here (run `mtbench run` first, or pass --db)")
        source = f"sqlite:///{path}"
    from mtbench.storage import Store

    store = Store(source)
    return Tables(*(store.table_rows(name) for name in ("trials", "models", "metrics")))


def _index(metrics: list[dict[str, Any]]) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for m in metrics:
        out[m["trial_id"]][(m["phase"], m["task"], m["metric"])] = m["value"]
    return out


def model_rows(t: Tables, encoder: str | None = None, task: str | None = None) -> list[dict[str, Any]]:
    """One row per trained model: its clean error per task, parameters, MACs."""
    configs = {r["id"]: json.loads(r["config"]) for r in t.trials if r["kind"] == "train" and r["status"] == "done"}
    by_trial = _index(t.metrics)
    rows = []
    for m in t.models:
        cfg = configs.get(m["trial_id"])
        if cfg is None or (encoder and cfg["encoder"] != encoder) or (task and not _has_task(cfg, task)):
            continue
        row = {"model": model_name(cfg), "id": m["trial_id"][:6], "epochs": cfg["epochs"],
               "params_M": round(m["parameters"] / 1e6, 2), "MACs_G": round(m["macs"] / 1e9, 3)}
        for name, code in zip(cfg["tasks"], cfg["codes"]):
            row[f"err_{code}"] = by_trial[m["trial_id"]].get(("clean", name, "error"))
            row[f"const_{code}"] = by_trial[m["trial_id"]].get(("baseline", name, "error"))
        rows.append(row)
    return sorted(rows, key=lambda r: r["model"])


def model_name(cfg: dict) -> str:
    """``resnet18/sd/uniform``: encoder, task codes (main task first), weighting."""
    return f"{cfg.get('encoder')}/{''.join(cfg.get('codes', []))}/{cfg.get('weighting')}"


def attack_rows(t: Tables, encoder: str | None = None, task: str | None = None, attack: str | None = None,
                eps: float | None = None, metric: str = "rel_vuln_ratio_of_means") -> list[dict[str, Any]]:
    """One row per attack trial: the relative vulnerability of every task (attacked ones marked *)."""
    configs = {r["id"]: json.loads(r["config"]) for r in t.trials}
    suspect = {r["id"]: bool(r.get("suspect")) for r in t.trials}
    by_trial = _index(t.metrics)
    rows = []
    for r in t.trials:
        if r["kind"] != "attack" or r["status"] != "done":
            continue
        cfg = configs[r["id"]]
        model = configs.get(cfg["model"], {})
        if (encoder and model.get("encoder") != encoder) or (attack and cfg["attack"] != attack) \
                or (eps is not None and abs(cfg["eps"] - eps) > 1e-9) or (task and not _has_task(model, task)):
            continue
        values = by_trial[r["id"]]
        row = {"model": model_name(model), "attack": cfg["attack"], "eps": _fraction(cfg["eps"]),
               "steps": cfg["steps"], "targets": "".join(cfg["targets_codes"])}
        attacked = []
        for name, code in zip(model.get("tasks", []), model.get("codes", [])):
            v = values.get(("vulnerability", name, metric))
            row[f"v_{code}"] = v
            if name in cfg["targets"] and v is not None:
                attacked.append(v)
        row["v_attacked_mean"] = sum(attacked) / len(attacked) if attacked else None
        row["suspect"] = suspect[r["id"]]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["attack"], r["eps"], r["v_attacked_mean"] is None, r["v_attacked_mean"] or 0))


def _has_task(cfg: dict, task: str) -> bool:
    return task in cfg.get("tasks", []) or task in cfg.get("codes", [])


def _fraction(eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"
