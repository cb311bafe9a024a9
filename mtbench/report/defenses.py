"""Defended models beside their undefended twins, and the gradient-masking check.

A defence is judged by what it buys under attack against what it costs on clean images, measured
against its **twin**: the model of the same setting trained without it (seeds averaged within each
setting). A lower v alone proves nothing (a higher clean error lowers v mechanically), so the view
shows the adversarial errors side by side. A defended model's robustness is trusted only if the
adaptive attacks agree: grids with a defence attack every model with ``MASKING_ATTACKS`` too, and a
defended model whose error under the worst-case ensemble exceeds its error under PGD by more than
``MASKING_MARGIN`` (relative) is flagged.
"""

from __future__ import annotations

from collections import defaultdict

from mtbench.defaults import DEFAULT_DEFENSE, MASKING_MARGIN, PAPER_ATTACK
from mtbench.records import Phase
from mtbench.report.frames import Frames
from mtbench.report.leaderboard import Filters, attack_info, fraction, key, metric_values, model_info, settings
from mtbench.report.render import Section

ENSEMBLE = "ensemble-linf"


def defense_sections(frames: Frames, f: Filters) -> list[Section]:
    """The comparison with the twins, then the masking check; one empty section when no model is defended."""
    models = model_info(frames, f)
    if not any(m["defense"] != DEFAULT_DEFENSE for m in models.values()):
        return [Section("Defences: no model of this database was trained with a defence", [])]
    attacks = [r for r in attack_info(frames, models, Filters()) if r["source_model"] is None]
    ids = [r["id"] for r in attacks]
    clean = metric_values(frames, Phase.CLEAN, "error", list(models))
    adv = metric_values(frames, Phase.VULNERABILITY, "error_adv", ids)
    vuln = metric_values(frames, Phase.VULNERABILITY, f.metric, ids)
    return [_comparison(frames, models, attacks, clean, adv, vuln), _masking(models, attacks, adv)]


def _twins(frames: Frames, models: dict[str, dict]) -> dict[str, list[str]]:
    """Defended model id -> the ids (seeds) of its undefended twin: the same setting less the defence."""
    setting = settings(frames, list(models))

    def less_defense(i: str) -> str:
        return key({k: v for k, v in setting[i].items() if k != "defense"})

    plain: dict[str, list[str]] = defaultdict(list)
    for i, m in models.items():
        if m["defense"] == DEFAULT_DEFENSE and i in setting:
            plain[less_defense(i)].append(i)
    return {i: plain.get(less_defense(i), []) for i, m in models.items()
            if m["defense"] != DEFAULT_DEFENSE and i in setting}


def _attack_key(r: dict) -> tuple:
    return r["attack"], r["eps"], r["steps"], r["objective"], r["targets"]


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _comparison(frames: Frames, models: dict[str, dict], attacks: list[dict], clean: dict, adv: dict,
                vuln: dict) -> Section:
    """One row per (defended setting, attack setting, task): clean and adversarial errors and v of the
    defended model and of its twin, seeds averaged."""
    by_model: dict[str, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in attacks:
        by_model[r["model"]][_attack_key(r)].append(r)
    groups: dict[str, dict[str, list[str]]] = {}
    for i, twin_ids in _twins(frames, models).items():  # one group per defended setting: its seeds, its twin's
        groups.setdefault(models[i]["setting_id"], {"defended": [], "twin": twin_ids})["defended"].append(i)
    rows = []
    for group in sorted(groups.values(), key=lambda g: models[g["defended"][0]]["name"]):
        first = models[group["defended"][0]]
        twin_name = models[group["twin"][0]]["name"] if group["twin"] else None
        keys = sorted({k for i in group["defended"] for k in by_model[i]}, key=str)
        for attack_key in keys:
            attack, eps, steps, objective, targets = attack_key
            for name, code in zip(first["names"], first["codes"]):
                trials = {side: [r for i in group[side] for r in by_model[i].get(attack_key, [])]
                          for side in ("defended", "twin")}
                sides = ("defended", "twin")
                d_clean, t_clean = (_mean([clean.get((i, name)) for i in group[side]]) for side in sides)
                d_adv, t_adv = (_mean([adv.get((r["id"], name)) for r in trials[side]]) for side in sides)
                rows.append({
                    "model": first["name"], "twin": twin_name or "(none trained)", "attack": attack,
                    "eps": fraction(eps), "steps": steps, "targets": targets, "task": code,
                    "attacked": code in targets, "clean_err": d_clean, "twin_clean_err": t_clean,
                    "clean_cost": _difference(d_clean, t_clean), "adv_err": d_adv, "twin_adv_err": t_adv,
                    "adv_gain": _difference(t_adv, d_adv),
                    "v": _mean([vuln.get((r["id"], name)) for r in trials["defended"]]),
                    "twin_v": _mean([vuln.get((r["id"], name)) for r in trials["twin"]]),
                    "seeds": len(group["defended"]), "twin_seeds": len(group["twin"]),
                    "objective": objective, "eps_value": eps})
    return Section("Defences: each defended model beside its undefended twin (the same setting without the "
                   "defence), per attack and task", rows,
                   note="clean_cost = clean_err - twin_clean_err (what the defence costs on clean images); "
                        "adv_gain = twin_adv_err - adv_err (what it buys under attack; > 0: the defence helps); "
                        "a lower v alone is no gain (a higher clean error lowers v); attacked: the task was "
                        "among the attacked ones; seeds averaged within each setting",
                   machine=("objective", "eps_value"))


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _masking(models: dict[str, dict], attacks: list[dict], adv: dict) -> Section:
    """Per defended setting and eps: the main task's error under PGD, APGD and the ensemble, and the
    flag where the ensemble's exceeds PGD's by more than ``MASKING_MARGIN``."""
    errors: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    names: dict[str, str] = {}
    for r in attacks:
        m = models[r["model"]]
        if m["defense"] == DEFAULT_DEFENSE or r["targets"] != m["codes"][0]:
            continue
        value = adv.get((r["id"], m["main"]))
        if value is not None:
            errors[(m["setting_id"], r["eps"])][r["attack"]].append(value)
            names[m["setting_id"]] = m["name"]
    rows = []
    for (setting, eps), by_attack in sorted(errors.items(), key=lambda kv: (names[kv[0][0]], kv[0][1])):
        pgd, ensemble = _mean(by_attack.get(PAPER_ATTACK, [])), _mean(by_attack.get(ENSEMBLE, []))
        excess = ensemble / pgd - 1 if pgd and ensemble is not None else None
        rows.append({"model": names[setting], "eps": fraction(eps), "pgd_adv_err": pgd,
                     "apgd_adv_err": _mean(by_attack.get("apgd-linf", [])), "ensemble_adv_err": ensemble,
                     "ensemble_over_pgd": excess,
                     "masking": None if excess is None else ("SUSPECTED" if excess > MASKING_MARGIN else "no")})
    return Section("Gradient masking: each defended model's main-task error under PGD, APGD and the worst-case "
                   "ensemble (main task attacked)", rows,
                   note=f"masking SUSPECTED where the ensemble's error exceeds PGD's by more than "
                        f"{MASKING_MARGIN:.0%} (relative): PGD then underrates the attacker, and the defence's "
                        "robustness under PGD is not to be trusted; '-': the grid has no PGD (or no ensemble) on "
                        "the main task at this eps")
