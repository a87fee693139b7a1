"""SQLAlchemy engines for the two supported databases: SQLite (one node) and PostgreSQL (many).

SQLite is tuned for an intake that ACKs only what is durable and for several threads (MLLP,
C-FIND, MPPS) writing through one file: WAL so readers never block the writer, ``synchronous
= FULL`` so a committed order survives a power cut (an AA promises that), a 10 s busy timeout,
foreign keys on, case-sensitive ``LIKE`` (DICOM matching is case-sensitive; PN is matched on a
folded copy) so a prefix ``LIKE`` can use an index, and ``BEGIN IMMEDIATE`` for writers.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry

from mwl.ports import StoreFailure

READ_ONLY = "mwl_read_only"
"""Execution option: on SQLite, begin with a deferred ``BEGIN`` (readers take no write lock)."""

SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout = 10000",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA case_sensitive_like = ON",
)


class DatabaseSettingsLike(Protocol):
    """What the store needs from the configuration (``broker.config.DatabaseConfig``)."""

    @property
    def url(self) -> str: ...

    @property
    def pool_size(self) -> int: ...

    @property
    def echo(self) -> bool: ...


def engine_for(database: DatabaseSettingsLike) -> Engine:
    """:func:`create_engine_for` from the ``[database]`` settings."""
    return create_engine_for(database.url, pool_size=database.pool_size, echo=database.echo)


def create_engine_for(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """An engine for a ``sqlite:///path`` or ``postgresql[+psycopg]://`` URL.

    Raises
    ------
    StoreFailure
        The URL names another database, or the SQLite file's directory does not exist.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:  # the message does not echo the URL (it may hold a password)
        raise StoreFailure(f"database.url: {exc}") from exc
    match parsed.get_backend_name():
        case "sqlite":
            return _sqlite_engine(parsed, pool_size=pool_size, echo=echo)
        case "postgresql":
            return _postgresql_engine(parsed, pool_size=pool_size, echo=echo)
        case other:
            raise StoreFailure(f"database.url: unsupported database {other!r} (sqlite, postgresql)")


def _postgresql_engine(url: URL, *, pool_size: int, echo: bool) -> Engine:
    # A bare postgresql:// would pick psycopg2, which is not installed; psycopg 3 is.
    if url.drivername not in ("postgresql", "postgresql+psycopg"):
        raise StoreFailure(f"database.url: driver {url.drivername!r} unsupported (psycopg)")
    url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url, pool_size=pool_size, echo=echo)
    ping_when_idle(engine, PING_AFTER_IDLE_SECONDS)
    return engine


PING_AFTER_IDLE_SECONDS = 1.0
"""A pooled PostgreSQL connection back in the pool for longer is pinged before it is used."""


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection at checkout when it has been idle ``idle_seconds`` or more.

    ``pool_pre_ping`` pings at every checkout: two of the ~16 round trips of an MPPS N-CREATE +
    N-SET pair. A connection given back less than a second ago was alive then; one that sat
    idle may have been cut (a server restart, a failover, a firewall's idle timeout). A failed
    ping raises ``DisconnectionError``, and the pool replaces the connection and tries again,
    as with ``pool_pre_ping`` (SQLAlchemy's "pessimistic" disconnect handling recipe). A
    connection that dies within the second fails its unit of work with ``StoreFailure``.
    """

    @event.listens_for(engine, "checkin")
    def _given_back(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is None or time.monotonic() - returned < idle_seconds:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError(f"idle connection lost: {error}") from error


_RETURNED_AT = "mwl_returned_at"


def _sqlite_engine(url: URL, *, pool_size: int, echo: bool) -> Engine:
    _check_sqlite_directory(url)
    engine = create_engine(
        url, pool_size=pool_size, echo=echo, connect_args={"check_same_thread": False}
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _check_sqlite_directory(url: URL) -> None:
    if url.database in (None, "", ":memory:") or url.query.get("uri"):
        return
    directory = Path(url.database).expanduser().absolute().parent
    if not directory.is_dir():
        raise StoreFailure(f"database.url: directory {directory} of the SQLite file does not exist")


def _on_sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # sqlite3 must not emit its own (deferred) BEGIN: _on_sqlite_begin does (SQLAlchemy's
    # documented recipe); this also keeps the PRAGMAs below outside any transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        _use_wal(cursor)
    finally:
        cursor.close()


WAL_SWITCH_SECONDS = 10.0


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL once (the mode is persistent). Switching needs the file to
    itself and SQLite answers "database is locked" at once, without its busy handler, while
    another process is connecting to a new file: retry for a while."""
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _on_sqlite_begin(connection: Connection) -> None:
    # A deferred BEGIN that later writes must upgrade its lock and fails at once with
    # "database is locked" when another writer holds it (the busy handler cannot help);
    # BEGIN IMMEDIATE takes the write lock up front and waits busy_timeout for it.
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
