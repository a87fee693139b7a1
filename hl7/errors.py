"""Errors of the HL7 layer, each carrying the acknowledgement it turns into.

The tree::

    HL7Error                  -- carries an AckCode and ErrorDetail rows (ERR segments)
    ├── MessageRejected       -- AR: unsupported type/event/version, system problem (resend later)
    │   └── StoreUnavailable  -- AR: the store could not commit; the sender must resend unchanged
    └── MessageError          -- AE: the content is wrong (sender should fix it before resending)
    FramingError              -- MLLP framing problems (never an ACK by itself)
    TransportError            -- MLLP client: connect/ACK timeouts, closed connections

Exactly one translator turns these into an ACK: :func:`hl7.ack.build_ack` fed from the
``ack_code`` and ``details`` of the error (standards.md §2.4, HL7 Table 0357).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self


class AckCode(enum.StrEnum):
    """MSA-1 in original acknowledgement mode (standards.md §2.4)."""

    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


class ErrorCode(enum.IntEnum):
    """HL7 Table 0357 "Message error condition codes" (standards.md §2.4)."""

    SEGMENT_SEQUENCE = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION = 203
    UNKNOWN_KEY = 204
    DUPLICATE_KEY = 205
    RECORD_LOCKED = 206
    INTERNAL_ERROR = 207

    @property
    def text(self) -> str:
        return _ERROR_TEXT[self]


_ERROR_TEXT = {
    ErrorCode.SEGMENT_SEQUENCE: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY: "Duplicate key identifier",
    ErrorCode.RECORD_LOCKED: "Application record locked",
    ErrorCode.INTERNAL_ERROR: "Application internal error",
}


@dataclass(frozen=True, slots=True)
class ErrorLocation:
    """Where an error sits: ERR-2 (v2.5) / ERR-1 (v2.3, v2.4) ``SEG^seq^field^rep^comp^sub``.

    ``sequence`` counts occurrences of the segment in the message, from 1.
    Zero means "not given" for field, repetition, component and sub-component.
    """

    segment: str
    sequence: int = 1
    field: int = 0
    repetition: int = 0
    component: int = 0
    subcomponent: int = 0

    def __str__(self) -> str:
        text = self.segment if not self.field else f"{self.segment}-{self.field}"
        if self.component:
            text += f".{self.component}"
        if self.subcomponent:
            text += f".{self.subcomponent}"
        return text


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One ERR segment: code, where, and a message a person can act on."""

    code: ErrorCode
    message: str
    location: ErrorLocation | None = None
    severity: str = "E"


class HL7Error(Exception):
    """Base of every HL7-layer error; ``ack_code`` and ``details`` make the ACK."""

    ack_code: AckCode = AckCode.ERROR

    def __init__(self, *details: ErrorDetail) -> None:
        super().__init__("; ".join(_describe(d) for d in details) or type(self).__name__)
        self.details: tuple[ErrorDetail, ...] = details

    @classmethod
    def single(cls, code: ErrorCode, message: str, location: ErrorLocation | None = None) -> Self:
        return cls(ErrorDetail(code, message, location))


class MessageError(HL7Error):
    """AE: the message content is wrong; the sender has to fix it."""

    ack_code = AckCode.ERROR


class MessageRejected(HL7Error):
    """AR: unsupported message type, event or version; or a system problem."""

    ack_code = AckCode.REJECT


class StoreUnavailable(MessageRejected):
    """AR: the store could not commit; the sender must resend the message unchanged."""


class FramingError(Exception):
    """An MLLP stream that breaks the framing rules (standards.md §2.5)."""


def _describe(detail: ErrorDetail) -> str:
    where = f"{detail.location}: " if detail.location else ""
    return f"{where}{detail.message}"


def merge_details(errors: Iterable[HL7Error]) -> tuple[ErrorDetail, ...]:
    """All ERR rows of several errors, in order (for a message with several faults)."""
    return tuple(detail for error in errors for detail in error.details)


class TransportError(Exception):
    """An MLLP client could not deliver a message or read its ACK (standards.md §2.5).

    The tree::

        TransportError
        ├── ConnectFailed        -- no connection (refused, unreachable, unknown host)
        │   └── ConnectTimeout   -- connecting took longer than ``connect_timeout``
        ├── AckTimeout           -- no complete ACK within ``ack_timeout``
        ├── ConnectionClosed     -- the peer closed or reset the connection before the ACK
        └── OversizeAck          -- the reply block was longer than ``max_frame_size``

    After :class:`AckTimeout`, :class:`ConnectionClosed` or :class:`OversizeAck` the message
    may have been received: a resend can duplicate it (MLLP is at-least-once).
    """


class ConnectFailed(TransportError):
    """The MLLP peer could not be reached."""


class ConnectTimeout(ConnectFailed):
    """Connecting to the MLLP peer took longer than the connect timeout."""


class AckTimeout(TransportError):
    """The MLLP peer sent no complete ACK block within the ACK timeout."""


class ConnectionClosed(TransportError):
    """The MLLP peer closed or reset the connection before a complete ACK block arrived."""


class OversizeAck(TransportError):
    """The MLLP peer answered with a block longer than the client's ``max_frame_size``."""
