"""SqlJournal: the message journal and its once-only AA, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.store import Store
from broker.store.journal import SqlJournal
from broker.store.schema import JournalRow
from mwl.model import PatientKey
from mwl.ports import DuplicateMessage, JournalEntry
from tests.broker.store.samples import SENDER, journal_entry, patient


def record(store: Store, *entries: JournalEntry) -> None:
    with store.unit_of_work() as uow:
        for entry in entries:
            uow.journal.record(entry)
        uow.commit()


def test_find_accepted_returns_the_ack_of_the_accepted_message(store: Store) -> None:
    accepted = journal_entry("MSG1")
    with store.unit_of_work() as uow:
        assert uow.journal.find_accepted(SENDER, "MSG1") is None
    record(store, journal_entry("MSG1", "AE"), accepted)
    with store.unit_of_work() as uow:
        assert uow.journal.find_accepted(SENDER, "MSG1") == accepted.ack
        assert uow.journal.find_accepted(("RIS", "OTHER"), "MSG1") is None
        assert uow.journal.find_accepted(SENDER, "MSG2") is None


def test_rejected_messages_are_not_accepted(store: Store) -> None:
    record(store, journal_entry("MSG1", "AR"), journal_entry("MSG1", "AE"))
    record(store, journal_entry("MSG1", "AR"))
    with store.unit_of_work() as uow:
        assert uow.journal.find_accepted(SENDER, "MSG1") is None


def test_a_second_aa_raises_duplicate_message_at_commit(store: Store) -> None:
    record(store, journal_entry("MSG1"))
    with store.unit_of_work() as uow:
        uow.worklist.upsert_patient(patient("P7"))
        uow.journal.record(journal_entry("MSG1"))
        with pytest.raises(DuplicateMessage):
            uow.commit()
    with store.unit_of_work() as uow:
        assert uow.worklist.find_patient(PatientKey("P7", "HOSP")) is None  # rolled back
    with store.read_session() as session:
        assert len(session.scalars(select(JournalRow.id)).all()) == 1


def test_the_same_control_id_from_another_sender_is_another_message(store: Store) -> None:
    record(store, journal_entry("MSG1"), journal_entry("MSG1", sender=("RIS", "CLINIC")))
    with store.unit_of_work() as uow:
        assert uow.journal.find_accepted(("RIS", "CLINIC"), "MSG1") is not None


def test_concurrent_accepts_of_one_message_let_one_win(store: Store) -> None:
    outcome: list[BaseException | None] = []

    def accept_in_other_unit() -> None:
        try:
            record(store, journal_entry("MSG1"))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with store.unit_of_work() as uow:
        uow.journal.record(journal_entry("MSG1"))
        uow.journal.find_accepted(SENDER, "MSG1")  # flushes: the row now holds its index entry
        other = threading.Thread(target=accept_in_other_unit)
        other.start()
        uow.commit()
    other.join(timeout=30)
    assert len(outcome) == 1
    assert isinstance(outcome[0], DuplicateMessage)


def test_the_row_keeps_every_field_and_utc(store: Store) -> None:
    entry = replace(
        journal_entry("MSG1", "AE"),
        received_at=datetime(2024, 5, 1, 11, 30, tzinfo=timezone(timedelta(hours=2))),
        error="PID-3 missing",
    )
    record(store, entry)
    with store.read_session() as session:
        row = session.scalars(select(JournalRow)).one()
    assert row.received_at == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    assert row.received_at.tzinfo is UTC
    assert (row.direction, row.peer, row.raw, row.ack) == ("in", entry.peer, entry.raw, entry.ack)
    assert (row.message_type, row.trigger_event, row.version) == ("ORM", "O01", "2.3.1")
    assert (row.error, row.patient_id, row.accession) == ("PID-3 missing", "P1", "ACC1")


def test_a_naive_timestamp_is_refused(store: Store) -> None:
    naive = replace(journal_entry(), received_at=datetime(2024, 5, 1, 9, 30))
    with store.unit_of_work() as uow, pytest.raises(ValueError, match="timezone-aware"):
        uow.journal.record(naive)


def test_find_accepted_sees_the_row_recorded_in_its_unit(store: Store) -> None:
    accepted = journal_entry("MSG1")
    with store.unit_of_work() as uow:
        uow.journal.record(accepted)
        assert uow.journal.find_accepted(SENDER, "MSG1") == accepted.ack
        uow.journal.record(journal_entry("MSG2", "AE"))
        uow.commit()
    with store.read_session() as session:
        assert session.scalars(select(JournalRow.control_id).order_by(JournalRow.id)).all() == [
            "MSG1",
            "MSG2",
        ]


def test_a_rollback_drops_the_rows_recorded_before_it(store: Store) -> None:
    with Session(store.engine) as session:
        journal = SqlJournal(session)
        journal.record(journal_entry("MSG1"))
        session.rollback()
        journal.record(journal_entry("MSG2"))
        session.commit()
        journal.record(journal_entry("MSG3"))
        session.commit()
    with store.read_session() as session:
        assert session.scalars(select(JournalRow.control_id).order_by(JournalRow.id)).all() == [
            "MSG2",
            "MSG3",
        ]


def test_a_savepoint_rollback_drops_only_the_rows_recorded_in_it(store: Store) -> None:
    with Session(store.engine) as session:
        journal = SqlJournal(session)
        journal.record(journal_entry("MSG1"))
        savepoint = session.begin_nested()
        journal.record(journal_entry("MSG2"))
        savepoint.rollback()
        with session.begin_nested():
            journal.record(journal_entry("MSG3"))
        journal.record(journal_entry("MSG4"))
        session.commit()
    with store.read_session() as session:
        assert session.scalars(select(JournalRow.control_id).order_by(JournalRow.id)).all() == [
            "MSG1",
            "MSG3",
            "MSG4",
        ]
