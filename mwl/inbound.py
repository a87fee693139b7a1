"""One inbound HL7 message, from bytes to an honest ACK (standards.md §2.4).

Two steps, so the expensive one can run in worker processes:

1. :func:`prepare` — pure CPU: decode (charset, separators, escapes) and map to a command.
   Every failure becomes a :class:`Failure` (AE/AR with ERR rows); nothing escapes.
2. :meth:`InboundProcessor.process` — one unit of work: idempotency check on MSH-3/MSH-4 +
   MSH-10, apply the command, journal the message with its ACK, **commit, then return the
   ACK**. AA is only ever returned for a committed message; a store failure answers AR so the
   RIS resends; a message already accepted gets its original ACK again and changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from hl7.ack import build_ack
from hl7.codec import Header, decode, read_header
from hl7.errors import (
    AckCode,
    ErrorCode,
    ErrorDetail,
    HL7Error,
)
from mwl.intake import Intake, Outcome
from mwl.mapping import message_to_command
from mwl.model import Command
from mwl.policy import MappingPolicy
from mwl.ports import DuplicateMessage, JournalEntry, StoreFailure, UnitOfWorkFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a message is not accepted: the ACK code and its ERR rows."""

    ack_code: AckCode
    details: tuple[ErrorDetail, ...]

    @classmethod
    def of(cls, error: HL7Error) -> Failure:
        return cls(error.ack_code, error.details)

    @property
    def text(self) -> str:
        return "; ".join(_describe(d) for d in self.details)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A decoded and mapped message (or why it could not be); picklable."""

    header: Header | None
    codec: str = "ascii"
    command: Command | None = None
    failure: Failure | None = None


def prepare(raw: bytes, policy: MappingPolicy) -> Prepared:
    """Decode and map one message; never raises (runs in parse worker processes)."""
    header = None
    codec = "ascii"
    try:
        message = decode(raw, fallback_charset=policy.fallback_charset)
        header, codec = message.header, message.charset.codec
        return Prepared(header, codec, command=message_to_command(message, policy))
    except HL7Error as error:
        return Prepared(header or read_header(raw), codec, failure=Failure.of(error))
    except Exception:  # a defect of ours must still produce an answer, not a dead connection
        log.exception("mapping failed unexpectedly")
        detail = ErrorDetail(ErrorCode.INTERNAL_ERROR, "the broker could not map this message")
        return Prepared(
            header or read_header(raw), codec, failure=Failure(AckCode.ERROR, (detail,))
        )


def oversize(head: bytes, size: int, limit: int) -> Prepared:
    """A frame longer than the MLLP limit: AR (addressed from its MSH when readable)."""
    detail = ErrorDetail(
        ErrorCode.INTERNAL_ERROR,
        f"message of {size} bytes exceeds the {limit}-byte limit of this receiver",
    )
    return Prepared(read_header(head), failure=Failure(AckCode.REJECT, (detail,)))


@dataclass(frozen=True, slots=True, kw_only=True)
class AckIdentity:
    """Who the broker is in its ACKs (MSH-3/MSH-4 when the message did not name us)."""

    application: str = "MWLBROKER"
    facility: str = ""


def _new_control_id() -> str:
    return uuid.uuid4().hex[:20]


@dataclass
class InboundProcessor:
    """Applies prepared messages, one unit of work each."""

    uow_factory: UnitOfWorkFactory
    intake: Intake
    identity: AckIdentity = field(default_factory=AckIdentity)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())

    def process(self, prepared: Prepared, raw: bytes, peer: str) -> bytes:
        """The ACK to send for ``raw``; AA only after its commit."""
        received = self.clock()
        try:
            return self._process(prepared, raw, peer, received)
        except DuplicateMessage:
            return self._original_ack(prepared) or self._store_down(prepared, received)
        except StoreFailure as error:
            log.error("store unavailable, answering AR: %s", error)
            return self._store_down(prepared, received)

    def _process(self, prepared: Prepared, raw: bytes, peer: str, received: datetime) -> bytes:
        if prepared.failure is not None:
            return self._refuse(prepared, prepared.failure, raw, peer, received)
        assert prepared.header is not None and prepared.command is not None
        header = prepared.header
        with self.uow_factory() as uow:
            original = uow.journal.find_accepted(header.sender, header.control_id)
            if original is not None:
                log.info("duplicate %s control ID %s: original ACK resent",
                         _kind(header), header.control_id)  # fmt: skip
                return original
            try:
                outcome = self.intake.apply(uow, prepared.command, header.sender)
            except HL7Error as error:
                failure = Failure.of(error)
            else:
                ack = self._ack(prepared, AckCode.ACCEPT, received)
                uow.journal.record(_entry(prepared, raw, peer, received, ack, outcome=outcome))
                uow.commit()
                log.info("accepted %s control ID %s", _kind(header), header.control_id)
                return ack
        return self._refuse(prepared, failure, raw, peer, received)

    def _refuse(
        self, prepared: Prepared, failure: Failure, raw: bytes, peer: str, received: datetime
    ) -> bytes:
        """AE/AR: journal the message with the ACK it gets (in a fresh unit of work, so
        nothing the failed apply wrote survives)."""
        ack = self._ack(prepared, failure.ack_code, received, failure.details)
        with self.uow_factory() as uow:
            uow.journal.record(_entry(prepared, raw, peer, received, ack, failure=failure))
            uow.commit()
        control_id = prepared.header.control_id if prepared.header else "?"
        log.info("refused %s control ID %s with %s: %s", _kind(prepared.header), control_id,
                 failure.ack_code.value, failure.text)  # fmt: skip
        return ack

    def _original_ack(self, prepared: Prepared) -> bytes | None:
        if prepared.header is None:
            return None
        with self.uow_factory() as uow:
            return uow.journal.find_accepted(prepared.header.sender, prepared.header.control_id)

    def _store_down(self, prepared: Prepared, received: datetime) -> bytes:
        detail = ErrorDetail(
            ErrorCode.INTERNAL_ERROR,
            "the broker's store is unavailable; the message was not stored, send it again",
        )
        return self._ack(prepared, AckCode.REJECT, received, (detail,))

    def _ack(
        self,
        prepared: Prepared,
        code: AckCode,
        when: datetime,
        details: tuple[ErrorDetail, ...] = (),
    ) -> bytes:
        return build_ack(
            prepared.header,
            code,
            control_id=_new_control_id(),
            timestamp=when,
            details=details,
            text=details[0].message if details else "",
            application=self.identity.application,
            facility=self.identity.facility,
            codec=prepared.codec,
        )


def _kind(header: Header | None) -> str:
    if header is None:
        return "unreadable message"
    return f"{header.message_type}^{header.trigger_event}"


def _describe(detail: ErrorDetail) -> str:
    return f"{detail.location}: {detail.message}" if detail.location else detail.message


def _entry(
    prepared: Prepared,
    raw: bytes,
    peer: str,
    received: datetime,
    ack: bytes,
    *,
    outcome: Outcome | None = None,
    failure: Failure | None = None,
) -> JournalEntry:
    header = prepared.header
    return JournalEntry(
        received_at=received,
        peer=peer,
        raw=raw,
        ack=ack,
        ack_code=failure.ack_code.value if failure else AckCode.ACCEPT.value,
        sending_application=header.sending_application if header else "",
        sending_facility=header.sending_facility if header else "",
        control_id=header.control_id if header else "",
        message_type=header.message_type if header else "",
        trigger_event=header.trigger_event if header else "",
        version=header.version if header else "",
        error=failure.text if failure else "",
        patient_id=outcome.patient_id if outcome else "",
        accession=outcome.accession if outcome else "",
    )
