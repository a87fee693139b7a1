"""SQLAlchemy implementation of :class:`mwl.ports.WorklistStore` over one session.

Each method is one or two statements; the session's transaction is the unit of work's
(:mod:`broker.store.unit`). Several broker processes may share one PostgreSQL: a new patient
is inserted with ``ON CONFLICT DO NOTHING`` and rows that are read, merged and written back
(patient demographics, an order with its procedures) are locked ``FOR UPDATE`` first; steps
carry a version counter, so a lost update fails instead (all as :class:`StoreFailure`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.sql.dml import ReturningInsert

from broker.store.attributes import (
    ISSUER_OF_PATIENT_ID,
    ORDER_COLUMNS,
    PATIENT_COLUMNS,
    PATIENT_ID,
    PROCEDURE_COLUMNS,
    STEP_COLUMNS,
    apply_columns,
    merge_attributes,
    start_datetime,
    text_element,
)
from broker.store.errors import translated
from broker.store.schema import (
    Order,
    Patient,
    RequestedProcedure,
    ScheduledStep,
    StepStationAE,
    utcnow,
)
from mwl.model import (
    OrderNumber,
    OrderRecord,
    PatientKey,
    PatientRecord,
    ProcedureRecord,
    SPSStatus,
    StepRecord,
)
from mwl.pn import fold_person_name
from mwl.ports import StoredOrder, StoredProcedure, StoredStep


class SqlWorklistStore:
    """Patients, orders, requested procedures and scheduled steps in SQL tables."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @translated
    def find_patient(self, key: PatientKey) -> int | None:
        return self._session.scalar(select(Patient.id).where(_is_patient(key)))

    @translated
    def upsert_patient(self, patient: PatientRecord, *, demographics: bool = True) -> int:
        created = self._session.scalar(_insert_patient(self._dialect, patient))
        if created is not None:
            return created
        if not demographics:
            return self._session.scalars(select(Patient.id).where(_is_patient(patient.key))).one()
        row = self._session.scalars(
            select(Patient).where(_is_patient(patient.key)).with_for_update()
        ).one()
        _merge_patient(row, patient)
        return row.id

    @translated
    def find_order(
        self, placer: OrderNumber | None, filler: OrderNumber | None
    ) -> StoredOrder | None:
        for number, namespace in _order_number_columns(placer, filler):
            first = select(Order.id).where(number, namespace).order_by(Order.id).limit(1)
            if found := self._stored_order(first.scalar_subquery()):
                return found
        return None

    @translated
    def find_order_by_study(self, study_uid: str) -> StoredOrder | None:
        owner = select(RequestedProcedure.order_id).where(RequestedProcedure.study_uid == study_uid)
        return self._stored_order(owner.scalar_subquery())

    @translated
    def add_order(
        self, patient: int, order: OrderRecord, status: SPSStatus, *, sender: tuple[str, str]
    ) -> StoredOrder:
        row = Order(patient_id=patient, sending_application=sender[0], sending_facility=sender[1])
        _merge_order(row, order)
        row.procedures = [_new_procedure(record, status) for record in order.procedures]
        self._session.add(row)
        self._session.flush()
        return _stored_from_rows(row)

    @translated
    def update_order(self, stored: StoredOrder, order: OrderRecord, status: SPSStatus) -> None:
        row = (
            self._session.scalars(
                select(Order)
                .where(Order.id == stored.id)
                .options(
                    joinedload(Order.procedures)
                    .joinedload(RequestedProcedure.steps)
                    .joinedload(ScheduledStep.station_aes)
                )
                .with_for_update(of=Order)
                .execution_options(populate_existing=True)
            )
            .unique()
            .one()
        )
        _merge_order(row, order)
        for record in order.procedures:
            _merge_procedure(row, record, status)

    @translated
    def set_step_status(self, step_ids: Iterable[int], status: SPSStatus) -> None:
        ids = list(step_ids)
        if not ids:
            return
        self._session.execute(
            update(ScheduledStep)
            .where(ScheduledStep.id.in_(ids))
            .values(status=status.value, updated_at=utcnow(), version=ScheduledStep.version + 1),
            execution_options={"synchronize_session": "fetch"},
        )

    @translated
    def move_orders(self, from_patient: int, to_patient: int) -> int:
        result = self._session.execute(
            update(Order)
            .where(Order.patient_id == from_patient)
            .values(patient_id=to_patient, updated_at=utcnow())
            .returning(Order.id),
            execution_options={"synchronize_session": "fetch"},
        )
        return len(result.all())

    @translated
    def mark_merged(self, prior: int, surviving: int) -> None:
        self._session.execute(
            update(Patient)
            .where(Patient.id == prior)
            .values(merged_into_id=surviving, updated_at=utcnow()),
            execution_options={"synchronize_session": "fetch"},
        )

    @translated
    def change_patient_key(self, patient: int, key: PatientKey) -> None:
        row = self._session.get_one(Patient, patient, with_for_update=True)
        row.patient_id, row.issuer = key.patient_id, key.issuer
        identity = {PATIENT_ID: text_element("LO", key.patient_id)}
        if key.issuer or ISSUER_OF_PATIENT_ID in row.attributes:
            identity[ISSUER_OF_PATIENT_ID] = text_element("LO", key.issuer)
        row.attributes = merge_attributes(row.attributes, identity)
        self._session.flush()

    @property
    def _dialect(self) -> str:
        return self._session.get_bind().dialect.name

    def _stored_order(self, order_id: Any) -> StoredOrder | None:
        rows = self._session.execute(_stored_order_query(order_id)).all()
        return _stored_from_columns(rows) if rows else None


def _is_patient(key: PatientKey) -> ColumnElement[bool]:
    return and_(Patient.patient_id == key.patient_id, Patient.issuer == key.issuer)


def _insert_patient(dialect: str, patient: PatientRecord) -> ReturningInsert[int]:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id``: the new id, or no row if known."""
    row = Patient(attributes={})
    _merge_patient(row, patient)
    values = {
        "patient_id": patient.key.patient_id,
        "issuer": patient.key.issuer,
        "attributes": row.attributes,
        **{column: getattr(row, column) for column in (*PATIENT_COLUMNS, "name_folded")},
    }
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(Patient)
        .values(values)
        .on_conflict_do_nothing(index_elements=["patient_id", "issuer"])
        .returning(Patient.id)
    )


def _merge_patient(row: Patient, patient: PatientRecord) -> None:
    row.attributes = merge_attributes(row.attributes, patient.attributes)
    apply_columns(row, patient, PATIENT_COLUMNS, patient.attributes)
    row.name_folded = fold_person_name(row.name)


def _merge_order(row: Order, order: OrderRecord) -> None:
    row.attributes = merge_attributes(row.attributes or {}, order.attributes)
    apply_columns(row, order, ORDER_COLUMNS, order.attributes)
    row.referring_physician_folded = fold_person_name(row.referring_physician)
    if order.placer is not None:
        row.placer_number, row.placer_namespace = order.placer.number, order.placer.namespace
    if order.filler is not None:
        row.filler_number, row.filler_namespace = order.filler.number, order.filler.namespace
    if order.hl7_charset:
        row.hl7_charset = order.hl7_charset


def _merge_procedure(order: Order, record: ProcedureRecord, status: SPSStatus) -> None:
    procedure = _matching_procedure(order, record)
    if procedure is None:
        order.procedures.append(_new_procedure(record, status))
        return
    procedure.attributes = merge_attributes(procedure.attributes, record.attributes)
    apply_columns(procedure, record, PROCEDURE_COLUMNS, record.attributes)
    for step_record in record.steps:
        step = next((s for s in procedure.steps if s.sps_id == step_record.sps_id), None)
        if step is None:
            procedure.steps.append(_new_step(step_record, status))
        else:
            _merge_step(step, step_record)


def _matching_procedure(order: Order, record: ProcedureRecord) -> RequestedProcedure | None:
    """The stored procedure with the record's Study Instance UID, else with its Requested
    Procedure ID. A procedure matched by ID keeps its stored UID: images may have been
    acquired under it."""
    by_uid = {p.study_uid: p for p in order.procedures}
    by_id = {p.requested_procedure_id: p for p in reversed(order.procedures)}  # first wins
    return by_uid.get(record.study_uid) or by_id.get(record.requested_procedure_id)


def _new_procedure(record: ProcedureRecord, status: SPSStatus) -> RequestedProcedure:
    procedure = RequestedProcedure(study_uid=record.study_uid, attributes=dict(record.attributes))
    apply_columns(procedure, record, PROCEDURE_COLUMNS, record.attributes)
    procedure.steps = [_new_step(step, status) for step in record.steps]
    return procedure


def _new_step(record: StepRecord, status: SPSStatus) -> ScheduledStep:
    step = ScheduledStep(sps_id=record.sps_id, status=status.value, attributes={})
    _merge_step(step, record)
    return step


def _merge_step(step: ScheduledStep, record: StepRecord) -> None:
    step.attributes = merge_attributes(step.attributes, record.attributes)
    apply_columns(step, record, STEP_COLUMNS, record.attributes)
    step.start_datetime = start_datetime(step.start_date, step.start_time)
    step.performing_physician_folded = fold_person_name(step.performing_physician)
    if record.station_aes:
        _set_station_aes(step, record.station_aes)


def _set_station_aes(step: ScheduledStep, ae_titles: Sequence[str]) -> None:
    kept = {row.ae_title: row for row in step.station_aes}
    step.station_aes = [
        kept.get(title) or StepStationAE(ae_title=title) for title in dict.fromkeys(ae_titles)
    ]


def _order_number_columns(
    placer: OrderNumber | None, filler: OrderNumber | None
) -> list[tuple[ColumnElement[bool], ColumnElement[bool]]]:
    """WHERE terms for the placer number, then the filler number (the given ones)."""
    terms = []
    if placer is not None and placer.number:
        terms.append(
            (Order.placer_number == placer.number, Order.placer_namespace == placer.namespace)
        )
    if filler is not None and filler.number:
        terms.append(
            (Order.filler_number == filler.number, Order.filler_namespace == filler.namespace)
        )
    return terms


def _stored_order_query(order_id: Any) -> Select[*tuple[Any, ...]]:
    """One order with its procedures and steps' identities, as flat joined rows."""
    return (
        select(
            Order.id,
            Order.patient_id,
            Order.placer_number,
            Order.placer_namespace,
            Order.filler_number,
            Order.filler_namespace,
            RequestedProcedure.id.label("procedure_id"),
            RequestedProcedure.study_uid,
            RequestedProcedure.requested_procedure_id,
            ScheduledStep.id.label("step_id"),
            ScheduledStep.sps_id,
            ScheduledStep.status,
        )
        .outerjoin(RequestedProcedure, RequestedProcedure.order_id == Order.id)
        .outerjoin(ScheduledStep, ScheduledStep.procedure_id == RequestedProcedure.id)
        .where(Order.id == order_id)
        .order_by(RequestedProcedure.id, ScheduledStep.id)
    )


def _stored_from_columns(rows: Sequence[Row[Any]]) -> StoredOrder:
    procedures: dict[int, tuple[Row[Any], list[StoredStep]]] = {}
    for row in rows:
        if row.procedure_id is None:
            continue
        _, steps = procedures.setdefault(row.procedure_id, (row, []))
        if row.step_id is not None:
            steps.append(StoredStep(row.step_id, row.sps_id, SPSStatus(row.status)))
    first = rows[0]
    return StoredOrder(
        id=first.id,
        patient_id=first.patient_id,
        placer=_order_number(first.placer_number, first.placer_namespace),
        filler=_order_number(first.filler_number, first.filler_namespace),
        procedures=tuple(
            StoredProcedure(pid, row.study_uid, row.requested_procedure_id, tuple(steps))
            for pid, (row, steps) in procedures.items()
        ),
    )


def _stored_from_rows(order: Order) -> StoredOrder:
    return StoredOrder(
        id=order.id,
        patient_id=order.patient_id,
        placer=_order_number(order.placer_number, order.placer_namespace),
        filler=_order_number(order.filler_number, order.filler_namespace),
        procedures=tuple(
            StoredProcedure(
                procedure.id,
                procedure.study_uid,
                procedure.requested_procedure_id,
                tuple(StoredStep(s.id, s.sps_id, SPSStatus(s.status)) for s in procedure.steps),
            )
            for procedure in order.procedures
        ),
    )


def _order_number(number: str | None, namespace: str | None) -> OrderNumber | None:
    return None if number is None else OrderNumber(number, namespace or "")
