"""Housekeeping: retention and expiry rules of ``[retention]``, once per cluster per run.

=======================  =====================================================================
rule                     what goes
=======================  =====================================================================
``final_steps_days``     orders whose steps all ended (COMPLETED, DISCONTINUED, CANCELED) and
                         that nothing touched for that long, with their requested procedures,
                         scheduled steps, station AE rows and MPPS links
``journal_days``         inbound journal entries received before then
``delivered_days``       sent and discarded outbox rows (sent, else queued, before then)
``expire_scheduled_...`` SCHEDULED steps whose start (``start_datetime``, local time as DICOM
                         has it) is that far in the past become DISCONTINUED
=======================  =====================================================================

0 switches a rule off. Patients and MPPS instances stay (an MPPS is the record of what was
performed; a patient may come back with the next order).

Every rule is idempotent and works in chunks of :data:`CHUNK` rows, one transaction each, so
the HL7 and DICOM writers never wait long for it. On PostgreSQL a run first takes the session
advisory lock :data:`LOCK_KEY` with ``pg_try_advisory_lock``: when another broker process
holds it, this run does nothing (it runs once per cluster). SQLite serves one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, exists, func, select, text, update
from sqlalchemy.orm import Session

from broker.config import RetentionConfig
from broker.store.errors import store_errors
from broker.store.outbox import State
from broker.store.schema import (
    JournalRow,
    MppsStepLink,
    Order,
    OutboxRow,
    RequestedProcedure,
    ScheduledStep,
    StepStationAE,
)
from mwl.model import FINAL_STATUSES, SPSStatus

log = logging.getLogger(__name__)

CHUNK = 500
LOCK_KEY = 0x6D776C_686B
"""``pg_try_advisory_lock`` key of a housekeeping run ("mwl" "hk")."""


@dataclass(frozen=True, slots=True)
class HousekeepingReport:
    """Rows removed or changed by one run."""

    orders_deleted: int = 0
    journal_deleted: int = 0
    outbox_deleted: int = 0
    steps_expired: int = 0


# --- the rules -------------------------------------------------------------------------------


def delete_finished_orders(session: Session, *, before: datetime) -> int:
    """Delete orders whose every step ended before ``before`` (see the module doc)."""
    unfinished = exists().where(
        RequestedProcedure.order_id == Order.id,
        ScheduledStep.procedure_id == RequestedProcedure.id,
        (ScheduledStep.status.not_in([s.value for s in FINAL_STATUSES]))
        | (ScheduledStep.updated_at >= before),
    )
    finished = select(Order.id).where(Order.updated_at < before, ~unfinished)
    return _in_chunks(session, finished, _delete_orders)


def _delete_orders(session: Session, order_ids: list[int]) -> None:
    procedures = select(RequestedProcedure.id).where(RequestedProcedure.order_id.in_(order_ids))
    steps = select(ScheduledStep.id).where(ScheduledStep.procedure_id.in_(procedures))
    session.execute(delete(StepStationAE).where(StepStationAE.step_id.in_(steps)))
    session.execute(delete(MppsStepLink).where(MppsStepLink.step_id.in_(steps)))
    session.execute(delete(ScheduledStep).where(ScheduledStep.procedure_id.in_(procedures)))
    session.execute(delete(RequestedProcedure).where(RequestedProcedure.order_id.in_(order_ids)))
    session.execute(delete(Order).where(Order.id.in_(order_ids)))


def delete_old_journal(session: Session, *, before: datetime) -> int:
    """Delete inbound journal entries received before ``before``."""
    old = select(JournalRow.id).where(JournalRow.received_at < before)
    return _in_chunks(session, old, _deleting(JournalRow))


def delete_delivered(session: Session, *, before: datetime) -> int:
    """Delete sent and discarded outbox rows sent (else queued) before ``before``."""
    done = [State.SENT.value, State.DISCARDED.value]
    old = select(OutboxRow.id).where(
        OutboxRow.state.in_(done), func.coalesce(OutboxRow.sent_at, OutboxRow.created_at) < before
    )
    return _in_chunks(session, old, _deleting(OutboxRow))


def expire_scheduled(session: Session, *, started_before: str, now: datetime) -> int:
    """SCHEDULED steps starting before ``started_before`` (``YYYYMMDDHHMMSS``) → DISCONTINUED."""
    stale = select(ScheduledStep.id).where(
        ScheduledStep.status == SPSStatus.SCHEDULED.value,
        ScheduledStep.start_datetime != "",
        ScheduledStep.start_datetime < started_before,
    )

    def discontinue(session: Session, ids: list[int]) -> None:
        session.execute(
            update(ScheduledStep)
            .where(ScheduledStep.id.in_(ids), ScheduledStep.status == SPSStatus.SCHEDULED.value)
            .values(
                status=SPSStatus.DISCONTINUED.value,
                updated_at=now,
                version=ScheduledStep.version + 1,
            )
        )

    return _in_chunks(session, stale, discontinue)


def _deleting(model: Any) -> Callable[[Session, list[int]], None]:
    def remove(session: Session, ids: list[int]) -> None:
        session.execute(delete(model).where(model.id.in_(ids)))

    return remove


def _in_chunks(session: Session, query: Any, apply: Callable[[Session, list[int]], None]) -> int:
    """Apply to the ids ``query`` selects, :data:`CHUNK` at a time, one commit each."""
    done = 0
    while ids := list(session.scalars(query.limit(CHUNK))):
        apply(session, ids)
        session.commit()
        done += len(ids)
        if len(ids) < CHUNK:
            break
    session.commit()
    return done


# --- one run ---------------------------------------------------------------------------------


class Housekeeping:
    """The rules of ``retention`` against one database, at most one run per cluster at once."""

    def __init__(self, engine: Engine, retention: RetentionConfig) -> None:
        self._engine = engine
        self._retention = retention

    def run(self, now: datetime) -> HousekeepingReport | None:
        """Apply every rule; None when another process is running them."""
        with (
            store_errors(),
            self._engine.connect() as connection,
            _cluster_lock(connection) as held,
        ):
            if not held:
                log.info("housekeeping skipped: another broker process is running it")
                return None
            with Session(bind=connection) as session:
                report = self._apply(session, now)
        log.info(
            "housekeeping: %d orders, %d journal entries, %d outbox rows deleted; "
            "%d scheduled steps expired",
            report.orders_deleted, report.journal_deleted, report.outbox_deleted,
            report.steps_expired,
        )  # fmt: skip
        return report

    def _apply(self, session: Session, now: datetime) -> HousekeepingReport:
        keep = self._retention
        expired = orders = journal = delivered = 0
        if keep.expire_scheduled_days:  # first: an expired step then ages like any other
            local = now.astimezone() - timedelta(days=keep.expire_scheduled_days)
            started_before = local.strftime("%Y%m%d%H%M%S")
            expired = expire_scheduled(session, started_before=started_before, now=now)
        if keep.final_steps_days:
            before = now - timedelta(days=keep.final_steps_days)
            orders = delete_finished_orders(session, before=before)
        if keep.journal_days:
            journal = delete_old_journal(session, before=now - timedelta(days=keep.journal_days))
        if keep.delivered_days:
            before = now - timedelta(days=keep.delivered_days)
            delivered = delete_delivered(session, before=before)
        return HousekeepingReport(
            orders_deleted=orders,
            journal_deleted=journal,
            outbox_deleted=delivered,
            steps_expired=expired,
        )


@contextmanager
def _cluster_lock(connection: Connection) -> Iterator[bool]:
    """PostgreSQL: the session advisory lock, if free; SQLite: always (one process)."""
    if connection.dialect.name != "postgresql":
        yield True
        return
    held = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}))
    connection.commit()
    try:
        yield held
    finally:
        if held:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            connection.commit()
