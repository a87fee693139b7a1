"""Worklist reads for the console: scheduled steps by date, station, modality, status,
patient and accession, and one step with its order, patient and merged worklist item.

The filters use the indexed matching columns the C-FIND SCP uses (``start_datetime``,
``step_station_aes.ae_title``, ``modality``, ``status``, ``patients.patient_id`` /
``name_folded``, ``orders.accession``); a patient name is searched case- and
accent-insensitively anywhere in the name, like the C-FIND PN match folds it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Row, Select, exists, select
from sqlalchemy.orm import Session

from broker.store.items import step_to_item, worklist_items_query
from broker.store.schema import Order, Patient, RequestedProcedure, ScheduledStep, StepStationAE
from broker.web.pages import (
    LIKE_ESCAPE,
    Page,
    count,
    dicom_datetime_to_iso,
    like_pattern,
    text_match,
)
from mwl.model import DicomJson
from mwl.pn import fold_person_name


@dataclass(frozen=True, kw_only=True)
class WorklistFilter:
    """Every given value must match; dates are ``YYYYMMDD``, inclusive."""

    date_from: str | None = None
    date_to: str | None = None
    station_ae: str | None = None
    modality: str | None = None
    statuses: tuple[str, ...] = field(default_factory=tuple)
    patient_id: str | None = None
    patient_name: str | None = None
    accession: str | None = None
    order_id: int | None = None


class StepSummary(BaseModel):
    """One scheduled procedure step as a worklist row."""

    step_id: int
    order_id: int
    sps_id: str
    status: str
    start: str
    """SPS Start Date and Time, local wall-clock time, ``YYYY-MM-DDTHH:MM:SS``."""
    modality: str
    station_aes: list[str]
    station_name: str
    description: str
    requested_procedure_id: str
    requested_procedure: str
    study_uid: str
    accession: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    updated_at: datetime


class OrderSummary(BaseModel):
    order_id: int
    placer: str
    filler: str
    accession: str
    referring_physician: str
    sending_application: str
    sending_facility: str
    hl7_charset: str
    created_at: datetime
    updated_at: datetime


class StepDetail(BaseModel):
    """One step with its order (and the order's other steps), patient and worklist item."""

    step: StepSummary
    order: OrderSummary
    order_steps: list[StepSummary]
    item: DicomJson
    """The merged worklist item a modality receives, as DICOM JSON (PS3.18 F.2)."""


def list_steps(
    session: Session, wanted: WorklistFilter, *, offset: int, limit: int
) -> Page[StepSummary]:
    """A page of steps by scheduled start, then step id."""
    query = summary_query().where(*conditions(wanted))
    total = count(session, query)
    rows = session.execute(
        query.order_by(ScheduledStep.start_datetime, ScheduledStep.id).offset(offset).limit(limit)
    ).all()
    return Page[StepSummary](
        items=summaries(session, rows), total=total, offset=offset, limit=limit
    )


def step_detail(session: Session, step_id: int) -> StepDetail | None:
    found = session.execute(worklist_items_query().where(ScheduledStep.id == step_id)).one_or_none()
    if found is None:
        return None
    step, procedure, order, patient = found
    rows = session.execute(
        summary_query().where(Order.id == order.id).order_by(ScheduledStep.id)
    ).all()
    siblings = summaries(session, rows)
    return StepDetail(
        step=next(s for s in siblings if s.step_id == step_id),
        order=order_summary(order),
        order_steps=siblings,
        item=step_to_item(step, procedure, order, patient).dataset,
    )


def order_summary(order: Order) -> OrderSummary:
    return OrderSummary(
        order_id=order.id,
        placer=_number(order.placer_number, order.placer_namespace),
        filler=_number(order.filler_number, order.filler_namespace),
        accession=order.accession,
        referring_physician=order.referring_physician,
        sending_application=order.sending_application,
        sending_facility=order.sending_facility,
        hl7_charset=order.hl7_charset,
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


def conditions(wanted: WorklistFilter) -> list[ColumnElement[bool]]:
    terms: list[ColumnElement[bool]] = []
    if wanted.date_from:
        terms.append(ScheduledStep.start_datetime >= wanted.date_from + "000000")
    if wanted.date_to:
        terms.append(ScheduledStep.start_datetime <= wanted.date_to + "235959")
    if wanted.station_ae:
        terms.append(
            exists().where(
                StepStationAE.step_id == ScheduledStep.id,
                text_match(StepStationAE.ae_title, wanted.station_ae),
            )
        )
    if wanted.modality:
        terms.append(ScheduledStep.modality == wanted.modality.upper())
    if wanted.statuses:
        terms.append(ScheduledStep.status.in_(wanted.statuses))
    if wanted.patient_id:
        terms.append(text_match(Patient.patient_id, wanted.patient_id))
    if wanted.patient_name:
        pattern = like_pattern(fold_person_name(wanted.patient_name), contains=True)
        terms.append(Patient.name_folded.like(pattern, escape=LIKE_ESCAPE))
    if wanted.accession:
        terms.append(text_match(Order.accession, wanted.accession))
    if wanted.order_id is not None:
        terms.append(Order.id == wanted.order_id)
    return terms


def summary_query() -> Select[*tuple[Any, ...]]:
    return (
        select(
            ScheduledStep.id.label("step_id"),
            Order.id.label("order_id"),
            ScheduledStep.sps_id,
            ScheduledStep.status,
            ScheduledStep.start_datetime,
            ScheduledStep.modality,
            ScheduledStep.station_name,
            ScheduledStep.description,
            ScheduledStep.updated_at,
            RequestedProcedure.requested_procedure_id,
            RequestedProcedure.description.label("procedure_description"),
            RequestedProcedure.study_uid,
            Order.accession,
            Patient.patient_id,
            Patient.issuer,
            Patient.name,
            Patient.birth_date,
            Patient.sex,
        )
        .join(RequestedProcedure, ScheduledStep.procedure_id == RequestedProcedure.id)
        .join(Order, RequestedProcedure.order_id == Order.id)
        .join(Patient, Order.patient_id == Patient.id)
    )


def summaries(session: Session, rows: Sequence[Row[Any]]) -> list[StepSummary]:
    titles = station_aes(session, [row.step_id for row in rows])
    return [_summary(row, titles.get(row.step_id, [])) for row in rows]


def station_aes(session: Session, step_ids: Sequence[int]) -> dict[int, list[str]]:
    """Every Scheduled Station AE Title of the given steps."""
    found: defaultdict[int, list[str]] = defaultdict(list)
    if not step_ids:
        return found
    rows = session.execute(
        select(StepStationAE.step_id, StepStationAE.ae_title)
        .where(StepStationAE.step_id.in_(list(step_ids)))
        .order_by(StepStationAE.step_id, StepStationAE.ae_title)
    )
    for step_id, ae_title in rows:
        found[step_id].append(ae_title)
    return found


def _summary(row: Row[Any], titles: list[str]) -> StepSummary:
    return StepSummary(
        step_id=row.step_id,
        order_id=row.order_id,
        sps_id=row.sps_id,
        status=row.status,
        start=dicom_datetime_to_iso(row.start_datetime),
        modality=row.modality,
        station_aes=titles,
        station_name=row.station_name,
        description=row.description,
        requested_procedure_id=row.requested_procedure_id,
        requested_procedure=row.procedure_description,
        study_uid=row.study_uid,
        accession=row.accession,
        patient_id=row.patient_id,
        issuer=row.issuer,
        patient_name=row.name,
        birth_date=row.birth_date,
        sex=row.sex,
        updated_at=row.updated_at,
    )


def _number(number: str | None, namespace: str | None) -> str:
    if not number:
        return ""
    return f"{number}^{namespace}" if namespace else number
