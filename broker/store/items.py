"""Stored rows → :class:`mwl.model.WorklistItem`: the merged worklist item (PS3.4 K.6.1.2.1).

Patient, order (imaging service request) and requested procedure attributes sit at the top
level of the dataset; the step's attributes are the single item of (0040,0100) Scheduled
Procedure Step Sequence, with (0040,0020) SPS Status and (0040,0001) Scheduled Station AE
Title taken from their columns (the status changes and the AE titles are stored only there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from broker.store.attributes import SCHEDULED_STATION_AE, SPS_SEQUENCE, SPS_STATUS
from broker.store.schema import Order, Patient, RequestedProcedure, ScheduledStep
from mwl.model import FINAL_STATUSES, DicomJson, PatientKey, SPSStatus, WorklistItem


def worklist_items_query(
    *,
    patient_id: str | None = None,
    accession: str | None = None,
    study_uid: str | None = None,
    include_final: bool = True,
) -> Select[ScheduledStep, RequestedProcedure, Order, Patient]:
    """Steps with their procedure, order and patient; every given key must match exactly."""
    query = (
        select(ScheduledStep, RequestedProcedure, Order, Patient)
        .join(ScheduledStep.procedure)
        .join(RequestedProcedure.order)
        .join(Patient, Order.patient_id == Patient.id)
        .options(selectinload(ScheduledStep.station_aes))
        .order_by(ScheduledStep.id)
    )
    if patient_id is not None:
        query = query.where(Patient.patient_id == patient_id)
    if accession is not None:
        query = query.where(Order.accession == accession)
    if study_uid is not None:
        query = query.where(RequestedProcedure.study_uid == study_uid)
    if not include_final:
        query = query.where(ScheduledStep.status.not_in([s.value for s in FINAL_STATUSES]))
    return query


def step_to_item(
    step: ScheduledStep, procedure: RequestedProcedure, order: Order, patient: Patient
) -> WorklistItem:
    """The merged worklist item of one stored step."""
    return WorklistItem(
        step_id=step.id,
        status=SPSStatus(step.status),
        patient_key=PatientKey(patient.patient_id, patient.issuer),
        study_uid=procedure.study_uid,
        sps_id=step.sps_id,
        dataset=merged_dataset(
            patient.attributes, order.attributes, procedure.attributes, step_to_sps_item(step)
        ),
    )


def step_to_sps_item(step: ScheduledStep) -> DicomJson:
    """The step's attributes as one (0040,0100) item, status and station AEs from columns."""
    return sps_item(step.attributes, step.status, [row.ae_title for row in step.station_aes])


def merged_dataset(
    patient: DicomJson, order: DicomJson, procedure: DicomJson, sps: DicomJson
) -> DicomJson:
    """Patient, order and procedure attributes at the top level, ``sps`` as the one item of
    (0040,0100) Scheduled Procedure Step Sequence; sorted by tag."""
    dataset: DicomJson = {
        **patient,
        **order,
        **procedure,
        SPS_SEQUENCE: {"vr": "SQ", "Value": [sps]},
    }
    return dict(sorted(dataset.items()))


def sps_item(attributes: DicomJson, status: str, station_aes: Sequence[str]) -> DicomJson:
    """One (0040,0100) item: the step's attributes with (0040,0020) SPS Status and, when there
    are any, the (0040,0001) Scheduled Station AE Titles from their columns."""
    item: dict[str, Any] = {**attributes, SPS_STATUS: {"vr": "CS", "Value": [status]}}
    if station_aes:
        item[SCHEDULED_STATION_AE] = {"vr": "AE", "Value": list(station_aes)}
    return dict(sorted(item.items()))
