"""create_engine_for: SQLite pragmas and BEGIN IMMEDIATE, PostgreSQL URLs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from broker.config import DatabaseConfig
from broker.store import Store, create_engine_for, migrate
from mwl.ports import StoreFailure
from tests.broker.store.samples import patient


def test_sqlite_connections_are_tuned(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mwl.sqlite'}")
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
            case_sensitive = connection.scalar(text("SELECT 'a' LIKE 'A'")) == 0
        assert pragmas == {
            "journal_mode": "wal",
            "synchronous": 2,  # FULL
            "busy_timeout": 10_000,
            "foreign_keys": 1,
        }
        assert case_sensitive  # PRAGMA case_sensitive_like: a prefix LIKE can use an index
    finally:
        engine.dispose()


def test_a_unit_of_work_takes_the_sqlite_write_lock_when_it_begins(tmp_path: Path) -> None:
    path = tmp_path / "mwl.sqlite"
    database = DatabaseConfig(url=f"sqlite:///{path}")
    migrate(database)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with Store.open(database) as store, store.unit_of_work() as uow:
            uow.worklist.find_patient(patient().key)  # a read, yet BEGIN IMMEDIATE
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            assert store.worklist_items() == []  # readers begin deferred and do not wait
    finally:
        other.close()


@pytest.mark.parametrize("url", ["postgresql://u@db/mwl", "postgresql+psycopg://u@db/mwl"])
def test_postgresql_urls_use_psycopg_3(url: str) -> None:
    engine = create_engine_for(url, pool_size=3)
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        assert engine.pool._pre_ping
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@db/mwl", "postgresql+psycopg2://u@db/mwl", "not a url"])
def test_other_databases_are_refused(url: str) -> None:
    with pytest.raises(StoreFailure, match=r"database\.url"):
        create_engine_for(url)


def test_sqlite_in_memory_needs_no_directory() -> None:
    create_engine_for("sqlite://").dispose()
