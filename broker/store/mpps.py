"""SQLAlchemy implementation of :class:`mpps.ports.MppsStore`: MPPS instances and their links.

One row of ``mpps_instances`` per MPPS SOP Instance (PS3.4 F.7), the whole dataset as DICOM
JSON in ``attributes``; one row of ``mpps_step_links`` per scheduled step it refers to (several
in the group case, none for an unscheduled step). The SOP Instance UID is unique: a second
N-CREATE with it fails at insert or at commit and leaves as :class:`mpps.ports.DuplicateInstance`
(:func:`duplicate_instances`), every other database error as :class:`mwl.ports.StoreFailure`.

Correlation (standards.md §4.4, :meth:`SqlMppsStore.match_steps`), one (0040,0270) item at a time:

1. a stored Requested Procedure with the item's >Study Instance UID is the item's procedure
   (the UID is unique; a modality that generated its own UID matches nothing here); its steps
   come in the same query as rule 3 narrows them (a procedure has at least one step);
2. otherwise the procedures whose >Requested Procedure ID, order Accession Number and
   Placer / Filler Order Number equal every one of those the item carries;
3. >Scheduled Procedure Step ID, when present, narrows the steps of those procedures to the
   step with that ID; without it every step of the procedures is picked;
4. an item without any of these keys matches nothing.

Every statement is Core, built once at import (or once per combination of keys for rule 2)
and run on the unit's connection, as the intake's hot path does (:mod:`broker.store.worklist`):
no ORM unit of work, identity map or statement compilation per request. An N-CREATE + N-SET
pair runs seven of them (docs/benchmarks.md, MPPS).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Select,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.store.attributes import start_datetime
from broker.store.errors import translated
from broker.store.schema import (
    Base,
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


def _table(entity: type[Base]) -> Table:
    return cast(Table, entity.__table__)


_INSTANCES, _LINKS = _table(PerformedStepRow), _table(MppsStepLink)
_STEPS, _PROCEDURES = _table(ScheduledStep), _table(RequestedProcedure)
_ORDERS, _PATIENTS = _table(Order), _table(Patient)


class SqlMppsStore:
    """MPPS instances and their links to scheduled steps, over one session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @translated
    def find(self, sop_instance_uid: str) -> StoredMpps | None:
        rows = self._connection().execute(_FIND_INSTANCE, {"uid": sop_instance_uid}).all()
        if not rows:
            return None
        first = rows[0]
        return StoredMpps(
            id=first.mpps_id,
            performed=performed_from_json(sop_instance_uid, first.attributes),
            calling_ae=first.calling_ae,
            steps=tuple(_row_to_linked(row) for row in rows if row.step_id is not None),
        )

    @translated
    def add(self, performed: PerformedStep, *, calling_ae: str, step_ids: Sequence[int]) -> int:
        connection, now = self._connection(), utcnow()
        row = {
            "sop_instance_uid": performed.sop_instance_uid,
            "calling_ae": calling_ae[:_SHORT],
            "unscheduled": not step_ids,
            "created_at": now,
            **_columns(performed, now),
        }
        with duplicate_instances():
            mpps_id: int = connection.execute(_INSERT_INSTANCE, row).scalar_one()
        links = [{"mpps_id": mpps_id, "step_id": step} for step in dict.fromkeys(step_ids)]
        if links:
            connection.execute(_INSERT_LINK, links)
        return mpps_id

    @translated
    def update(self, mpps_id: int, performed: PerformedStep) -> None:
        values = {"mpps_id": mpps_id, **_columns(performed, utcnow())}
        self._connection().execute(_UPDATE_INSTANCE, values)

    @translated
    def match_steps(self, reference: StepReference) -> list[LinkedStep]:
        connection = self._connection()
        if reference.study_uid:  # rule 1: the procedure's steps, in one query with rule 3
            study = {"study_uid": reference.study_uid}
            rows = connection.execute(_matching_steps(("study_uid",)), study).all()
            if rows:
                sps_id = reference.sps_id
                return [_row_to_linked(row) for row in rows if not sps_id or row.sps_id == sps_id]
        keys = {name: value for name, value in _order_keys(reference) if value}
        if not keys:
            return []
        if reference.sps_id:
            keys["sps_id"] = reference.sps_id
        query = _matching_steps(tuple(keys))
        return [_row_to_linked(row) for row in connection.execute(query, keys)]

    def _connection(self) -> Connection:
        """The unit's connection, once pending ORM changes are written (Core statements do
        not autoflush)."""
        self._session.flush()
        return self._session.connection()


def _order_keys(reference: StepReference) -> tuple[tuple[str, str], ...]:
    """Rule 2's keys of one (0040,0270) item, by the bind parameter names of
    :func:`_matching_steps`."""
    return (
        ("requested_procedure_id", reference.requested_procedure_id),
        ("accession", reference.accession),
        ("placer_number", reference.placer_number),
        ("filler_number", reference.filler_number),
    )


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


def _columns(performed: PerformedStep, now: Any) -> dict[str, Any]:
    """The columns of ``mpps_instances`` derived from the step (and the dataset itself)."""
    return {
        "status": performed.status.value,
        "performed_station_ae": performed.performed_station_ae[:_SHORT],
        "modality": performed.modality[:_SHORT],
        "pps_id": performed.pps_id[:_PPS_ID],
        "start_datetime": start_datetime(performed.start_date, performed.start_time),
        "end_datetime": start_datetime(performed.end_date, performed.end_time),
        "attributes": performed.dataset,
        "updated_at": now,
    }


# --- statements -------------------------------------------------------------------------------

_INSERT_INSTANCE = insert(_INSTANCES).returning(_INSTANCES.c.id)
_INSERT_LINK = insert(_LINKS)
_UPDATE_INSTANCE = (
    update(_INSTANCES)
    .where(_INSTANCES.c.id == bindparam("mpps_id"))
    .values(
        {
            name: bindparam(name)
            for name in (
                "status",
                "performed_station_ae",
                "modality",
                "pps_id",
                "start_datetime",
                "end_datetime",
                "attributes",
                "updated_at",
            )
        }
    )
)


_LINKED_COLUMNS = (
    _STEPS.c.id.label("step_id"),
    _STEPS.c.status,
    _STEPS.c.sps_id,
    _ORDERS.c.id.label("order_id"),
    _ORDERS.c.placer_number,
    _ORDERS.c.placer_namespace,
    _ORDERS.c.filler_number,
    _ORDERS.c.filler_namespace,
    _ORDERS.c.accession,
    _ORDERS.c.sending_application,
    _ORDERS.c.sending_facility,
    _ORDERS.c.hl7_charset,
    _PROCEDURES.c.requested_procedure_id,
    _PROCEDURES.c.study_uid,
    _PATIENTS.c.patient_id,
    _PATIENTS.c.issuer,
    _PATIENTS.c.name,
)
"""A step with what a status message needs of its procedure, order and patient."""


def _linked_steps_query() -> Select[Any]:
    """Steps with what a status message needs of their procedure, order and patient."""
    return (
        select(*_LINKED_COLUMNS)
        .join(_PROCEDURES, _STEPS.c.procedure_id == _PROCEDURES.c.id)
        .join(_ORDERS, _PROCEDURES.c.order_id == _ORDERS.c.id)
        .join(_PATIENTS, _ORDERS.c.patient_id == _PATIENTS.c.id)
        .order_by(_STEPS.c.id)
    )


_FIND_INSTANCE = (
    select(
        _INSTANCES.c.id.label("mpps_id"),
        _INSTANCES.c.calling_ae,
        _INSTANCES.c.attributes,
        *_LINKED_COLUMNS,
    )
    .select_from(
        _INSTANCES.outerjoin(_LINKS, _LINKS.c.mpps_id == _INSTANCES.c.id)
        .outerjoin(_STEPS, _STEPS.c.id == _LINKS.c.step_id)
        .outerjoin(_PROCEDURES, _STEPS.c.procedure_id == _PROCEDURES.c.id)
        .outerjoin(_ORDERS, _PROCEDURES.c.order_id == _ORDERS.c.id)
        .outerjoin(_PATIENTS, _ORDERS.c.patient_id == _PATIENTS.c.id)
    )
    .where(_INSTANCES.c.sop_instance_uid == bindparam("uid"))
    .order_by(_STEPS.c.id)
    .with_for_update(of=_INSTANCES)
)
"""The instance, locked, with its linked steps: one row per step, or one without a step."""

_KEY_COLUMNS = {
    "study_uid": _PROCEDURES.c.study_uid,
    "requested_procedure_id": _PROCEDURES.c.requested_procedure_id,
    "accession": _ORDERS.c.accession,
    "placer_number": _ORDERS.c.placer_number,
    "filler_number": _ORDERS.c.filler_number,
    "sps_id": _STEPS.c.sps_id,
}


@functools.cache
def _matching_steps(keys: tuple[str, ...]) -> Select[Any]:
    """The linked steps whose columns equal the bind parameters ``keys`` (one statement per
    combination: at most 2 x 16)."""
    return _linked_steps_query().where(*(_KEY_COLUMNS[key] == bindparam(key) for key in keys))


def _row_to_linked(row: Any) -> LinkedStep:
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
