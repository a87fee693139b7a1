"""Shared fixtures: every test that takes ``store`` runs on SQLite (a file in tmp_path) and on
PostgreSQL.

PostgreSQL: one fresh database ``mwl_test_<random>`` for the test session, created and dropped
through the ``postgres`` user at 127.0.0.1:5432 (``MWL_BROKER_TEST_PG_URL`` overrides the
server); each test starts from an empty ``public`` schema. When the server is unreachable the
PostgreSQL cases fail with CI=true and are skipped otherwise, with the reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from broker.config import DatabaseConfig
from broker.store import Store, migrate

ADMIN_URL = os.environ.get("MWL_BROKER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A libpq URL of a fresh PostgreSQL database, dropped after the session."""
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL at {ADMIN_URL} is unreachable: {str(exc).strip()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"mwl_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseConfig:
    """Settings for an empty database: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return DatabaseConfig(url=f"sqlite:///{tmp_path / 'mwl.sqlite'}")
    url: str = request.getfixturevalue("postgres_database")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    return DatabaseConfig(url=url)


@pytest.fixture
def store(database: DatabaseConfig) -> Iterator[Store]:
    """An open store on a migrated, empty database."""
    migrate(database)
    with Store.open(database) as opened:
        yield opened
