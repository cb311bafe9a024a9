"""The trial store: claim, finish, fail and release trials; each finished trial in one transaction."""

from __future__ import annotations

import functools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Table, delete, insert, null, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from mtbench.configs import PARENT_KEYS, TrialConfig, parse_config, setting_id
from mtbench.errors import MtbenchError
from mtbench.provenance import Versions, dumps, loads
from mtbench.records import TrialResult, TrialStatus
from mtbench.storage.migrate import setting_ids
from mtbench.storage.opening import DatabaseMissing, database_error, display_name, integrity_problems, open_engine
from mtbench.storage.schema import metadata, metrics, models, runs, samples, trials

F = TypeVar("F", bound=Callable[..., Any])


def default_url(out: Path) -> str:
    return f"sqlite:///{Path(out) / 'mtbench.db'}"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _guarded(doing: str) -> Callable[[F], F]:
    """Database errors inside a store method (a full disk, a corrupt page) become a message naming
    the database instead of a traceback; the transaction in flight is rolled back by then."""
    def wrap(method: F) -> F:
        @functools.wraps(method)
        def guarded(self: Store, *args: Any, **kwargs: Any) -> Any:
            with self.guard(doing):
                return method(self, *args, **kwargs)
        return guarded  # type: ignore[return-value]
    return wrap


class Store:
    def __init__(self, url: str, read_only: bool = False):
        """Open the database at ``url``.

        ``read_only`` is for commands that only read: nothing is created or changed, and a missing,
        empty, foreign, corrupt or newer database is refused with a message. Otherwise the schema is
        created in a new or empty database, or upgraded in an older mtbench one; a foreign, corrupt
        or newer database is refused untouched."""
        self.url = url
        self.name = display_name(url)
        self.read_only = read_only
        try:
            self.engine, self.absent = open_engine(url, read_only)
        except (SQLAlchemyError, OSError, sqlite3.Error) as exc:
            raise database_error(self.name, exc, "read" if read_only else "open") from None

    def column(self, table: Table, name: str) -> Any:
        """A column to select: one that an older database (read as it is) lacks comes as NULL."""
        return null().label(name) if f"{table.name}.{name}" in self.absent else table.c[name]

    def columns(self, table: Table) -> list[Any]:
        """Every column of the table, to select (see :meth:`column`)."""
        return [self.column(table, c.name) for c in table.columns]

    @contextmanager
    def guard(self, doing: str = "read") -> Iterator[None]:
        """Turn driver errors met while reading or writing into an ``MtbenchError`` naming the database."""
        try:
            yield
        except (SQLAlchemyError, sqlite3.Error, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise database_error(self.name, exc, doing) from None

    def check_writable(self) -> None:
        """Fail early, with a message, if results cannot be written (a read-only database file)."""
        if not self.url.startswith("sqlite"):
            return
        try:
            with self.engine.connect() as c:
                c.exec_driver_sql("BEGIN IMMEDIATE")  # takes the write lock: refused on a read-only file
                c.exec_driver_sql("ROLLBACK")
        except SQLAlchemyError as exc:
            raise MtbenchError(f"{self.name}: the database cannot be written "
                               f"({getattr(exc, 'orig', exc)}); nothing was changed") from None

    # ------------------------------------------------------------------ runs
    @_guarded("write")
    def begin_run(self, name: str, grid_path: str, grid_text: str, version: str) -> int:
        with self.engine.begin() as c:
            return c.execute(insert(runs).values(
                name=name, grid_path=grid_path, grid_text=grid_text, mtbench_version=version,
                host=socket.gethostname(), started_at=time.time(), status="running",
            )).inserted_primary_key[0]

    @_guarded("write")
    def end_run(self, run_id: int, status: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(runs).where(runs.c.id == run_id).values(finished_at=time.time(), status=status))

    # ------------------------------------------------------------------ trials
    @_guarded("read")
    def latest_run(self) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(runs).order_by(runs.c.id.desc()).limit(1)).mappings().first()
        return dict(row) if row else None

    @_guarded("read")
    def statuses(self, ids: Iterable[str] | None = None) -> dict[str, str]:
        q = select(trials.c.id, trials.c.status)
        if ids is not None:
            q = q.where(trials.c.id.in_(list(ids)))
        with self.engine.connect() as c:
            return dict(c.execute(q).all())

    @_guarded("read")
    def trial(self, trial_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(*self.columns(trials)).where(trials.c.id == trial_id)).mappings().first()
        return dict(row) if row else None

    def trial_config(self, trial_id: str) -> TrialConfig:
        """A stored trial's configuration, typed (its kind decides the type)."""
        row = self.trial(trial_id)
        if row is None:
            raise MtbenchError(f"{self.name}: no trial {trial_id} in this database")
        return parse_config(row["kind"], row["config"])

    @_guarded("read")
    def model(self, trial_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(models).where(models.c.trial_id == trial_id)).mappings().first()
        return dict(row) if row else None

    @_guarded("write")
    def claim(self, trial_id: str, kind: str, label: str, config: Mapping, parent: str | None, run_id: int,
              version: str) -> bool:
        """Mark a trial running for this worker; False if it is done or another worker holds it.

        Atomic across processes and machines: a new trial is an INSERT that only one worker can win
        (primary key), an existing one a conditional UPDATE that only one worker can match."""
        now = time.time()
        values = dict(status=TrialStatus.RUNNING.value, worker=worker_name(), run_id=run_id, started_at=now,
                      heartbeat_at=now, error=None, mtbench_version=version,
                      setting_id=self.setting_id(kind, dict(config)))
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
                               .where((trials.c.id == trial_id)
                                      & trials.c.status.in_((TrialStatus.PENDING.value, TrialStatus.FAILED.value)))
                               .values(attempts=trials.c.attempts + 1, **values))
            return result.rowcount == 1

    @_guarded("read")
    def setting_id(self, kind: str, config: dict[str, Any]) -> str:
        """The setting id of a trial about to be stored (:func:`mtbench.configs.setting_id`), its parents'
        setting ids read from this database (a parent stored nowhere keeps its trial id)."""
        parents = [p for k in PARENT_KEYS if isinstance(p := config.get(k), str)]
        known: dict[str, str] = {}
        if parents:
            with self.engine.connect() as c:
                rows = c.execute(select(trials.c.id, trials.c.kind, trials.c.config, self.column(trials, "setting_id"))
                                 .where(trials.c.id.in_(parents))).all()
            known = {tid: sid for tid, _, _, sid in rows if sid}
            known.update(setting_ids({tid: (k, cfg) for tid, k, cfg, sid in rows if not sid}))
        return setting_id(kind, config, known)

    @_guarded("read")
    def versions(self, ids: Iterable[str] | None = None, status: str = TrialStatus.DONE.value
                 ) -> dict[str, tuple[str | None, Versions | None]]:
        """Trial id -> (label, the versions it was made with; None: unknown, stored before they were
        recorded) of the trials with this status (among ``ids``)."""
        q = select(trials.c.id, trials.c.label, self.column(trials, "versions")).where(trials.c.status == status)
        if ids is not None:
            q = q.where(trials.c.id.in_(list(ids)))
        with self.engine.connect() as c:
            return {tid: (label, loads(text)) for tid, label, text in c.execute(q).all()}

    @_guarded("write")
    def finish(self, trial_id: str, result: TrialResult, duration_s: float, versions: Versions | None = None) -> None:
        """Store everything a trial produced and mark it done, in one transaction; ``versions``
        (:func:`mtbench.provenance.current`) are what it was made with."""
        with self.engine.begin() as c:
            for table in (metrics, samples, models):
                key = table.c.trial_id
                c.execute(delete(table).where(key == trial_id))
            if result.metrics:
                c.execute(insert(metrics), [{"trial_id": trial_id, **m.record()} for m in result.metrics])
            if result.samples:
                c.execute(insert(samples), [{"trial_id": trial_id, **s.record()} for s in result.samples])
            if result.model:
                c.execute(insert(models).values(trial_id=trial_id, **result.model))
            c.execute(update(trials).where(trials.c.id == trial_id).values(
                status=TrialStatus.DONE.value, finished_at=time.time(), duration_s=duration_s,
                checks=json.dumps(result.checks) if result.checks is not None else None,
                suspect=result.suspect, error=None, versions=dumps(versions)))

    @_guarded("write")
    def fail(self, trial_id: str, error: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(trials).where(trials.c.id == trial_id).values(
                status=TrialStatus.FAILED.value, error=error, finished_at=time.time()))

    @_guarded("write")
    def release(self, trial_id: str) -> None:
        """Give a trial back (Ctrl-C): it is not done and will run again next time."""
        with self.engine.begin() as c:
            c.execute(update(trials).where((trials.c.id == trial_id) & (trials.c.status == TrialStatus.RUNNING.value))
                      .values(status=TrialStatus.PENDING.value, worker=None))

    @_guarded("write")
    def heartbeat(self, trial_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(trials).where(trials.c.id == trial_id).values(heartbeat_at=time.time()))

    @_guarded("write")
    def reset_stale(self, stale_after_s: float = 120.0) -> list[str]:
        """Trials left ``running`` by a dead process go back to pending.

        A worker on this host is dead if its pid is gone; on another host, if its heartbeat is
        older than ``stale_after_s``.
        """
        host = socket.gethostname()
        stale = []
        with self.engine.begin() as c:
            rows = c.execute(select(trials.c.id, trials.c.worker, trials.c.heartbeat_at)
                             .where(trials.c.status == TrialStatus.RUNNING.value)).all()
            for tid, worker, beat in rows:
                w_host, _, pid = (worker or "").rpartition(":")
                dead = (not _pid_alive(int(pid))) if w_host == host and pid.isdigit() else (
                    time.time() - (beat or 0) > stale_after_s)
                if dead:
                    stale.append(tid)
                    c.execute(update(trials).where(trials.c.id == tid)
                              .values(status=TrialStatus.PENDING.value, worker=None))
        return stale

    # ------------------------------------------------------------------ reading
    @_guarded("read")
    def table_rows(self, name: str) -> list[dict[str, Any]]:
        table = metadata.tables[name]
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(select(*self.columns(table))).mappings()]

    @_guarded("read")
    def integrity_ok(self, quick: bool = False) -> bool:
        """SQLite's check of every page and index (``quick``: pages only); always true on a server."""
        with self.engine.connect() as c:
            return not integrity_problems(c, quick)


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


__all__ = ["DatabaseMissing", "Store", "TrialResult", "default_url"]
