"""SQLAlchemy implementation of :class:`mwl.ports.WorklistStore` over one session.

Each method is one or two statements; the session's transaction is the unit of work's
(:mod:`broker.store.unit`). Several broker processes may share one PostgreSQL: a new patient
is inserted with ``ON CONFLICT DO NOTHING`` and rows that are read, merged and written back
(patient demographics, an order with its procedures) are locked ``FOR UPDATE`` first; steps
carry a version counter, so a lost update fails instead (all as :class:`StoreFailure`).

The hot paths (order lookup, patient insert, new orders, step status) run Core statements built
once at import on the session's connection: no ORM unit of work, no statement construction or
cache-key generation per call (docs/benchmarks.md). Those statements neither autoflush nor go
through the identity map, so each first writes the ORM changes pending in the session
(:meth:`SqlWorklistStore._connection`), and ORM reads of rows they inserted load them fresh.
Merges (order updates, patient demographics, identity changes) stay on the ORM.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.util import identity_key

from broker.store.attributes import (
    ISSUER_OF_PATIENT_ID,
    ORDER_COLUMNS,
    PATIENT_COLUMNS,
    PATIENT_ID,
    PROCEDURE_COLUMNS,
    STEP_COLUMNS,
    apply_columns,
    merge_attributes,
    new_columns,
    start_datetime,
    text_element,
)
from broker.store.errors import translated
from broker.store.schema import (
    Base,
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


def _table(entity: type[Base]) -> Table:
    return cast(Table, entity.__table__)


_PATIENTS, _ORDERS = _table(Patient), _table(Order)
_PROCEDURES, _STEPS, _STATION_AES = (
    _table(RequestedProcedure),
    _table(ScheduledStep),
    _table(StepStationAE),
)


class SqlWorklistStore:
    """Patients, orders, requested procedures and scheduled steps in SQL tables."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @translated
    def find_patient(self, key: PatientKey) -> int | None:
        found: int | None = self._connection().scalar(_PATIENT_BY_KEY, _patient_key(key))
        return found

    @translated
    def upsert_patient(self, patient: PatientRecord, *, demographics: bool = True) -> int:
        connection = self._connection()
        insert_patient = _INSERT_PATIENT[connection.dialect.name]
        created: int | None = connection.scalar(insert_patient, _patient_row(patient, utcnow()))
        if created is not None:
            return created
        if not demographics:
            known: int = connection.execute(_PATIENT_BY_KEY, _patient_key(patient.key)).scalar_one()
            return known
        row = self._session.scalars(
            select(Patient).where(_is_patient(patient.key)).with_for_update()
        ).one()
        _merge_patient(row, patient)
        return row.id

    @translated
    def find_order_for(
        self, study_uids: Sequence[str], placer: OrderNumber | None, filler: OrderNumber | None
    ) -> StoredOrder | None:
        parameters = {
            "study_uids": list(study_uids),
            **_number_parameters("placer", placer),
            **_number_parameters("filler", filler),
        }
        rows = self._connection().execute(_FIND_ORDER, parameters).all()
        return _stored_from_columns(_first_found(rows, study_uids)) if rows else None

    def find_order(
        self, placer: OrderNumber | None, filler: OrderNumber | None
    ) -> StoredOrder | None:
        return self.find_order_for((), placer, filler)

    def find_order_by_study(self, study_uid: str) -> StoredOrder | None:
        return self.find_order_for((study_uid,), None, None)

    @translated
    def add_order(
        self, patient: int, order: OrderRecord, status: SPSStatus, *, sender: tuple[str, str]
    ) -> StoredOrder:
        connection, now = self._connection(), utcnow()
        row = _order_row(patient, order, sender, now)
        row["id"] = connection.execute(_INSERT_ORDER, row).scalar_one()
        procedures = [_procedure_row(row["id"], record) for record in order.procedures]
        _insert_with_ids(connection, _INSERT_PROCEDURE, procedures)
        records = [
            (procedure["id"], step)
            for procedure, record in zip(procedures, order.procedures, strict=True)
            for step in record.steps
        ]
        steps = [_step_row(procedure_id, step, status, now) for procedure_id, step in records]
        _insert_with_ids(connection, _INSERT_STEP, steps)
        station_aes = [
            {"step_id": step["id"], "ae_title": title}
            for step, (_, record) in zip(steps, records, strict=True)
            for title in dict.fromkeys(record.station_aes)
        ]
        if station_aes:
            connection.execute(_INSERT_STATION_AE, station_aes)
        return _stored_new(row, procedures, steps)

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
        values = {"status": status.value, "updated_at": utcnow()}
        if len(ids) == 1:  # the usual case; an expanding IN is rendered anew at each execution
            self._connection().execute(_SET_ONE_STEP_STATUS, {"step_id": ids[0], **values})
        else:
            self._connection().execute(_SET_STEP_STATUS, {"ids": ids, **values})
        for step_id in ids:  # as synchronize_session would: loaded steps read the new values
            loaded = self._session.identity_map.get(identity_key(ScheduledStep, step_id))
            if loaded is not None:
                self._session.expire(loaded, ["status", "updated_at", "version"])

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

    def _connection(self) -> Connection:
        """The unit's connection, once the ORM changes pending in the session are written:
        the Core statements run on it do not autoflush."""
        self._session.flush()
        return self._session.connection()


def _is_patient(key: PatientKey) -> ColumnElement[bool]:
    return and_(Patient.patient_id == key.patient_id, Patient.issuer == key.issuer)


def _patient_key(key: PatientKey) -> dict[str, str]:
    return {"patient_id": key.patient_id, "issuer": key.issuer}


_PATIENT_BY_KEY = select(_PATIENTS.c.id).where(
    _PATIENTS.c.patient_id == bindparam("patient_id"), _PATIENTS.c.issuer == bindparam("issuer")
)

_INSERT_PATIENT = {
    name: dialect_insert(_PATIENTS)
    .on_conflict_do_nothing(index_elements=["patient_id", "issuer"])
    .returning(_PATIENTS.c.id)
    for name, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
"""``INSERT … ON CONFLICT DO NOTHING RETURNING id`` by dialect name: the new patient's id, or
no row when the patient is known."""


def _patient_row(patient: PatientRecord, now: datetime) -> dict[str, Any]:
    """The row of a new patient: :func:`_merge_patient` on an empty one."""
    columns = new_columns(patient, PATIENT_COLUMNS, patient.attributes)
    return {
        **_patient_key(patient.key),
        **columns,
        "name_folded": fold_person_name(columns["name"]),
        "attributes": merge_attributes({}, patient.attributes),
        "created_at": now,
        "updated_at": now,
    }


def _merge_patient(row: Patient, patient: PatientRecord) -> None:
    row.attributes = merge_attributes(row.attributes, patient.attributes)
    apply_columns(row, patient, PATIENT_COLUMNS, patient.attributes)
    row.name_folded = fold_person_name(row.name)


_INSERT_ORDER = insert(_ORDERS).returning(_ORDERS.c.id)
_INSERT_PROCEDURE = insert(_PROCEDURES).returning(_PROCEDURES.c.id, sort_by_parameter_order=True)
_INSERT_STEP = insert(_STEPS).returning(_STEPS.c.id, sort_by_parameter_order=True)
_INSERT_STATION_AE = insert(_STATION_AES)
_SET_STEP_STATUS_VALUES = {
    "status": bindparam("status"),
    "updated_at": bindparam("updated_at"),
    "version": _STEPS.c.version + 1,
}
_SET_STEP_STATUS = (
    update(_STEPS)
    .where(_STEPS.c.id.in_(bindparam("ids", expanding=True)))
    .values(_SET_STEP_STATUS_VALUES)
)
_SET_ONE_STEP_STATUS = (
    update(_STEPS).where(_STEPS.c.id == bindparam("step_id")).values(_SET_STEP_STATUS_VALUES)
)


def _insert_with_ids(connection: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (one statement for several), giving each its new ``id``."""
    if rows:
        ids = connection.execute(statement, rows).scalars()
        for row, row_id in zip(rows, ids, strict=True):
            row["id"] = row_id


def _order_row(
    patient: int, order: OrderRecord, sender: tuple[str, str], now: datetime
) -> dict[str, Any]:
    """The row of a new order: :func:`_merge_order` on an empty one."""
    columns = new_columns(order, ORDER_COLUMNS, order.attributes)
    placer, filler = order.placer, order.filler
    return {
        "patient_id": patient,
        "placer_number": None if placer is None else placer.number,
        "placer_namespace": None if placer is None else placer.namespace,
        "filler_number": None if filler is None else filler.number,
        "filler_namespace": None if filler is None else filler.namespace,
        **columns,
        "referring_physician_folded": fold_person_name(columns["referring_physician"]),
        "sending_application": sender[0],
        "sending_facility": sender[1],
        "hl7_charset": order.hl7_charset,
        "attributes": merge_attributes({}, order.attributes),
        "created_at": now,
        "updated_at": now,
    }


def _procedure_row(order_id: int, record: ProcedureRecord) -> dict[str, Any]:
    """The row of a new requested procedure: :func:`_new_procedure` without its steps."""
    return {
        "order_id": order_id,
        "study_uid": record.study_uid,
        **new_columns(record, PROCEDURE_COLUMNS, record.attributes),
        "attributes": dict(record.attributes),
    }


def _step_row(
    procedure_id: int, record: StepRecord, status: SPSStatus, now: datetime
) -> dict[str, Any]:
    """The row of a new step: :func:`_new_step` without its station AEs, at version 1
    (where the ORM's ``version_id_col`` starts)."""
    columns = new_columns(record, STEP_COLUMNS, record.attributes)
    return {
        "procedure_id": procedure_id,
        "sps_id": record.sps_id,
        "status": status.value,
        **columns,
        "start_datetime": start_datetime(columns["start_date"], columns["start_time"]),
        "performing_physician_folded": fold_person_name(columns["performing_physician"]),
        "attributes": merge_attributes({}, record.attributes),
        "updated_at": now,
        "version": 1,
    }


def _stored_new(
    order: dict[str, Any], procedures: list[dict[str, Any]], steps: list[dict[str, Any]]
) -> StoredOrder:
    """What :meth:`SqlWorklistStore.add_order` inserted, as the lookups would return it."""
    return StoredOrder(
        id=order["id"],
        patient_id=order["patient_id"],
        placer=_order_number(order["placer_number"], order["placer_namespace"]),
        filler=_order_number(order["filler_number"], order["filler_namespace"]),
        procedures=tuple(
            StoredProcedure(
                procedure["id"],
                procedure["study_uid"],
                procedure["requested_procedure_id"],
                tuple(
                    StoredStep(step["id"], step["sps_id"], SPSStatus(step["status"]))
                    for step in steps
                    if step["procedure_id"] == procedure["id"]
                ),
            )
            for procedure in procedures
        ),
    )


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


_FOUND = union_all(
    select(
        _PROCEDURES.c.order_id.label("order_id"),
        literal_column("0").label("rank"),
        _PROCEDURES.c.study_uid.label("study_uid"),
    ).where(_PROCEDURES.c.study_uid.in_(bindparam("study_uids", expanding=True))),
    select(func.min(_ORDERS.c.id), literal_column("1"), literal_column("''")).where(
        _ORDERS.c.placer_number == bindparam("placer_number"),
        _ORDERS.c.placer_namespace == bindparam("placer_namespace"),
    ),
    select(func.min(_ORDERS.c.id), literal_column("2"), literal_column("''")).where(
        _ORDERS.c.filler_number == bindparam("filler_number"),
        _ORDERS.c.filler_namespace == bindparam("filler_namespace"),
    ),
).subquery("found")
"""Orders that may be the one sought, ranked: by a Study Instance UID (0; the UIDs are unique),
the first by placer number (1), the first by filler number (2). A missing number is NULL and
matches nothing."""

_FIND_ORDER: Select[*tuple[Any, ...]] = (
    select(
        _FOUND.c.rank,
        _FOUND.c.study_uid.label("found_by"),
        _ORDERS.c.id,
        _ORDERS.c.patient_id,
        _ORDERS.c.placer_number,
        _ORDERS.c.placer_namespace,
        _ORDERS.c.filler_number,
        _ORDERS.c.filler_namespace,
        _PROCEDURES.c.id.label("procedure_id"),
        _PROCEDURES.c.study_uid,
        _PROCEDURES.c.requested_procedure_id,
        _STEPS.c.id.label("step_id"),
        _STEPS.c.sps_id,
        _STEPS.c.status,
    )
    .select_from(
        _FOUND.join(_ORDERS, _ORDERS.c.id == _FOUND.c.order_id)
        .outerjoin(_PROCEDURES, _PROCEDURES.c.order_id == _ORDERS.c.id)
        .outerjoin(_STEPS, _STEPS.c.procedure_id == _PROCEDURES.c.id)
    )
    .order_by(_FOUND.c.rank, _ORDERS.c.id, _PROCEDURES.c.id, _STEPS.c.id)
)
"""Every candidate of :data:`_FOUND` with its procedures and steps' identities, as flat joined
rows; :func:`_first_found` picks the one that wins."""


def _number_parameters(kind: str, number: OrderNumber | None) -> dict[str, str | None]:
    if number is None or not number.number:
        return {f"{kind}_number": None, f"{kind}_namespace": None}
    return {f"{kind}_number": number.number, f"{kind}_namespace": number.namespace}


def _first_found(rows: Sequence[Row[Any]], study_uids: Sequence[str]) -> list[Row[Any]]:
    """The rows of the winning candidate: by the first of ``study_uids`` that matched, else by
    placer number, else by filler number."""

    def precedence(row: Row[Any]) -> tuple[int, int]:
        return (row.rank, study_uids.index(row.found_by) if row.rank == 0 else 0)

    best = min(precedence(row) for row in rows)
    return [row for row in rows if precedence(row) == best]


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


def _order_number(number: str | None, namespace: str | None) -> OrderNumber | None:
    return None if number is None else OrderNumber(number, namespace or "")
