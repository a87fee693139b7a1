"""broker.store: SQLAlchemy storage behind the ports of :mod:`mwl.ports`.

SQLite (WAL, one node) or PostgreSQL (several broker processes); the schema changes only
through the Alembic migrations in ``migrations/``, applied by :func:`migrate`.

Usage::

    migrate(config.database)
    store = Store.open(config.database)
    with store.unit_of_work() as uow:
        patient = uow.worklist.upsert_patient(record)
        ...
        uow.commit()
    store.close()

Errors: every database error leaves as :class:`mwl.ports.StoreFailure` (a second AA for one
sender and MSH-10 as its subclass :class:`mwl.ports.DuplicateMessage`); see
:mod:`broker.store.errors`.
"""

from __future__ import annotations

from broker.store.database import SqlUnitOfWork, Store
from broker.store.engine import DatabaseSettingsLike, create_engine_for
from broker.store.migrate import migrate

__all__ = ["DatabaseSettingsLike", "SqlUnitOfWork", "Store", "create_engine_for", "migrate"]
