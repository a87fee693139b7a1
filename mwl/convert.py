"""HL7 data types → DICOM values (standards.md §1.3 "Data-type conversions").

Every function takes already-split, unescaped HL7 components (from :class:`hl7.codec.Field`)
and returns a DICOM string; none of them raises on odd input — the mapper decides what is an
error (Type 1 keys) and what is left out (Type 2/3).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mwl.dicomjson import NULL

_TS = re.compile(
    r"^(?P<date>\d{8})(?P<time>\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?(?P<tz>[+-]\d{4})?$"
)


def _component(parts: Sequence[str], n: int) -> str:
    value = parts[n - 1] if len(parts) >= n else ""
    return "" if value == NULL else value.strip()


def _pn(family: str, given: str, middle: str, prefix: str, suffix: str) -> str:
    """Join PN components (PS3.5 6.2: Family^Given^Middle^Prefix^Suffix), trailing ^ dropped."""
    pn = "^".join((family, given, middle, prefix, suffix)).rstrip("^")
    return pn.replace("\\", "")


def xpn_to_pn(components: Sequence[str]) -> str:
    """XPN → PN: ``XPN.1 ^ XPN.2 ^ XPN.3 ^ XPN.5 ^ (XPN.4 XPN.6)`` (standards.md §1.3 XPN → PN).

    XPN.4 is the suffix and XPN.5 the prefix, the reverse of DICOM; XPN.7+ (name type, e.g. "L")
    is dropped. An explicit null family name is the null name.
    """
    if components and components[0] == NULL:
        return NULL
    suffix = " ".join(p for p in (_component(components, 4), _component(components, 6)) if p)
    return _pn(
        _component(components, 1),
        _component(components, 2),
        _component(components, 3),
        _component(components, 5),
        suffix,
    )


def xcn_to_pn(components: Sequence[str]) -> str:
    """XCN → PN: ``XCN.2 ^ XCN.3 ^ XCN.4 ^ XCN.6 ^ (XCN.5 XCN.7)`` (standards.md §1.3 XCN → PN).

    XCN.1 is the person's ID and is not part of the name.
    """
    if len(components) >= 2 and components[1] == NULL:
        return NULL
    return xpn_to_pn(components[1:])


def cnn_to_pn(subcomponents: Sequence[str]) -> str:
    """OBR-34 CNN sub-components ``ID&Family&Given&Middle&Suffix&Prefix&Degree`` → PN
    (standards.md §1.3 XCN → PN, "OBR-34 uses its sub-components in the same order")."""
    return xcn_to_pn(subcomponents)


@dataclass(frozen=True, slots=True)
class DateTime:
    """An HL7 TS split into DICOM DA, TM and Timezone Offset From UTC (``+HHMM``/``-HHMM``)."""

    date: str
    time: str
    offset: str = ""


def ts_to_datetime(value: str) -> DateTime | None:
    """TS ``YYYYMMDD[HH[MM[SS[.S…]]]][±ZZZZ]`` → DA, TM, offset; None if it is no such TS.

    The time stays local as sent; the offset goes to (0008,0201) Timezone Offset From UTC
    (standards.md §1.3 TS → DA/TM, issue rule "keeping the timezone offset"). A date without
    a time is scheduled at ``000000`` because SPS Start Time is a Type 1 return key.
    """
    match = _TS.match(value.strip())
    if not match:
        return None
    time = match["time"] or "000000"
    return DateTime(match["date"], time, match["tz"] or "")


def birth_date(value: str) -> str:
    """PID-7 TS → DA: the first 8 characters when they are a date, else "" (Type 2 empty)."""
    if value == NULL:
        return NULL
    head = value.strip()[:8]
    return head if len(head) == 8 and head.isdigit() else ""


_SEX = {"F": "F", "M": "M", "O": "O", "A": "O", "N": "O"}


def sex(value: str) -> str:
    """PID-8 → (0010,0040): F/M/O copied; A, N → O; anything else → "" (standards.md §1.2)."""
    return _SEX.get(value.strip().upper(), "")


_PRIORITY = {"S": "STAT", "A": "HIGH", "P": "HIGH", "C": "HIGH", "R": "ROUTINE", "T": "MEDIUM"}


def priority(value: str) -> str:
    """TQ priority (ORC-7.6 / TQ1-9) → Requested Procedure Priority (standards.md §1.2):
    S→STAT; A, P, C→HIGH; R→ROUTINE; T→MEDIUM; other → "" (Type 2 empty)."""
    return _PRIORITY.get(value.strip().upper(), "")


def pregnancy_status(ambulatory_status: str) -> int | None:
    """PV1-15 Ambulatory Status "B6" (pregnant) → Pregnancy Status 3 (standards.md §1.2)."""
    return 3 if ambulatory_status.strip().upper() == "B6" else None


def decimal_string(value: str) -> str:
    """A DS value (≤ 16 characters) from an OBX numeric value, or "" when it is not a number."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return ""
    if len(text) <= 16 and text.lstrip("+-").replace(".", "", 1).isdigit():
        return text
    return f"{number:.10g}"[:16]
