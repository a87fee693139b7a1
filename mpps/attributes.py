"""MPPS attributes: PS3.4 Table F.7.2-1 as data, and reading an MPPS in the DICOM JSON model.

The tables are standards.md §4.1 (Table F.7.2-1, condensed there); the readers work on the
DICOM JSON model (PS3.18 F.2) that :mod:`mpps.state` stores. Nothing here raises: the
functions return the keywords or tags at fault and :mod:`mpps.state` decides the status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from types import MappingProxyType
from typing import Any

from mpps.model import PPSStatus
from mwl.dicomjson import element_of
from mwl.model import DicomJson

STATUS = "PerformedProcedureStepStatus"
STEPS = "ScheduledStepAttributesSequence"
SERIES = "PerformedSeriesSequence"
REASONS = "PerformedProcedureStepDiscontinuationReasonCodeSequence"
START = ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime")
END = ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime")

N_CREATE_TYPE_1 = (
    STEPS,
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    *START,
    STATUS,
    "Modality",
)
"""Type 1 (SCU/SCP) attributes of N-CREATE."""

N_CREATE_ITEM_TYPE_1: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {STEPS: ("StudyInstanceUID",)}
)
"""Type 1 attributes of every item of an N-CREATE sequence."""

N_SET_NOT_ALLOWED = (
    STEPS,
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence",
    "PatientBirthDate",
    "PatientSex",
    "ReferencedPatientSequence",
    "AdmissionID",
    "IssuerOfAdmissionIDSequence",
    "ServiceEpisodeID",
    "IssuerOfServiceEpisodeIDSequence",
    "ServiceEpisodeDescription",
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    "PerformedStationName",
    "PerformedLocation",
    *START,
    "Modality",
    "StudyID",
)
"""Attributes Table F.7.2-1 marks "Not allowed" in N-SET (nested ones travel in their sequence)."""

FINAL_TYPE_1: Mapping[PPSStatus, tuple[str, ...]] = MappingProxyType(
    {PPSStatus.COMPLETED: (*END, SERIES), PPSStatus.DISCONTINUED: END}
)
"""Final-state Type 1 attributes per final status (DISCONTINUED: see :mod:`mpps.state`)."""

FINAL_ITEM_TYPE_1: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {SERIES: ("SeriesInstanceUID", "ProtocolName")}
)
"""Final-state Type 1 attributes of every Performed Series Sequence item."""

DATES_AND_TIMES = (*START, *END)
"""The DA/TM values :mod:`mpps.state` checks for form: the ones the broker reports."""

_TIME = re.compile(r"(?:[01]\d|2[0-3])(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?")
_DATE = re.compile(r"\d{8}")


def gaps(
    data: DicomJson,
    keywords: Iterable[str],
    item_keywords: Mapping[str, tuple[str, ...]],
) -> tuple[list[int], list[int]]:
    """Tags of the absent and of the present-but-empty Type 1 attributes.

    A sequence is empty without items. An item attribute is listed after its sequence tag:
    the Attribute Identifier List (0000,1005) has no path notation.
    """
    missing, empty = _gaps(data, keywords)
    for sequence, inner in item_keywords.items():
        for item in items(data, sequence):
            item_missing, item_empty = _gaps(item, inner)
            if item_missing:
                missing += [tag(sequence), *item_missing]
            if item_empty:
                empty += [tag(sequence), *item_empty]
    return missing, empty


def _gaps(data: DicomJson, keywords: Iterable[str]) -> tuple[list[int], list[int]]:
    missing: list[int] = []
    empty: list[int] = []
    for keyword in keywords:
        key, vr = element_of(keyword)
        if key not in data:
            missing.append(int(key, 16))
        elif not _has_value(data[key], vr):
            empty.append(int(key, 16))
    return missing, empty


def _has_value(element: Mapping[str, Any], vr: str) -> bool:
    values = element.get("Value") or []
    if vr == "SQ":
        return bool(values)
    return any(_filled(value) for value in values)


def _filled(value: Any) -> bool:
    if isinstance(value, dict):  # a PN value: its component groups
        return any(_filled(group) for group in value.values())
    if isinstance(value, str):
        return bool(value.strip())
    return value is not None


def not_allowed_in_set(data: DicomJson) -> list[str]:
    """Keywords of the attributes an N-SET may not carry (Table F.7.2-1 "Not allowed")."""
    return [keyword for keyword in N_SET_NOT_ALLOWED if element_of(keyword)[0] in data]


def malformed_dates_and_times(data: DicomJson) -> list[str]:
    """Keywords of :data:`DATES_AND_TIMES` whose value is not a DA/TM (PS3.5 Table 6.2-1).

    DA is ``YYYYMMDD`` and a real date; TM is ``HH[MM[SS[.F{1,6}]]]`` (SS up to 60 for a
    leap second). An empty value is not malformed: absence is the Type 1 checks' business.
    """
    return [
        keyword for keyword in DATES_AND_TIMES if not _well_formed(text(data, keyword), keyword)
    ]


def _well_formed(value: str, keyword: str) -> bool:
    if not value:
        return True
    if element_of(keyword)[1] == "TM":
        return _TIME.fullmatch(value) is not None
    if _DATE.fullmatch(value) is None:
        return False
    try:
        date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return False
    return True


# --- reading DICOM JSON ---------------------------------------------------------------------


def values(data: DicomJson, keyword: str) -> list[Any]:
    """The values of an attribute; ``[]`` when absent or zero-length."""
    element = data.get(element_of(keyword)[0])
    return list(element.get("Value") or []) if element else []


def text(data: DicomJson, keyword: str) -> str:
    """The first value as text, ``""`` when absent or empty; the alphabetic group of a PN."""
    found = values(data, keyword)
    if not found or found[0] is None:
        return ""
    first = found[0]
    if isinstance(first, dict):
        return str(first.get("Alphabetic", "")).strip()
    return str(first).strip()


def items(data: DicomJson, keyword: str) -> list[DicomJson]:
    """The items of a sequence attribute."""
    return [item for item in values(data, keyword) if isinstance(item, dict)]


def codes(data: DicomJson, keyword: str) -> list[tuple[str, str]]:
    """(Code Value or Long Code Value, Coding Scheme Designator) of each item of a code sequence."""
    return [
        (
            text(item, "CodeValue") or text(item, "LongCodeValue"),
            text(item, "CodingSchemeDesignator"),
        )
        for item in items(data, keyword)
    ]


def tag(keyword: str) -> int:
    """The tag of a keyword as an int, e.g. ``0x00400252``."""
    return int(element_of(keyword)[0], 16)


def tag_list(tags: Iterable[int]) -> str:
    """Tags as ``(gggg,eeee)`` separated by blanks, each once."""
    return " ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in dict.fromkeys(tags))
