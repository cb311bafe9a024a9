"""Bringing stored trials up to the current trial-id policy, once, when a writer opens the database.

Schema version 3 wrote the trial-id policy down (``mtbench.configs``): an attack's or analysis'
batch size and whether traces are stored are execution keys, no longer part of the id. Trials
stored under the older ids get the id their stored configuration has now, with their metrics,
samples and model rows, so that rerunning a grid finds them done instead of running them again.
"""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from mtbench.configs import parse_config
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


__all__ = ["current_ids", "rekey_trials"]
