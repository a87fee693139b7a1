"""A minimal blocking-socket DICOM SCU for N-CREATE / N-SET (MPPS), the benchmarks' modality.

pynetdicom's SCU runs its association and DUL reactors in threads that poll every millisecond:
~10 ms of CPU per N-CREATE + N-SET pair on a 2-core machine, which then competes with the
server under test. Modalities (DCMTK, dcm4che) block on their socket instead, and so does
:class:`DimseAssociation`: one thread, one ``sendall`` per request, reads that block until the
response is complete. Nothing else runs while it waits.

What it implements, and only that:

- association establishment (PS3.8 9.3.2–9.3.4, 7.1): an A-ASSOCIATE-RQ with the DICOM
  application context, one presentation context (ID 1: one abstract syntax, one transfer
  syntax) and User Information with Maximum Length (PS3.8 D.1), Implementation Class UID and
  Implementation Version Name (PS3.7 D.3.3.2); the A-ASSOCIATE-AC must accept that context with
  that transfer syntax. A-ASSOCIATE-RJ, A-ABORT, a rejected context or anything else raise;
- N-CREATE-RQ and N-SET-RQ (PS3.7 10.3.4, 10.3.5): the command set in Implicit VR Little
  Endian with its Command Group Length (PS3.7 6.3.1, 9.3.1), the data set in the negotiated
  transfer syntax (Implicit or Explicit VR Little Endian), both as P-DATA-TF PDUs of one PDV
  each, no longer than the peer's Maximum Length (PS3.8 9.3.5, Annex E), sent with one
  ``sendall``; the response is reassembled from any number of PDVs per PDU and checked
  (Command Field, Message ID Being Responded To);
- release (A-RELEASE-RQ / -RP, then the requestor closes the connection, PS3.8 9.2.9 AR-3)
  and abort (A-ABORT, source service-user).

Not implemented: asynchronous operations, several presentation contexts, role selection,
extended negotiation, big endian and deflated transfer syntaxes, the peer releasing or
sending requests.

Run as a script, it measures N-CREATE + N-SET pairs per second against an MPPS SCP::

    python bench/dimse_scu.py --host 127.0.0.1 --port 11112 --pairs 300
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

MPPS_SOP_CLASS: Final = UID("1.2.840.10008.3.1.2.3.3")
"""Modality Performed Procedure Step SOP Class (PS3.4 F.7.3)."""
APPLICATION_CONTEXT: Final = UID("1.2.840.10008.3.1.1.1")
"""The DICOM Application Context Name (PS3.7 A.2.1)."""
IMPLEMENTATION_CLASS_UID: Final = generate_uid(entropy_srcs=["mwl-broker", "bench/dimse_scu.py"])
"""A fixed UID under pydicom's root, derived from this file's name (PS3.7 D.3.3.2)."""
IMPLEMENTATION_VERSION_NAME: Final = "MWL_BENCH_SCU"
SUPPORTED_TRANSFER_SYNTAXES: Final = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
CONTEXT_ID: Final = 1

# PDU types (PS3.8 9.3.1)
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
# Items and sub-items of A-ASSOCIATE-RQ / -AC (PS3.8 9.3.2, 9.3.3; PS3.7 D.3.3)
APPLICATION_CONTEXT_ITEM, CONTEXT_RQ_ITEM, CONTEXT_AC_ITEM = 0x10, 0x20, 0x21
ABSTRACT_SYNTAX_ITEM, TRANSFER_SYNTAX_ITEM, USER_INFORMATION_ITEM = 0x30, 0x40, 0x50
MAXIMUM_LENGTH_ITEM, IMPLEMENTATION_CLASS_ITEM, IMPLEMENTATION_VERSION_ITEM = 0x51, 0x52, 0x55
# Message Control Header of a PDV (PS3.8 E.2)
COMMAND_BIT, LAST_FRAGMENT_BIT = 0x01, 0x02
PDV_OVERHEAD: Final = 6
"""Bytes of a PDV item besides its fragment: Item-length (4), context ID (1), control header (1).
The Maximum Length counts the P-DATA-TF's variable field, i.e. its PDV items (PS3.8 D.1)."""
AC_FIXED_FIELDS: Final = 68
"""A-ASSOCIATE-AC bytes after the PDU header and before its items (PS3.8 Table 9-17)."""
# Commands (PS3.7 E.1)
N_CREATE_RQ, N_CREATE_RSP, N_SET_RQ, N_SET_RSP = 0x0140, 0x8140, 0x0120, 0x8120
DATA_SET_PRESENT, NO_DATA_SET = 0x0000, 0x0101
"""(0000,0800) Command Data Set Type: anything but 0x0101 says a data set follows."""

CONTEXT_RESULTS: Final = {
    1: "user-rejection",
    2: "no-reason (provider rejection)",
    3: "abstract-syntax-not-supported (provider rejection)",
    4: "transfer-syntaxes-not-supported (provider rejection)",
}
"""Presentation context Result/Reason of an A-ASSOCIATE-AC (PS3.8 Table 9-18)."""
REJECT_RESULTS: Final = {1: "rejected-permanent", 2: "rejected-transient"}
REJECT_SOURCES: Final = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE related function)",
    3: "DICOM UL service-provider (presentation related function)",
}
REJECT_REASONS: Final = {
    (1, 1): "no-reason-given",
    (1, 2): "application-context-name-not-supported",
    (1, 3): "calling-AE-title-not-recognized",
    (1, 7): "called-AE-title-not-recognized",
    (2, 1): "no-reason-given",
    (2, 2): "protocol-version-not-supported",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}
"""A-ASSOCIATE-RJ Result, Source and (source, Reason/Diag.) (PS3.8 Table 9-21)."""
ABORT_SOURCES: Final = {0: "DICOM UL service-user", 2: "DICOM UL service-provider"}
ABORT_REASONS: Final = {
    0: "reason-not-specified",
    1: "unrecognized-PDU",
    2: "unexpected-PDU",
    4: "unrecognized-PDU-parameter",
    5: "unexpected-PDU-parameter",
    6: "invalid-PDU-parameter-value",
}
"""A-ABORT Source and Reason/Diag. (PS3.8 Table 9-26)."""


class DimseError(Exception):
    """The association failed; it is closed (aborted where the peer could still hear it)."""


class AssociationRejected(DimseError):
    """The peer answered the A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        self.result, self.source, self.reason = result, source, reason
        super().__init__(
            f"association rejected: {REJECT_RESULTS.get(result, f'result {result}')}, "
            f"source {REJECT_SOURCES.get(source, source)}, "
            f"reason {REJECT_REASONS.get((source, reason), reason)}"
        )


class PresentationContextRejected(DimseError):
    """The association was accepted but not the presentation context (it was released)."""

    def __init__(self, abstract_syntax: str, transfer_syntax: str, result: int) -> None:
        self.result = result
        super().__init__(
            f"presentation context {abstract_syntax} / {transfer_syntax} rejected: "
            f"{CONTEXT_RESULTS.get(result, f'result {result}')}"
        )


class AssociationAborted(DimseError):
    """The peer sent an A-ABORT or closed (or reset) the connection."""


class DimseTimeout(DimseError, TimeoutError):
    """The peer did not answer within the timeout (the association was aborted)."""


class ProtocolError(DimseError):
    """The peer sent something PS3.7 / PS3.8 does not allow here (the association was aborted)."""


@dataclass(frozen=True)
class Response:
    """A DIMSE response.

    Attributes
    ----------
    status
        (0000,0900) Status.
    command
        The decoded command set: Error Comment (0000,0902), Error ID (0000,0903), Affected SOP
        Instance UID (0000,1000)...
    dataset
        The response's data set as received, in the negotiated transfer syntax, or ``None``
        when its Command Data Set Type is 0x0101.
    """

    status: int
    command: Dataset = field(repr=False)
    dataset: bytes | None = field(default=None, repr=False)


@dataclass
class _Negotiated:
    """What the A-ASSOCIATE-AC says about our presentation context and the peer."""

    context_result: int | None = None
    transfer_syntax: str | None = None
    max_pdu: int = 0
    """The peer's Maximum Length Received; 0: no limit."""


@dataclass
class _Message:
    """A DIMSE message being reassembled from its PDVs (PS3.8 E.2)."""

    command: bytearray = field(default_factory=bytearray)
    data: bytearray = field(default_factory=bytearray)
    command_set: dict[int, bytes] | None = None
    """The command set's elements once complete: element number (group 0000) → raw value."""
    data_complete: bool = False

    @property
    def complete(self) -> bool:
        """The command set is complete, and the data set too if the command announces one."""
        if self.command_set is None:
            return False
        return self.data_complete or not _has_data_set(self.command_set)

    def add(self, control: int, fragment: bytes) -> None:
        """One PDV: a command fragment, or a data fragment once the command set is complete."""
        if self.complete:
            raise ProtocolError("a PDV after the end of the response")
        if control & COMMAND_BIT:
            if self.command_set is not None:
                raise ProtocolError("a command fragment after the last one")
            self.command += fragment
            if control & LAST_FRAGMENT_BIT:
                self.command_set = parse_command(bytes(self.command))
        else:
            if self.command_set is None:
                raise ProtocolError("a data set fragment before the end of the command set")
            self.data += fragment
            self.data_complete = bool(control & LAST_FRAGMENT_BIT)


class DimseAssociation:
    """One association to an SCP, one presentation context; a context manager.

    Open it with :meth:`open`. Leaving the ``with`` block releases the association, or aborts
    it if an exception is leaving. Any :class:`DimseError` leaves it closed.

    Parameters
    ----------
    sock
        A connected socket, its timeout set.
    abstract_syntax, transfer_syntax
        The presentation context to propose.
    max_pdu
        Our Maximum Length Received (0: no limit).
    """

    def __init__(
        self, sock: socket.socket, abstract_syntax: str, transfer_syntax: str, max_pdu: int
    ) -> None:
        self._sock = sock
        self._reader: BinaryIO = sock.makefile("rb")
        self._peer = "{}:{}".format(*sock.getpeername()[:2])
        self._timeout = sock.gettimeout()
        self.abstract_syntax = UID(abstract_syntax)
        self.transfer_syntax = UID(transfer_syntax)
        self.max_pdu = max_pdu
        self.peer_max_pdu = 0
        """The peer's Maximum Length Received, from the A-ASSOCIATE-AC (0: no limit)."""
        self._message_id = 0
        self.closed = False

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        *,
        calling_ae: str,
        called_ae: str,
        abstract_syntax: str = MPPS_SOP_CLASS,
        transfer_syntax: str = ExplicitVRLittleEndian,
        timeout: float = 60.0,
        max_pdu: int = 16384,
    ) -> DimseAssociation:
        """Connect (``TCP_NODELAY`` on) and negotiate an association.

        Parameters
        ----------
        host, port
            The SCP's address.
        calling_ae, called_ae
            AE titles, 1 to 16 characters.
        abstract_syntax
            The SOP class of the one presentation context (context ID 1).
        transfer_syntax
            Explicit or Implicit VR Little Endian.
        timeout
            Seconds for connecting and for each read from the peer.
        max_pdu
            Our Maximum Length Received: the longest P-DATA-TF the SCP may send us (0: no limit).

        Returns
        -------
        DimseAssociation
            The established association.

        Raises
        ------
        AssociationRejected
            A-ASSOCIATE-RJ.
        PresentationContextRejected
            The association is accepted, the context or its transfer syntax is not.
        DimseError
            A-ABORT, a closed connection, a timeout or an unexpected answer.
        OSError
            The connection cannot be made.
        ValueError
            An AE title, a UID or the transfer syntax is not valid here.
        """
        if UID(transfer_syntax) not in SUPPORTED_TRANSFER_SYNTAXES:
            raise ValueError(f"unsupported transfer syntax {transfer_syntax}")
        request = associate_rq(calling_ae, called_ae, abstract_syntax, transfer_syntax, max_pdu)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            association = cls(sock, abstract_syntax, transfer_syntax, max_pdu)
        except BaseException:
            sock.close()
            raise
        try:
            association._negotiate(request)
        except BaseException:
            association._close()
            raise
        return association

    def n_create(self, sop_instance_uid: str, dataset: Dataset | bytes) -> Response:
        """N-CREATE-RQ with ``dataset`` as its attribute list (PS3.7 10.3.4).

        Parameters
        ----------
        sop_instance_uid
            (0000,1000) Affected SOP Instance UID.
        dataset
            The attribute list; or its encoding in :attr:`transfer_syntax`
            (:func:`encode_dataset`), sent as it is. An empty one is not sent (Command Data Set
            Type 0x0101).

        Returns
        -------
        Response
            The N-CREATE-RSP.
        """
        return self._request(N_CREATE_RQ, 0x0002, 0x1000, sop_instance_uid, dataset)

    def n_set(self, sop_instance_uid: str, modification: Dataset | bytes) -> Response:
        """N-SET-RQ with ``modification`` as its modification list (PS3.7 10.3.5).

        Parameters
        ----------
        sop_instance_uid
            (0000,1001) Requested SOP Instance UID.
        modification
            The modification list, or its encoding in :attr:`transfer_syntax`.

        Returns
        -------
        Response
            The N-SET-RSP.
        """
        return self._request(N_SET_RQ, 0x0003, 0x1001, sop_instance_uid, modification)

    def release(self) -> None:
        """A-RELEASE-RQ, wait for the A-RELEASE-RP, close. Nothing happens when closed."""
        if self.closed:
            return
        with self._failing_closed():
            self._sock.sendall(_pdu(A_RELEASE_RQ, bytes(4)))
            pdu_type, body = self._read_pdu()
            if pdu_type != A_RELEASE_RP:
                self._unexpected(pdu_type, body, "an A-RELEASE-RP")
        self._close()

    def abort(self) -> None:
        """A-ABORT (source service-user), close. Nothing happens when closed."""
        if self.closed:
            return
        with suppress(OSError):  # the connection is gone already: that is an abort too
            self._sock.sendall(_pdu(A_ABORT, bytes(4)))
        self._close()

    def __enter__(self) -> DimseAssociation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.release()
        else:
            self.abort()

    def _negotiate(self, request: bytes) -> None:
        """Send the A-ASSOCIATE-RQ; accept the A-ASSOCIATE-AC or raise."""
        with self._failing_closed():
            self._sock.sendall(request)
            pdu_type, body = self._read_pdu()
            if pdu_type == A_ASSOCIATE_RJ:
                result, source, reason = struct.unpack_from(">xBBB", _at_least(body, 4))
                raise AssociationRejected(result, source, reason)
            if pdu_type != A_ASSOCIATE_AC:
                self._unexpected(pdu_type, body, "an A-ASSOCIATE-AC")
            negotiated = parse_associate_ac(body)
        self.peer_max_pdu = negotiated.max_pdu
        if negotiated.context_result != 0 or negotiated.transfer_syntax != self.transfer_syntax:
            self._release_quietly()
            if negotiated.context_result is None:
                raise ProtocolError("the A-ASSOCIATE-AC does not answer presentation context 1")
            if negotiated.context_result == 0:
                raise ProtocolError(
                    f"the A-ASSOCIATE-AC accepts {negotiated.transfer_syntax!r}, "
                    f"not the proposed {self.transfer_syntax}"
                )
            raise PresentationContextRejected(
                self.abstract_syntax, self.transfer_syntax, negotiated.context_result
            )

    def _release_quietly(self) -> None:
        """Release an association that is of no use; abort if that fails."""
        with suppress(DimseError):  # closed, and aborted where possible
            self.release()

    def _request(
        self,
        command_field: int,
        class_tag: int,
        instance_tag: int,
        uid: str,
        dataset: Dataset | bytes,
    ) -> Response:
        """Send one request message, return its checked response."""
        if self.closed:
            raise DimseError("the association is closed")
        data = (
            dataset if isinstance(dataset, bytes) else encode_dataset(dataset, self.transfer_syntax)
        )
        message_id = self._next_message_id()
        command = encode_command(
            [
                _uid_element(class_tag, self.abstract_syntax),
                _us_element(0x0100, command_field),
                _us_element(0x0110, message_id),
                _us_element(0x0800, DATA_SET_PRESENT if data else NO_DATA_SET),
                _uid_element(instance_tag, uid),
            ]
        )
        fragment = self.peer_max_pdu - PDV_OVERHEAD if self.peer_max_pdu else 0
        packet = p_data(command, COMMAND_BIT, fragment) + (
            p_data(data, 0x00, fragment) if data else b""
        )
        with self._failing_closed():
            self._sock.sendall(packet)
            message = self._read_message()
            return _check_response(message, command_field | 0x8000, message_id)

    def _next_message_id(self) -> int:
        """1, 2, ... 65535, 1, ... (0000,0110) is a US."""
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def _read_message(self) -> _Message:
        """P-DATA-TF PDUs until one DIMSE message on context 1 is complete."""
        message = _Message()
        while not message.complete:
            pdu_type, body = self._read_pdu()
            if pdu_type != P_DATA_TF:
                self._unexpected(pdu_type, body, "a P-DATA-TF")
            for context_id, control, fragment in iter_pdvs(body):
                if context_id != CONTEXT_ID:
                    raise ProtocolError(f"a PDV on presentation context {context_id}")
                message.add(control, fragment)
        return message

    def _read_pdu(self) -> tuple[int, bytes]:
        """One PDU: its type and its variable field."""
        pdu_type, length = struct.unpack(">BxL", self._read_exactly(6))
        if pdu_type == P_DATA_TF and self.max_pdu and length > self.max_pdu:
            raise ProtocolError(f"a P-DATA-TF of {length} bytes, beyond our {self.max_pdu}")
        return pdu_type, self._read_exactly(length)

    def _read_exactly(self, size: int) -> bytes:
        """``size`` bytes (a buffered reader loops on ``recv``); EOF raises."""
        data = self._reader.read(size)
        if len(data) < size:
            raise AssociationAborted(f"{self._peer} closed the connection")
        return data

    def _unexpected(self, pdu_type: int, body: bytes, expected: str) -> None:
        """Raise for a PDU other than ``expected``: A-ABORT, or a protocol error."""
        if pdu_type == A_ABORT:
            source, reason = struct.unpack_from(">xxBB", _at_least(body, 4))
            raise AssociationAborted(
                f"A-ABORT from {self._peer}: source {ABORT_SOURCES.get(source, source)}, "
                f"reason {ABORT_REASONS.get(reason, reason)}"
            )
        raise ProtocolError(f"expected {expected} from {self._peer}, got PDU type {pdu_type:#04x}")

    @contextmanager
    def _failing_closed(self) -> Iterator[None]:
        """Close on any failure: abort it unless the peer is gone; socket errors become
        :class:`AssociationAborted`, timeouts :class:`DimseTimeout`."""
        try:
            yield
        except TimeoutError as exc:  # before OSError, of which it is one
            self.abort()
            raise DimseTimeout(f"no answer from {self._peer} within {self._timeout} s") from exc
        except (AssociationAborted, AssociationRejected):  # nothing to abort
            self._close()
            raise
        except DimseError:
            self.abort()
            raise
        except OSError as exc:
            self._close()
            raise AssociationAborted(f"connection to {self._peer} lost: {exc}") from exc

    def _close(self) -> None:
        self.closed = True
        self._reader.close()
        self._sock.close()


def associate_rq(
    calling_ae: str, called_ae: str, abstract_syntax: str, transfer_syntax: str, max_pdu: int
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) with one presentation context, ID 1.

    Parameters
    ----------
    calling_ae, called_ae
        AE titles, 1 to 16 characters.
    abstract_syntax, transfer_syntax
        The presentation context's UIDs.
    max_pdu
        Our Maximum Length Received (0: no limit).

    Returns
    -------
    bytes
        The whole PDU.
    """
    context = bytes((CONTEXT_ID, 0, 0, 0)) + _item(
        ABSTRACT_SYNTAX_ITEM, _uid_bytes(abstract_syntax)
    )
    context += _item(TRANSFER_SYNTAX_ITEM, _uid_bytes(transfer_syntax))
    user = _item(MAXIMUM_LENGTH_ITEM, struct.pack(">L", max_pdu))
    user += _item(IMPLEMENTATION_CLASS_ITEM, _uid_bytes(IMPLEMENTATION_CLASS_UID))
    user += _item(IMPLEMENTATION_VERSION_ITEM, IMPLEMENTATION_VERSION_NAME.encode("ascii"))
    body = struct.pack(">H2x16s16s32x", 0x0001, _ae_title(called_ae), _ae_title(calling_ae))
    body += _item(APPLICATION_CONTEXT_ITEM, _uid_bytes(APPLICATION_CONTEXT))
    body += _item(CONTEXT_RQ_ITEM, context) + _item(USER_INFORMATION_ITEM, user)
    return _pdu(A_ASSOCIATE_RQ, body)


def parse_associate_ac(body: bytes) -> _Negotiated:
    """The answer to presentation context 1 and the peer's Maximum Length, from the variable
    field of an A-ASSOCIATE-AC (PS3.8 9.3.3); other items are ignored."""
    negotiated = _Negotiated()
    for item_type, value in iter_items(body, AC_FIXED_FIELDS):
        if item_type == CONTEXT_AC_ITEM and len(value) >= 4 and value[0] == CONTEXT_ID:
            negotiated.context_result = value[2]
            for sub_type, sub_value in iter_items(value, 4):
                if sub_type == TRANSFER_SYNTAX_ITEM:
                    negotiated.transfer_syntax = sub_value.rstrip(b"\0 ").decode("ascii")
        elif item_type == USER_INFORMATION_ITEM:
            for sub_type, sub_value in iter_items(value, 0):
                if sub_type == MAXIMUM_LENGTH_ITEM:
                    (negotiated.max_pdu,) = struct.unpack(">L", _at_least(sub_value, 4)[:4])
    if 0 < negotiated.max_pdu <= PDV_OVERHEAD:
        raise ProtocolError(f"the peer's maximum PDU length {negotiated.max_pdu} leaves no room")
    return negotiated


def iter_items(data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """The items (type, reserved, 2-byte length, value) in ``data`` from ``start`` on."""
    at = start
    while at < len(data):
        if at + 4 > len(data):
            raise ProtocolError("a truncated item in an association PDU")
        item_type, length = struct.unpack_from(">BxH", data, at)
        if at + 4 + length > len(data):
            raise ProtocolError(f"item {item_type:#04x} overruns its PDU")
        yield item_type, data[at + 4 : at + 4 + length]
        at += 4 + length


def iter_pdvs(body: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The PDV items of a P-DATA-TF's variable field: context ID, control header, fragment."""
    at = 0
    while at < len(body):
        if at + PDV_OVERHEAD > len(body):
            raise ProtocolError("a truncated PDV item")
        length, context_id, control = struct.unpack_from(">LBB", body, at)
        if length < 2 or at + 4 + length > len(body):
            raise ProtocolError(f"a PDV item of length {length} in a P-DATA-TF of {len(body)}")
        yield context_id, control, body[at + PDV_OVERHEAD : at + 4 + length]
        at += 4 + length


def p_data(payload: bytes, kind: int, fragment: int) -> bytes:
    """``payload`` (a command set or a data set) as P-DATA-TF PDUs of one PDV each.

    Parameters
    ----------
    payload
        The encoded command or data set, not empty.
    kind
        :data:`COMMAND_BIT` or 0x00 (data set).
    fragment
        The longest fragment: the peer's Maximum Length less :data:`PDV_OVERHEAD`; 0 for
        one fragment.

    Returns
    -------
    bytes
        The PDUs, concatenated; the last PDV has the last-fragment bit set.
    """
    size = fragment or len(payload)
    pdus = []
    for at in range(0, len(payload), size):
        chunk = payload[at : at + size]
        control = kind | (LAST_FRAGMENT_BIT if at + size >= len(payload) else 0)
        pdv_length = len(chunk) + 2  # context ID, control header, fragment
        header = struct.pack(">BxLLBB", P_DATA_TF, pdv_length + 4, pdv_length, CONTEXT_ID, control)
        pdus.append(header + chunk)
    return b"".join(pdus)


def encode_command(elements: Sequence[bytes]) -> bytes:
    """A command set: (0000,0000) Command Group Length, then ``elements`` (encoded, in tag
    order), Implicit VR Little Endian (PS3.7 6.3.1)."""
    body = b"".join(elements)
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


def parse_command(command: bytes) -> dict[int, bytes]:
    """The elements of a received command set (Implicit VR Little Endian, group 0000 only,
    Command Group Length first and right): element number → raw value.

    A few struct calls, where pydicom takes ~0.1 ms to decode and convert what
    :func:`_check_response` looks at; :class:`Response` still gets pydicom's dataset.
    """
    elements: dict[int, bytes] = {}
    at = 0
    while at < len(command):
        if at + 8 > len(command):
            raise ProtocolError(f"a command set truncated at byte {at}")
        group, element, length = struct.unpack_from("<HHL", command, at)
        if group != 0x0000 or at + 8 + length > len(command):
            raise ProtocolError(f"a command set with ({group:04X},{element:04X}) of {length} bytes")
        elements.setdefault(element, command[at + 8 : at + 8 + length])
        at += 8 + length
    group_length = _unsigned(elements, 0x0000)
    if not command.startswith(b"\0\0\0\0") or group_length != len(command) - 12:
        raise ProtocolError(f"Command Group Length {group_length} for {len(command) - 12} bytes")
    if _unsigned(elements, 0x0800) is None:
        raise ProtocolError("a command set without Command Data Set Type")
    return elements


def _unsigned(elements: dict[int, bytes], element: int) -> int | None:
    """A US or UL value of a command set; None if absent or of another length."""
    value = elements.get(element)
    if value is None or len(value) not in (2, 4):
        return None
    return int.from_bytes(value, "little")


def encode_dataset(dataset: Dataset, transfer_syntax: str) -> bytes:
    """``dataset`` encoded in ``transfer_syntax`` (Implicit or Explicit VR Little Endian)."""
    if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(f"unsupported transfer syntax {transfer_syntax}")
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    write_dataset(fp, dataset)
    return fp.getvalue()


def _check_response(message: _Message, command_field: int, message_id: int) -> Response:
    """The response of ``message``, checked against the request it answers (PS3.7 10.3)."""
    elements = message.command_set
    assert elements is not None, "a complete message has its command set"
    received = _unsigned(elements, 0x0100)
    if received != command_field:
        raise ProtocolError(
            f"Command Field {received!r} in answer to a request expecting {command_field:#06x}"
        )
    responded_to = _unsigned(elements, 0x0120)
    if responded_to != message_id:
        raise ProtocolError(
            f"Message ID Being Responded To {responded_to!r}, expected {message_id}"
        )
    status = _unsigned(elements, 0x0900)
    if status is None:
        raise ProtocolError("a response without a Status")
    command = read_dataset(BytesIO(message.command), is_implicit_VR=True, is_little_endian=True)
    dataset = bytes(message.data) if _has_data_set(elements) else None
    return Response(status=status, command=command, dataset=dataset)


def _has_data_set(elements: dict[int, bytes]) -> bool:
    """(0000,0800) Command Data Set Type is not 0x0101 (PS3.7 E.1: a data set follows)."""
    return _unsigned(elements, 0x0800) != NO_DATA_SET


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BxL", pdu_type, len(body)) + body


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _at_least(data: bytes, size: int) -> bytes:
    if len(data) < size:
        raise ProtocolError(f"a PDU field of {len(data)} bytes, at least {size} expected")
    return data


def _ae_title(title: str) -> bytes:
    """An AE title, 16 bytes padded with spaces (PS3.8 9.3.2)."""
    raw = title.strip().encode("ascii")
    if not 1 <= len(raw) <= 16 or b"\\" in raw or any(byte < 0x20 for byte in raw):
        raise ValueError(f"invalid AE title {title!r}")
    return raw.ljust(16, b" ")


def _uid_bytes(uid: str) -> bytes:
    """A UID as the association items carry it: not padded (PS3.8 Annex F)."""
    if not UID(uid).is_valid:
        raise ValueError(f"invalid UID {uid!r}")
    return uid.encode("ascii")


def _uid_element(element: int, uid: str) -> bytes:
    """A group 0000 UI element, padded to even length with NUL (PS3.5 6.2)."""
    raw = _uid_bytes(uid)
    raw += b"\0" * (len(raw) % 2)
    return struct.pack("<HHL", 0x0000, element, len(raw)) + raw


def _us_element(element: int, value: int) -> bytes:
    """A group 0000 US element."""
    return struct.pack("<HHLH", 0x0000, element, 2, value)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure N-CREATE + N-SET pairs per second on one association against an MPPS SCP."""
    args = _arguments(argv)
    _repository_on_path()
    from tests.mpps.datasets import completion, n_create, step_item  # noqa: PLC0415 (path)

    syntax = ImplicitVRLittleEndian if args.implicit else ExplicitVRLittleEndian
    failures = 0
    started, cpu = time.perf_counter(), time.process_time()
    with DimseAssociation.open(
        args.host,
        args.port,
        calling_ae=args.calling_ae,
        called_ae=args.called_ae,
        transfer_syntax=syntax,
        max_pdu=args.max_pdu,
    ) as association:
        for _ in range(args.pairs):
            uid = generate_uid()
            step = step_item(StudyInstanceUID=generate_uid())
            created = association.n_create(uid, n_create(ScheduledStepAttributesSequence=[step]))
            completed = association.n_set(uid, completion())
            failures += created.status != 0 or completed.status != 0
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{args.pairs / elapsed:.1f} pairs/s, SCU CPU {1000 * cpu / args.pairs:.2f} ms/pair, "
        f"{failures} pairs with a non-Success status ({syntax.name})"
    )
    return 1 if failures else 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--calling-ae", default="CT")
    parser.add_argument("--called-ae", default="MWLBROKER")
    parser.add_argument("--max-pdu", type=int, default=16384)
    parser.add_argument("--implicit", action="store_true", help="Implicit VR Little Endian")
    return parser.parse_args(argv)


def _repository_on_path() -> None:
    """The repository root first on ``sys.path``, and not ``bench/``, whose ``mpps.py`` would
    shadow the ``mpps`` package that ``tests.mpps.datasets`` imports."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))


if __name__ == "__main__":
    sys.exit(main())
