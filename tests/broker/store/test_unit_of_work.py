"""Units of work: commit, rollback, and StoreFailure for every database error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy.exc import SQLAlchemyError

from broker.config import DatabaseConfig
from broker.store import Store, migrate
from mwl.model import PatientKey
from mwl.ports import StoreFailure
from tests.broker.store.samples import patient

KEY = PatientKey("P1", "HOSP")


def test_commit_makes_changes_visible(store: Store) -> None:
    with store.unit_of_work() as uow:
        row = uow.worklist.upsert_patient(patient())
        uow.commit()
    with store.unit_of_work() as uow:
        assert uow.worklist.find_patient(KEY) == row


def test_leaving_without_commit_rolls_back(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.worklist.upsert_patient(patient())
    with store.unit_of_work() as uow:
        assert uow.worklist.find_patient(KEY) is None


def test_an_exception_rolls_back_and_propagates(store: Store) -> None:
    with pytest.raises(KeyError), store.unit_of_work() as uow:
        uow.worklist.upsert_patient(patient())
        raise KeyError("mapping failed")
    with store.unit_of_work() as uow:
        assert uow.worklist.find_patient(KEY) is None


def test_only_what_was_committed_stays(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.worklist.upsert_patient(patient())
        uow.commit()
        uow.worklist.upsert_patient(patient("P2"))
    with store.unit_of_work() as uow:
        assert uow.worklist.find_patient(KEY) is not None
        assert uow.worklist.find_patient(PatientKey("P2", "HOSP")) is None


def test_reads_do_not_wait_for_a_writer(store: Store) -> None:
    with store.unit_of_work() as writer:
        writer.worklist.upsert_patient(patient())  # holds SQLite's write lock from here
        assert store.worklist_items() == []
        with store.unit_of_work() as uow:
            uow.commit()  # a unit that never touched the database takes no lock


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def unreachable_databases(tmp_path: Path) -> list[DatabaseConfig]:
    directory = tmp_path / "a-directory.sqlite"
    directory.mkdir()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not an SQLite database file" * 100)
    return [
        DatabaseConfig(url=f"postgresql://postgres@127.0.0.1:{closed_port()}/x?connect_timeout=5"),
        DatabaseConfig(url=f"sqlite:///{directory}"),
        DatabaseConfig(url=f"sqlite:///{garbage}"),
    ]


@pytest.mark.parametrize("which", ["postgresql-closed-port", "sqlite-directory", "sqlite-garbage"])
def test_an_unreachable_database_raises_store_failure(tmp_path: Path, which: str) -> None:
    index = ["postgresql-closed-port", "sqlite-directory", "sqlite-garbage"].index(which)
    database = unreachable_databases(tmp_path)[index]
    with Store.open(database) as store:
        with store.unit_of_work() as uow, pytest.raises(StoreFailure) as failure:
            uow.worklist.find_patient(KEY)
        assert isinstance(failure.value.__cause__, SQLAlchemyError)
        with pytest.raises(StoreFailure):
            store.worklist_items()
    with pytest.raises(StoreFailure):
        migrate(database)


def test_a_missing_sqlite_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(StoreFailure, match=str(missing)):
        Store.open(DatabaseConfig(url=f"sqlite:///{missing / 'mwl.sqlite'}"))
