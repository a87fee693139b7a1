"""The worklist domain: what an HL7 message asks the broker to do, as plain values.

The mapper (:mod:`mwl.mapping`) turns a decoded HL7 message into one :data:`Command`; the intake
(:mod:`mwl.intake`) applies it to the store through the ports of :mod:`mwl.ports`. Values here
are frozen and picklable: the mapping runs in parse worker processes.

DICOM attributes travel as the DICOM JSON model (PS3.18 F.2: ``{"00100010": {"vr": "PN",
"Value": [{"Alphabetic": "DOE^J"}]}}``), split by the level they belong to (patient, order,
requested procedure, scheduled step) so that an ADT update rewrites one patient row only.
The indexed values a C-FIND matches on are repeated as typed fields.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

DicomJson = dict[str, Any]
"""A dataset in the DICOM JSON model (PS3.18 F.2), keyed by 8-hex-digit tags."""


class SPSStatus(enum.StrEnum):
    """(0040,0020) Scheduled Procedure Step Status (standards.md §2.2).

    SCHEDULED … DEPARTED are DICOM defined terms; COMPLETED, DISCONTINUED and CANCELED are the
    end states dcm4chee uses (HCS Note9) and are hidden from default worklist queries.
    """

    SCHEDULED = "SCHEDULED"
    ARRIVED = "ARRIVED"
    READY = "READY"
    STARTED = "STARTED"
    DEPARTED = "DEPARTED"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELED = "CANCELED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({SPSStatus.COMPLETED, SPSStatus.DISCONTINUED, SPSStatus.CANCELED})
NOT_STARTED = frozenset({SPSStatus.SCHEDULED, SPSStatus.ARRIVED, SPSStatus.READY})


class OrderControl(enum.StrEnum):
    """ORC-1 Order Control, HL7 Table 0119 — the codes the broker acts on (standards.md §2.1)."""

    NEW = "NW"
    CHANGE = "XO"
    CANCEL = "CA"
    DISCONTINUE = "DC"
    STATUS_CHANGED = "SC"
    CANCELED = "OC"
    DISCONTINUED = "OD"


@dataclass(frozen=True, slots=True)
class PatientKey:
    """A patient identity: PID-3.1 with its assigning authority PID-3.4.1 (may be empty)."""

    patient_id: str
    issuer: str = ""

    def __str__(self) -> str:
        return f"{self.patient_id}^^^{self.issuer}" if self.issuer else self.patient_id


@dataclass(frozen=True, slots=True)
class OrderNumber:
    """ORC-2 / ORC-3 entity identifier: number and namespace (EI.1, EI.2)."""

    number: str
    namespace: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientRecord:
    """Patient-level attributes from PID (and PID-adjacent NTE/OBX)."""

    key: PatientKey
    name: str
    attributes: DicomJson = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """One Scheduled Procedure Step: one item of (0040,0100)."""

    sps_id: str
    station_aes: tuple[str, ...]
    start_date: str
    start_time: str
    modality: str
    performing_physician: str = ""
    station_name: str = ""
    location: str = ""
    description: str = ""
    attributes: DicomJson = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcedureRecord:
    """One Requested Procedure, keyed by its Study Instance UID (standards.md §1.4)."""

    study_uid: str
    requested_procedure_id: str
    description: str = ""
    attributes: DicomJson = field(default_factory=dict)
    steps: tuple[StepRecord, ...] = ()
    study_uid_generated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRecord:
    """One Imaging Service Request: an ORC group with its procedures."""

    control: OrderControl
    order_status: str
    placer: OrderNumber | None
    filler: OrderNumber | None
    accession: str = ""
    referring_physician: str = ""
    admission_id: str = ""
    attributes: DicomJson = field(default_factory=dict)
    procedures: tuple[ProcedureRecord, ...] = ()
    orc_sequence: int = 1
    """Occurrence of this group's ORC in the message, for ERR locations."""
    hl7_charset: str = ""
    """MSH-18 of the message that carried the order: status messages back go out in it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderMessage:
    """ORM^O01 / OMI^O23 / OMG^O19: a patient and one or more orders."""

    patient: PatientRecord
    orders: tuple[OrderRecord, ...]
    sending_facility: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientUpdate:
    """ADT A01/A04/A05/A08/A31: new or changed demographics."""

    patient: PatientRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientMerge:
    """ADT A40: the prior patient's orders move to the surviving patient."""

    surviving: PatientRecord
    prior: PatientKey


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientIdChange:
    """ADT A47: the patient identifier changes; the orders stay with the patient."""

    patient: PatientRecord
    prior: PatientKey


Command = OrderMessage | PatientUpdate | PatientMerge | PatientIdChange


@dataclass(frozen=True, slots=True, kw_only=True)
class WorklistItem:
    """One scheduled step as a modality sees it: the merged worklist item (PS3.4 K.6.1.2.1).

    ``dataset`` holds patient, visit, order and requested procedure attributes at the top level
    and the step's own attributes as the single item of (0040,0100) SPS Sequence.
    """

    step_id: int
    status: SPSStatus
    patient_key: PatientKey
    study_uid: str
    sps_id: str
    dataset: DicomJson
