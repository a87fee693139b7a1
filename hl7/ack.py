"""Original-mode acknowledgements: build ours, read the RIS's (standards.md §2.4).

:func:`build_ack` is the one translator from :class:`hl7.errors.HL7Error` data (``ack_code``,
``details``) to an ACK. It writes ER7 text directly: an ACK through hl7apy objects costs about a
parse (pitfalls.md). The shape follows the inbound version:

- MSH-9 ``ACK^<trigger>`` before v2.4, ``ACK^<trigger>^ACK`` from v2.4 (pitfalls.md).
- ERR before v2.5: ``ERR|SEG^seq^field^code&text&HL70357`` (ERR-1 ELD, the error text in the
  CE text sub-component); from v2.5: ``ERR||SEG^seq^field^rep^comp^sub|code^text^HL70357|E||||msg``
  (ERR-2 location, ERR-3 HL7 Table 0357 code, ERR-4 severity, ERR-8 user message).

An unknown or unparsable inbound version gets the v2.5 shapes. Segments are joined by CR
without a trailing CR and without MLLP framing (the framer adds it).
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from hl7.codec import Header, Segment, decode
from hl7.errors import AckCode, ErrorCode, ErrorDetail, ErrorLocation, MessageError
from hl7.escape import Delimiters, escape

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "2.5.1"
TABLE_0357 = "HL70357"
_V24 = (2, 4)
_V25 = (2, 5)


@dataclass(frozen=True, slots=True)
class AckReply:
    """What an ACK from the peer said: MSA-1, MSA-2, MSA-3 and one line per ERR."""

    code: str
    control_id: str
    text: str
    errors: tuple[str, ...]
    header: Header


def build_ack(
    header: Header | None,
    code: AckCode,
    *,
    control_id: str,
    timestamp: datetime,
    details: Sequence[ErrorDetail] = (),
    text: str = "",
    application: str = "MWLBROKER",
    facility: str = "",
    codec: str = "ascii",
) -> bytes:
    """ACK for ``header`` (None: a message whose MSH could not be read), standards.md §2.4.

    MSH-3/4 = inbound MSH-5/6 (else ``application``/``facility``), MSH-5/6 = inbound MSH-3/4,
    MSA-2 = inbound MSH-10, MSH-11/12/18 echo the inbound values. Encoded with ``codec``
    (the inbound message's); characters it cannot encode become "?".
    """
    inbound = header or Header()
    d = inbound.delimiters
    version = _version(inbound)
    segments = [
        _msh(
            inbound,
            control_id=control_id,
            timestamp=timestamp,
            application=application,
            facility=facility,
        ),
        _join(d.field, ["MSA", str(code), inbound.control_id, _esc(text, d)]),
    ]
    segments += [_err(detail, d, version) for detail in details]
    logger.debug("ACK %s for control id %r", code, inbound.control_id)
    return "\r".join(segments).encode(_codec(codec), errors="replace")


def _msh(
    inbound: Header, *, control_id: str, timestamp: datetime, application: str, facility: str
) -> str:
    d = inbound.delimiters
    message_type = ["ACK", inbound.trigger_event] + (["ACK"] if _version(inbound) >= _V24 else [])
    fields = [
        "MSH",
        d.encoding_characters,
        inbound.receiving_application or _esc(application, d),
        inbound.receiving_facility or _esc(facility, d),
        inbound.sending_application,
        inbound.sending_facility,
        timestamp.strftime("%Y%m%d%H%M%S"),
        "",
        _join(d.component, message_type),
        _esc(control_id, d),
        inbound.processing_id or "P",
        inbound.version or DEFAULT_VERSION,
        *([""] * 5),
        inbound.charset,
    ]
    return _join(d.field, fields)


def _err(detail: ErrorDetail, d: Delimiters, version: tuple[int, ...]) -> str:
    """One ERR segment in the shape of the inbound version."""
    location = detail.location
    if version < _V25:
        coded = [str(int(detail.code)), detail.message or detail.code.text, TABLE_0357]
        where = ["", "", ""]
        if location:
            where = [location.segment, str(location.sequence), _number(location.field)]
        eld = [_esc(part, d) for part in where]
        eld.append(_join(d.subcomponent, [_esc(c, d) for c in coded]))
        return _join(d.field, ["ERR", _join(d.component, eld)])
    coded = [str(int(detail.code)), detail.code.text, TABLE_0357]
    fields = [
        "ERR",
        "",
        _location(location, d),
        _join(d.component, [_esc(c, d) for c in coded]),
        _esc(detail.severity, d),
        "",
        "",
        "",
        _esc(detail.message, d),
    ]
    return _join(d.field, fields)


def _location(location: ErrorLocation | None, d: Delimiters) -> str:
    """ERR-2 ``SEG^seq^field^rep^comp^sub``; zero means not given."""
    if location is None:
        return ""
    numbers = (location.field, location.repetition, location.component, location.subcomponent)
    parts = [_esc(location.segment, d), str(location.sequence), *map(_number, numbers)]
    return _join(d.component, parts)


def _number(value: int) -> str:
    return str(value) if value else ""


def _join(separator: str, parts: Sequence[str]) -> str:
    """Join and drop trailing empty parts (HL7 allows omitting them)."""
    end = len(parts)
    while end > 1 and not parts[end - 1]:
        end -= 1
    return separator.join(parts[:end])


def _esc(text: str, d: Delimiters) -> str:
    return escape(text, d.encoding_characters, field_separator=d.field)


def _codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        logger.warning("unknown ACK codec %r, using ascii", name)
        return "ascii"


def _version(inbound: Header) -> tuple[int, ...]:
    """The version that decides the ACK shape; the default one when unknown."""
    return inbound.version_tuple or Header(version=DEFAULT_VERSION).version_tuple


def read_ack(payload: bytes) -> AckReply:
    """Read an acknowledgement (ACK, ORR, ORG…); MessageError when there is no MSA."""
    message = decode(payload)
    msa = message.first("MSA")
    if msa is None:
        where = ErrorLocation("MSA")
        raise MessageError.single(ErrorCode.SEGMENT_SEQUENCE, "no MSA segment: not an ACK", where)
    errors = tuple(_describe_err(err) for err in message.all("ERR"))
    return AckReply(msa.value(1).strip(), msa.value(2), msa.value(3), errors, message.header)


def _describe_err(err: Segment) -> str:
    """One line per ERR: ``SEG-field: code text (message)`` from either ERR shape."""
    if err.raw(2) or err.raw(3) or not err.raw(1):
        location, code, text, note = err.field(2), err.value(3), err.value(3, 2), err.value(8)
    else:
        location = err.field(1)
        code, text, note = location.get(1, 4, 1), location.get(1, 4, 2), ""
    segment, field = location.get(1, 1), location.get(1, 3)
    where = f"{segment}-{field}" if segment and field else segment
    words = [f"{where}:" if where else "", code, text, f"({note})" if note and note != text else ""]
    return " ".join(word for word in words if word)
