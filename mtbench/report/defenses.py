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
    own = _attack_settings(frames, attacks)
    return [_comparison(frames, models, attacks, own, clean, adv, vuln), _masking(models, attacks, own, adv)]


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


def _attack_settings(frames: Frames, attacks: list[dict]) -> dict[str, str]:
    """Attack trial id -> its own setting (its setting less the model's part), as a key: trials of one
    key on models of one setting differ only in seeds, the only trials a row may average."""
    setting = settings(frames, [r["id"] for r in attacks])
    return {i: key({k: v for k, v in s.items() if k != "model"}) for i, s in setting.items()}


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _comparison(frames: Frames, models: dict[str, dict], attacks: list[dict], own: dict[str, str], clean: dict,
                adv: dict, vuln: dict) -> Section:
    """One row per (defended setting, attack setting, task): clean and adversarial errors and v of the
    defended model and of its twin, seeds averaged."""
    by_model: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in attacks:
        by_model[r["model"]][own[r["id"]]].append(r)
    groups: dict[str, dict[str, list[str]]] = {}
    for i, twin_ids in _twins(frames, models).items():  # one group per defended setting: its seeds, its twin's
        groups.setdefault(models[i]["setting_id"], {"defended": [], "twin": twin_ids})["defended"].append(i)
    rows = []
    for group in sorted(groups.values(), key=lambda g: models[g["defended"][0]]["name"]):
        first = models[group["defended"][0]]
        twin_name = models[group["twin"][0]]["name"] if group["twin"] else None
        for attack_key in sorted({k for i in group["defended"] for k in by_model[i]}):
            shown = next(r for i in group["defended"] for r in by_model[i].get(attack_key, []))
            attack, eps, steps, objective, targets = (shown[k] for k in ("attack", "eps", "steps", "objective",
                                                                         "targets"))
            for name, code in zip(first["names"], first["codes"]):
                trials = {side: [r for i in group[side] for r in by_model[i].get(attack_key, [])]
                          for side in ("defended", "twin")}
                sides = ("defended", "twin")
                d_clean, t_clean = (_mean([clean.get((i, name)) for i in group[side]]) for side in sides)
                d_adv, t_adv = (_mean([adv.get((r["id"], name)) for r in trials[side]]) for side in sides)
                rows.append({
                    "model": first["name"], "twin": twin_name or "(none trained)", "attack": attack,
                    "eps": fraction(eps), "steps": steps, "step_size": fraction(shown["step_size"]),
                    "targets": targets, "task": code,
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


def _masking(models: dict[str, dict], attacks: list[dict], own: dict[str, str], adv: dict) -> Section:
    """Per defended setting and PGD setting on its main task: its error under that PGD, under APGD and the
    ensemble at the same eps (the masking check's, one setting each), and the flag where the ensemble's
    exceeds PGD's by more than ``MASKING_MARGIN``. Trials are averaged over seeds only."""
    errors: dict[tuple[str, str], list[float]] = defaultdict(list)  # (model setting, attack setting) -> errors
    shown: dict[tuple[str, str], dict] = {}
    for r in attacks:
        m = models[r["model"]]
        value = adv.get((r["id"], m["main"]))
        if m["defense"] == DEFAULT_DEFENSE or r["targets"] != m["codes"][0] or value is None:
            continue
        errors[(m["setting_id"], own[r["id"]])].append(value)
        shown.setdefault((m["setting_id"], own[r["id"]]), {**r, "model_name": m["name"]})

    def masking_error(setting: str, attack: str, eps: float) -> float | None:
        found = [v for k, v in errors.items() if k[0] == setting and shown[k]["attack"] == attack
                 and abs(shown[k]["eps"] - eps) < 1e-12]
        return _mean(found[0]) if len(found) == 1 else None  # one setting per masking attack and eps

    rows = []
    for (setting, attack_setting), values in sorted(errors.items(), key=lambda kv: (shown[kv[0]]["model_name"],
                                                                                    shown[kv[0]]["eps"], kv[0][1])):
        r = shown[(setting, attack_setting)]
        if r["attack"] != PAPER_ATTACK:
            continue
        pgd, ensemble = _mean(values), masking_error(setting, ENSEMBLE, r["eps"])
        excess = ensemble / pgd - 1 if pgd and ensemble is not None else None
        rows.append({"model": r["model_name"], "eps": fraction(r["eps"]), "pgd_steps": r["steps"],
                     "pgd_step_size": fraction(r["step_size"]), "pgd_objective": r["objective"],
                     "pgd_adv_err": pgd, "apgd_adv_err": masking_error(setting, "apgd-linf", r["eps"]),
                     "ensemble_adv_err": ensemble, "ensemble_over_pgd": excess,
                     "masking": None if excess is None else ("SUSPECTED" if excess > MASKING_MARGIN else "no")})
    return Section("Gradient masking: each defended model's main-task error under PGD, APGD and the worst-case "
                   "ensemble (main task attacked)", rows,
                   note=f"one row per PGD setting on the main task (seeds averaged); masking SUSPECTED where the "
                        f"ensemble's error exceeds PGD's by more than {MASKING_MARGIN:.0%} (relative): PGD then "
                        "underrates the attacker, and the defence's robustness under PGD is not to be trusted; "
                        "'-': no ensemble attack on the main task at this eps")
