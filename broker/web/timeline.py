"""One order's story, with times: order received → steps scheduled → returned to which
calling AE's C-FIND → MPPS started / completed → HL7 status delivered to the RIS.

Sources: the journal (inbound messages carrying the order's accession number, and the
console's writes on it), the order and step rows, the in-memory C-FIND log
(:mod:`broker.web.cfind`: this process, recent queries only), the MPPS instances linked to the
order's steps, and the outbox rows of the order (``order_key`` ``order:<id>``). "Returned
to" is decided from the remembered C-FIND requests (see :mod:`broker.web.cfind` for what that
can and cannot tell).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from broker.store.schema import JournalRow, Order, Patient, RequestedProcedure, ScheduledStep
from broker.web.cfind import CFindLog
from broker.web.matching import item_keys
from broker.web.mpps_read import MppsSummary, mpps_of_steps
from broker.web.outbox_read import OutboxSummary, outbox_of_order
from broker.web.worklist_read import (
    OrderSummary,
    StepSummary,
    WorklistFilter,
    conditions,
    order_summary,
    summaries,
    summary_query,
)

ORDER_MESSAGE_TYPES = ("ORM", "OMI", "OMG", "CONSOLE")


class TimelineEvent(BaseModel):
    at: datetime | None
    kind: str
    """``message``, ``scheduled``, ``status``, ``queried``, ``mpps``, ``outbound``, ``console``."""
    title: str
    detail: str = ""
    step_id: int | None = None
    link: str = ""
    """The console page with more (a journal entry, an MPPS, the outbox)."""


class Timeline(BaseModel):
    order: OrderSummary
    patient_id: str
    patient_name: str
    steps: list[StepSummary]
    events: list[TimelineEvent]
    cfind_log: bool
    """False: the C-FIND log is not attached, so "queried by" cannot be shown."""


def order_timeline(session: Session, order_id: int, cfind: CFindLog) -> Timeline | None:
    order = session.get(Order, order_id)
    if order is None:
        return None
    patient = session.get_one(Patient, order.patient_id)
    rows = session.execute(
        summary_query().where(*conditions(WorklistFilter(order_id=order_id)))
    ).all()
    steps = summaries(session, rows)
    events = [
        *_messages(session, order, patient),
        *_scheduled(order, steps),
        *_queried(session, cfind, order),
        *_performed(mpps_of_steps(session, [step.step_id for step in steps])),
        *_outbound(outbox_of_order(session, order_id)),
    ]
    events.sort(key=lambda event: (event.at is None, event.at or datetime.min))
    return Timeline(
        order=order_summary(order), patient_id=patient.patient_id, patient_name=patient.name,
        steps=steps, events=events, cfind_log=cfind.attached,
    )  # fmt: skip


def _messages(session: Session, order: Order, patient: Patient) -> list[TimelineEvent]:
    """The journal rows of the order: by its accession number; an order without one (the
    journal keys messages by accession) gets its patient's order messages without one."""
    query = select(JournalRow).where(JournalRow.direction.in_(("in", "ops")))
    if order.accession:
        query = query.where(JournalRow.accession == order.accession)
    else:
        query = query.where(
            JournalRow.accession == "",
            JournalRow.patient_id == patient.patient_id,
            JournalRow.message_type.in_(ORDER_MESSAGE_TYPES),
        )
    rows = session.scalars(query.order_by(JournalRow.received_at, JournalRow.id).limit(200))
    return [_message(row) for row in rows]


def _message(row: JournalRow) -> TimelineEvent:
    if row.direction == "ops":
        return TimelineEvent(
            at=row.received_at, kind="console",
            title=f"{row.peer}: {row.trigger_event.lower()} ({row.ack_code})",
            detail=row.error, link=f"/journal/{row.id}",
        )  # fmt: skip
    kind, error = f"{row.message_type}^{row.trigger_event}", row.error
    return TimelineEvent(
        at=row.received_at, kind="message", title=f"{kind} received, answered {row.ack_code}",
        detail=f"control ID {row.control_id} from {row.peer}" + (f": {error}" if error else ""),
        link=f"/journal/{row.id}",
    )  # fmt: skip


def _scheduled(order: Order, steps: list[StepSummary]) -> list[TimelineEvent]:
    events = []
    for step in steps:
        where = ", ".join(step.station_aes) or "no station"
        events.append(
            TimelineEvent(
                at=order.created_at,
                kind="scheduled",
                step_id=step.step_id,
                title=f"step {step.sps_id} scheduled for {step.start.replace('T', ' ')}",
                detail=f"{step.modality} on {where}: {step.description}",
            )
        )
        if step.status != "SCHEDULED":
            events.append(
                TimelineEvent(
                    at=step.updated_at,
                    kind="status",
                    step_id=step.step_id,
                    title=f"step {step.sps_id} is {step.status}",
                )
            )
    return events


def _queried(session: Session, cfind: CFindLog, order: Order) -> list[TimelineEvent]:
    rows = session.execute(
        select(ScheduledStep, RequestedProcedure, Order, Patient)
        .join(ScheduledStep.procedure)
        .join(RequestedProcedure.order)
        .join(Patient, Order.patient_id == Patient.id)
        .options(selectinload(ScheduledStep.station_aes))
        .where(Order.id == order.id)
    ).all()
    steps = {
        step.sps_id: item_keys(
            step, procedure, owner, patient, [r.ae_title for r in step.station_aes]
        )
        for step, procedure, owner, patient in rows
    }
    by_caller: defaultdict[tuple[str, str], list[datetime]] = defaultdict(list)
    for at, calling_ae, sps_id in cfind.returned(steps):
        by_caller[calling_ae, sps_id].append(at)
    return [
        TimelineEvent(
            at=min(times),
            kind="queried",
            title=f"{sps_id} returned to {calling_ae}'s C-FIND",
            detail=f"{len(times)} time(s), last at {max(times):%Y-%m-%d %H:%M:%S}",
        )
        for (calling_ae, sps_id), times in by_caller.items()
    ]


def _performed(instances: list[MppsSummary]) -> list[TimelineEvent]:
    events = []
    for mpps in instances:
        link = f"/mpps/{mpps.id}"
        events.append(
            TimelineEvent(
                at=mpps.created_at,
                kind="mpps",
                link=link,
                title=f"MPPS started by {mpps.calling_ae or mpps.performed_station_ae}",
                detail=f"{mpps.sop_instance_uid}, start {mpps.start.replace('T', ' ')}",
            )
        )
        if mpps.status != "IN PROGRESS":
            events.append(
                TimelineEvent(
                    at=mpps.updated_at,
                    kind="mpps",
                    link=link,
                    title=f"MPPS {mpps.status}",
                    detail=f"end {mpps.end.replace('T', ' ')}" if mpps.end else "",
                )
            )
    return events


def _outbound(rows: list[OutboxSummary]) -> list[TimelineEvent]:
    events = []
    for row in rows:
        link = f"/outbox?order_id={row.order_id}&state=all"
        what = f"{row.kind.upper()} {row.operation} to {row.destination}"
        events.append(
            TimelineEvent(at=row.created_at, kind="outbound", title=f"{what} queued", link=link)
        )
        events.append(_delivery(row, what, link))
    return events


def _delivery(row: OutboxSummary, what: str, link: str) -> TimelineEvent:
    match row.state:
        case "sent":
            ack = f" ({row.ack_code})" if row.ack_code else ""
            return TimelineEvent(
                at=row.sent_at, kind="outbound", title=f"{what} delivered{ack}", link=link
            )
        case "dead":
            title, at = f"{what} refused: dead-lettered", row.next_attempt_at
        case "discarded":
            title, at = f"{what} discarded by an operator", row.next_attempt_at
        case _:
            title, at = f"{what} pending, {row.attempts} attempt(s)", row.next_attempt_at
    return TimelineEvent(at=at, kind="outbound", title=title, detail=row.last_error, link=link)
