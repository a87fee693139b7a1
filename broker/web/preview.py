"""Mapping preview: an HL7 message → the worklist items it would create, the ACK that would be
sent, and which calling AE titles' default C-FIND queries would return the items. Stores
nothing.

The message goes through the real path up to the commit: :func:`mwl.inbound.prepare` (decode,
map with the site's policy), then :meth:`mwl.intake.Intake.apply` inside a unit of work that is
**rolled back, never committed** — so an update or a cancel previews against the orders the
broker has (an XO of an unknown order answers AE 204 as it would), and the items shown are the
merged items as a modality would receive them (DICOM JSON, PS3.18 F.2). A control ID accepted
before is reported: the real intake would answer with the original ACK and change nothing.
Nothing is journaled. On SQLite the rolled-back unit holds the write lock for its few
milliseconds, like any message.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from broker.store import SqlUnitOfWork, Store
from broker.store.items import step_to_item
from broker.store.schema import Order, Patient, RequestedProcedure, ScheduledStep
from broker.web.journal_read import message_text
from broker.web.matching import item_keys
from broker.web.pages import dicom_datetime_to_iso
from broker.web.stations import StationAnswer, station_answers
from hl7.ack import build_ack
from hl7.errors import AckCode, ErrorDetail, HL7Error
from mwl.inbound import AckIdentity, Failure, Prepared, prepare
from mwl.intake import Intake, find_order
from mwl.model import DicomJson, OrderMessage
from mwl.policy import MappingPolicy, WorklistPolicy


class PreviewItem(BaseModel):
    step_id: int | None
    """The stored step it would be (None: a new one; ids of new rows are not kept)."""
    sps_id: str
    status: str
    start: str
    modality: str
    station_aes: list[str]
    accession: str
    study_uid: str
    patient_id: str
    item: DicomJson
    stations: list[StationAnswer]


class PreviewProblem(BaseModel):
    message: str
    code: str
    location: str


class PreviewResult(BaseModel):
    message_type: str
    control_id: str
    ack_code: str
    ack: str
    already_accepted: bool
    effects: list[str]
    """Per order: what the intake would do (create, update, status change)."""
    problems: list[PreviewProblem]
    items: list[PreviewItem]


class Previewer:
    def __init__(
        self,
        store: Store,
        intake: Intake,
        mapping: MappingPolicy,
        worklist: WorklistPolicy,
        identity: AckIdentity,
    ) -> None:
        self._store = store
        self._intake = intake
        self._mapping = mapping
        self._worklist = worklist
        self._identity = identity

    def preview(self, raw: bytes, now: datetime) -> PreviewResult:
        prepared = prepare(raw, self._mapping)
        if prepared.failure is not None:
            return self._result(prepared, prepared.failure, now)
        assert prepared.header is not None and prepared.command is not None
        session = Session(self._store.engine)
        with SqlUnitOfWork(session) as uow:  # closing it rolls everything back
            already = uow.journal.find_accepted(prepared.header.sender, prepared.header.control_id)
            effects = self._effects(uow, prepared)
            known = set(_step_ids(uow, prepared))
            try:
                self._intake.apply(uow, prepared.command, prepared.header.sender)
            except HL7Error as error:
                return self._result(prepared, Failure.of(error), now, effects=effects)
            items = self._items(session, uow, prepared, now, known)
        return self._result(
            prepared, None, now, effects=effects, items=items, already=already is not None
        )

    def _effects(self, uow: SqlUnitOfWork, prepared: Prepared) -> list[str]:
        command = prepared.command
        if not isinstance(command, OrderMessage):
            return [f"{type(command).__name__}: patient {_patient_of(command)}"]
        effects = []
        for order in command.orders:
            try:
                rule = self._intake.rule_for(order)
            except HL7Error:
                continue
            stored = find_order(uow, order)
            target = f"order #{stored.id}" if stored else "a new order"
            status = f", steps → {rule.status.value}" if rule.status else ""
            effects.append(f"{order.control.value}: {rule.action.value} {target}{status}")
        return effects

    def _items(
        self,
        session: Session,
        uow: SqlUnitOfWork,
        prepared: Prepared,
        now: datetime,
        known: set[int],
    ) -> list[PreviewItem]:
        step_ids = _step_ids(uow, prepared)
        rows = session.execute(
            select(ScheduledStep, RequestedProcedure, Order, Patient)
            .join(ScheduledStep.procedure)
            .join(RequestedProcedure.order)
            .join(Patient, Order.patient_id == Patient.id)
            .options(selectinload(ScheduledStep.station_aes))
            .where(ScheduledStep.id.in_(step_ids))
            .order_by(ScheduledStep.id)
        ).all()
        return [self._item(*row, now=now, known=known) for row in rows]

    def _item(
        self,
        step: ScheduledStep,
        procedure: RequestedProcedure,
        order: Order,
        patient: Patient,
        *,
        now: datetime,
        known: set[int],
    ) -> PreviewItem:
        titles = [row.ae_title for row in step.station_aes]
        keys = item_keys(step, procedure, order, patient, titles)
        return PreviewItem(
            step_id=step.id if step.id in known else None, sps_id=step.sps_id, status=step.status,
            start=dicom_datetime_to_iso(step.start_datetime), modality=step.modality,
            station_aes=titles, accession=order.accession, study_uid=procedure.study_uid,
            patient_id=patient.patient_id,
            item=step_to_item(step, procedure, order, patient).dataset,
            stations=station_answers(keys, self._worklist, now),
        )  # fmt: skip

    def _result(
        self,
        prepared: Prepared,
        failure: Failure | None,
        now: datetime,
        *,
        effects: list[str] | None = None,
        items: list[PreviewItem] | None = None,
        already: bool = False,
    ) -> PreviewResult:
        header = prepared.header
        details: tuple[ErrorDetail, ...] = failure.details if failure else ()
        ack = build_ack(
            header, failure.ack_code if failure else AckCode.ACCEPT, control_id="PREVIEW",
            timestamp=now, details=details, text=details[0].message if details else "",
            application=self._identity.application, facility=self._identity.facility,
            codec=prepared.codec,
        )  # fmt: skip
        kind = f"{header.message_type}^{header.trigger_event}" if header else ""
        return PreviewResult(
            message_type=kind, control_id=header.control_id if header else "",
            ack_code=(failure.ack_code if failure else AckCode.ACCEPT).value,
            ack=message_text(ack), already_accepted=already, effects=effects or [],
            problems=[_problem(d) for d in details], items=items or [],
        )  # fmt: skip


def _step_ids(uow: SqlUnitOfWork, prepared: Prepared) -> list[int]:
    """The steps of the stored orders the message's orders address."""
    command = prepared.command
    if not isinstance(command, OrderMessage):
        return []
    return [
        step.id
        for order in command.orders
        if (stored := find_order(uow, order)) is not None
        for step in stored.steps
    ]


def _problem(detail: ErrorDetail) -> PreviewProblem:
    where = str(detail.location) if detail.location else ""
    return PreviewProblem(
        message=f"{where}: {detail.message}" if where else detail.message,
        code=str(int(detail.code)),
        location=where,
    )


def _patient_of(command: object) -> str:
    patient = getattr(command, "patient", None)
    key = getattr(patient, "key", None)
    return str(key) if key is not None else "?"
