"""The tables: patients, orders, requested procedures, scheduled steps, the message journal,
MPPS instances and the outbox.

The hierarchy follows the Modality Worklist information model (PS3.4 K.6.1.2.1): patient →
imaging service request (order) → requested procedure → scheduled procedure step. Each level
keeps its DICOM attributes as DICOM JSON (PS3.18 F.2) in ``attributes``; the keys a C-FIND
matches on (PS3.4 Table K.6-1) are repeated as typed, indexed columns, PN keys also in a
folded copy (:func:`mwl.pn.fold_person_name`), so every match is an index lookup or range.

On PostgreSQL the matching columns use the ``"C"`` collation: DICOM matching compares bytes,
and only a byte-ordered index serves ``LIKE 'ABC%'`` (the wildcard ``*`` of PS3.4 C.2.2.2.4)
whatever the database's default collation. SQLite compares bytes already (``BINARY``), and
the engine sets ``case_sensitive_like`` so its ``LIKE`` uses those indexes too.

Every timestamp is stored and returned as UTC and timezone-aware. The schema changes only
through the Alembic migrations next to this module; a test checks they build exactly this.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator, TypeEngine

from mwl.model import DicomJson

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ACCEPTED_MESSAGE_INDEX = "uq_message_journal_accepted"
"""The unique partial index that makes an AA per sender and MSH-10 happen once."""

PN_LENGTH = 324
"""Up to three component groups of 64 characters each, with delimiters (PS3.5 Table 6.2-1)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def match_key(length: int | None = None) -> TypeEngine[str]:
    """A string column a C-FIND matches on: byte-ordered on PostgreSQL (see module doc)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored as UTC (SQLite has no time zones: naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} where UTC is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DicomJsonText(TypeDecorator[DicomJson]):
    """A DICOM JSON dataset (PS3.18 F.2) as text. Assign a new dict to change it."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: DicomJson | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value: str | None, dialect: Dialect) -> DicomJson | None:
        if value is None:
            return None
        loaded: dict[str, Any] = json.loads(value)
        return loaded


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


metadata = Base.metadata


class Patient(Base):
    """A patient identity (Patient ID + Issuer of Patient ID) and its demographics."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(match_key(64))
    issuer: Mapped[str] = mapped_column(match_key(64), default="", index=True)
    name: Mapped[str] = mapped_column(String(PN_LENGTH), default="")
    name_folded: Mapped[str] = mapped_column(match_key(), default="", index=True)
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    attributes: Mapped[DicomJson] = mapped_column(DicomJsonText, default=dict)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Order(Base):
    """An imaging service request: one ORC group (placer / filler order number)."""

    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_placer", "placer_number", "placer_namespace"),
        Index("ix_orders_filler", "filler_number", "filler_namespace"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    placer_number: Mapped[str | None] = mapped_column(String(199))
    placer_namespace: Mapped[str | None] = mapped_column(String(199))
    filler_number: Mapped[str | None] = mapped_column(String(199))
    filler_namespace: Mapped[str | None] = mapped_column(String(199))
    accession: Mapped[str] = mapped_column(match_key(64), default="", index=True)
    referring_physician: Mapped[str] = mapped_column(String(PN_LENGTH), default="")
    referring_physician_folded: Mapped[str] = mapped_column(match_key(), default="", index=True)
    admission_id: Mapped[str] = mapped_column(match_key(64), default="", index=True)
    sending_application: Mapped[str] = mapped_column(String(227), default="")
    sending_facility: Mapped[str] = mapped_column(String(227), default="")
    hl7_charset: Mapped[str] = mapped_column(String(32), default="")
    """MSH-18 of the order message: status messages to the RIS use the same character set."""
    attributes: Mapped[DicomJson] = mapped_column(DicomJsonText, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    procedures: Mapped[list[RequestedProcedure]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="RequestedProcedure.id"
    )


class RequestedProcedure(Base):
    """A requested procedure, identified by its Study Instance UID."""

    __tablename__ = "requested_procedures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    study_uid: Mapped[str] = mapped_column(match_key(64), unique=True)
    requested_procedure_id: Mapped[str] = mapped_column(match_key(64), index=True)
    description: Mapped[str] = mapped_column(match_key(), default="", index=True)
    attributes: Mapped[DicomJson] = mapped_column(DicomJsonText, default=dict)

    order: Mapped[Order] = relationship(back_populates="procedures")
    steps: Mapped[list[ScheduledStep]] = relationship(
        back_populates="procedure", cascade="all, delete-orphan", order_by="ScheduledStep.id"
    )


class ScheduledStep(Base):
    """A scheduled procedure step: one worklist item.

    ``version`` counts every write (SQLAlchemy's ``version_id_col``): an ORM update of a step
    another transaction changed meanwhile fails instead of overwriting it.
    """

    __tablename__ = "scheduled_steps"
    __table_args__ = (
        UniqueConstraint("procedure_id", "sps_id"),
        Index("ix_scheduled_steps_status_start", "status", "start_datetime"),
        Index("ix_scheduled_steps_modality_start", "modality", "start_datetime"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    procedure_id: Mapped[int] = mapped_column(ForeignKey("requested_procedures.id"))
    sps_id: Mapped[str] = mapped_column(match_key(64), index=True)
    status: Mapped[str] = mapped_column(match_key(16))
    start_date: Mapped[str] = mapped_column(String(8), default="")
    start_time: Mapped[str] = mapped_column(String(16), default="")
    start_datetime: Mapped[str] = mapped_column(match_key(14), default="", index=True)
    """``YYYYMMDDHHMMSS``: SPS Start Date and Time as one sortable value (PS3.4 C.2.2.2.5)."""
    modality: Mapped[str] = mapped_column(match_key(16), default="")
    performing_physician: Mapped[str] = mapped_column(String(PN_LENGTH), default="")
    performing_physician_folded: Mapped[str] = mapped_column(match_key(), default="", index=True)
    station_name: Mapped[str] = mapped_column(match_key(), default="", index=True)
    location: Mapped[str] = mapped_column(match_key(), default="", index=True)
    description: Mapped[str] = mapped_column(String, default="")
    attributes: Mapped[DicomJson] = mapped_column(DicomJsonText, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer)

    procedure: Mapped[RequestedProcedure] = relationship(back_populates="steps")
    station_aes: Mapped[list[StepStationAE]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="StepStationAE.ae_title"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class StepStationAE(Base):
    """One (0040,0001) Scheduled Station AE Title of a step (the attribute is multi-valued)."""

    __tablename__ = "step_station_aes"
    __table_args__ = (Index("ix_step_station_aes_ae_title_step", "ae_title", "step_id"),)

    step_id: Mapped[int] = mapped_column(
        ForeignKey("scheduled_steps.id", ondelete="CASCADE"), primary_key=True
    )
    ae_title: Mapped[str] = mapped_column(match_key(16), primary_key=True)


class JournalRow(Base):
    """One inbound HL7 message as received, with the ACK it got; the idempotency record."""

    __tablename__ = "message_journal"
    __table_args__ = (
        Index(
            ACCEPTED_MESSAGE_INDEX,
            "sending_application",
            "sending_facility",
            "control_id",
            unique=True,
            sqlite_where=text("ack_code = 'AA'"),
            postgresql_where=text("ack_code = 'AA'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    direction: Mapped[str] = mapped_column(String(3), default="in")
    peer: Mapped[str] = mapped_column(String, default="")
    sending_application: Mapped[str] = mapped_column(String, default="")
    sending_facility: Mapped[str] = mapped_column(String, default="")
    control_id: Mapped[str] = mapped_column(String, default="", index=True)
    message_type: Mapped[str] = mapped_column(String, default="")
    trigger_event: Mapped[str] = mapped_column(String, default="")
    version: Mapped[str] = mapped_column(String, default="")
    ack_code: Mapped[str] = mapped_column(String(2))
    ack: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    patient_id: Mapped[str] = mapped_column(String, default="", index=True)
    accession: Mapped[str] = mapped_column(String, default="", index=True)


class PerformedStepRow(Base):
    """One MPPS instance (PS3.4 F.7): its state, the full dataset, and who sent it."""

    __tablename__ = "mpps_instances"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(match_key(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    performed_station_ae: Mapped[str] = mapped_column(String(16), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    pps_id: Mapped[str] = mapped_column(String(64), default="")
    start_datetime: Mapped[str] = mapped_column(String(14), default="", index=True)
    end_datetime: Mapped[str] = mapped_column(String(14), default="")
    unscheduled: Mapped[bool] = mapped_column(Boolean, default=False)
    """No scheduled step matched its Scheduled Step Attributes Sequence (PS3.4 F.7.2.1.2)."""
    attributes: Mapped[DicomJson] = mapped_column(DicomJsonText, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class MppsStepLink(Base):
    """A scheduled step an MPPS refers to (several in the group case, PS3.4 F.7.2.1.2)."""

    __tablename__ = "mpps_step_links"

    mpps_id: Mapped[int] = mapped_column(
        ForeignKey("mpps_instances.id", ondelete="CASCADE"), primary_key=True
    )
    step_id: Mapped[int] = mapped_column(
        ForeignKey("scheduled_steps.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class OutboxRow(Base):
    """A message to deliver: written in the transaction of the change that caused it, sent
    until the receiver accepts it (the outbox pattern, ARCHITECTURE.md).

    ``event`` says what to send (JSON); ``payload`` is the rendered message, fixed at the first
    attempt so every retry sends the same bytes and the same ``control_id`` (MSH-10).
    Messages with one ``(destination, order_key)`` go out in ``id`` order.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "state", "next_attempt_at"),
        Index("ix_outbox_sequence", "destination", "order_key", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    """``hl7`` (MLLP to an [[outbound]] receiver) or ``dicom`` (MPPS to an [[mpps_forward]])."""
    order_key: Mapped[str] = mapped_column(String(128))
    operation: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    control_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    """``pending``, ``sent``, ``dead`` (refused by the receiver) or ``discarded`` (by hand)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    ack: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
