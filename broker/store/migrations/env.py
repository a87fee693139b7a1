"""Alembic environment for the broker's database.

:func:`broker.store.migrate` runs it with the connection in ``config.attributes["connection"]``
(no ``alembic.ini``). For ``alembic revision --autogenerate`` during development, an ini file
with ``script_location`` pointing here and ``sqlalchemy.url`` works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from broker.store.engine import create_engine_for
from broker.store.schema import metadata


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_url(url: str) -> None:
    engine = create_engine_for(url, pool_size=1)
    try:
        with engine.begin() as connection:
            run_with(connection)
    finally:
        engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported: connect to a database")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection in config.attributes and no sqlalchemy.url option")
    run_from_url(url)


main()
