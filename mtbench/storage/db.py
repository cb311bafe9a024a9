"""The trial store: claim, finish, fail and release trials; each finished trial in one transaction."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from mtbench.errors import MtbenchError
from mtbench.storage.schema import metadata, metrics, models, runs, samples, trials


def default_url(out: Path) -> str:
    return f"sqlite:///{Path(out) / 'mtbench.db'}"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class TrialResult:
    """What a trial hands to the store when it finishes."""

    metrics: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    model: dict[str, Any] | None = None
    checks: dict[str, Any] | None = None
    suspect: bool = False


class Store:
    def __init__(self, url: str):
        self.url = url
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                self.engine: Engine = create_engine(url, connect_args={"timeout": 60})
                event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
            metadata.create_all(self.engine)
            for index in metrics.indexes:  # databases made by an older mtbench lack newer indexes
                index.create(self.engine, checkfirst=True)
        except (SQLAlchemyError, OSError) as exc:
            raise MtbenchError(f"cannot open the database {url!r}: {exc}") from None

    def check_writable(self) -> None:
        """Fail early, with a message, if results cannot be written (a read-only database file)."""
        if not self.url.startswith("sqlite"):
            return
        try:
            with self.engine.connect() as c:
                c.exec_driver_sql("BEGIN IMMEDIATE")  # takes the write lock: refused on a read-only file
                c.exec_driver_sql("ROLLBACK")
        except SQLAlchemyError as exc:
            raise MtbenchError(f"{self.url.removeprefix('sqlite:///')}: the database cannot be written "
                               f"({getattr(exc, 'orig', exc)}); nothing was changed") from None

    # ------------------------------------------------------------------ runs
    def begin_run(self, name: str, grid_path: str, grid_text: str, version: str) -> int:
        with self.engine.begin() as c:
            return c.execute(insert(runs).values(
                name=name, grid_path=grid_path, grid_text=grid_text, mtbench_version=version,
                host=socket.gethostname(), started_at=time.time(), status="running",
            )).inserted_primary_key[0]

    def end_run(self, run_id: int, status: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(runs).where(runs.c.id == run_id).values(finished_at=time.time(), status=status))

    # ------------------------------------------------------------------ trials
    def latest_run(self) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(runs).order_by(runs.c.id.desc()).limit(1)).mappings().first()
        return dict(row) if row else None

    def statuses(self, ids: Iterable[str] | None = None) -> dict[str, str]:
        q = select(trials.c.id, trials.c.status)
        if ids is not None:
            q = q.where(trials.c.id.in_(list(ids)))
        with self.engine.connect() as c:
            return dict(c.execute(q).all())

    def trial(self, trial_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(trials).where(trials.c.id == trial_id)).mappings().first()
        return dict(row) if row else None

    def model(self, trial_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(models).where(models.c.trial_id == trial_id)).mappings().first()
        return dict(row) if row else None

    def claim(self, trial_id: str, kind: str, label: str, config: Mapping, parent: str | None, run_id: int,
              version: str) -> bool:
        """Mark a trial running for this worker; False if it is done or another worker holds it.

        Atomic across processes and machines: a new trial is an INSERT that only one worker can win
        (primary key), an existing one a conditional UPDATE that only one worker can match."""
        now = time.time()
        values = dict(status="running", worker=worker_name(), run_id=run_id, started_at=now, heartbeat_at=now,
                      error=None, mtbench_version=version)
        try:
            with self.engine.begin() as c:
                c.execute(insert(trials).values(
                    id=trial_id, kind=kind, label=label, parent=parent, seed=config.get("seed"),
                    config=json.dumps(config, sort_keys=True), attempts=1, **values))
            return True
        except IntegrityError:
            pass  # it exists: claim it only if nobody holds it and it is not done
        with self.engine.begin() as c:
            result = c.execute(update(trials)
                               .where((trials.c.id == trial_id) & trials.c.status.in_(("pending", "failed")))
                               .values(attempts=trials.c.attempts + 1, **values))
            return result.rowcount == 1

    def finish(self, trial_id: str, result: TrialResult, duration_s: float) -> None:
        """Store everything a trial produced and mark it done, in one transaction."""
        with self.engine.begin() as c:
            for table in (metrics, samples, models):
                key = table.c.trial_id
                c.execute(delete(table).where(key == trial_id))
            if result.metrics:
                c.execute(insert(metrics), [{"trial_id": trial_id, **m} for m in result.metrics])
            if result.samples:
                c.execute(insert(samples), [{"trial_id": trial_id, **s} for s in result.samples])
            if result.model:
                c.execute(insert(models).values(trial_id=trial_id, **result.model))
            c.execute(update(trials).where(trials.c.id == trial_id).values(
                status="done", finished_at=time.time(), duration_s=duration_s,
                checks=json.dumps(result.checks) if result.checks is not None else None,
                suspect=result.suspect, error=None))

    def fail(self, trial_id: str, error: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(trials).where(trials.c.id == trial_id).values(
                status="failed", error=error, finished_at=time.time()))

    def release(self, trial_id: str) -> None:
        """Give a trial back (Ctrl-C): it is not done and will run again next time."""
        with self.engine.begin() as c:
            c.execute(update(trials).where((trials.c.id == trial_id) & (trials.c.status == "running"))
                      .values(status="pending", worker=None))

    def heartbeat(self, trial_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(trials).where(trials.c.id == trial_id).values(heartbeat_at=time.time()))

    def reset_stale(self, stale_after_s: float = 120.0) -> list[str]:
        """Trials left ``running`` by a dead process go back to pending.

        A worker on this host is dead if its pid is gone; on another host, if its heartbeat is
        older than ``stale_after_s``.
        """
        host = socket.gethostname()
        stale = []
        with self.engine.begin() as c:
            rows = c.execute(select(trials.c.id, trials.c.worker, trials.c.heartbeat_at)
                             .where(trials.c.status == "running")).all()
            for tid, worker, beat in rows:
                w_host, _, pid = (worker or "").rpartition(":")
                dead = (not _pid_alive(int(pid))) if w_host == host and pid.isdigit() else (
                    time.time() - (beat or 0) > stale_after_s)
                if dead:
                    stale.append(tid)
                    c.execute(update(trials).where(trials.c.id == tid).values(status="pending", worker=None))
        return stale

    # ------------------------------------------------------------------ reading
    def table_rows(self, name: str) -> list[dict[str, Any]]:
        table = metadata.tables[name]
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(select(table)).mappings()]

    def integrity_ok(self) -> bool:
        if not self.url.startswith("sqlite"):
            return True
        with self.engine.connect() as c:
            return c.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


__all__ = ["Store", "TrialResult", "default_url"]
