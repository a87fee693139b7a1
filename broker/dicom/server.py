"""The DICOM listener: accepts connections, one :class:`Association` thread each.

``[dicom]`` sets the AE title and the acceptance rules (:mod:`broker.dicom.negotiation`),
``max_associations`` (beyond it: A-ASSOCIATE-RJ transient, local limit exceeded), the timeouts
and our Maximum Length Received. Every accepted socket has ``TCP_NODELAY``: Nagle's algorithm
and the peer's delayed ACK would add ~40 ms to each small DIMSE exchange (pitfalls.md).

:meth:`DicomServer.stop` stops accepting, lets open associations finish for a grace period,
then aborts the rest (A-ABORT, source service user) and waits for their threads.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import suppress
from typing import Final

from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from broker.config import DicomConfig
from broker.dicom.association import Association, Handler, Timeouts
from broker.dicom.dimse import C_ECHO_RQ, C_FIND_RQ
from broker.dicom.negotiation import AcceptancePolicy
from broker.dicom.services import FindObserver, WorklistFind, handle_echo, mpps_handlers
from broker.mpps_service import MODALITY_PERFORMED_PROCEDURE_STEP
from mpps.scp import MppsService
from mwl.matching import WorklistFinder
from mwl.policy import WorklistPolicy

log = logging.getLogger("broker.dicom")

TRANSFER_SYNTAXES: Final = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)
"""Accepted for every SOP class; Implicit VR Little Endian is the default (PS3.5 10.1)."""
MODALITY_WORKLIST_FIND: Final = UID("1.2.840.10008.5.1.4.31")
"""Modality Worklist Information Model – FIND (PS3.4 K.6.1.4)."""
VERIFICATION: Final = UID("1.2.840.10008.1.1")
STOP_GRACE_SECONDS: Final = 10.0
ABORT_WAIT_SECONDS: Final = 5.0
"""How long :meth:`DicomServer.stop` waits for an aborted association's thread to end."""
BACKLOG: Final = 64


def set_no_delay(sock: socket.socket) -> None:
    """Switch Nagle's algorithm off on a connected socket."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
        Serves the MPPS SOP Class (N-CREATE / N-SET) when given.
    """

    def __init__(
        self,
        config: DicomConfig,
        finder: WorklistFinder,
        policy: WorklistPolicy,
        mpps: MppsService | None = None,
    ) -> None:
        self.config = config
        self._observers: list[FindObserver] = []
        self._handlers: dict[str, dict[int, Handler]] = {
            VERIFICATION: {C_ECHO_RQ: handle_echo},
            MODALITY_WORKLIST_FIND: {C_FIND_RQ: WorklistFind(finder, policy, self._observers)},
        }
        if mpps is not None:
            self._handlers[MODALITY_PERFORMED_PROCEDURE_STEP] = mpps_handlers(mpps)
        self._policy = AcceptancePolicy(
            ae_title=config.ae_title,
            require_called_ae=config.require_called_ae,
            allowed_callers=tuple(config.allowed_callers),
            maximum_pdu_size=config.maximum_pdu_size,
            contexts=tuple((sop_class, TRANSFER_SYNTAXES) for sop_class in self._handlers),
        )
        self._timeouts = Timeouts(
            acse=config.acse_timeout, network=config.network_timeout, dimse=config.dimse_timeout
        )
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open: set[Association] = set()

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when configured as 0)."""
        if self._listener is None:
            raise RuntimeError("the DICOM listener is not started")
        return int(self._listener.getsockname()[1])

    @property
    def associations(self) -> int:
        """Associations open now (negotiating or established)."""
        with self._lock:
            return len(self._open)

    def observe_finds(self, observer: FindObserver) -> None:
        """Let ``observer`` see every C-FIND from now on."""
        self._observers.append(observer)

    # --- Host ---------------------------------------------------------------------------------

    def at_limit(self, association: Association) -> bool:
        with self._lock:
            return len(self._open - {association}) >= self.config.max_associations

    def handler(self, sop_class: str, command_field: int) -> Handler | None:
        return self._handlers.get(sop_class, {}).get(command_field)

    # --- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and listen; connections are accepted on a thread of their own."""
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        listener = socket.create_server(
            (self.config.host, self.config.port), family=family, backlog=BACKLOG
        )
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener,), name="dicom-listener", daemon=True
        )
        self._acceptor.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                set_no_delay(sock)
                association = Association(sock, self, self._policy, self._timeouts)
                with self._lock:
                    self._open.add(association)
                association.thread.start()
            except Exception:  # the listener survives whatever one connection does
                log.exception("DICOM connection not served")
                sock.close()

    def ended(self, association: Association) -> None:
        with self._lock:
            self._open.discard(association)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop accepting, let open associations finish for ``grace`` seconds, abort the rest."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        if self._acceptor is not None:
            self._acceptor.join(ABORT_WAIT_SECONDS)
        deadline = time.monotonic() + grace
        for association in self._snapshot():
            association.thread.join(max(0.0, deadline - time.monotonic()))
        remaining = [a for a in self._snapshot() if a.thread.is_alive()]
        for association in remaining:
            association.abort()
        for association in remaining:
            association.thread.join(ABORT_WAIT_SECONDS)
        if remaining:
            log.warning("DICOM listener stopped; %d associations aborted", len(remaining))

    def _snapshot(self) -> list[Association]:
        with self._lock:
            return list(self._open)

    def __enter__(self) -> DicomServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
