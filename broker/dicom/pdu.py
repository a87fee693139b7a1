"""The DICOM Upper Layer's PDUs, sans I/O (PS3.8 9.3): framing, P-DATA, the fixed PDUs.

Bytes in, PDUs out, and the other way round; no socket here (the way ``hl7.mllp`` frames
MLLP). :class:`PduReader` cuts a byte stream into PDUs; :func:`iter_pdvs` reads the PDV items
of a P-DATA-TF; :func:`message_pdus` cuts a command set or data set into P-DATA-TF PDUs within
the peer's maximum length; the A-ASSOCIATE-RJ, A-RELEASE and A-ABORT PDUs are a few fixed
bytes each. The A-ASSOCIATE-RQ / -AC items are read and written by pynetdicom's PDU classes
(:mod:`broker.dicom.negotiation`).

=====  ==================  ============================================================
type   PDU                 PS3.8
=====  ==================  ============================================================
0x01   A-ASSOCIATE-RQ      9.3.2
0x02   A-ASSOCIATE-AC      9.3.3
0x03   A-ASSOCIATE-RJ      9.3.4: result, source, reason/diagnostic
0x04   P-DATA-TF           9.3.5: PDV items (length, context ID, control header, fragment)
0x05   A-RELEASE-RQ        9.3.6
0x06   A-RELEASE-RP        9.3.7
0x07   A-ABORT             9.3.8: source, reason/diagnostic
=====  ==================  ============================================================
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

A_ASSOCIATE_RQ: Final = 0x01
A_ASSOCIATE_AC: Final = 0x02
A_ASSOCIATE_RJ: Final = 0x03
P_DATA_TF: Final = 0x04
A_RELEASE_RQ: Final = 0x05
A_RELEASE_RP: Final = 0x06
A_ABORT: Final = 0x07
PDU_TYPES: Final = frozenset(range(0x01, 0x08))

COMMAND_BIT: Final = 0x01
"""PDV message control header bit 0: a command fragment, else a data set fragment (PS3.8 E.2)."""
LAST_FRAGMENT_BIT: Final = 0x02
"""PDV message control header bit 1: the last fragment of the command or data set."""
PDV_OVERHEAD: Final = 6
"""A PDV item is its fragment and 6 bytes: item length (4), context ID, control header."""

HEADER: Final = struct.Struct(">BxL")
ASSOCIATION_PDU_LIMIT: Final = 1 << 20
"""The largest A-ASSOCIATE-RQ (or any PDU but P-DATA-TF) read: far above any real one."""
UNLIMITED_P_DATA: Final = 1 << 26
"""The largest P-DATA-TF read when ``[dicom] maximum_pdu_size`` is 0 (no limit announced)."""

# A-ABORT source (PS3.8 Table 9-26)
SERVICE_USER: Final = 0x00
SERVICE_PROVIDER: Final = 0x02
# A-ABORT provider reasons
REASON_NOT_SPECIFIED: Final = 0x00
UNRECOGNIZED_PDU: Final = 0x01
UNEXPECTED_PDU: Final = 0x02
INVALID_PDU_PARAMETER: Final = 0x06


class PduError(Exception):
    """The peer sent bytes that are not a PDU it may send; the association is aborted with
    :attr:`reason` (an A-ABORT provider reason)."""

    def __init__(self, message: str, reason: int = INVALID_PDU_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


class PduReader:
    """Cuts a byte stream into ``(type, whole PDU)``; sans I/O.

    Parameters
    ----------
    max_p_data
        The longest P-DATA-TF variable field accepted: the Maximum Length Received we announced
        (PS3.8 D.1); 0 for no limit (:data:`UNLIMITED_P_DATA`).
    """

    def __init__(self, max_p_data: int) -> None:
        self._buffer = bytearray()
        self._max_p_data = max_p_data or UNLIMITED_P_DATA

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_pdu(self) -> tuple[int, bytes] | None:
        """The next whole PDU (header included), or None until more bytes arrive.

        Raises
        ------
        PduError
            An unknown PDU type (unrecognized PDU), or a length beyond the limits.
        """
        if len(self._buffer) < HEADER.size:
            return None
        pdu_type, length = HEADER.unpack_from(self._buffer)
        if pdu_type not in PDU_TYPES:
            raise PduError(f"unknown PDU type {pdu_type:#04x}", UNRECOGNIZED_PDU)
        limit = self._max_p_data if pdu_type == P_DATA_TF else ASSOCIATION_PDU_LIMIT
        if length > limit:
            raise PduError(f"a PDU of type {pdu_type:#04x} of {length} bytes (at most {limit})")
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        pdu = bytes(self._buffer[:end])
        del self._buffer[:end]
        return pdu_type, pdu


def iter_pdvs(pdu: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The PDV items of a whole P-DATA-TF PDU: ``(context ID, control header, fragment)``."""
    at, end = HEADER.size, len(pdu)
    if at == end:
        raise PduError("a P-DATA-TF without PDV items")
    while at < end:
        if at + PDV_OVERHEAD > end:
            raise PduError("a truncated PDV item")
        length, context_id, control = struct.unpack_from(">LBB", pdu, at)
        if length < 2 or at + 4 + length > end:
            raise PduError(f"a PDV item of length {length} overruns its P-DATA-TF")
        yield context_id, control, pdu[at + PDV_OVERHEAD : at + 4 + length]
        at += 4 + length


def message_pdus(context_id: int, parts: list[tuple[int, bytes]], max_pdu: int) -> list[bytes]:
    """A DIMSE message as P-DATA-TF PDUs: ``parts`` are ``(kind, bytes)``, the command set
    (:data:`COMMAND_BIT`) then the data set (0), if any.

    PDVs share a PDU while they fit in ``max_pdu``, the peer's Maximum Length Received (0: no
    limit); a part longer than a PDU is cut into fragments, the last flagged
    :data:`LAST_FRAGMENT_BIT` (PS3.8 9.3.5, E.2).
    """
    room = max_pdu or UNLIMITED_P_DATA
    fragment = max(1, room - PDV_OVERHEAD)  # a peer's absurd maximum (≤ 6) still gets data
    pdus: list[bytes] = []
    items: list[bytes] = []
    used = 0
    for kind, data in parts:
        chunks = [data[at : at + fragment] for at in range(0, len(data), fragment)] or [b""]
        for n, chunk in enumerate(chunks):
            size = len(chunk) + PDV_OVERHEAD
            if items and used + size > room:
                pdus.append(_p_data(items, used))
                items, used = [], 0
            control = kind | (LAST_FRAGMENT_BIT if n == len(chunks) - 1 else 0)
            items.append(struct.pack(">LBB", len(chunk) + 2, context_id, control) + chunk)
            used += size
    pdus.append(_p_data(items, used))
    return pdus


def _p_data(items: list[bytes], length: int) -> bytes:
    return HEADER.pack(P_DATA_TF, length) + b"".join(items)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4, Table 9-21)."""
    return HEADER.pack(A_ASSOCIATE_RJ, 4) + bytes((0, result, source, reason))


def release_rp() -> bytes:
    """A-RELEASE-RP (PS3.8 9.3.7)."""
    return HEADER.pack(A_RELEASE_RP, 4) + bytes(4)


def abort(source: int = SERVICE_PROVIDER, reason: int = REASON_NOT_SPECIFIED) -> bytes:
    """A-ABORT (PS3.8 9.3.8): by the service user (reason 0) or the provider, with a reason."""
    return HEADER.pack(A_ABORT, 4) + bytes((0, 0, source, reason))
