"""One accepted association, served on its own thread with a blocking socket (PS3.8 9.2).

The thread reads the A-ASSOCIATE-RQ (within ``acse_timeout``), answers it
(:func:`broker.dicom.negotiation.negotiate`), then reads PDUs until the peer releases or
aborts, or stays silent for ``network_timeout`` between messages, or ``dimse_timeout`` inside
one (then it aborts): each complete DIMSE message
is handed to its service's handler (:class:`Request`), on this thread, and the handler's
responses go out with one ``sendall`` each. Nothing polls: the thread sleeps in ``recv`` until
bytes arrive, so a request is served as soon as it is complete.

While a handler is answering (a C-FIND streaming its matches), :meth:`Association.cancelled`
reads whatever has arrived without blocking: a C-CANCEL-RQ for the request ends the answer
with Cancel, an A-ABORT or a closed connection ends it at once, and anything else (an
A-RELEASE-RQ, another request) is kept and dealt with once the handler returns.

Protocol errors (PS3.8 9.2, Table 9-10: AA-1, AA-8): an unexpected or malformed PDU, a PDV on
a presentation context that was not accepted, a command set that cannot be read → A-ABORT
(source service provider, with the reason) and the connection closed. A request on an accepted
context that this SCP does not perform → its response with 0211 Unrecognized operation; a
command whose SOP Class is not the context's → 0122 SOP Class not supported (PS3.7 C.5).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

from broker.dicom.dimse import (
    AFFECTED_SOP_CLASS,
    C_CANCEL_RQ,
    REQUESTED_SOP_CLASS,
    RESPONDED_TO,
    RESPONSE,
    SOP_CLASS_NOT_SUPPORTED,
    UNRECOGNIZED_OPERATION,
    Command,
    CommandError,
    Message,
    MessageAssembler,
    StatusFields,
    response_command,
)
from broker.dicom.negotiation import AcceptancePolicy, Accepted, AcceptedContext, negotiate
from broker.dicom.pdu import (
    A_ABORT,
    A_ASSOCIATE_RQ,
    A_RELEASE_RQ,
    COMMAND_BIT,
    P_DATA_TF,
    SERVICE_PROVIDER,
    SERVICE_USER,
    UNEXPECTED_PDU,
    PduError,
    PduReader,
    abort,
    iter_pdvs,
    message_pdus,
    release_rp,
)

log = logging.getLogger("broker.dicom")

RECV_SIZE = 1 << 16
ABORT_SEND_SECONDS = 1.0
"""How long :meth:`Association.abort` waits for a send in progress before closing anyway."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    acse: float
    """Seconds to wait for the A-ASSOCIATE-RQ."""
    network: float
    """Seconds of silence between messages (or of a blocked send) before the association is
    aborted."""
    dimse: float
    """Seconds to wait for the rest of a message once its first PDU has arrived."""


class Host(Protocol):
    """What an association asks of the server that accepted it."""

    def at_limit(self, association: Association) -> bool:
        """Whether the other open associations are at the maximum already."""

    def handler(self, sop_class: str, command_field: int) -> Handler | None:
        """The service's handler of a request, or None when the SCP does not perform it."""

    def ended(self, association: Association) -> None:
        """The association's thread is about to end (its connection is closed)."""


@dataclass(frozen=True, slots=True)
class Request:
    """A complete DIMSE request on an accepted presentation context, and how to answer it."""

    association: Association
    context: AcceptedContext
    message: Message

    @property
    def command(self) -> Command:
        return self.message.command

    @property
    def message_id(self) -> int:
        return self.message.command.message_id

    @property
    def calling_ae(self) -> str:
        return self.association.calling_ae

    def respond(
        self, fields: StatusFields | int, *, sop_instance: str = "", data: bytes | None = None
    ) -> bool:
        """Send a response; False when the association is ending (nothing sent)."""
        command = response_command(
            self.command.field,
            self.message_id,
            fields,
            sop_class=self.context.abstract_syntax,
            sop_instance=sop_instance,
            data_set=data is not None,
        )
        return self.association.send_message(self.context.context_id, command, data)

    def cancelled(self) -> bool:
        """A C-CANCEL-RQ for this request has arrived, or the association is ending."""
        return self.association.cancelled(self.message_id)


Handler = Callable[[Request], None]


class Association:
    """One connection from a requestor: negotiation, then its requests, one at a time."""

    def __init__(
        self, sock: socket.socket, host: Host, policy: AcceptancePolicy, timeouts: Timeouts
    ) -> None:
        self._sock = sock
        self._host = host
        self._policy = policy
        self._timeouts = timeouts
        self._reader = PduReader(policy.maximum_pdu_size)
        self._assembler = MessageAssembler()
        self._deferred: deque[tuple[int, bytes] | Message] = deque()
        self._cancels: set[int] = set()
        self._send_lock = threading.Lock()
        self._ending = False
        self.accepted: Accepted | None = None
        self.thread = threading.Thread(target=self.run, name="dicom-association", daemon=True)

    @property
    def calling_ae(self) -> str:
        return self.accepted.calling_ae if self.accepted is not None else ""

    # --- the thread -----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._sock.settimeout(self._timeouts.acse)
            if self._negotiate():
                self._serve()
        except PduError as error:
            log.info("association from %s aborted: %s", self._peer(), error)
            self._send_quietly(abort(SERVICE_PROVIDER, error.reason))
        except CommandError as error:
            log.info("association from %s aborted: %s", self._peer(), error)
            self._send_quietly(abort(SERVICE_PROVIDER, UNEXPECTED_PDU))
        except TimeoutError:
            log.info("association from %s aborted: nothing received in time", self._peer())
            self._send_quietly(abort(SERVICE_PROVIDER))
        except OSError as error:  # reset, broken pipe, or closed by abort()
            log.debug("association from %s: connection ended: %s", self._peer(), error)
        except Exception:  # a defect; the association ends, the listener goes on
            log.exception("association from %s aborted: internal error", self._peer())
            self._send_quietly(abort(SERVICE_PROVIDER))
        finally:
            self._ending = True
            self._close()
            self._host.ended(self)

    def _negotiate(self) -> bool:
        try:
            pdu = self._read_pdu()
        except TimeoutError:  # ARTIM expired in Sta2: close the connection (PS3.8 AA-2)
            log.info("connection from %s closed: no A-ASSOCIATE-RQ in time", self._peer())
            return False
        if pdu is None:
            return False
        pdu_type, raw = pdu
        if pdu_type != A_ASSOCIATE_RQ:
            raise PduError(f"PDU type {pdu_type:#04x} before the A-ASSOCIATE-RQ", UNEXPECTED_PDU)
        answer = negotiate(raw, self._policy, at_limit=self._host.at_limit(self))
        self._send(answer.pdu)
        if not isinstance(answer, Accepted):
            log.info("association from %s (%s → %s) rejected: result %d, source %d, reason %d",
                     self._peer(), answer.calling_ae, answer.called_ae, answer.result,
                     answer.source, answer.reason)  # fmt: skip
            return False
        self.accepted = answer
        log.debug("association from %s (%s) accepted: %d contexts", self._peer(),
                  answer.calling_ae, len(answer.contexts))  # fmt: skip
        return True

    def _serve(self) -> None:
        while not self._ending:
            if self._deferred:
                event: tuple[int, bytes] | Message | None = self._deferred.popleft()
            else:
                waiting = self._timeouts.network if self._assembler.idle else self._timeouts.dimse
                self._sock.settimeout(waiting)
                event = self._read_pdu()
            if event is None:
                return  # the peer closed the connection
            if isinstance(event, Message):
                self._dispatch(event)
                continue
            pdu_type, raw = event
            if pdu_type == P_DATA_TF:
                for message in self._messages(raw):
                    self._dispatch(message)
            elif pdu_type == A_RELEASE_RQ:
                self._send(release_rp())
                log.debug("association from %s released", self.calling_ae)
                return
            elif pdu_type == A_ABORT:
                log.info("association from %s aborted by the peer", self.calling_ae)
                return
            else:
                raise PduError(f"unexpected PDU type {pdu_type:#04x}", UNEXPECTED_PDU)

    def _messages(self, raw: bytes) -> list[Message]:
        """The messages a P-DATA-TF completes; its PDVs must be on accepted contexts."""
        assert self.accepted is not None
        complete = []
        for context_id, control, fragment in iter_pdvs(raw):
            if context_id not in self.accepted.contexts:
                raise PduError(f"a PDV on presentation context {context_id}, not accepted")
            message = self._assembler.add(context_id, control, fragment)
            if message is not None:
                complete.append(message)
        return complete

    def _dispatch(self, message: Message) -> None:
        assert self.accepted is not None
        context = self.accepted.contexts[message.context_id]
        command = message.command
        if command.field & RESPONSE or command.field == C_CANCEL_RQ:
            log.debug("%s: command %#06x with nothing outstanding ignored", self.calling_ae,
                      command.field)  # fmt: skip
            return
        request = Request(self, context, message)
        sop_class = command.uid(AFFECTED_SOP_CLASS) or command.uid(REQUESTED_SOP_CLASS)
        if sop_class and sop_class != context.abstract_syntax:
            comment = f"SOP Class {sop_class[:40]} is not the context's"
            request.respond(StatusFields(SOP_CLASS_NOT_SUPPORTED, comment))
            return
        handler = self._host.handler(context.abstract_syntax, command.field)
        if handler is None:
            comment = f"command {command.field:#06x} not performed here"
            request.respond(StatusFields(UNRECOGNIZED_OPERATION, comment))
            return
        handler(request)

    # --- while a handler answers ----------------------------------------------------------

    def cancelled(self, message_id: int) -> bool:
        """Read what has arrived without blocking; True once a C-CANCEL-RQ for
        ``message_id`` is among it, or the association is ending."""
        try:
            self._take_arrivals()  # PDUs that came in with the request's last bytes
            while not self._ending and self._readable():
                data = self._sock.recv(RECV_SIZE)
                if not data:
                    self._ending = True
                    break
                self._reader.feed(data)
                self._take_arrivals()
        except (PduError, CommandError) as error:
            log.info("association from %s aborted: %s", self.calling_ae, error)
            self._send_quietly(abort(SERVICE_PROVIDER, getattr(error, "reason", UNEXPECTED_PDU)))
            self._ending = True
        except OSError:
            self._ending = True
        return self._ending or message_id in self._cancels

    def _readable(self) -> bool:
        readable, _, _ = select.select([self._sock], [], [], 0)
        return bool(readable)

    def _take_arrivals(self) -> None:
        while (pdu := self._reader.next_pdu()) is not None:
            pdu_type, raw = pdu
            if pdu_type == A_ABORT:
                log.info("association from %s aborted by the peer", self.calling_ae)
                self._ending = True
                return
            if pdu_type != P_DATA_TF:
                self._deferred.append(pdu)
                continue
            for message in self._messages(raw):
                command = message.command
                if command.field == C_CANCEL_RQ:
                    self._cancels.add(command.unsigned(RESPONDED_TO) or 0)
                else:
                    self._deferred.append(message)

    # --- I/O --------------------------------------------------------------------------------

    def send_message(self, context_id: int, command: bytes, data: bytes | None) -> bool:
        """One DIMSE message in P-DATA-TF PDUs within the peer's maximum; False (nothing sent)
        once the association is ending."""
        if self._ending or self.accepted is None:
            return False
        parts = [(COMMAND_BIT, command)] if data is None else [(COMMAND_BIT, command), (0, data)]
        pdus = message_pdus(context_id, parts, self.accepted.peer_maximum_pdu)
        try:
            self._send(b"".join(pdus))
        except OSError as error:
            log.info("association from %s: response not sent: %s", self.calling_ae, error)
            self._ending = True
            return False
        return True

    def abort(self) -> None:
        """From another thread: A-ABORT (source service user) and close the connection; the
        association's thread ends when its read or send fails."""
        self._ending = True
        self._send_quietly(abort(SERVICE_USER), wait=ABORT_SEND_SECONDS)
        with suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _read_pdu(self) -> tuple[int, bytes] | None:
        while (pdu := self._reader.next_pdu()) is None:
            data = self._sock.recv(RECV_SIZE)
            if not data:
                return None
            self._reader.feed(data)
        return pdu

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(data)

    def _send_quietly(self, data: bytes, wait: float = -1) -> None:
        """Send if the socket is free within ``wait`` seconds (-1: however long it takes); a
        failure is not an error here (the association is ending anyway)."""
        if not self._send_lock.acquire(timeout=wait):
            return  # a send is blocked on a peer that does not read: the shutdown ends it
        try:
            self._sock.sendall(data)
        except OSError:
            pass
        finally:
            self._send_lock.release()

    def _close(self) -> None:
        with suppress(OSError):
            self._sock.close()

    def _peer(self) -> str:
        try:
            host, port = self._sock.getpeername()[:2]
        except OSError:
            return "?"
        return f"{host}:{port}"
