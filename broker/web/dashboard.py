"""The dashboard: today's steps by status and modality, outbox health, last errors, listeners."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.store.schema import JournalRow, OutboxRow, PerformedStepRow, ScheduledStep
from broker.web.health import Readiness
from broker.web.journal_read import JournalSummary, journal_summary, outbound_summary
from broker.web.outbox_read import DestinationHealth, health
from broker.web.pages import day_bounds

LAST_ERRORS = 10


class StatusCount(BaseModel):
    modality: str
    status: str
    count: int


class Dashboard(BaseModel):
    day: str
    """Today, ``YYYY-MM-DD`` (the broker's local date)."""
    steps_today: list[StatusCount]
    statuses: list[str]
    modalities: list[str]
    mpps_in_progress: int
    outbox: list[DestinationHealth]
    refused_messages: list[JournalSummary]
    dead_messages: list[JournalSummary]
    readiness: Readiness

    def count_of(self, modality: str, status: str) -> int:
        return sum(
            c.count for c in self.steps_today if c.modality == modality and c.status == status
        )


def dashboard(session: Session, now: datetime, readiness: Readiness) -> Dashboard:
    counts = steps_today(session, now)
    return Dashboard(
        day=now.strftime("%Y-%m-%d"),
        steps_today=counts,
        statuses=sorted({count.status for count in counts}),
        modalities=sorted({count.modality for count in counts}),
        mpps_in_progress=int(
            session.scalar(select(func.count()).where(PerformedStepRow.status == "IN PROGRESS"))
            or 0
        ),
        outbox=health(session, now),
        refused_messages=_refused(session),
        dead_messages=_dead(session),
        readiness=readiness,
    )


def steps_today(session: Session, now: datetime) -> list[StatusCount]:
    """Steps scheduled to start today (local date), counted by modality and status."""
    first, last = day_bounds(now.date())
    rows = session.execute(
        select(ScheduledStep.modality, ScheduledStep.status, func.count())
        .where(ScheduledStep.start_datetime >= first, ScheduledStep.start_datetime <= last)
        .group_by(ScheduledStep.modality, ScheduledStep.status)
        .order_by(ScheduledStep.modality, ScheduledStep.status)
    ).all()
    return [StatusCount(modality=m or "?", status=s, count=n) for m, s, n in rows]


def _refused(session: Session) -> list[JournalSummary]:
    rows = session.scalars(
        select(JournalRow)
        .where(JournalRow.direction == "in", JournalRow.ack_code != "AA")
        .order_by(JournalRow.received_at.desc(), JournalRow.id.desc())
        .limit(LAST_ERRORS)
    ).all()
    return [journal_summary(row) for row in rows]


def _dead(session: Session) -> list[JournalSummary]:
    rows = session.scalars(
        select(OutboxRow)
        .where(OutboxRow.state == "dead")
        .order_by(OutboxRow.id.desc())
        .limit(LAST_ERRORS)
    ).all()
    return [outbound_summary(row) for row in rows]
