"""The ports the worklist domain needs from storage; ``broker.store`` implements them.

One :class:`UnitOfWork` is one transaction: one HL7 message, one DIMSE request, one job run.
Nothing is visible to others before :meth:`UnitOfWork.commit`; leaving the ``with`` block
without a commit rolls back. Storage failures surface as :class:`StoreFailure` (never a
database library's exception), which the intake answers with AR so the sender resends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol

from mwl.model import OrderNumber, OrderRecord, PatientKey, PatientRecord, SPSStatus


class StoreFailure(Exception):
    """The store could not read or commit (database down, locked too long, disk full)."""


class DuplicateMessage(StoreFailure):
    """A message with this sender and control ID was accepted already (raised at commit)."""


@dataclass(frozen=True, slots=True)
class StoredStep:
    id: int
    sps_id: str
    status: SPSStatus


@dataclass(frozen=True, slots=True)
class StoredProcedure:
    id: int
    study_uid: str
    requested_procedure_id: str
    steps: tuple[StoredStep, ...]


@dataclass(frozen=True, slots=True)
class StoredOrder:
    id: int
    patient_id: int
    placer: OrderNumber | None
    filler: OrderNumber | None
    procedures: tuple[StoredProcedure, ...]

    @property
    def steps(self) -> tuple[StoredStep, ...]:
        return tuple(step for proc in self.procedures for step in proc.steps)


class WorklistStore(Protocol):
    """Patients, orders, requested procedures and scheduled steps."""

    def find_patient(self, key: PatientKey) -> int | None:
        """Row id of the patient with this identity, or None."""

    def upsert_patient(self, patient: PatientRecord, *, demographics: bool = True) -> int:
        """Row id for ``patient.key``, created when unknown.

        With ``demographics`` the stored name and attributes are merged with the record's
        (present attributes replace, zero-length ones clear, absent ones are kept).
        """

    def find_order(
        self, placer: OrderNumber | None, filler: OrderNumber | None
    ) -> StoredOrder | None:
        """The order with this placer number, else with this filler number."""

    def find_order_by_study(self, study_uid: str) -> StoredOrder | None:
        """The order owning the requested procedure with this Study Instance UID."""

    def find_order_for(
        self, study_uids: Sequence[str], placer: OrderNumber | None, filler: OrderNumber | None
    ) -> StoredOrder | None:
        """The order owning a requested procedure with one of ``study_uids`` (the first of
        them that one has), else the order with this placer number, else with this filler
        number: :meth:`find_order_by_study` for each UID, then :meth:`find_order`, at once."""

    def add_order(
        self, patient: int, order: OrderRecord, status: SPSStatus, *, sender: tuple[str, str]
    ) -> StoredOrder:
        """Store a new order with its procedures and steps, every step in ``status``."""

    def update_order(self, stored: StoredOrder, order: OrderRecord, status: SPSStatus) -> None:
        """Merge an order's new content: attributes merged; procedures matched by Study
        Instance UID (else Requested Procedure ID), steps by SPS ID; unknown ones are added
        in ``status``; steps absent from the message are left as they are."""

    def set_step_status(self, step_ids: Iterable[int], status: SPSStatus) -> None:
        """Move the given steps to ``status``."""

    def move_orders(self, from_patient: int, to_patient: int) -> int:
        """Give every order of one patient to another; returns how many moved."""

    def mark_merged(self, prior: int, surviving: int) -> None:
        """Record that the prior patient was merged into the surviving one."""

    def change_patient_key(self, patient: int, key: PatientKey) -> None:
        """Give the patient a new identity (PID-3)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """One inbound message as received, with the ACK it got."""

    received_at: datetime
    peer: str
    raw: bytes
    ack: bytes
    ack_code: str
    sending_application: str = ""
    sending_facility: str = ""
    control_id: str = ""
    message_type: str = ""
    trigger_event: str = ""
    version: str = ""
    error: str = ""
    patient_id: str = ""
    accession: str = ""


class Journal(Protocol):
    """The inbound message journal; also the idempotency record (MSH-10 per sender)."""

    def find_accepted(self, sender: tuple[str, str], control_id: str) -> bytes | None:
        """The ACK sent for an accepted message with this MSH-3/MSH-4 and MSH-10, or None."""

    def record(self, entry: JournalEntry) -> None:
        """Add a journal row. Two AA rows for one sender and control ID raise
        :class:`DuplicateMessage` at commit."""


class UnitOfWork(Protocol):
    """One transaction over the worklist and the journal."""

    worklist: WorklistStore
    journal: Journal

    def commit(self) -> None: ...

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


UnitOfWorkFactory = Callable[[], UnitOfWork]
