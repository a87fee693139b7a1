"""MPPS instances as stored by the MPPS SCP (PS3.4 F.7): status, timings, the scheduled steps
they refer to, the unscheduled flag, and the whole dataset as DICOM JSON (PS3.18 F.2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.orm import Session

from broker.store.schema import (
    MppsStepLink,
    PerformedStepRow,
    RequestedProcedure,
    ScheduledStep,
)
from broker.web.pages import Page, count, dicom_datetime_to_iso, text_match
from broker.web.worklist_read import StepSummary, summaries, summary_query
from mwl.model import DicomJson


@dataclass(frozen=True, kw_only=True)
class MppsFilter:
    status: str | None = None
    station_ae: str | None = None
    """Performed Station AE Title or the calling AE title."""
    modality: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    unscheduled: bool | None = None
    order_id: int | None = None


class MppsSummary(BaseModel):
    id: int
    sop_instance_uid: str
    status: str
    calling_ae: str
    performed_station_ae: str
    modality: str
    pps_id: str
    start: str
    end: str
    unscheduled: bool
    step_ids: list[int]
    created_at: datetime
    updated_at: datetime


class MppsDetail(BaseModel):
    mpps: MppsSummary
    steps: list[StepSummary]
    """The scheduled steps it refers to (none: unscheduled)."""
    dataset: DicomJson


def list_mpps(
    session: Session, wanted: MppsFilter, *, offset: int, limit: int
) -> Page[MppsSummary]:
    query = select(PerformedStepRow).where(*_conditions(wanted))
    total = count(session, query)
    rows = session.scalars(
        query.order_by(PerformedStepRow.created_at.desc(), PerformedStepRow.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    links = step_links(session, [row.id for row in rows])
    items = [mpps_summary(row, links.get(row.id, [])) for row in rows]
    return Page[MppsSummary](items=items, total=total, offset=offset, limit=limit)


def mpps_detail(session: Session, mpps_id: int) -> MppsDetail | None:
    row = session.get(PerformedStepRow, mpps_id)
    if row is None:
        return None
    step_ids = step_links(session, [row.id]).get(row.id, [])
    rows = session.execute(summary_query().where(ScheduledStep.id.in_(step_ids))).all()
    return MppsDetail(
        mpps=mpps_summary(row, step_ids), steps=summaries(session, rows), dataset=row.attributes
    )


def mpps_of_steps(session: Session, step_ids: list[int]) -> list[MppsSummary]:
    """The MPPS instances referring to any of the steps, oldest first."""
    if not step_ids:
        return []
    rows = session.scalars(
        select(PerformedStepRow)
        .where(
            exists().where(
                MppsStepLink.mpps_id == PerformedStepRow.id, MppsStepLink.step_id.in_(step_ids)
            )
        )
        .order_by(PerformedStepRow.created_at, PerformedStepRow.id)
    ).all()
    links = step_links(session, [row.id for row in rows])
    return [mpps_summary(row, links.get(row.id, [])) for row in rows]


def step_links(session: Session, mpps_ids: list[int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    if not mpps_ids:
        return found
    rows = session.execute(
        select(MppsStepLink.mpps_id, MppsStepLink.step_id)
        .where(MppsStepLink.mpps_id.in_(mpps_ids))
        .order_by(MppsStepLink.mpps_id, MppsStepLink.step_id)
    )
    for mpps_id, step_id in rows:
        found.setdefault(mpps_id, []).append(step_id)
    return found


def mpps_summary(row: PerformedStepRow, step_ids: list[int]) -> MppsSummary:
    return MppsSummary(
        id=row.id,
        sop_instance_uid=row.sop_instance_uid,
        status=row.status,
        calling_ae=row.calling_ae,
        performed_station_ae=row.performed_station_ae,
        modality=row.modality,
        pps_id=row.pps_id,
        start=dicom_datetime_to_iso(row.start_datetime),
        end=dicom_datetime_to_iso(row.end_datetime),
        unscheduled=row.unscheduled,
        step_ids=step_ids,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _conditions(wanted: MppsFilter) -> list[ColumnElement[bool]]:
    terms: list[ColumnElement[bool]] = []
    if wanted.status:
        terms.append(PerformedStepRow.status == wanted.status.upper())
    if wanted.station_ae:
        terms.append(
            text_match(PerformedStepRow.performed_station_ae, wanted.station_ae)
            | text_match(PerformedStepRow.calling_ae, wanted.station_ae)
        )
    if wanted.modality:
        terms.append(PerformedStepRow.modality == wanted.modality.upper())
    if wanted.date_from:
        terms.append(PerformedStepRow.start_datetime >= wanted.date_from + "000000")
    if wanted.date_to:
        terms.append(PerformedStepRow.start_datetime <= wanted.date_to + "235959")
    if wanted.unscheduled is not None:
        terms.append(PerformedStepRow.unscheduled == wanted.unscheduled)
    if wanted.order_id is not None:
        steps = (
            select(MppsStepLink.mpps_id)
            .join(ScheduledStep, MppsStepLink.step_id == ScheduledStep.id)
            .join(RequestedProcedure, ScheduledStep.procedure_id == RequestedProcedure.id)
            .where(RequestedProcedure.order_id == wanted.order_id)
        )
        terms.append(PerformedStepRow.id.in_(steps))
    return terms
