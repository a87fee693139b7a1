"""create_engine_for: SQLite pragmas and BEGIN IMMEDIATE, PostgreSQL URLs."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text

from broker.config import DatabaseConfig
from broker.store import Store, create_engine_for, migrate
from broker.store.engine import PING_AFTER_IDLE_SECONDS, ping_when_idle
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
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_idle_connection_cut_by_the_server_is_replaced_at_checkout(
    postgres_database: str,
) -> None:
    engine = create_engine_for(postgres_database, pool_size=1)  # used in turn: one connection
    try:
        with engine.connect() as connection:
            first = connection.scalar(text("SELECT pg_backend_pid()"))
        with psycopg.connect(postgres_database, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.1)

        with engine.connect() as connection:  # pinged, found dead, replaced
            second = connection.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_connection_used_a_moment_ago_is_not_pinged(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(postgres_database).set(drivername="postgresql+psycopg")
    engine = create_engine(url, pool_size=1)
    ping_when_idle(engine, 0.3)
    pings: list[object] = []
    monkeypatch.setattr(engine.dialect, "do_ping", pings.append)
    try:
        for _ in range(3):
            with engine.connect() as connection:
                connection.scalar(text("SELECT 1"))
        assert pings == []
        time.sleep(0.4)
        with engine.connect() as connection:
            connection.scalar(text("SELECT 1"))
        assert len(pings) == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@db/mwl", "postgresql+psycopg2://u@db/mwl", "not a url"])
def test_other_databases_are_refused(url: str) -> None:
    with pytest.raises(StoreFailure, match=r"database\.url"):
        create_engine_for(url)


def test_sqlite_in_memory_needs_no_directory() -> None:
    create_engine_for("sqlite://").dispose()
