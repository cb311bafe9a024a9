"""Leaderboards: models ranked by robustness, their clean errors, and every attack trial.

The heavy part (filtering up to millions of metric rows) runs in Arrow; Python only touches the
few rows that end up on screen.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mtbench.configs import PARENT_KEYS, DefenseConfig, setting_part
from mtbench.defaults import DEFAULT_DEFENSE
from mtbench.records import Phase
from mtbench.report.frames import Frames
from mtbench.report.render import Section

VULNERABILITY_METRICS = ("rel_vuln_ratio_of_means", "rel_vuln_mean_of_ratios", "delta_loss", "error_adv")


@dataclass
class Filters:
    """What the user narrowed the report to; ``None`` means everything (or a sensible default)."""

    encoder: str | None = None
    task: str | None = None  # a task name or code that the model must have
    attack: str | None = None
    eps: float | None = None
    steps: int | None = None
    objective: str | None = None  # None: the most common objective of the chosen attacks
    transfer: bool = False  # False: attacks crafted on the model itself; True: only transfer attacks
    targets: str = "main"  # "main" (the model's first task alone), "all", or task codes like "sd"
    metric: str = "rel_vuln_ratio_of_means"
    sort: str | None = None
    compare_paper: bool = False  # show the paper's figure even where the setting is not the paper's (labelled)
    extra: dict[str, Any] = field(default_factory=dict)


def metric_values(frames: Frames, phase: Phase, metric: str,
                  trial_ids: list[str] | None = None) -> dict[tuple[str, str], float]:
    """``{(trial_id, task): value}`` for one phase and metric (one row per pair: the last step),
    optionally only for some trials."""
    d = frames.read_metrics(phase, metric, trial_ids).sort_by([("step", "ascending")]).to_pydict()
    return dict(zip(zip(d["trial_id"], d["task"]), d["value"]))


def done(frames: Frames, kind: str, **equal: Any) -> pa.Table:
    """Finished trials of one kind, narrowed by column equalities (``None`` values are ignored)."""
    t = frames.trials
    if t.num_rows == 0:
        return t
    keep = pc.and_(pc.equal(t["kind"], kind), pc.equal(t["status"], "done"))
    for column, value in equal.items():
        if value is not None:
            keep = pc.and_(keep, pc.equal(t[column], value))
    return t.filter(keep)


def model_info(frames: Frames, f: Filters | None = None) -> dict[str, dict[str, Any]]:
    """Trained models by trial id: encoder, codes, task names, weighting, epochs, parameters, MACs."""
    f = f or Filters()
    sizes = {r["trial_id"]: r for r in frames.models.to_pylist()} if frames.models.num_rows else {}
    out = {}
    trained_table = done(frames, "train")
    defenses = defense_labels(trained_table)
    trained = _without_config(trained_table).to_pylist()
    codes = {r["id"]: r["codes"] for r in trained}
    for r in trained:
        r["defense"] = defenses.get(r["id"], DEFAULT_DEFENSE)
        names = (r["task_names"] or "").split(",")
        if f.encoder and r["encoder"] != f.encoder:
            continue
        if f.task and f.task not in names and f.task not in (r["codes"] or ""):
            continue
        size = sizes.get(r["id"], {})
        name = model_name(r) + (f" (trained as {codes.get(r['trained_as'])})" if r.get("trained_as") else "")
        out[r["id"]] = {**r, "names": names, "main": names[0], "name": name,
                        "parameters": size.get("parameters"), "macs": size.get("macs")}
    return out


MODEL_AXES = ("codes", "tasks", "weighting", "weights")
"""Model config keys that say which tasks a model learns and how they are weighted."""
TARGET_AXES = ("targets", "targets_codes")
"""Attack config keys that say which tasks are attacked."""


def settings(frames: Frames, ids: Iterable[str], with_seeds: bool = False) -> dict[str, dict[str, Any]]:
    """Trial id -> its setting: its config less what ``mtbench.configs``' id policy leaves out of a
    setting id (seeds, how the work runs), where a parent model's id (which hashes the model's
    seed) is replaced by that model's setting. Trials with equal settings differ only by seed: only
    they may be averaged (DESIGN.md, "Conventions"). ``with_seeds``: keep the seeds (a trial's
    identity, less how it ran), to match trials seed by seed."""
    ids = list(ids)
    configs = _configs(frames, ids)
    configs.update(_configs(frames, {c[k] for c in configs.values() for k in PARENT_KEYS if c.get(k)} - configs.keys()))

    def strip(config: dict[str, Any]) -> dict[str, Any]:
        out = setting_part(config.get("kind"), config, with_seeds)
        for k in PARENT_KEYS:
            if out.get(k) in configs:
                out[k] = strip(configs[out[k]])
        return out

    return {i: strip(configs[i]) for i in ids if i in configs}


def _configs(frames: Frames, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Parsed configs of some trials; only those are parsed, as JSON costs ~10 us a trial."""
    t = frames.trials
    ids = list(ids)
    if not ids or t.num_rows == 0:
        return {}
    rows = t.filter(pc.is_in(t["id"], value_set=pa.array(ids, pa.string()))).select(["id", "config"]).to_pydict()
    return {i: json.loads(c) for i, c in zip(rows["id"], rows["config"])}


def without(setting: dict[str, Any], model: Iterable[str] = (), attack: Iterable[str] = ()) -> dict[str, Any]:
    """A setting less some keys of its model's part (``model``) and of its own part (``attack``);
    what is left is what a table holds fixed while the removed keys vary along its axes."""
    out = {k: v for k, v in setting.items() if k not in set(attack)}
    if isinstance(out.get("model"), dict):
        out["model"] = {k: v for k, v in out["model"].items() if k not in set(model)}
    return out


def key(setting: dict[str, Any]) -> str:
    """A hashable, canonical form of a setting."""
    return json.dumps(setting, sort_keys=True)


def varying_keys(items: list[dict[str, Any]]) -> list[str]:
    """The (dotted) keys whose values differ among some settings, sorted."""
    flat = [_flatten(s) for s in items]
    return sorted({k for f in flat for k in f if len({json.dumps(g.get(k), sort_keys=True) for g in flat}) > 1})


def differences(items: list[dict[str, Any]]) -> list[str]:
    """For each setting, ``"k=v, ..."`` of the (dotted) keys whose values differ among ``items``;
    how to tell apart table sections or rows that would otherwise look the same."""
    flat = [_flatten(s) for s in items]
    varying = varying_keys(items)
    # an attack inherits its model's data and loss options: name them once, as the model's
    varying = [k for k in varying if not (f"model.{k}" in varying and all(f.get(k) == f.get(f"model.{k}")
                                                                          for f in flat))]
    return [", ".join(f"{k}={f.get(k)}" for k in varying) for f in flat]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def model_name(r: dict) -> str:
    """``resnet18/sd/uniform``: encoder, task codes (main task first), weighting; and its defence, if any
    (``resnet18/sd/uniform [pgd-at eps=4/255 steps=3]``)."""
    defense = r.get("defense") or DEFAULT_DEFENSE
    return f"{r.get('encoder')}/{r.get('codes')}/{r.get('weighting')}" + \
        (f" [{defense}]" if defense != DEFAULT_DEFENSE else "")


def defense_labels(trained: pa.Table) -> dict[str, str]:
    """Training trial id -> its defence's label, for the trials trained with one (the others: none).
    Only their configs are parsed: a text search finds them."""
    if trained.num_rows == 0 or "config" not in trained.column_names:
        return {}
    defended = trained.filter(pc.and_(pc.match_substring(trained["config"], '"defense"'),
                                      pc.invert(pc.match_substring_regex(
                                          trained["config"], rf'"defense":\s*{{"name":\s*"{DEFAULT_DEFENSE}"'))))
    return {i: DefenseConfig.model_validate(json.loads(c)["defense"]).label()
            for i, c in zip(defended["id"].to_pylist(), defended["config"].to_pylist())}


def attack_table(frames: Frames, models: dict[str, dict], f: Filters) -> pa.Table:
    """Done attack trials on the selected models, narrowed by attack, eps, steps and transfer, in Arrow."""
    t = done(frames, "attack", attack=f.attack, eps=f.eps, steps=f.steps)
    if t.num_rows:
        t = t.filter(pc.and_(pc.is_in(t["model"], value_set=pa.array(list(models), pa.string())),
                             pc.is_valid(t["source_model"]) if f.transfer else pc.is_null(t["source_model"])))
    return t


def attack_info(frames: Frames, models: dict[str, dict], f: Filters) -> list[dict[str, Any]]:
    """The same as dicts."""
    return _without_config(attack_table(frames, models, f)).to_pylist()


def _without_config(table: pa.Table) -> pa.Table:
    """Reports work from the flat columns; the raw JSON would only slow the conversion to dicts."""
    return table.drop_columns(["config"]) if "config" in table.column_names else table


def default_attack(frames: Frames, models: dict[str, dict], f: Filters) -> tuple[str | None, float | None]:
    """The attack and eps a leaderboard ranks by: the ones asked for, else the most common attack
    and its largest eps."""
    t = attack_table(frames, models, Filters(attack=f.attack, steps=f.steps, transfer=f.transfer))
    if t.num_rows == 0:
        return f.attack, f.eps
    attack = f.attack or max(pc.value_counts(t["attack"]).to_pylist(), key=lambda c: c["counts"])["values"]
    eps = f.eps if f.eps is not None else pc.max(t.filter(pc.equal(t["attack"], attack))["eps"]).as_py()
    return attack, eps


def targets_match(r: dict, model: dict, targets: str) -> bool:
    if targets == "main":
        return r["targets"] == model["codes"][0]
    if targets == "all":
        return r["targets"] == model["codes"]
    return r["targets"] == targets


def leaderboard(frames: Frames, f: Filters) -> Section:
    """One row per model (seeds averaged): the main task's vulnerability under one attack setting,
    with its clean error, the constant predictor's, parameters and MACs; most robust first."""
    models = model_info(frames, f)
    attack, eps = default_attack(frames, models, f)
    attacks = attack_info(frames, models, Filters(attack=attack, eps=eps, steps=f.steps))
    chosen = [r for r in attacks if targets_match(r, models[r["model"]], f.targets)]
    objective = f.objective or (Counter(r["objective"] for r in chosen).most_common(1)[0][0] if chosen else None)
    chosen = [r for r in chosen if r["objective"] == objective]
    attack_ids = [r["id"] for r in chosen]
    model_ids = list({r["model"] for r in chosen})
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric, attack_ids)
    adv = metric_values(frames, Phase.VULNERABILITY, "error_adv", attack_ids)
    clean = metric_values(frames, Phase.CLEAN, "error", model_ids)
    const = metric_values(frames, Phase.BASELINE, "error", model_ids)

    setting = settings(frames, attack_ids)
    groups: dict[str, list[dict]] = defaultdict(list)  # one row per setting: seeds averaged, nothing else
    for r in chosen:
        m = models[r["model"]]
        groups[r["setting_id"]].append({
            "m": m, "r": r, "v": vuln.get((r["id"], m["main"])), "adv": adv.get((r["id"], m["main"])),
            "clean": clean.get((m["id"], m["main"])), "const": const.get((m["id"], m["main"])),
            "suspect": bool(r["suspect"]) or bool(m.get("suspect"))})
    names = distinct_names({k: items[0]["m"]["name"] for k, items in groups.items()},
                            {k: setting[items[0]["r"]["id"]] for k, items in groups.items()})
    rows = [{**_board_row(names[k], items), "metric": f.metric} for k, items in groups.items()]
    defended = any(r["defense"] != DEFAULT_DEFENSE for r in rows)  # a column only where some model has one
    rows = [{**{k: v for k, v in r.items() if k != "defense"}, **({"defense": r["defense"]} if defended else {})}
            for r in rows]
    sort = f.sort or "v"
    rows.sort(key=lambda r: (r["main"], _tier(r), r.get(sort) is None, r.get(sort) if r.get(sort) is not None else 0))
    ranked, previous, rank = [], None, 0
    for r in rows:  # errors of different main tasks are not comparable: rank within each main task
        rank = rank + 1 if r["main"] == previous else 1
        previous = r["main"]
        ranked.append({"main": r.pop("main"), "rank": rank, **r})
    eps_text = fraction(eps) if eps is not None else "-"
    what = {"main": "attacking the main task alone", "all": "attacking all tasks together"}.get(
        f.targets, f"attacking {f.targets}")
    norms = ",".join(sorted({str(r["norm"]) for r in chosen})) or "-"
    steps = ",".join(map(str, sorted({r["steps"] for r in chosen}))) or "-"
    return Section(
        f"Leaderboard: v = {f.metric} of each model's main task under {attack} eps={eps_text} ({norms}, "
        f"steps={steps}), {what} (objective {objective})",
        ranked, note="lower v is more robust; clean/const/adv_err: the main task's error (1-mIoU for s, MSE "
                     "otherwise) clean, of the best constant predictor, under attack; std over seeds; one row per "
                     "setting (seeds = trials averaged); learnt = clean_err below 0.9 x const_err: models that "
                     "did not learn, and suspect trials (a failed check, e.g. a task without valid test pixels), "
                     "rank after the others"
             + (ORDERS_NOTE if any(models[r["model"]].get("trained_as") for r in chosen) else ""),
        machine=SETTING_COLUMNS)


ORDERS_NOTE = ("; 'trained as sd': the same model as sd, ranked under its other main task (under weights that "
               "do not depend on the main task, sd and ds are one model, trained once; train.ordered_pairs)")
"""Said wherever a model trained once for several task orders shows under another order's name."""

LEARNT_FRACTION = 0.9
"""A model learnt its main task when its clean error is below this fraction of its constant predictor's."""


def learnt(clean: float | None, const: float | None) -> bool | None:
    """Whether a model beats its best constant predictor clearly (None: one of the errors is unknown)."""
    if clean is None or const is None:
        return None
    return clean < LEARNT_FRACTION * const


def _tier(row: dict[str, Any]) -> int:
    """Ranking tiers: models that learnt (or whose constant predictor is unknown), then those that did
    not, then suspect trials."""
    return 2 if row["suspect"] else 1 if row["learnt"] is False else 0


def _board_row(name: str, items: list[dict]) -> dict[str, Any]:
    """One leaderboard row: one setting's trials (its seeds) averaged, with the attack that defines it."""
    m, r = items[0]["m"], items[0]["r"]
    vs = [i["v"] for i in items if i["v"] is not None]
    clean, const = _mean(i["clean"] for i in items), _mean(i["const"] for i in items)
    return {
        "main": m["codes"][0], "model": name, "epochs": m["epochs"], "attack": r["attack"], "norm": r["norm"],
        "eps": fraction(r["eps"]), "steps": r["steps"], "seeds": len(items),
        "clean_err": clean, "const_err": const, "learnt": learnt(clean, const),
        "adv_err": _mean(i["adv"] for i in items), "v": _mean(vs),
        "std": statistics.stdev(vs) if len(vs) > 1 else None,
        "params_M": _round(m["parameters"], 1e6, 2), "MACs_G": _round(m["macs"], 1e9, 3),
        "suspect": any(i["suspect"] for i in items), "setting_id": r["setting_id"], "defense": m["defense"],
        **settings_columns(m, r),
    }


SETTING_COLUMNS = ("encoder", "codes", "weighting", "objective", "attacked", "eps_value", "metric")
"""What JSON and CSV rows of a board carry besides what people read: the settings its title states."""


def settings_columns(model: dict[str, Any], attack: dict[str, Any], metric: str | None = None) -> dict[str, Any]:
    """The model's and the attack's settings, as columns a program groups by (``SETTING_COLUMNS``)."""
    return {"encoder": model.get("encoder"), "codes": model.get("codes"), "weighting": model.get("weighting"),
            "objective": attack.get("objective"), "attacked": attack.get("targets"), "eps_value": attack.get("eps"),
            **({"metric": metric} if metric else {})}


def distinct_names(names: dict[str, str], by: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Names made unique: where several settings share a name, each gets ``(what differs)``."""
    shared: dict[str, list[str]] = defaultdict(list)
    for k, name in names.items():
        shared[name].append(k)
    out = dict(names)
    for name, ks in shared.items():
        if len(ks) > 1:
            for k, text in zip(ks, differences([by[k] for k in ks])):
                out[k] = f"{name} ({text})"
    return out


def model_rows(frames: Frames, f: Filters) -> Section:
    """Every trained model with its clean error per task beside the constant predictor's."""
    clean = metric_values(frames, Phase.CLEAN, "error")
    const = metric_values(frames, Phase.BASELINE, "error")
    rows = []
    for tid, m in sorted(model_info(frames, f).items(), key=lambda kv: kv[1]["name"]):
        row = {"model": m["name"], "id": tid[:6], "epochs": m["epochs"], "seed": m["seed"],
               "params_M": _round(m["parameters"], 1e6, 2), "MACs_G": _round(m["macs"], 1e9, 3)}
        for name, code in zip(m["names"], m["codes"]):
            row[f"err_{code}"] = clean.get((tid, name))
            row[f"const_{code}"] = const.get((tid, name))
        row["suspect"] = bool(m.get("suspect"))  # e.g. a task without valid test pixels: its error means nothing
        row["defense"] = m["defense"]
        if m.get("factory"):  # a [[model]]: where it comes from, and which weights
            row.update(factory=m["factory"], weights_sha256=m.get("weights_sha256") or "(the factory's own)")
        rows.append(row)
    external = any("factory" in r for r in rows)
    if all(r["defense"] == DEFAULT_DEFENSE for r in rows):  # a column only where some model trained with one
        for r in rows:
            del r["defense"]
    return Section("Models: clean error per task (err_<code>) beside the best constant predictor's (const_<code>)",
                   rows, note="1-mIoU for s, MSE otherwise; lower is better"
                   + ("; weighting 'external': a [[model]] trained elsewhere (epochs 0: mtbench trained nothing), "
                      "built by its factory with the weights whose SHA-256 is shown" if external else ""))


def attack_rows(frames: Frames, f: Filters) -> Section:
    """Every attack trial: the vulnerability of every task of the model (attacked ones starred)."""
    models = model_info(frames, f)
    all_models = model_info(frames) if f.transfer else models
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric)
    rows = []
    for r in attack_info(frames, models, f):
        m = models[r["model"]]
        row = {"model": m["name"], "attack": r["attack"], "eps": fraction(r["eps"]), "steps": r["steps"],
               "objective": r["objective"], "targets": r["targets"]}
        if f.transfer:
            source = all_models.get(r["source_model"], {})
            row = {"crafted on": source.get("name", r["source_model"]), **row}
        attacked = []
        for name, code in zip(m["names"], m["codes"]):
            v = vuln.get((r["id"], name))
            row[f"v_{code}"] = v
            if code in r["targets"] and v is not None:
                attacked.append(v)
        row["v_attacked_mean"] = _mean(attacked)
        row["suspect"] = bool(r["suspect"])
        row.update({k: v for k, v in settings_columns(m, r, f.metric).items() if k not in row})
        rows.append(row)
    rows.sort(key=lambda r: (r["attack"], r["eps"], r["v_attacked_mean"] is None, r["v_attacked_mean"] or 0))
    kind = "Transfer attacks" if f.transfer else "Attacks"
    return Section(f"{kind}: {f.metric} per task v_<code> (* = attacked task; lower is more robust)", rows,
                   mark=lambda row, col: col.startswith("v_") and col[2:] in row.get("targets", ""),
                   machine=SETTING_COLUMNS)


def fraction(eps: float) -> str:
    """``8/255`` when eps is a whole number of grey levels, else the number."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _round(value, unit: float, digits: int) -> float | None:
    return round(value / unit, digits) if value is not None else None
