"""MPPS attribute lists as a modality sends them, built with pydicom (standards.md §4.1).

:func:`n_create` is a valid N-CREATE attribute list (Type 1 and the usual Type 2 attributes);
keyword arguments replace top-level attributes, ``None`` removes one. :func:`wire` encodes a
dataset and reads it back the way pynetdicom hands it to a handler (raw elements decoded with
the dataset's own Specific Character Set on access).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from mpps.model import PerformedStep
from mpps.state import apply_set, create

MPPS_UID = "1.2.826.0.1.3680043.2.1125.9.1"
STUDY_UID = "1.2.826.0.1.3680043.2.1125.1.1"
SERIES_UID = "1.2.826.0.1.3680043.2.1125.2.1"


def dataset(**attributes: Any) -> Dataset:
    """A dataset from keyword arguments; lists of datasets become sequences."""
    ds = Dataset()
    for keyword, value in attributes.items():
        if value is not None:
            setattr(ds, keyword, Sequence(value) if isinstance(value, list) else value)
    return ds


def step_item(**overrides: Any) -> Dataset:
    """One (0040,0270) item of a scheduled step (the worklist item the modality picked)."""
    values: dict[str, Any] = {
        "StudyInstanceUID": STUDY_UID,
        "ReferencedStudySequence": [],
        "AccessionNumber": "ACC-1",
        "RequestedProcedureID": "RP-1",
        "RequestedProcedureDescription": "CT Thorax",
        "ScheduledProcedureStepID": "SPS-1",
        "ScheduledProcedureStepDescription": "Thorax",
        "ScheduledProtocolCodeSequence": [],
        "PlacerOrderNumberImagingServiceRequest": "PL-1",
        "FillerOrderNumberImagingServiceRequest": "FL-1",
    }
    values.update(overrides)
    return dataset(**values)


def series_item(**overrides: Any) -> Dataset:
    """One (0040,0340) Performed Series Sequence item."""
    values: dict[str, Any] = {
        "SeriesInstanceUID": SERIES_UID,
        "ProtocolName": "Thorax routine",
        "PerformingPhysicianName": "",
        "OperatorsName": "Tech^Tom",
        "SeriesDescription": "Thorax",
        "RetrieveAETitle": "",
        "ReferencedImageSequence": [],
    }
    values.update(overrides)
    return dataset(**values)


def code_item(value: str, scheme: str = "DCM", meaning: str = "") -> Dataset:
    return dataset(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning or value)


def n_create(**overrides: Any) -> Dataset:
    """A valid N-CREATE attribute list: IN PROGRESS, one scheduled step, empty final values."""
    values: dict[str, Any] = {
        "ScheduledStepAttributesSequence": [step_item()],
        "PatientName": "Doe^John",
        "PatientID": "PAT-1",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
        "ReferencedPatientSequence": [],
        "PerformedProcedureStepID": "PPS-1",
        "PerformedStationAETitle": "CT01",
        "PerformedStationName": "CT room 1",
        "PerformedLocation": "",
        "PerformedProcedureStepStartDate": "20240102",
        "PerformedProcedureStepStartTime": "103000",
        "PerformedProcedureStepStatus": "IN PROGRESS",
        "PerformedProcedureStepDescription": "CT Thorax",
        "PerformedProcedureTypeDescription": "",
        "ProcedureCodeSequence": [],
        "PerformedProcedureStepEndDate": "",
        "PerformedProcedureStepEndTime": "",
        "PerformedProcedureStepDiscontinuationReasonCodeSequence": [],
        "Modality": "CT",
        "StudyID": "",
        "PerformedProtocolCodeSequence": [],
        "PerformedSeriesSequence": [],
    }
    values.update(overrides)
    return dataset(**values)


def completion(**overrides: Any) -> Dataset:
    """A valid final N-SET: COMPLETED with end date/time and one series."""
    values: dict[str, Any] = {
        "PerformedProcedureStepStatus": "COMPLETED",
        "PerformedProcedureStepEndDate": "20240102",
        "PerformedProcedureStepEndTime": "104500",
        "PerformedSeriesSequence": [series_item()],
    }
    values.update(overrides)
    return dataset(**values)


def wire(ds: Dataset) -> Dataset:
    """``ds`` encoded (implicit VR little endian) and read back, as a DIMSE handler gets it."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return read_dataset(BytesIO(fp.getvalue()), is_implicit_VR=True, is_little_endian=True)


def in_progress(**overrides: Any) -> PerformedStep:
    return create(MPPS_UID, n_create(**overrides))


def completed(**overrides: Any) -> PerformedStep:
    return apply_set(in_progress(), completion(**overrides))


def discontinued(*reasons: Dataset) -> PerformedStep:
    modification = completion(
        PerformedProcedureStepStatus="DISCONTINUED",
        PerformedSeriesSequence=[],
        PerformedProcedureStepDiscontinuationReasonCodeSequence=list(reasons),
    )
    return apply_set(in_progress(), modification)
