"""The DICOM listener: Modality Worklist C-FIND and Verification over pynetdicom.

A thin protocol adapter (dcm4che's split): :func:`build_ae` turns ``[dicom]`` into a
pynetdicom AE; :class:`DicomServer` runs it on a listening socket with three plain
handlers bound to events, their dependencies passed as the binding's extra arguments:

- ``EVT_CONN_OPEN`` → :func:`set_no_delay`: ``TCP_NODELAY`` on every accepted socket.
  pynetdicom has no option for it, and Nagle's algorithm plus the peer's delayed ACK add
  ~40 ms to each small DIMSE exchange (pitfalls.md: C-FIND 1 match 92 ms → 6.7 ms);
- ``EVT_C_ECHO`` → :func:`handle_echo`: Success;
- ``EVT_C_FIND`` → :func:`handle_find`: :func:`mwl.scp.find_worklist` with the finder and
  the worklist policy, its statuses passed on as pynetdicom expects them.

Association negotiation is pynetdicom's, configured here: A-ASSOCIATE-RJ permanent /
service-user / "called AE title not recognized" (``require_called_ae``), "calling AE title
not recognized" (``allowed_callers``), transient / service-provider (presentation) /
"local limit exceeded" beyond ``max_associations`` (PS3.8 9.3.4).

pynetdicom logs request and response identifiers (patient data) and one INFO line per
response by default: :func:`build_ae` switches the identifiers off and keeps its logger
at WARNING.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from datetime import datetime

from pydicom import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from broker.config import DicomConfig
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
    """``EVT_C_FIND`` on the Modality Worklist SOP class: :func:`mwl.scp.find_worklist`."""
    calling_ae = event.assoc.requestor.ae_title.strip()
    try:
        identifier = event.identifier
    except Exception:  # pynetdicom decodes on access; a broken identifier is the SCU's
        log.info("C-FIND from %s: identifier cannot be decoded", calling_ae)
        yield status_dataset(FindStatus.IDENTIFIER_MISMATCH, "identifier cannot be decoded"), None
        return
    responses = find_worklist(
        identifier,
        calling_ae=calling_ae,
        finder=finder,
        policy=policy,
        now=datetime.now(),
        is_cancelled=lambda: bool(event.is_cancelled),
    )
    for status, dataset in responses:
        yield _to_pynetdicom(status, dataset)


def _to_pynetdicom(status: int, dataset: Dataset | None) -> PynetdicomResponse:
    """Pending: ``(status, identifier)``; otherwise the status dataset stands for the
    status, so its Error Comment and Offending Element reach the response."""
    if status in PENDING_STATUSES:
        return status, dataset
    return (dataset if dataset is not None else status), None


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
    """

    def __init__(self, config: DicomConfig, finder: WorklistFinder, policy: WorklistPolicy) -> None:
        self.config = config
        self.ae = build_ae(config)
        self._handlers: list[EventHandlerType] = [
            (evt.EVT_CONN_OPEN, set_no_delay),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_FIND, handle_find, [finder, policy]),
        ]
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
