"""DICOM JSON attributes and the typed columns repeated from them.

Stored attributes are merged as a dict update (PS3.18 F.2 elements keyed by tag): a new
element replaces the old one, a zero-length element (no ``"Value"``) replaces it too and so
clears it, an absent element leaves the stored one alone — the HL7 rule that an empty field
means "no change" and ``""`` means "delete", once the mapper has turned fields into elements.

A typed column follows its record field when that is non-empty, else the record's element
for the same tag when the record carries one (possibly zero-length: cleared), else it keeps
its value; :data:`PATIENT_COLUMNS` … name the tag behind each column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mwl.model import DicomJson

PATIENT_ID = "00100020"
ISSUER_OF_PATIENT_ID = "00100021"
SPS_STATUS = "00400020"
SCHEDULED_STATION_AE = "00400001"
SPS_SEQUENCE = "00400100"

PATIENT_COLUMNS: Mapping[str, str] = {
    "name": "00100010",  # PID-5 Patient Name → (0010,0010) Patient's Name
    "birth_date": "00100030",  # PID-7 → (0010,0030) Patient's Birth Date
    "sex": "00100040",  # PID-8 → (0010,0040) Patient's Sex
}
ORDER_COLUMNS: Mapping[str, str] = {
    "accession": "00080050",  # Accession Number
    "referring_physician": "00080090",  # Referring Physician's Name
    "admission_id": "00380010",  # Admission ID
}
PROCEDURE_COLUMNS: Mapping[str, str] = {
    "requested_procedure_id": "00401001",  # Requested Procedure ID
    "description": "00321060",  # Requested Procedure Description
}
STEP_COLUMNS: Mapping[str, str] = {
    "start_date": "00400002",  # Scheduled Procedure Step Start Date
    "start_time": "00400003",  # Scheduled Procedure Step Start Time
    "modality": "00080060",  # Modality
    "performing_physician": "00400006",  # Scheduled Performing Physician's Name
    "station_name": "00400010",  # Scheduled Station Name
    "location": "00400011",  # Scheduled Procedure Step Location
    "description": "00400007",  # Scheduled Procedure Step Description
}

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def merge_attributes(stored: DicomJson, new: DicomJson) -> DicomJson:
    """``stored`` updated with ``new`` (see the module doc); neither is changed."""
    return {**stored, **new}


def apply_columns(row: object, record: object, columns: Mapping[str, str], new: DicomJson) -> None:
    """Set each of ``row``'s typed ``columns`` from ``record`` and its attributes ``new``."""
    for column, tag in columns.items():
        current = getattr(row, column, None) or ""
        setattr(row, column, column_value(getattr(record, column, ""), new, tag, current))


def new_columns(record: object, columns: Mapping[str, str], new: DicomJson) -> dict[str, str]:
    """The typed ``columns`` of a new row for ``record``: :func:`apply_columns` on an empty row."""
    return {
        column: column_value(getattr(record, column, ""), new, tag, "")
        for column, tag in columns.items()
    }


def column_value(field: str, new: DicomJson, tag: str, current: str) -> str:
    """The record's field, else its element ``tag`` when present, else ``current``."""
    if field:
        return field
    if tag in new:
        return element_text(new, tag)
    return current


def element_text(attributes: DicomJson, tag: str) -> str:
    """An element's value as DICOM text: values joined by ``\\``, PN groups by ``=``."""
    element = attributes.get(tag)
    if not isinstance(element, dict):
        return ""
    return "\\".join(_value_text(value) for value in element.get("Value") or ())


def start_datetime(date: str, time: str) -> str:
    """SPS Start Date + Time as ``YYYYMMDDHHMMSS`` (PS3.4 C.2.2.2.5 combined matching).

    The time (TM, PS3.5 Table 6.2-1: ``HH``, ``HHMM``, ``HHMMSS.FFFFFF``, or the ACR-NEMA
    ``HH:MM:SS``) is padded with zeros to ``HHMMSS`` and loses its fraction.
    """
    if not date:
        return ""
    digits = time.split(".", 1)[0].replace(":", "").strip()
    return date.strip()[:8] + digits.ljust(6, "0")[:6]


def text_element(vr: str, value: str) -> dict[str, Any]:
    """A single-valued element, or a zero-length one for an empty value."""
    return {"vr": vr, "Value": [value]} if value else {"vr": vr}


def _value_text(value: object) -> str:
    if isinstance(value, dict):
        groups = (str(value.get(group, "")) for group in _PN_GROUPS)
        return "=".join(groups).rstrip("=")
    return "" if value is None else str(value)
