"""Building DICOM JSON datasets (PS3.18 F.2) from HL7 values, within DICOM's length limits.

HL7 distinguishes "no information" (empty field: keep what is stored) from the explicit null
``""`` (delete the value); DICOM has absent attributes and zero-length ones. The builder maps
the first to "absent" and the second to a zero-length element (standards.md §1.3 "HL7 explicit
null"). Values are fitted to the VR's maximum length in UTF-8 bytes — the broker answers in
ISO_IR 192 — on a character boundary (standards.md §1.3 "Truncation", "Length policy").
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from mwl.model import DicomJson

NULL = '""'
"""HL7 explicit null (standards.md §1.3)."""

MAX_BYTES = {
    "AE": 16, "CS": 16, "SH": 16, "LO": 64, "UI": 64, "DA": 8, "TM": 16, "DT": 26,
    "ST": 1024, "LT": 10240, "UT": 1 << 20, "DS": 16, "IS": 12,
}  # fmt: skip
"""PS3.5 Table 6.2-1 maximum lengths (standards.md §1.3 "Truncation")."""

PN_GROUP_MAX = 64
"""PS3.5 6.2: a PN component group holds at most 64 characters (we store the alphabetic
group only)."""


@lru_cache(maxsize=512)
def element_of(keyword: str) -> tuple[str, str]:
    """The 8-hex-digit tag and VR of a DICOM keyword, from pydicom's data dictionary."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}", str(dictionary_VR(tag))


def fit(value: str, max_bytes: int) -> str:
    """``value`` cut to at most ``max_bytes`` UTF-8 bytes, never inside a character."""
    encoded = value.encode("utf-8")
    if len(encoded) <= max_bytes:
        return value
    return encoded[:max_bytes].decode("utf-8", errors="ignore").rstrip()


def fits(value: str, vr: str) -> bool:
    return len(value.encode("utf-8")) <= MAX_BYTES.get(vr, 1 << 20)


class DatasetBuilder:
    """Collects attributes of one level (patient, order, procedure, step) as DICOM JSON."""

    def __init__(self) -> None:
        self.data: DicomJson = {}

    def put(self, keyword: str, value: str) -> None:
        """Set a string attribute: "" leaves it absent, ``""`` (HL7 null) makes it empty."""
        tag, vr = element_of(keyword)
        if not value:
            return
        if value == NULL:
            self.data[tag] = {"vr": vr}
            return
        if vr == "PN":
            self.data[tag] = {"vr": vr, "Value": [{"Alphabetic": fit(value, PN_GROUP_MAX)}]}
            return
        self.data[tag] = {"vr": vr, "Value": [fit(value, MAX_BYTES.get(vr, 1 << 20))]}

    def put_many(self, keyword: str, values: Iterable[str]) -> None:
        """A multi-valued string attribute (e.g. several Scheduled Station AE Titles)."""
        tag, vr = element_of(keyword)
        kept = [fit(v, MAX_BYTES.get(vr, 1 << 20)) for v in values if v and v != NULL]
        if kept:
            self.data[tag] = {"vr": vr, "Value": kept}

    def put_number(self, keyword: str, value: int | float) -> None:
        tag, vr = element_of(keyword)
        self.data[tag] = {"vr": vr, "Value": [value]}

    def put_empty(self, keyword: str) -> None:
        """A Type 2 attribute present with zero length (value unknown)."""
        tag, vr = element_of(keyword)
        self.data[tag] = {"vr": vr}

    def put_sequence(self, keyword: str, items: Iterable[DicomJson]) -> None:
        kept = [item for item in items if item]
        if kept:
            tag, vr = element_of(keyword)
            self.data[tag] = {"vr": vr, "Value": kept}

    def build(self) -> DicomJson:
        return dict(self.data)


def code_item(value: str, scheme: str, meaning: str) -> DicomJson:
    """A Code Sequence item: Code Value (SH 16), Coding Scheme Designator, Code Meaning (LO 64).

    Empty when there is no code value (standards.md §1.2 OBR-44, IPC-6; §1.3 "Truncation").
    """
    if not value or value == NULL:
        return {}
    item = DatasetBuilder()
    item.put("CodeValue", value)
    item.put("CodingSchemeDesignator", scheme or "L")
    item.put("CodeMeaning", meaning or value)
    return item.build()


def issuer_item(namespace: str, universal_id: str, universal_type: str) -> DicomJson:
    """An issuer item (HD → Local Namespace / Universal Entity ID / Type), PS3.3 C.7.1.1.

    Used for the Issuer of Accession Number, Order Placer/Filler Identifier, Issuer of
    Admission ID and Issuer of Patient ID Qualifiers sequences (standards.md §1.2).
    """
    item = DatasetBuilder()
    item.put("LocalNamespaceEntityID", namespace)
    if universal_id:
        item.put("UniversalEntityID", universal_id)
        item.put("UniversalEntityIDType", universal_type or "ISO")
    return item.build()


def first_value(data: DicomJson, keyword: str) -> Any:
    """The first value of an attribute in a DICOM JSON dataset, or None."""
    element = data.get(element_of(keyword)[0])
    if not element or not element.get("Value"):
        return None
    return element["Value"][0]
