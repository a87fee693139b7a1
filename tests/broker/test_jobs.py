"""Housekeeping rules on SQLite and PostgreSQL, the advisory lock, and the scheduler's jobs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select, update

from broker.config import DatabaseConfig, OutboxConfig, RetentionConfig
from broker.housekeeping import LOCK_KEY, Housekeeping, HousekeepingReport
from broker.jobs import Jobs
from broker.store import Store, migrate
from broker.store.schema import (
    JournalRow,
    MppsStepLink,
    Order,
    OutboxRow,
    RequestedProcedure,
    ScheduledStep,
    StepStationAE,
)
from mwl.model import SPSStatus
from tests.broker.store.samples import journal_entry, order, patient, procedure, step
from tests.fake_ris import queue, status_entry
from tests.mpps.datasets import in_progress

NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(days=100)
RETENTION = RetentionConfig(
    final_steps_days=30, journal_days=90, delivered_days=30, expire_scheduled_days=7
)


def add_order(store: Store, n: int, *steps: tuple[str, str], status: SPSStatus) -> int:
    """Order ``PL<n>`` with one procedure and a step per ``(start_date, start_time)``."""
    records = tuple(
        step(f"SPS{n}-{i}", start_date=d, start_time=t) for i, (d, t) in enumerate(steps)
    )
    record = order(
        f"PL{n}",
        filler=f"FI{n}",
        accession=f"ACC{n}",
        procedures=(procedure(f"1.2.3.{n}", f"RP{n}", steps=records),),
    )
    with store.unit_of_work() as uow:
        patient_row = uow.worklist.upsert_patient(patient(f"P{n}"))
        stored = uow.worklist.add_order(patient_row, record, status, sender=("RIS", "HOSP"))
        uow.commit()
    return stored.id


def step_ids(store: Store, order_id: int) -> list[int]:
    with store.read_session() as session:
        query = (
            select(ScheduledStep.id)
            .join(RequestedProcedure)
            .where(RequestedProcedure.order_id == order_id)
            .order_by(ScheduledStep.id)
        )
        return list(session.scalars(query))


def change(store: Store, model: Any, ids: list[int], **values: Any) -> None:
    with store.read_session() as session:
        session.execute(update(model).where(model.id.in_(ids)).values(**values))
        session.commit()


def count(store: Store, model: Any, *where: Any) -> int:
    with store.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def finished(store: Store, n: int, when: datetime, status: SPSStatus = SPSStatus.COMPLETED) -> int:
    """An order whose single step ended at ``when``."""
    order_id = add_order(store, n, ("20240101", "0800"), status=SPSStatus.SCHEDULED)
    change(store, ScheduledStep, step_ids(store, order_id), status=status.value, updated_at=when)
    change(store, Order, [order_id], updated_at=when)
    return order_id


def run(store: Store, retention: RetentionConfig = RETENTION) -> HousekeepingReport | None:
    return Housekeeping(store.engine, retention).run(NOW)


# --- retention ---------------------------------------------------------------------------------


def test_orders_whose_steps_all_ended_long_ago_go_with_everything_below(store: Store) -> None:
    old = finished(store, 1, LONG_AGO)
    finished(store, 2, LONG_AGO, SPSStatus.CANCELED)
    recent = finished(store, 3, NOW - timedelta(days=2))
    with store.mpps_unit_of_work() as uow:
        uow.mpps.add(in_progress(), calling_ae="CT1", step_ids=step_ids(store, old))
        uow.commit()

    report = run(store)

    assert report is not None and report.orders_deleted == 2
    assert count(store, Order) == 1 and count(store, Order, Order.id == recent) == 1
    assert count(store, RequestedProcedure) == count(store, ScheduledStep) == 1
    assert count(store, StepStationAE) == 1
    assert count(store, MppsStepLink) == 0


def test_an_order_with_a_step_still_open_or_recently_ended_stays(store: Store) -> None:
    open_order = add_order(store, 1, ("20240101", "0800"), ("20240101", "0900"),
                           status=SPSStatus.SCHEDULED)  # fmt: skip
    first, second = step_ids(store, open_order)
    change(store, ScheduledStep, [first], status="COMPLETED", updated_at=LONG_AGO)
    change(store, ScheduledStep, [second], status="STARTED", updated_at=LONG_AGO)
    change(store, Order, [open_order], updated_at=LONG_AGO)
    mixed = finished(store, 2, LONG_AGO)
    newer_step = step_ids(store, mixed)
    change(store, ScheduledStep, newer_step, updated_at=NOW - timedelta(days=1))
    touched = finished(store, 3, LONG_AGO)
    change(store, Order, [touched], updated_at=NOW)

    report = run(store, RetentionConfig(expire_scheduled_days=0))

    assert report == HousekeepingReport()
    assert count(store, Order) == 3


def test_old_journal_entries_go(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.journal.record(journal_entry("OLD"))
        uow.journal.record(journal_entry("NEW"))
        uow.commit()
    with store.read_session() as session:
        session.execute(
            update(JournalRow).where(JournalRow.control_id == "NEW").values(received_at=NOW)
        )
        session.commit()

    report = run(store)

    assert report is not None and report.journal_deleted == 1
    with store.read_session() as session:
        assert list(session.scalars(select(JournalRow.control_id))) == ["NEW"]


def test_delivered_outbox_rows_go_pending_and_dead_stay(store: Store) -> None:
    ids = queue(store, *(status_entry(n) for n in range(6)))
    states = ["sent", "discarded", "sent", "pending", "dead", "discarded"]
    for row_id, state in zip(ids, states, strict=True):
        change(store, OutboxRow, [row_id], state=state, created_at=LONG_AGO)
    change(store, OutboxRow, ids[:1], sent_at=LONG_AGO)
    change(store, OutboxRow, ids[2:3], sent_at=NOW)  # queued long ago, sent just now
    change(store, OutboxRow, ids[5:], created_at=NOW)

    report = run(store)

    assert report is not None and report.outbox_deleted == 2
    with store.read_session() as session:
        left = list(session.scalars(select(OutboxRow.id).order_by(OutboxRow.id)))
    assert left == ids[2:]


def test_scheduled_steps_long_past_their_start_are_discontinued(store: Store) -> None:
    past = (NOW.astimezone() - timedelta(days=10)).strftime("%Y%m%d")
    soon = (NOW.astimezone() - timedelta(days=2)).strftime("%Y%m%d")
    stale = add_order(store, 1, (past, "0800"), status=SPSStatus.SCHEDULED)
    recent = add_order(store, 2, (soon, "0800"), status=SPSStatus.SCHEDULED)
    undated = add_order(store, 3, ("", ""), status=SPSStatus.SCHEDULED)
    started = add_order(store, 4, (past, "0800"), status=SPSStatus.STARTED)

    report = run(store)

    assert report is not None and report.steps_expired == 1
    with store.read_session() as session:
        statuses = {
            order_id: session.execute(
                select(ScheduledStep.status, ScheduledStep.version).where(
                    ScheduledStep.id.in_(step_ids(store, order_id))
                )
            ).one()
            for order_id in (stale, recent, undated, started)
        }
    assert statuses[stale] == ("DISCONTINUED", 2)
    assert [statuses[o][0] for o in (recent, undated, started)] == ["SCHEDULED"] * 2 + ["STARTED"]


def test_a_second_run_changes_nothing(store: Store) -> None:
    finished(store, 1, LONG_AGO)
    past = (NOW - timedelta(days=10)).strftime("%Y%m%d")
    add_order(store, 2, (past, "0800"), status=SPSStatus.SCHEDULED)
    first = run(store)
    assert first is not None and (first.orders_deleted, first.steps_expired) == (1, 1)
    assert run(store) == HousekeepingReport()


def test_zero_switches_a_rule_off(store: Store) -> None:
    finished(store, 1, LONG_AGO)
    off = RetentionConfig(
        final_steps_days=0, journal_days=0, delivered_days=0, expire_scheduled_days=0
    )
    assert run(store, off) == HousekeepingReport()
    assert count(store, Order) == 1


def test_large_sets_go_in_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broker.housekeeping.CHUNK", 2)
    for n in range(5):
        finished(store, n, LONG_AGO)
    report = run(store)
    assert report is not None and report.orders_deleted == 5
    assert count(store, Order) == 0


# --- once per cluster ------------------------------------------------------------------------


@pytest.fixture
def postgres_store(postgres_database: str) -> Iterator[Store]:
    """An open store on an empty, migrated PostgreSQL database."""
    with psycopg.connect(postgres_database, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    database = DatabaseConfig(url=postgres_database)
    migrate(database)
    with Store.open(database) as opened:
        yield opened


@pytest.mark.postgres
def test_a_run_is_skipped_while_another_process_holds_the_lock(
    postgres_store: Store, postgres_database: str
) -> None:
    store = postgres_store
    finished(store, 1, LONG_AGO)
    with psycopg.connect(postgres_database, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        assert run(store) is None
        assert count(store, Order) == 1
        other.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    report = run(store)
    assert report is not None and report.orders_deleted == 1
    with psycopg.connect(postgres_database, autocommit=True) as other:  # released after the run
        held = other.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        assert held == (True,)


# --- the scheduler -----------------------------------------------------------------------------


def test_jobs_poll_the_sender_and_run_housekeeping(store: Store) -> None:
    polled = threading.Event()
    finished(store, 1, LONG_AGO)

    async def scenario() -> HousekeepingReport | None:
        jobs = Jobs(
            outbox=OutboxConfig(poll_interval=0.05),
            retention=RETENTION,
            poll=polled.set,
            housekeeping=Housekeeping(store.engine, RETENTION),
        )
        jobs.start()
        try:
            assert sorted(jobs.job_ids) == ["housekeeping", "outbox-poll"]
            assert await asyncio.to_thread(polled.wait, 5.0)
            return await jobs.housekeeping()
        finally:
            await jobs.stop()

    report = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert report is not None and report.orders_deleted == 1


def test_jobs_are_coalesced_and_never_overlap() -> None:
    async def scenario() -> list[tuple[bool, int, int | None]]:
        jobs = Jobs(outbox=OutboxConfig(), retention=RETENTION, poll=lambda: None)
        jobs.start()
        try:
            scheduler = jobs._scheduler
            assert scheduler is not None
            return [
                (job.coalesce, job.max_instances, job.misfire_grace_time)
                for job in scheduler.get_jobs()
            ]
        finally:
            await jobs.stop()

    assert asyncio.run(scenario()) == [(True, 1, 1)]


def test_housekeeping_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    from tests.broker.store.test_unit_of_work import closed_port  # noqa: PLC0415

    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/x?connect_timeout=5"
    with Store.open(DatabaseConfig(url=url)) as unreachable:
        jobs = Jobs(
            outbox=OutboxConfig(),
            retention=RETENTION,
            housekeeping=Housekeeping(unreachable.engine, RETENTION),
        )
        assert asyncio.run(jobs.housekeeping()) is None
    assert "housekeeping failed" in caplog.text
