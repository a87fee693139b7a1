"""Study Instance UID, Requested Procedure ID and SPS ID: taken from the order, or generated.

All three are Type 1 return keys of the worklist (standards.md §0 item 3, §1.2). When an order
lacks one, the site policy either rejects it (AE, ERR 101 naming the field) or generates it
**deterministically from the order's identity** (sending facility, placer and filler numbers,
accession, position of the OBR/IPC), so a resent or updated order keeps the same keys
(pydicom ``generate_uid(entropy_srcs=…)``, STYLE.md "pydicom").
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Protocol

from pydicom.uid import generate_uid

from hl7.codec import Segment
from hl7.errors import ErrorCode, ErrorLocation, MessageError
from mwl.dicomjson import NULL, fits
from mwl.model import OrderNumber
from mwl.policy import LongIdentifierPolicy, MappingPolicy, MissingKeyPolicy

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@dataclass(frozen=True, slots=True)
class OrderIdentity:
    """What identifies an order across resends."""

    sending_facility: str
    placer: OrderNumber | None
    filler: OrderNumber | None
    accession: str

    def parts(self) -> list[str]:
        numbers = [f"{n.number}^{n.namespace}" if n else "" for n in (self.placer, self.filler)]
        return [self.sending_facility, *numbers, self.accession]

    @property
    def known(self) -> bool:
        return bool(self.placer or self.filler or self.accession)


class Source(Protocol):
    """Where a step's identifiers come from: the OBR (with its ZDS) or one IPC of it."""

    @property
    def obr(self) -> Segment: ...
    @property
    def zds(self) -> Segment | None: ...
    @property
    def ipc(self) -> Segment | None: ...
    @property
    def block_no(self) -> int: ...
    @property
    def ipc_no(self) -> int: ...


def _where(segment: Segment, number: int) -> ErrorLocation:
    return ErrorLocation(segment.name, segment.sequence, number)


def _given(source: Source, ipc_field: int, obr_field: int) -> tuple[str, Segment, int]:
    if source.ipc is not None:
        return source.ipc.value(ipc_field), source.ipc, ipc_field
    return source.obr.value(obr_field), source.obr, obr_field


def _missing(
    what: str, where: ErrorLocation, identity: OrderIdentity, policy: MissingKeyPolicy
) -> None:
    if policy is MissingKeyPolicy.REJECT:
        raise MessageError.single(
            ErrorCode.REQUIRED_FIELD_MISSING,
            f"{where} {what} is missing and the site policy is to reject such orders",
            where,
        )
    if not identity.known:
        raise MessageError.single(
            ErrorCode.REQUIRED_FIELD_MISSING,
            f"{where} {what} is missing and cannot be generated: the order has no placer "
            "number, filler number or accession number",
            ErrorLocation("ORC", 1, 2),
        )


def study_uid(source: Source, identity: OrderIdentity, policy: MappingPolicy) -> tuple[str, bool]:
    """Study Instance UID ← IPC-3.1 (v2.5.1) or ZDS-1.1 (v2.3.1); (uid, generated)."""
    segment = source.ipc or source.zds
    number = 3 if source.ipc is not None else 1
    value = segment.value(number) if segment is not None else ""
    where = (
        _where(segment, number) if segment is not None else ErrorLocation("ZDS", source.block_no, 1)
    )
    if value and value != NULL:
        if len(value) > 64 or not _UID.match(value):
            raise MessageError.single(
                ErrorCode.DATA_TYPE,
                f"{where} Study Instance UID {value!r} is not a valid DICOM UID",
                where,
            )
        return value, False
    _missing("Study Instance UID", where, identity, policy.missing_study_uid)
    return derived_uid(["study", *identity.parts(), _procedure_key(source)], policy.uid_root), True


def derived_uid(entropy: list[str], root: str = "") -> str:
    """A UID derived from ``entropy`` alone: the same order gives the same UID.

    Without a site root it is a name-based UUID as ``2.25.<integer>`` (PS3.5 B.2); with one,
    pydicom's ``generate_uid(prefix, entropy_srcs)`` (SHA-512 of the entropy under the root).
    pydicom ignores the entropy when it makes ``2.25`` UIDs itself, hence the UUID here.
    """
    text = "\x1f".join(entropy)
    if not root:
        return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, text).int}"
    return str(generate_uid(prefix=root.rstrip(".") + ".", entropy_srcs=[text]))


def _procedure_key(source: Source) -> str:
    given, _, _ = _given(source, 2, 19)
    return given if given and given != NULL else f"block{source.block_no}.{source.ipc_no}"


def requested_procedure_id(source: Source, identity: OrderIdentity, policy: MappingPolicy) -> str:
    """Requested Procedure ID ← IPC-2.1 (v2.5.1) or OBR-19 (v2.3.1) (standards.md §1.2).

    Generated: the accession number (first OBR), else the placer or filler number, with
    ``-n`` for the n-th OBR; a hash of the order's identity when that exceeds SH (16).
    """
    value, segment, number = _given(source, 2, 19)
    if value and value != NULL:
        return short_identifier(value, segment, number, "Requested Procedure ID", policy)
    _missing(
        "Requested Procedure ID",
        _where(segment, number),
        identity,
        policy.missing_requested_procedure_id,
    )
    bases = [identity.accession, *(n.number for n in (identity.placer, identity.filler) if n)]
    base = next(b for b in bases if b)
    suffix = "" if source.block_no == 1 else f"-{source.block_no}"
    return _fitted(base + suffix, ["rp", *identity.parts(), str(source.block_no)])


def sps_id(source: Source, rp_id: str, identity: OrderIdentity, policy: MappingPolicy) -> str:
    """Scheduled Procedure Step ID ← IPC-4.1 (v2.5.1) or OBR-20 (v2.3.1) (standards.md §1.2).

    Generated: the Requested Procedure ID for the first OBR/IPC, ``-n`` suffixed for others.
    """
    value, segment, number = _given(source, 4, 20)
    if value and value != NULL:
        return short_identifier(value, segment, number, "Scheduled Procedure Step ID", policy)
    _missing(
        "Scheduled Procedure Step ID", _where(segment, number), identity, policy.missing_sps_id
    )
    position = source.block_no * 1000 + source.ipc_no
    suffix = "" if position <= 1001 else f"-{source.block_no}.{source.ipc_no}"
    return _fitted(rp_id + suffix, ["sps", *identity.parts(), rp_id, str(position)])


def short_identifier(
    value: str, segment: Segment, number: int, what: str, policy: MappingPolicy
) -> str:
    """An identifier fitted to DICOM SH (16 characters) by the site's
    :class:`~mwl.policy.LongIdentifierPolicy` (standards.md §1.3 "Truncation")."""
    if fits(value, "SH"):
        return value
    match policy.long_identifiers:
        case LongIdentifierPolicy.TRUNCATE:
            return value[:16]
        case LongIdentifierPolicy.SHORTEN:
            return value[:9] + hashlib.sha256(value.encode()).hexdigest()[:7]
    raise MessageError.single(
        ErrorCode.DATA_TYPE,
        f"{segment.name}-{number} {what} {value!r} is longer than 16 characters (DICOM SH)",
        _where(segment, number),
    )


def _fitted(candidate: str, entropy: list[str]) -> str:
    if fits(candidate, "SH"):
        return candidate
    return hashlib.sha256("\x1f".join(entropy).encode()).hexdigest()[:16].upper()
