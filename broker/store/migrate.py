"""Bring the database schema to the newest revision: ``alembic upgrade head``, in code.

Called at every start (and by ``mwl-broker migrate``): a database already at head is left as
it is. Several broker processes may start together against one PostgreSQL; a transaction-
scoped advisory lock lets one migrate while the others wait, then find it at head. SQLite
writers are serialised by ``BEGIN IMMEDIATE`` already (see :mod:`broker.store.engine`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text

from broker.store.engine import DatabaseSettingsLike, engine_for
from broker.store.errors import store_errors
from mwl.ports import StoreFailure

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().with_name("migrations")

_MIGRATION_LOCK = 0x6D776C_6D6967  # "mwl" "mig": any constant shared by every broker process


def migrate(database: DatabaseSettingsLike) -> None:
    """Upgrade the configured database to the newest schema revision.

    Raises
    ------
    StoreFailure
        The database is unreachable, the upgrade failed (nothing of it is kept: the
        upgrade runs in one transaction), or the database is at a revision this version
        of the broker does not know (a newer broker migrated it).
    """
    engine = engine_for(database)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on ``engine`` in one transaction."""
    with store_errors():
        try:
            with engine.begin() as connection:
                _wait_for_other_migrators(connection)
                command.upgrade(alembic_config(connection), revision)
        except CommandError as exc:
            raise StoreFailure(f"schema migration failed: {exc}") from exc
    log.info("database schema at revision %s", revision)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration without ``alembic.ini``, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _wait_for_other_migrators(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})


def pending_upgrade(database: DatabaseSettingsLike) -> str | None:
    """Why the database is not at this broker's schema revision, or None when it is.

    ``serve`` refuses to start on a PostgreSQL database that ``mwl-broker migrate`` has not
    brought to head (an operator decides when a shared database changes); an unreachable
    database raises :class:`StoreFailure`.
    """
    engine = engine_for(database)
    try:
        with store_errors(), engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    wanted = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    if current == wanted:
        return None
    found = ", ".join(sorted(current)) or "no schema"
    return f"database is at {found}, this broker needs {', '.join(sorted(wanted))}"
