"""The task-selection advisor: rank auxiliary tasks by how robust they make a main task, cheaply.

The paper's last question: instead of training every (main, auxiliary) pair on the big encoder, can
a proxy rank the candidates? Three proxies (Ghamizi et al. 2022, Table 3):

- ``surrogate``: the same pairs on a small encoder (default resnet18), full epochs, attacked;
- ``early-stop``: the target encoder trained for a fraction (``budget``) of the epochs, attacked;
- ``clean``: the target encoder's clean error of the main task with each auxiliary task.

``advise`` builds the proxy grid from a base grid (its [data], [train] and first [[attack]]), runs
what is not in the database yet, ranks the candidates with intervals (over seeds when there are
several, else a bootstrap over test samples), and with ``validate`` also runs the full-budget
trials of the k best and k worst candidates (``validate_k``; 0 = every candidate) and reports
Spearman's and Pearson's correlation between proxy and full results over EVERY candidate that has a
full-budget result in the database, with 95% bootstrap intervals over candidates. An r over the k
best and k worst only is inflated (the middle, where proxies err, is left out) and not comparable
with the paper's r over all pairs: the report says so when fewer than all candidates are paired.
The advice is stored as a trial of kind ``advice``; `mtbench report --view advice` shows it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mtbench.configs import AdviceConfig
from mtbench.defaults import ADVICE_ENCODER, DEFAULT_DATASET, PAPER_ATTACK, SURROGATE_ENCODER
from mtbench.errors import MtbenchError
from mtbench.grid import Grid, expand, load_grid
from mtbench.plugins import Plugins
from mtbench.records import MetricRow, Phase, TrialResult
from mtbench.report.frames import Frames, load_frames
from mtbench.report.leaderboard import done, metric_values, settings, varying_keys
from mtbench.settings import GridModel
from mtbench.stats import bootstrap_ci, pearson, relative_increase, spearman
from mtbench.storage import Store

PROXIES = ("surrogate", "early-stop", "clean")
ALONE = "-"  # the main task trained alone: the reference every auxiliary task is compared with
DEFAULT_BASE: dict[str, Any] = {
    "run": {"name": "advise", "seed": 0},
    "data": {"dataset": DEFAULT_DATASET, "image_size": 64, "train_samples": 256, "test_samples": 32},
    "train": {"encoders": [SURROGATE_ENCODER], "task_sets": ["s"], "epochs": 10, "batch_size": 16},
    "attack": [{"name": PAPER_ATTACK, "eps": ["8/255"], "steps": 10}],
}


@dataclass
class AdviceRequest:
    main: str  # task code
    candidates: list[str]  # task codes
    encoder: str = ADVICE_ENCODER
    proxy: str = "surrogate"
    surrogate: str = SURROGATE_ENCODER
    budget: float = 0.25  # early-stop: fraction of the epochs
    validate: bool = False
    validate_k: int = 2  # validate the k best and k worst candidates; 0: all of them


@dataclass
class Evidence:
    """One candidate's proxy (or full) value: lower is more robust (or a lower clean error)."""

    value: float
    low: float
    high: float
    seeds: int
    trials: list[str] = field(default_factory=list)


def base_settings(path: Path | None, plugins: Plugins) -> GridModel:
    return load_grid(path, plugins).settings if path else GridModel.model_validate(DEFAULT_BASE)


def settings_for(base: GridModel, req: AdviceRequest, encoder: str, epochs: int, auxiliaries: list[str],
                 attack: bool) -> GridModel:
    """A grid of the main task alone and with each auxiliary task, on one encoder, attacked on the
    main task alone (or not attacked, for the clean proxy)."""
    raw = base.model_dump()
    raw["run"]["name"] = f"advise-{req.main}-{encoder}-{epochs}ep"
    raw["train"].update(encoders=[encoder], epochs=epochs, task_sets=[req.main] + [req.main + a for a in auxiliaries])
    first = (raw.get("attack") or DEFAULT_BASE["attack"])[0]
    raw["attack"] = [{**first, "targets": [[req.main]], "source": None}] if attack else []
    return GridModel.model_validate(raw)


def run_settings(settings: GridModel, store: Store, out: Path, plugins: Plugins, console) -> None:
    from mtbench.runner import run_grid

    grid = Grid(Path(f"<{settings.run.name}>"), json.dumps(settings.model_dump(), indent=1), settings,
                expand(settings, plugins))
    summary = run_grid(grid, store, out, plugins, console, export=False)
    if summary.failed:
        raise MtbenchError(f"{len(summary.failed)} trial(s) of the advisor's grid failed: "
                           + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in summary.failed.items()))


def evidence(frames: Frames, main: str, auxiliaries: list[str], encoder: str, epochs: int, kind: str,
             attack: dict[str, Any] | None) -> dict[str, Evidence]:
    """Per auxiliary task (and ``-`` for the main task alone), the main task's vulnerability under
    ``attack`` (``kind="vulnerability"``) or its clean error (``kind="clean"``), with an interval."""
    models = [r for r in done(frames, "train", encoder=encoder, epochs=epochs).to_pylist()
              if r["codes"] and r["codes"][0] == main and (len(r["codes"]) == 1 or r["codes"][1:] in auxiliaries)
              and len(r["codes"]) <= 2]
    out: dict[str, Evidence] = {}
    by_aux: dict[str, list[dict]] = {}
    for m in models:
        by_aux.setdefault(m["codes"][1:] or ALONE, []).append(m)
    if kind == "clean":
        clean = metric_values(frames, Phase.CLEAN, "error", [m["id"] for m in models])
        for aux, ms in by_aux.items():
            values = [clean[(m["id"], m["task_names"].split(",")[0])] for m in ms
                      if (m["id"], m["task_names"].split(",")[0]) in clean]
            if values:
                _one_setting(frames, main, aux, [m["id"] for m in ms])
                out[aux] = _summarise(values, None, [m["id"] for m in ms])
        return out
    attacks = [r for r in done(frames, "attack", attack=attack["name"], eps=attack["eps"], steps=attack["steps"])
               .to_pylist() if r["targets"] == main and r["source_model"] is None]
    model_ids = {m["id"]: aux for aux, ms in by_aux.items() for m in ms}
    chosen: dict[str, list[dict]] = {}
    for r in attacks:
        if r["model"] in model_ids:
            chosen.setdefault(model_ids[r["model"]], []).append(r)
    vuln = metric_values(frames, Phase.VULNERABILITY, "rel_vuln_ratio_of_means",
                         [r["id"] for rs in chosen.values() for r in rs])
    names = {m["id"]: m["task_names"].split(",")[0] for m in models}
    for aux, rs in chosen.items():
        values = [vuln[(r["id"], names[r["model"]])] for r in rs if (r["id"], names[r["model"]]) in vuln]
        if not values:
            continue
        _one_setting(frames, main, aux, [r["id"] for r in rs])
        samples = None
        if len(values) == 1:
            table = frames.read_samples([rs[0]["id"]], "error").to_pydict()
            rows = [(c, a) for t, c, a in zip(table["task"], table["clean"], table["adv"])
                    if t == names[rs[0]["model"]]]
            samples = (np.array([c for c, _ in rows]), np.array([a for _, a in rows])) if rows else None
        out[aux] = _summarise(values, samples, [r["id"] for r in rs])
    return out


def _one_setting(frames: Frames, main: str, aux: str, ids: list[str]) -> None:
    """A candidate's values are averaged as seeds of one setting: refuse trials of several settings
    (another weighting, lr, data...) rather than mix them, naming the keys that differ."""
    t = frames.trials
    rows = t.filter(pc.is_in(t["id"], value_set=pa.array(ids, pa.string()))).select(["id", "setting_id"]).to_pylist()
    by_setting = {r["setting_id"]: r["id"] for r in rows}
    if len(by_setting) > 1:
        found = settings(frames, by_setting.values())
        keys = varying_keys(list(found.values()))
        raise MtbenchError(f"main task {main} with {aux}: the database holds its trials in {len(by_setting)} settings "
                           f"that differ in {', '.join(keys)}; the advisor averages seeds of one setting only: "
                           "advise into a results folder of its own (--out)")


def _summarise(values: list[float], samples: tuple[np.ndarray, np.ndarray] | None, trials: list[str]) -> Evidence:
    """Mean over seeds; a 95% interval over seeds (2 or more) or over test samples (one seed)."""
    mean = sum(values) / len(values)
    if len(values) > 1:
        arr = np.array(values)
        low, high = bootstrap_ci(lambda idx: float(arr[idx].mean()), len(arr))
    elif samples is not None:
        clean, adv = samples
        low, high = bootstrap_ci(lambda idx: relative_increase(clean[idx], adv[idx]), len(clean))
    else:
        low = high = math.nan
    return Evidence(mean, low, high, len(values), trials)


def validation_set(ranking: list[str], k: int) -> list[str]:
    """The k best and k worst candidates (all of them when k is 0 or there are no more than 2k)."""
    return ranking if k <= 0 or len(ranking) <= 2 * k else ranking[:k] + ranking[-k:]


CORRELATIONS = {"spearman": spearman, "pearson": pearson}


def correlations(ranking: list[str], proxy: dict[str, Evidence], full: dict[str, Evidence]) -> dict[str, float]:
    """Spearman's and Pearson's r between proxy and full values over every ranked candidate with a full
    result, each with a 95% percentile interval from resampling those candidates (pairs) with
    replacement; ``pairs`` and ``candidates`` count what r covers out of what was ranked."""
    paired = [a for a in ranking if a in full]
    x, y = np.array([proxy[a].value for a in paired]), np.array([full[a].value for a in paired])
    out = {"pairs": float(len(paired)), "candidates": float(len(ranking))}
    for name, correlation in CORRELATIONS.items():
        out[name] = correlation(x, y)
        out[f"{name}_low"], out[f"{name}_high"] = bootstrap_ci(lambda idx, c=correlation: c(x[idx], y[idx]),
                                                               len(paired))
    return out


def advise(req: AdviceRequest, base: GridModel, store: Store, out: Path, plugins: Plugins, console) -> dict[str, Any]:
    """Run the proxy grid (and the validation grid), then the advice trial that ranks; returns the advice."""
    if req.proxy not in PROXIES:
        raise MtbenchError(f"--proxy: expected one of {', '.join(PROXIES)}, got {req.proxy!r}")
    epochs = base.train.epochs
    encoder, proxy_epochs = {"surrogate": (req.surrogate, epochs),
                             "early-stop": (req.encoder, max(1, round(req.budget * epochs))),
                             "clean": (req.encoder, epochs)}[req.proxy]
    attacked = req.proxy != "clean"
    run_settings(settings_for(base, req, encoder, proxy_epochs, req.candidates, attacked), store, out, plugins, console)
    first = (base.attack[0].model_dump() if base.attack else DEFAULT_BASE["attack"][0])
    config = AdviceConfig(main=req.main, candidates=req.candidates, proxy=req.proxy, encoder=req.encoder,
                          proxy_encoder=encoder, proxy_epochs=proxy_epochs, attack=first["name"],
                          eps=_first(first["eps"]), steps=_first(first["steps"]), evidence=(), epochs=epochs)
    if req.validate:
        ranking, _, _ = rank(load_frames(store.url), config)
        validated = validation_set(ranking, req.validate_k)
        run_settings(settings_for(base, req, req.encoder, epochs, validated, True), store, out, plugins, console)
        config = config.model_copy(update={"validated": tuple(validated)})
    ranking, proxy, full = rank(load_frames(store.url), config)
    evidence_ids = sorted(t for e in [*proxy.values(), *full.values()] for t in e.trials)
    config = config.model_copy(update={"evidence": tuple(evidence_ids)})
    run_advice_trial(config, base, store, out, plugins, console)
    return {"trial": config.id, "ranking": ranking, "proxy": proxy, "full": full,
            **correlations(ranking, proxy, full)}


def rank(frames: Frames, config: AdviceConfig) -> tuple[list[str], dict[str, Evidence], dict[str, Evidence]]:
    """The candidates ranked by the proxy (most robust first), the proxy's evidence and, once a
    validation ran, the full-budget evidence of every candidate the database has it for (not only
    the validated ones: a correlation over the extremes alone is inflated)."""
    attack = {"name": config.attack, "eps": config.eps, "steps": config.steps}
    kind = "clean" if config.proxy == "clean" else "vulnerability"
    proxy = evidence(frames, config.main, list(config.candidates), config.proxy_encoder, config.proxy_epochs, kind,
                     attack)
    ranking = sorted((a for a in config.candidates if a in proxy), key=lambda a: proxy[a].value)
    full = evidence(frames, config.main, list(config.candidates), config.encoder, config.epochs, "vulnerability",
                    attack) if config.validated else {}
    return ranking, proxy, full


def _first(value):
    return value[0] if isinstance(value, list) else value


def run_advice_trial(config: AdviceConfig, base: GridModel, store: Store, out: Path, plugins: Plugins,
                     console) -> None:
    """The advice is a trial like any other: claimed, run and stored by the runner."""
    from mtbench.grid import Trial
    from mtbench.runner import run_grid

    settings = base.model_copy(update={"run": base.run.model_copy(update={"name": f"advise {config.main}"})})
    grid = Grid(Path("<advise>"), json.dumps(config.record(), indent=1), settings, [Trial(config)])
    summary = run_grid(grid, store, out, plugins, console, export=False)
    if summary.failed:
        raise MtbenchError(f"the advice trial failed: {next(iter(summary.failed.values())).splitlines()[0]}")


def run_advice(config: AdviceConfig, trial_id: str, ctx) -> TrialResult:
    """The advice trial's executor: the ranking, its intervals and the correlations, from the store."""
    ranking, proxy, full = rank(load_frames(ctx.store.url), config)
    rows = []
    for position, aux in enumerate(ranking, 1):
        p = proxy[aux]
        rows += [_row(aux, "rank", position), _row(aux, "proxy", p.value), _row(aux, "proxy_low", p.low),
                 _row(aux, "proxy_high", p.high)]
        if aux in full:
            rows.append(_row(aux, "full", full[aux].value))
    if ALONE in proxy:
        rows.append(_row(ALONE, "proxy", proxy[ALONE].value))
    if full:
        rows += [_row("*", name, value) for name, value in correlations(ranking, proxy, full).items()
                 if not math.isnan(value)]
    return TrialResult(metrics=rows)


def _row(task: str, metric: str, value: float) -> MetricRow:
    return MetricRow(Phase.ADVICE, task, metric, float(value))
