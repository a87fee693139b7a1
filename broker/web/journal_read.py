"""The message journal as operators search it: inbound messages with their ACKs (``in``), the
console's own writes (``ops``, :mod:`broker.web.audit`) and outbound messages (``out``: the
HL7 and DICOM rows of the outbox, with the receiver's ACK once there is one).

Searchable by control ID (MSH-10; ``*``/``?`` wild cards), message type (``ORM`` or
``ORM^O01``), ACK code, patient ID, accession number and a received-time range. Outbound rows
carry no patient columns: a patient or accession search finds them through their order
(``order_key`` ``order:<id>``); their message type and ACK code live in the stored bytes, so
those two filters apply to inbound and ops rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from broker.store.schema import JournalRow, Order, OutboxRow, Patient
from broker.web.pages import Page, count, text_match
from hl7.charset import decode_text
from hl7.codec import read_header

DIRECTIONS = ("in", "out", "ops")


@dataclass(frozen=True, kw_only=True)
class JournalFilter:
    direction: str = "in"
    control_id: str | None = None
    message_type: str | None = None
    ack_code: str | None = None
    patient_id: str | None = None
    accession: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class JournalSummary(BaseModel):
    """One journal line: an inbound message, an outbound message or a console write."""

    id: int
    direction: str
    at: datetime
    peer: str
    """Inbound: the sender's address (``console:<name>`` for the console); outbound: the
    destination; ops: who."""
    control_id: str
    message_type: str
    ack_code: str
    """Inbound: the ACK we sent; outbound: the receiver's MSA-1 once answered; ops: OK/ER."""
    state: str
    """Outbound only: pending, sent, dead or discarded."""
    error: str
    patient_id: str
    accession: str


class JournalDetail(BaseModel):
    entry: JournalSummary
    message: str
    """The message (ops: what was done, as JSON), decoded; segments end with CR."""
    ack: str
    attempts: int = 0
    order_id: int | None = None


def list_entries(
    session: Session, wanted: JournalFilter, *, offset: int, limit: int
) -> Page[JournalSummary]:
    if wanted.direction == "out":
        return _list_outbound(session, wanted, offset=offset, limit=limit)
    query = select(JournalRow).where(*_journal_conditions(wanted))
    total = count(session, query)
    rows = session.scalars(
        query.order_by(JournalRow.received_at.desc(), JournalRow.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return Page[JournalSummary](
        items=[journal_summary(row) for row in rows], total=total, offset=offset, limit=limit
    )


def journal_detail(session: Session, entry_id: int) -> JournalDetail | None:
    row = session.get(JournalRow, entry_id)
    if row is None:
        return None
    return JournalDetail(
        entry=journal_summary(row), message=message_text(row.raw), ack=message_text(row.ack)
    )


def outbound_detail(session: Session, row_id: int) -> JournalDetail | None:
    row = session.get(OutboxRow, row_id)
    if row is None:
        return None
    return JournalDetail(
        entry=outbound_summary(row),
        message=message_text(row.payload or b"") or row.event,
        ack=message_text(row.ack or b""),
        attempts=row.attempts,
        order_id=order_id_of(row.order_key),
    )


def journal_summary(row: JournalRow) -> JournalSummary:
    kind = f"{row.message_type}^{row.trigger_event}" if row.trigger_event else row.message_type
    return JournalSummary(
        id=row.id,
        direction=row.direction,
        at=row.received_at,
        peer=row.peer,
        control_id=row.control_id,
        message_type=kind,
        ack_code=row.ack_code,
        state="",
        error=row.error,
        patient_id=row.patient_id,
        accession=row.accession,
    )


def outbound_summary(row: OutboxRow) -> JournalSummary:
    return JournalSummary(
        id=row.id,
        direction="out",
        at=row.created_at,
        peer=row.destination,
        control_id=row.control_id,
        message_type=_outbound_type(row),
        ack_code=msa_code(row.ack or b""),
        state=row.state,
        error=row.last_error,
        patient_id="",
        accession="",
    )


def message_text(raw: bytes) -> str:
    """Message bytes as text in their MSH-18 character set (the journal keeps the bytes)."""
    if not raw:
        return ""
    header = read_header(raw)
    return decode_text(raw, header.charset if header else "").text


def msa_code(ack: bytes) -> str:
    """MSA-1 of an acknowledgement, read without a full parse ('' when there is none)."""
    text = ack.decode("latin-1")
    separator = text[3:4] if text.startswith("MSH") else "|"
    for line in text.replace("\n", "\r").split("\r"):
        if line.startswith("MSA" + separator):
            return line.split(separator)[1].strip()[:2]
    return ""


def order_id_of(order_key: str) -> int | None:
    """The order id of an outbox ``order_key`` ``order:<id>`` (None for other keys)."""
    kind, _, number = order_key.partition(":")
    return int(number) if kind == "order" and number.isdigit() else None


def _journal_conditions(wanted: JournalFilter) -> list[ColumnElement[bool]]:
    terms: list[ColumnElement[bool]] = [JournalRow.direction == wanted.direction]
    if wanted.control_id:
        terms.append(text_match(JournalRow.control_id, wanted.control_id))
    if wanted.message_type:
        kind, _, event = wanted.message_type.upper().partition("^")
        terms.append(JournalRow.message_type == kind)
        if event:
            terms.append(JournalRow.trigger_event == event)
    if wanted.ack_code:
        terms.append(JournalRow.ack_code == wanted.ack_code.upper())
    if wanted.patient_id:
        terms.append(text_match(JournalRow.patient_id, wanted.patient_id))
    if wanted.accession:
        terms.append(text_match(JournalRow.accession, wanted.accession))
    if wanted.since:
        terms.append(JournalRow.received_at >= wanted.since)
    if wanted.until:
        terms.append(JournalRow.received_at <= wanted.until)
    return terms


def _list_outbound(
    session: Session, wanted: JournalFilter, *, offset: int, limit: int
) -> Page[JournalSummary]:
    query = select(OutboxRow).where(*_outbound_conditions(session, wanted))
    total = count(session, query)
    rows = session.scalars(
        query.order_by(OutboxRow.created_at.desc(), OutboxRow.id.desc()).offset(offset).limit(limit)
    ).all()
    return Page[JournalSummary](
        items=[outbound_summary(row) for row in rows], total=total, offset=offset, limit=limit
    )


def _outbound_conditions(session: Session, wanted: JournalFilter) -> list[ColumnElement[bool]]:
    terms: list[ColumnElement[bool]] = []
    if wanted.control_id:
        terms.append(text_match(OutboxRow.control_id, wanted.control_id))
    if wanted.patient_id or wanted.accession:
        keys = [f"order:{order_id}" for order_id in session.scalars(_orders_of(wanted))]
        terms.append(OutboxRow.order_key.in_(keys) if keys else OutboxRow.id.is_(None))
    if wanted.since:
        terms.append(OutboxRow.created_at >= wanted.since)
    if wanted.until:
        terms.append(OutboxRow.created_at <= wanted.until)
    return terms


def _orders_of(wanted: JournalFilter) -> Select[Any]:
    query = select(Order.id).join(Patient, Order.patient_id == Patient.id)
    if wanted.patient_id:
        query = query.where(text_match(Patient.patient_id, wanted.patient_id))
    if wanted.accession:
        query = query.where(text_match(Order.accession, wanted.accession))
    return query.limit(1000)


def _outbound_type(row: OutboxRow) -> str:
    header = read_header(row.payload) if row.payload else None
    if header is not None and header.message_type:
        return f"{header.message_type}^{header.trigger_event}"
    return f"{row.kind} {row.operation}".strip()
