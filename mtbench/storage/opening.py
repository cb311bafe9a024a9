"""Opening a database without harming it.

Readers (report, claims, export, run --dry-run) open it read-only: nothing is created, no pragma is
set, no folder is made. Writers (run, worker, advise) create mtbench's schema only in a new or
empty database, and upgrade only an mtbench one. A foreign, corrupt or newer database is refused
with a message naming it, and left byte for byte as it was: it is inspected through a read-only
connection before any writing connection exists.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Column, Table, create_engine, delete, event, insert, inspect, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from mtbench.errors import MtbenchError
from mtbench.storage.schema import READERS_MAY_LACK, RESULT_TABLES, SCHEMA_VERSION, meta, metadata

WRITE_COMMANDS = "`mtbench run`, `mtbench worker` or `mtbench advise`"


class DatabaseMissing(MtbenchError):
    """No mtbench database here yet: a missing SQLite file, or a database without any table."""


@dataclass
class DatabaseState:
    """What an existing database holds, as far as this mtbench is concerned."""

    version: int | None
    """The schema version; None for a database without any table (a writer may create one there)."""
    missing: list[tuple[Table, Column | None]] = field(default_factory=list)
    """Tables (column None) and columns this mtbench has that the database lacks."""

    def absent(self) -> frozenset[str]:
        """``table.column`` of the missing columns that a reader reads as NULL (``READERS_MAY_LACK``)."""
        return frozenset(f"{t.name}.{c.name}" for t, c in self.missing if _readers_may_lack(c))


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and for in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def display_name(url: str) -> str:
    """How messages name a database: its file, or its URL without the password."""
    try:
        path = sqlite_path(url)
        return str(path) if path is not None else make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        raise MtbenchError(f"--db {url!r}: not a database URL; expected a URL such as sqlite:///results/mtbench.db "
                           "or postgresql+psycopg://user@host/db") from None


def database_error(name: str, exc: BaseException, doing: str) -> MtbenchError:
    """A driver error as a message that names the database and says what to do.

    ``doing`` is open, read or write: what mtbench was doing when the error came."""
    reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    lowered = reason.lower()
    if any(w in lowered for w in ("full", "disk i/o", "too large", "no space", "quota")):
        if doing != "write":
            return MtbenchError(f"{name}: cannot {doing} the database ({reason}): is the disk full? Even reading "
                                "a database in WAL mode needs room beside it for its -shm file; nothing was changed")
        return MtbenchError(f"{name}: cannot write the database ({reason}): is the disk full? What was stored "
                            "before is intact (finished trials are kept); free some space and run again")
    if any(w in lowered for w in ("malformed", "not a database", "corrupt")):
        return corrupt_error(name, reason)
    return MtbenchError(f"cannot {doing} the database {name}: {reason}")


def corrupt_error(name: str, reason: str) -> MtbenchError:
    return MtbenchError(f"{name}: the database is corrupt or not a SQLite file ({reason}); mtbench left it as it "
                        "is: restore it from a backup, or give another --db/--out")


def integrity_problems(connection: Connection, quick: bool = False) -> list[str]:
    """SQLite's own check of every page (``quick``: without cross-checking indexes, 20 times faster);
    empty when all is well, and always for other databases (their servers keep them whole)."""
    if connection.dialect.name != "sqlite":
        return []
    rows = connection.exec_driver_sql(f"PRAGMA {'quick_check' if quick else 'integrity_check'}").scalars().all()
    return [] if rows == ["ok"] else rows


def open_engine(url: str, read_only: bool) -> tuple[Engine, frozenset[str]]:
    """An engine on ``url``, after checking that the database is one this mtbench may read or write,
    and the ``table.column`` names a reader must read as NULL (an older database, read as it is;
    always empty for a writer, which upgrades)."""
    name, path = display_name(url), sqlite_path(url)
    if path is None and make_url(url).get_backend_name() == "sqlite":  # in memory: always new
        if read_only:
            raise DatabaseMissing(f"{name}: an in-memory database holds nothing to read")
        state = DatabaseState(None)
    elif path is not None and not path.exists():
        if read_only:
            raise DatabaseMissing(f"{path}: no such database file (run `mtbench run` first, or check --db/--out)")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = DatabaseState(None)
    else:
        reader = _reader_engine(url, path)
        try:
            state = inspect_database(reader, name)
            if read_only:
                _check_readable(state, name)
                return reader, state.absent()
        except BaseException:
            reader.dispose()
            raise
        reader.dispose()
    engine = _writer_engine(url)
    try:
        prepare_for_writing(engine, state, name)
    except BaseException:
        engine.dispose()
        raise
    return engine, frozenset()


def _reader_engine(url: str, path: Path | None) -> Engine:
    """Read-only connections: SQLite's ``mode=ro`` (no journal mode change, no file created),
    PostgreSQL sessions that the server keeps read-only."""
    if path is not None:
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        return create_engine(f"sqlite:///{path}", creator=lambda: sqlite3.connect(
            uri, uri=True, timeout=60, check_same_thread=False))
    if make_url(url).get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True,
                             connect_args={"options": "-c default_transaction_read_only=on"})
    return create_engine(url, pool_pre_ping=True)


def _writer_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 60})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL lets reports read while a run writes; only ever set on a database that is mtbench's."""
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def inspect_database(engine: Engine, name: str) -> DatabaseState:
    """The database's schema version and what it lacks; refuses a corrupt, foreign or newer one."""
    with engine.connect() as c:
        problems = integrity_problems(c, quick=True)
        if problems:
            raise corrupt_error(name, f"integrity check: {problems[0]}")
        tables = set(inspect(c).get_table_names())
        if not tables:
            return DatabaseState(None)
        if meta.name not in tables and not set(RESULT_TABLES) <= tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise MtbenchError(f"{name}: not an mtbench database (it holds the tables {shown}, not mtbench's); "
                               "mtbench left it as it is: give another --db/--out")
        version = _stored_version(c, name) if meta.name in tables else 1
        if version > SCHEMA_VERSION:
            raise MtbenchError(f"{name}: made by a newer mtbench (schema version {version}; this mtbench knows "
                               f"versions up to {SCHEMA_VERSION}): upgrade mtbench to use it")
        return DatabaseState(version, _missing(c, tables))


def _stored_version(c: Connection, name: str) -> int:
    """The version in ``mtbench_meta``; 1 when the row is absent (a creation cut short before it)."""
    value = c.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    if value is None:
        return 1
    try:
        return int(value)
    except ValueError:
        raise MtbenchError(f"{name}: mtbench_meta holds an unreadable schema_version {value!r}") from None


def _missing(c: Connection, tables: set[str]) -> list[tuple[Table, Column | None]]:
    inspector = inspect(c)
    missing: list[tuple[Table, Column | None]] = []
    for table in metadata.sorted_tables:
        if table.name not in tables:
            missing.append((table, None))
            continue
        present = {col["name"] for col in inspector.get_columns(table.name)}
        missing += [(table, col) for col in table.columns if col.name not in present]
    return missing


def _check_readable(state: DatabaseState, name: str) -> None:
    """Readers never migrate: an older schema is read as it is, unless it lacks something needed."""
    if state.version is None:
        raise DatabaseMissing(f"{name}: an empty database, not an mtbench one yet (run `mtbench run` first)")
    needed = [(t, c) for t, c in state.missing if t is not meta and not _readers_may_lack(c)]
    if needed:
        raise MtbenchError(f"{name}: made by an older mtbench (schema version {state.version}) and lacks "
                           f"{_names(needed)}; run {WRITE_COMMANDS} on it once to upgrade it, then read it")


def _readers_may_lack(column: Column | None) -> bool:
    """A column added later that readers of an older database read as NULL (not a missing table)."""
    return column is not None and bool(column.info.get(READERS_MAY_LACK))


def _names(items: list[tuple[Table, Column | None]]) -> str:
    return ", ".join(t.name if c is None else f"{t.name}.{c.name}" for t, c in items)


def prepare_for_writing(engine: Engine, state: DatabaseState, name: str) -> None:
    """Create the schema in a new or empty database, or bring an older mtbench one up to date.

    Every step is idempotent and the version is written last, so an upgrade cut short is simply
    redone by the next writer. Nothing happens to a database that is already current."""
    if state.version == SCHEMA_VERSION and not state.missing:
        return
    with engine.begin() as c:
        metadata.create_all(c)  # missing tables, with their indexes
        for table, column in state.missing:
            if column is not None:
                _add_column(c, table, column, name)
        for table in metadata.sorted_tables:  # indexes added since the database was made
            for index in table.indexes:
                index.create(c, checkfirst=True)
        if state.version is not None and state.version < 3:
            from mtbench.storage.migrate import rekey_trials

            rekey_trials(c)  # version 3: trial ids follow the written policy (mtbench.configs)
        if state.version is not None and state.version < 5:
            from mtbench.storage.migrate import fill_setting_ids

            fill_setting_ids(c)  # version 5: every stored trial gets its setting id, parents first
        c.execute(delete(meta).where(meta.c.key == "schema_version"))
        c.execute(insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))


def _add_column(c: Connection, table: Table, column: Column, name: str) -> None:
    if not column.nullable and column.server_default is None:
        raise MtbenchError(f"{name}: cannot upgrade this database: {table.name}.{column.name} is missing and has "
                           "no default; run this grid in a new results folder")
    quote_name = c.dialect.identifier_preparer.quote
    c.exec_driver_sql(f"ALTER TABLE {quote_name(table.name)} ADD COLUMN {quote_name(column.name)} "
                      f"{column.type.compile(dialect=c.dialect)}")


__all__ = ["DatabaseMissing", "DatabaseState", "database_error", "display_name", "integrity_problems",
           "open_engine", "sqlite_path"]
