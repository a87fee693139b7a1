"""The DICOM listener: Modality Worklist C-FIND and Verification over pynetdicom.

A thin protocol adapter (dcm4che's split): :func:`build_ae` turns ``[dicom]`` into a
pynetdicom AE; :class:`DicomServer` runs it on a listening socket with three plain
handlers bound to events, their dependencies passed as the binding's extra arguments:

- ``EVT_CONN_OPEN`` → :func:`set_no_delay`: ``TCP_NODELAY`` on every accepted socket.
  pynetdicom has no option for it, and Nagle's algorithm plus the peer's delayed ACK add
  ~40 ms to each small DIMSE exchange (pitfalls.md: C-FIND 1 match 92 ms → 6.7 ms);
- ``EVT_C_ECHO`` → :func:`handle_echo`: Success;
- ``EVT_C_FIND`` → :func:`handle_find`: :func:`mwl.scp.find_worklist` with the finder and
  the worklist policy. Its Pending responses, identifiers already encoded in the context's
  transfer syntax, go out through :class:`PendingResponses` straight to the association's
  DUL; its failure and cancel statuses, and the final Success, go through pynetdicom.

Association negotiation is pynetdicom's, configured here: A-ASSOCIATE-RJ permanent /
service-user / "called AE title not recognized" (``require_called_ae``), "calling AE title
not recognized" (``allowed_callers``), transient / service-provider (presentation) /
"local limit exceeded" beyond ``max_associations`` (PS3.8 9.3.4).

pynetdicom logs request and response identifiers (patient data) and one INFO line per
response by default: :func:`build_ae` switches the identifiers off and keeps its logger
at WARNING.

Per C-FIND, a DEBUG line of ``broker.dicom`` gives the number of Pending responses and the
time from the handler's start to the last of them queued for sending
(``bench/cfind.py`` reads it as the server-side time).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from typing import cast

from pydicom import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import ThreadedAssociationServer

from broker.config import DicomConfig
from broker.mpps_service import MODALITY_PERFORMED_PROCEDURE_STEP, mpps_handlers
from mpps.scp import MppsService
from mwl.matching import WorklistFinder
from mwl.policy import WorklistPolicy
from mwl.scp import PENDING_STATUSES, FindStatus, find_worklist, status_dataset

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
"""Accepted for every SOP class; Implicit VR Little Endian is the default (PS3.5 10.1)."""
MODALITY_WORKLIST_FIND = UID("1.2.840.10008.5.1.4.31")
"""Modality Worklist Information Model – FIND (PS3.4 K.6.1.4)."""
VERIFICATION = UID("1.2.840.10008.1.1")
SOP_CLASSES = [MODALITY_WORKLIST_FIND, VERIFICATION]
STOP_GRACE_SECONDS = 10.0
ABORT_WAIT_SECONDS = 5.0
"""How long :meth:`DicomServer.stop` waits for an aborted association's thread to end."""

PynetdicomResponse = tuple[int | Dataset, Dataset | None]


def build_ae(config: DicomConfig) -> AE:
    """A pynetdicom AE serving Modality Worklist FIND and Verification as ``config`` says."""
    _quiet_pynetdicom()
    ae = AE(ae_title=config.ae_title)
    for sop_class in SOP_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    ae.require_called_aet = config.require_called_ae
    ae.require_calling_aet = list(config.allowed_callers)
    ae.maximum_associations = config.max_associations
    ae.acse_timeout = config.acse_timeout
    ae.dimse_timeout = config.dimse_timeout
    ae.network_timeout = config.network_timeout
    ae.maximum_pdu_size = config.maximum_pdu_size
    return ae


def _quiet_pynetdicom() -> None:
    """No patient data in pynetdicom's logs, and no INFO line per response."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def set_no_delay(event: Event) -> None:
    """``EVT_CONN_OPEN``: switch Nagle's algorithm off on the accepted socket.

    pynetdicom triggers the event for every accepted connection before the association
    reads its first PDU, so every byte we send goes out without the delayed-ACK wait.
    """
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def handle_echo(event: Event) -> int:
    """``EVT_C_ECHO``: Success (PS3.7 9.3.5)."""
    return 0x0000


def handle_find(
    event: Event, finder: WorklistFinder, policy: WorklistPolicy
) -> Iterator[PynetdicomResponse]:
    """``EVT_C_FIND`` on the Modality Worklist SOP class: :func:`mwl.scp.find_worklist`,
    its Pending responses sent by :class:`PendingResponses`, the rest yielded to pynetdicom."""
    started = time.perf_counter()
    calling_ae = event.assoc.requestor.ae_title.strip()
    try:
        identifier = event.identifier
    except Exception:  # pynetdicom decodes on access; a broken identifier is the SCU's
        log.info("C-FIND from %s: identifier cannot be decoded", calling_ae)
        yield status_dataset(FindStatus.IDENTIFIER_MISMATCH, "identifier cannot be decoded"), None
        return
    context_id, _, transfer_syntax = event.context
    request = cast(C_FIND, event.request)
    pending = PendingResponses(
        event.assoc,
        context_id,
        message_id=cast(int, request.MessageID),
        sop_class=str(request.AffectedSOPClassUID),
    )
    responses = find_worklist(
        identifier,
        calling_ae=calling_ae,
        finder=finder,
        policy=policy,
        now=datetime.now(),
        is_cancelled=lambda: bool(event.is_cancelled),
        transfer_syntax=UID(transfer_syntax),
    )
    with closing(responses):  # the finder's cursor goes back however this ends
        for status, answer in responses:
            if status in PENDING_STATUSES and isinstance(answer, bytes) and answer:
                if not pending.send(status, answer):
                    return  # aborted or released meanwhile: nothing more to send
                continue
            # a failure or cancel; or an empty identifier, which pynetdicom refuses (C312)
            yield _to_pynetdicom(status, Dataset() if isinstance(answer, bytes) else answer)
    log.debug("C-FIND from %s: %d pending in %.3f ms", calling_ae, pending.sent,
              (time.perf_counter() - started) * 1000)  # fmt: skip


def _to_pynetdicom(status: int, dataset: Dataset | None) -> PynetdicomResponse:
    """Pending: ``(status, identifier)``; otherwise the status dataset stands for the
    status, so its Error Comment and Offending Element reach the response."""
    if status in PENDING_STATUSES:
        return status, dataset
    return (dataset if dataset is not None else status), None


class PendingResponses:
    """C-FIND Pending responses whose identifier is already encoded, sent as pynetdicom's DIMSE
    layer sends a message (PS3.7 9.3.2.2, PS3.8 9.3.5 and Annex E).

    pynetdicom's C-FIND service encodes every yielded identifier with pydicom and builds and
    encodes a command set Dataset per response (~0.5 ms of the SCP's ~0.85 ms per match,
    docs/benchmarks.md). Here the command set of a Pending is encoded once per request and
    status (Implicit VR Little Endian, as pynetdicom writes it); each response is its command
    PDV and its identifier PDV(s) in P-DATA primitives no longer than the peer's maximum PDU
    length, put on the association's DUL queue, so they go out in order with whatever
    pynetdicom sends before or after (the final Success). One response per PDU: pynetdicom's
    own receiver (``DIMSEMessage.decode_msg``) drops the PDVs after the one that completes a
    message. No ``EVT_DIMSE_SENT`` is triggered for these responses.
    """

    def __init__(
        self, assoc: Association, context_id: int, *, message_id: int, sop_class: str
    ) -> None:
        self._assoc = assoc
        self._context_id = context_id
        self._message_id = message_id
        self._sop_class = sop_class
        self._room = assoc.dimse.maximum_pdu_size or 0  # 0: the peer sets no limit
        self._commands: dict[int, bytes] = {}
        self.sent = 0

    def send(self, status: int, identifier: bytes) -> bool:
        """Queue one Pending response; False when the association is ending (nothing sent)."""
        if self._ending() or not self._room_in_queue():
            return False
        command = self._commands.get(status) or self._command(status)
        for p_data in self._p_data([(0x01, command), (0x00, identifier)]):
            self._assoc.dul.send_pdu(p_data)
        self.sent += 1
        return True

    def _room_in_queue(self) -> bool:
        """Below :data:`QUEUED_PDUS` queued, or else once the DUL has sent them all (False if
        the association ends meanwhile). The DUL reads from its socket only when it has nothing
        left to send, so a C-CANCEL or A-ABORT from the SCU is seen only when the queue runs
        dry; waiting for that also bounds the memory a big answer holds."""
        queue = self._assoc.dul.to_provider_queue
        if len(queue.queue) < QUEUED_PDUS:
            return True
        with queue.not_full:  # notified by every get(), i.e. every PDU the DUL takes
            while queue.queue:
                if self._ending():
                    return False
                queue.not_full.wait(QUEUE_WAIT_SECONDS)
        return True

    def _ending(self) -> bool:
        """Aborted, being released, or its DUL stopped: what pynetdicom checks before each
        response it sends itself (``ServiceClass._wrap_handler``), and the end of the DUL
        thread, after which nothing queued is sent (an A-ABORT stops it at once)."""
        assoc = self._assoc
        return (
            not assoc.is_established
            or not assoc.dul.is_alive()
            or assoc.acse.is_aborted()
            or assoc.acse.is_release_requested()
        )

    def _command(self, status: int) -> bytes:
        command = find_response_command(self._sop_class, self._message_id, status)
        self._commands[status] = command
        return command

    def _p_data(self, parts: list[tuple[int, bytes]]) -> Iterator[P_DATA]:
        """The PDVs of one message in as few P-DATA primitives as the peer's maximum allows: a
        PDV item is 6 bytes more than its fragment (length, context ID, control header)."""
        fragment = self._room - 6 if self._room else max(len(data) for _, data in parts)
        p_data, left = P_DATA(), self._room or -1
        for kind, data in parts:
            chunks = [data[at : at + fragment] for at in range(0, len(data), fragment)]
            for n, chunk in enumerate(chunks):
                if self._room and p_data.presentation_data_value_list and len(chunk) + 6 > left:
                    yield p_data
                    p_data, left = P_DATA(), self._room
                last = 0x02 if n == len(chunks) - 1 else 0x00
                pdv = bytes((kind | last,)) + chunk  # message control header, PS3.8 E.2
                p_data.presentation_data_value_list.append((self._context_id, pdv))
                left -= len(chunk) + 6
        yield p_data


QUEUED_PDUS = 32
"""Pending PDUs queued for pynetdicom's DUL before :class:`PendingResponses` waits for them."""
QUEUE_WAIT_SECONDS = 0.1
"""How often a waiting :class:`PendingResponses` checks that the association still stands."""
_FIND_RSP = 0x8020
_DATA_SET_PRESENT = 0x0001
"""(0000,0800) Command Data Set Type: anything but 0x0101 says a data set follows; pynetdicom
sends 0x0001."""


def find_response_command(sop_class: str, message_id: int, status: int) -> bytes:
    """The command set of a C-FIND-RSP with an identifier (PS3.7 Table 9.3-2), Implicit VR
    Little Endian with its (0000,0000) Command Group Length (PS3.7 6.3.1)."""
    uid = sop_class.encode("ascii")
    uid += b"\0" * (len(uid) % 2)
    body = b"".join(
        (
            struct.pack("<HHL", 0x0000, 0x0002, len(uid)) + uid,
            struct.pack("<HHLH", 0x0000, 0x0100, 2, _FIND_RSP),
            struct.pack("<HHLH", 0x0000, 0x0120, 2, message_id),
            struct.pack("<HHLH", 0x0000, 0x0800, 2, _DATA_SET_PRESENT),
            struct.pack("<HHLH", 0x0000, 0x0900, 2, status),
        )
    )
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


class DicomServer:
    """The DICOM listener: start, serve in background threads, stop with a grace period.

    Parameters
    ----------
    config
        ``[dicom]``: address, AE title, acceptance rules, limits and timeouts.
    finder
        Answers worklist queries (``Store.finder()``).
    policy
        ``[worklist]``: answer size, over-limit behaviour, per-caller defaults.
    mpps
        Serves the MPPS SOP Class (N-CREATE / N-SET, :mod:`broker.mpps_service`) when given.
    """

    def __init__(
        self,
        config: DicomConfig,
        finder: WorklistFinder,
        policy: WorklistPolicy,
        mpps: MppsService | None = None,
    ) -> None:
        self.config = config
        self.ae = build_ae(config)
        self._handlers: list[EventHandlerType] = [
            (evt.EVT_CONN_OPEN, set_no_delay),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_FIND, handle_find, [finder, policy]),
        ]
        if mpps is not None:
            self.ae.add_supported_context(MODALITY_PERFORMED_PROCEDURE_STEP, TRANSFER_SYNTAXES)
            self._handlers += mpps_handlers(mpps)
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when configured as 0)."""
        if self._server is None:
            raise RuntimeError("the DICOM listener is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and listen; associations are served in pynetdicom's threads."""
        address = (self.config.host, self.config.port)
        server = self.ae.start_server(address, block=False, evt_handlers=self._handlers)
        assert server is not None, "a non-blocking start returns the server"
        self._server = server

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop accepting, let open associations finish for ``grace`` seconds, abort the rest."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        deadline = time.monotonic() + grace
        for association in server.active_associations:
            association.join(max(0.0, deadline - time.monotonic()))
        remaining = server.active_associations
        for association in remaining:
            association.abort()
            association.join(ABORT_WAIT_SECONDS)
        if remaining:
            log.warning("DICOM listener stopped; %d associations aborted", len(remaining))

    def __enter__(self) -> DicomServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
