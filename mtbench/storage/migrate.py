"""Bringing stored trials up to the current trial-id policy, once, when a writer opens the database.

Schema version 5 stores each trial's setting id (``fill_setting_ids``), computed from its stored
configuration and its parents' setting ids.

Schema version 3 wrote the trial-id policy down (``mtbench.configs``): an attack's or analysis'
batch size and whether traces are stored are execution keys, no longer part of the id. Trials
stored under the older ids get the id their stored configuration has now, with their metrics,
samples and model rows, so that rerunning a grid finds them done instead of running them again.
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from mtbench.configs import PARENT_KEYS, parse_config, setting_id
from mtbench.storage.schema import metrics, models, samples, trials


def current_ids(c: Connection) -> dict[str, str]:
    """Old id -> the id the current policy gives the same stored configuration (changed ids only).

    A configuration this version cannot read keeps its id; so does a trial whose new id is taken
    (the same setting stored twice, e.g. under two attack batch sizes): the first one keeps it."""
    rows = c.execute(select(trials.c.id, trials.c.kind, trials.c.config).order_by(trials.c.id)).all()
    taken = {tid for tid, _, _ in rows}
    changed: dict[str, str] = {}
    for tid, kind, config in rows:
        try:
            new = parse_config(kind, config).id
        except (ValueError, ValidationError):
            continue
        if new != tid and new not in taken:
            changed[tid] = new
            taken.add(new)
    return changed


def rekey_trials(c: Connection) -> dict[str, str]:
    """Move every trial whose id changed to its current id, with everything that refers to it."""
    changed = current_ids(c)
    for old, new in changed.items():
        row = c.execute(select(trials).where(trials.c.id == old)).mappings().one()
        c.execute(insert(trials).values({**row, "id": new}))  # first, so references stay valid throughout
        for table in (metrics, samples, models):
            c.execute(update(table).where(table.c.trial_id == old).values(trial_id=new))
        c.execute(update(trials).where(trials.c.parent == old).values(parent=new))
        c.execute(delete(trials).where(trials.c.id == old))
    return changed




def setting_ids(configs: dict[str, tuple[str, str | dict]], known: dict[str, str] | None = None) -> dict[str, str]:
    """Trial id -> setting id (:func:`mtbench.configs.setting_id`) of trials given as id -> (kind,
    config JSON or dict), parents first: a parent among ``configs`` or in ``known`` (id -> setting id)
    lends its setting id; one found in neither keeps its trial id. A config that is not JSON gets none."""
    out: dict[str, str] = dict(known or {})
    parsed: dict[str, tuple[str, dict]] = {}
    for tid, (kind, config) in configs.items():
        try:
            parsed[tid] = (kind, json.loads(config) if isinstance(config, str) else config)
        except ValueError:
            continue

    def compute(tid: str, seen: frozenset[str]) -> str:
        if tid not in out:
            kind, config = parsed[tid]
            parents = {p: compute(p, seen | {tid}) for k in PARENT_KEYS if isinstance(p := config.get(k), str)
                       and p in parsed and p not in seen}
            out[tid] = setting_id(kind, config, {**out, **parents})
        return out[tid]

    for tid in parsed:
        compute(tid, frozenset())
    return {tid: out[tid] for tid in parsed}


def fill_setting_ids(c: Connection) -> int:
    """Schema 5: give every stored trial without one its setting id, computed from its stored config
    (parents first); returns how many were filled."""
    rows = c.execute(select(trials.c.id, trials.c.kind, trials.c.config, trials.c.setting_id)).all()
    known = {tid: sid for tid, _, _, sid in rows if sid}
    todo = {tid: (kind, config) for tid, kind, config, sid in rows if not sid}
    for tid, sid in setting_ids(todo, known).items():
        c.execute(update(trials).where(trials.c.id == tid).values(setting_id=sid))
    return len(todo)


__all__ = ["current_ids", "fill_setting_ids", "rekey_trials", "setting_ids"]
