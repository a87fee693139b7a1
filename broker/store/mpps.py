"""SQLAlchemy implementation of :class:`mpps.ports.MppsStore`: MPPS instances and their links.

One row of ``mpps_instances`` per MPPS SOP Instance (PS3.4 F.7), the whole dataset as DICOM
JSON in ``attributes``; one row of ``mpps_step_links`` per scheduled step it refers to (several
in the group case, none for an unscheduled step). The SOP Instance UID is unique: a second
N-CREATE with it fails at insert or at commit and leaves as :class:`mpps.ports.DuplicateInstance`
(:func:`duplicate_instances`), every other database error as :class:`mwl.ports.StoreFailure`.

Correlation (standards.md §4.4, :meth:`SqlMppsStore.match_steps`), one (0040,0270) item at a time:

1. a stored Requested Procedure with the item's >Study Instance UID is the item's procedure
   (the UID is unique; a modality that generated its own UID matches nothing here);
2. otherwise the procedures whose >Requested Procedure ID, order Accession Number and
   Placer / Filler Order Number equal every one of those the item carries;
3. >Scheduled Procedure Step ID, when present, narrows the steps of those procedures to the
   step with that ID; without it every step of the procedures is picked;
4. an item without any of these keys matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.store.attributes import start_datetime
from broker.store.errors import translated
from broker.store.schema import (
    MppsStepLink,
    Order,
    Patient,
    PerformedStepRow,
    RequestedProcedure,
    ScheduledStep,
    utcnow,
)
from mpps.model import PerformedStep, StepReference
from mpps.ports import DuplicateInstance, LinkedStep, StoredMpps
from mpps.report import OrderContext
from mpps.state import performed_from_json
from mwl.model import OrderNumber, SPSStatus

UNIQUE_INSTANCE = "uq_mpps_instances_sop_instance_uid"
"""The unique constraint on the MPPS SOP Instance UID (migration 0003)."""
_SQLITE_UNIQUE_INSTANCE = "UNIQUE constraint failed: mpps_instances.sop_instance_uid"

_SHORT = 16
"""Column length of the AE title, modality and status columns (CS/AE values)."""
_PPS_ID = 64


class SqlMppsStore:
    """MPPS instances and their links to scheduled steps, over one session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @translated
    def find(self, sop_instance_uid: str) -> StoredMpps | None:
        row = self._session.scalars(
            select(PerformedStepRow)
            .where(PerformedStepRow.sop_instance_uid == sop_instance_uid)
            .with_for_update()
        ).one_or_none()
        if row is None:
            return None
        linked = _linked_steps_query().join(MppsStepLink, MppsStepLink.step_id == ScheduledStep.id)
        rows = self._session.execute(linked.where(MppsStepLink.mpps_id == row.id))
        return StoredMpps(
            id=row.id,
            performed=row_to_performed(row),
            calling_ae=row.calling_ae,
            steps=tuple(_row_to_linked(found) for found in rows),
        )

    @translated
    def add(self, performed: PerformedStep, *, calling_ae: str, step_ids: Sequence[int]) -> int:
        row = PerformedStepRow(
            sop_instance_uid=performed.sop_instance_uid,
            calling_ae=calling_ae[:_SHORT],
            unscheduled=not step_ids,
            created_at=utcnow(),
        )
        _apply(row, performed)
        self._session.add(row)
        with duplicate_instances():
            self._session.flush()
        self._session.add_all(
            MppsStepLink(mpps_id=row.id, step_id=step) for step in dict.fromkeys(step_ids)
        )
        self._session.flush()
        return row.id

    @translated
    def update(self, mpps_id: int, performed: PerformedStep) -> None:
        row = self._session.get_one(PerformedStepRow, mpps_id)
        _apply(row, performed)
        self._session.flush()

    @translated
    def match_steps(self, reference: StepReference) -> list[LinkedStep]:
        conditions = self._procedure_conditions(reference)
        if conditions is None:
            return []
        query = _linked_steps_query().where(*conditions)
        if reference.sps_id:
            query = query.where(ScheduledStep.sps_id == reference.sps_id)
        return [_row_to_linked(row) for row in self._session.execute(query)]

    def _procedure_conditions(self, reference: StepReference) -> list[ColumnElement[bool]] | None:
        """WHERE terms picking the item's procedures (module doc, rules 1, 2 and 4)."""
        if reference.study_uid and self._session.scalar(
            select(RequestedProcedure.id).where(RequestedProcedure.study_uid == reference.study_uid)
        ):
            return [RequestedProcedure.study_uid == reference.study_uid]
        keys = [
            (RequestedProcedure.requested_procedure_id, reference.requested_procedure_id),
            (Order.accession, reference.accession),
            (Order.placer_number, reference.placer_number),
            (Order.filler_number, reference.filler_number),
        ]
        conditions = [column == value for column, value in keys if value]
        return conditions or None


@contextmanager
def duplicate_instances() -> Iterator[None]:
    """Run a flush or commit; a clash on the SOP Instance UID → :class:`DuplicateInstance`.

    Other database errors pass unchanged, for :func:`broker.store.errors.translated` around it.
    """
    try:
        yield
    except IntegrityError as exc:
        if _is_duplicate_instance(exc):
            raise DuplicateInstance("an MPPS with this SOP Instance UID exists already") from exc
        raise


def _is_duplicate_instance(exc: IntegrityError) -> bool:
    diag = getattr(exc.orig, "diag", None)
    if diag is not None:
        return getattr(diag, "constraint_name", None) == UNIQUE_INSTANCE
    return _SQLITE_UNIQUE_INSTANCE in str(exc.orig)


def _apply(row: PerformedStepRow, performed: PerformedStep) -> None:
    row.status = performed.status.value
    row.performed_station_ae = performed.performed_station_ae[:_SHORT]
    row.modality = performed.modality[:_SHORT]
    row.pps_id = performed.pps_id[:_PPS_ID]
    row.start_datetime = start_datetime(performed.start_date, performed.start_time)
    row.end_datetime = start_datetime(performed.end_date, performed.end_time)
    row.attributes = performed.dataset
    row.updated_at = utcnow()


def row_to_performed(row: PerformedStepRow) -> PerformedStep:
    """The stored step, its fields read back from the stored dataset (as :mod:`mpps.state`
    derives them at N-CREATE / N-SET)."""
    return performed_from_json(row.sop_instance_uid, row.attributes)


def _linked_steps_query() -> Select[*tuple[Any, ...]]:
    """Steps with what a status message needs of their procedure, order and patient."""
    return (
        select(
            ScheduledStep.id.label("step_id"),
            ScheduledStep.status,
            Order.id.label("order_id"),
            Order.placer_number,
            Order.placer_namespace,
            Order.filler_number,
            Order.filler_namespace,
            Order.accession,
            Order.sending_application,
            Order.sending_facility,
            Order.hl7_charset,
            RequestedProcedure.requested_procedure_id,
            RequestedProcedure.study_uid,
            Patient.patient_id,
            Patient.issuer,
            Patient.name,
        )
        .join(RequestedProcedure, ScheduledStep.procedure_id == RequestedProcedure.id)
        .join(Order, RequestedProcedure.order_id == Order.id)
        .join(Patient, Order.patient_id == Patient.id)
        .order_by(ScheduledStep.id)
    )


def _row_to_linked(row: Row[Any]) -> LinkedStep:
    context = OrderContext(
        placer=_order_number(row.placer_number, row.placer_namespace),
        filler=_order_number(row.filler_number, row.filler_namespace),
        accession=row.accession,
        requested_procedure_id=row.requested_procedure_id,
        study_uid=row.study_uid,
        patient_id=row.patient_id,
        patient_issuer=row.issuer,
        patient_name=row.name,
        ris_application=row.sending_application,
        ris_facility=row.sending_facility,
        hl7_charset=row.hl7_charset,
    )
    return LinkedStep(row.step_id, row.order_id, SPSStatus(row.status), context)


def _order_number(number: str | None, namespace: str | None) -> OrderNumber | None:
    return OrderNumber(number, namespace or "") if number else None
