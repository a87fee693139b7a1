"""DIMSE messages, sans I/O (PS3.7 6.3, 9.3, 10.3, Annex E; PS3.8 Annex E).

A message is a command set (group 0000, always Implicit VR Little Endian, its (0000,0000)
Command Group Length first) and, when (0000,0800) Command Data Set Type is not 0x0101, a data
set in the presentation context's transfer syntax. :class:`MessageAssembler` gathers the PDV
fragments of one message; :func:`parse_command` reads a command set with a few ``struct``
calls; :func:`response_command` writes the command set of a response, with the fields PS3.7
Annex C gives a status (Offending Element, Error Comment, Error ID, Attribute Identifier
List). Data sets stay bytes here: the services decode them (pydicom) or encode them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Final

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import decode

from broker.dicom.pdu import COMMAND_BIT, LAST_FRAGMENT_BIT

C_FIND_RQ: Final = 0x0020
C_ECHO_RQ: Final = 0x0030
C_CANCEL_RQ: Final = 0x0FFF
N_SET_RQ: Final = 0x0120
N_CREATE_RQ: Final = 0x0140
RESPONSE: Final = 0x8000
"""Command Field bit 15: a response (PS3.7 E.1)."""
NO_DATA_SET: Final = 0x0101
DATA_SET_PRESENT: Final = 0x0001

AFFECTED_SOP_CLASS: Final = 0x0002
REQUESTED_SOP_CLASS: Final = 0x0003
COMMAND_FIELD: Final = 0x0100
MESSAGE_ID: Final = 0x0110
RESPONDED_TO: Final = 0x0120
DATA_SET_TYPE: Final = 0x0800
STATUS: Final = 0x0900
OFFENDING_ELEMENT: Final = 0x0901
ERROR_COMMENT: Final = 0x0902
ERROR_ID: Final = 0x0903
AFFECTED_SOP_INSTANCE: Final = 0x1000
REQUESTED_SOP_INSTANCE: Final = 0x1001
ATTRIBUTE_IDENTIFIER_LIST: Final = 0x1005

UNRECOGNIZED_OPERATION: Final = 0x0211
"""PS3.7 C.5.6: a request this SCP does not perform on the context's SOP class."""
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
"""PS3.7 C.5.3 Refused: the command's SOP Class is not the presentation context's."""
_ERROR_COMMENT_LENGTH: Final = 64

_ELEMENT = struct.Struct("<HHL")


class CommandError(Exception):
    """A command set or a PDV sequence PS3.7 / PS3.8 do not allow: the association is aborted."""


@dataclass(frozen=True, slots=True)
class Command:
    """A received command set: element number (group 0000) → raw value."""

    elements: dict[int, bytes]

    @property
    def field(self) -> int:
        return self.unsigned(COMMAND_FIELD) or 0

    @property
    def message_id(self) -> int:
        return self.unsigned(MESSAGE_ID) or 0

    @property
    def has_data_set(self) -> bool:
        return self.unsigned(DATA_SET_TYPE) != NO_DATA_SET

    def unsigned(self, element: int) -> int | None:
        """A US or UL value; None when absent or of another length."""
        value = self.elements.get(element)
        if value is None or len(value) not in (2, 4):
            return None
        return int.from_bytes(value, "little")

    def uid(self, element: int) -> str:
        """A UI value without its padding; "" when absent."""
        return self.elements.get(element, b"").rstrip(b"\0 ").decode("ascii", "replace")


def parse_command(raw: bytes) -> Command:
    """The elements of a command set (Implicit VR Little Endian, group 0000 only).

    Raises
    ------
    CommandError
        A truncated element, an element of another group, or no Command Field.
    """
    elements: dict[int, bytes] = {}
    at, end = 0, len(raw)
    while at < end:
        if at + 8 > end:
            raise CommandError(f"a command set truncated at byte {at}")
        group, element, length = _ELEMENT.unpack_from(raw, at)
        if group != 0x0000 or at + 8 + length > end:
            raise CommandError(f"a command set with ({group:04X},{element:04X}) of {length} bytes")
        elements.setdefault(element, raw[at + 8 : at + 8 + length])
        at += 8 + length
    command = Command(elements)
    if command.unsigned(COMMAND_FIELD) is None:
        raise CommandError("a command set without Command Field")
    return command


@dataclass(slots=True)
class Message:
    """One DIMSE message: its presentation context, command set and data set (if any)."""

    context_id: int
    command: Command
    data: bytes | None


@dataclass(slots=True)
class MessageAssembler:
    """Gathers PDV fragments into messages (PS3.8 E.2): the command fragments, then the data
    set fragments when the command announces a data set, all on one presentation context."""

    _context_id: int | None = None
    _command: bytearray = field(default_factory=bytearray)
    _parsed: Command | None = None
    _data: bytearray = field(default_factory=bytearray)

    @property
    def idle(self) -> bool:
        """No message half received."""
        return self._context_id is None

    def add(self, context_id: int, control: int, fragment: bytes) -> Message | None:
        """One PDV; the message it completes, if it does."""
        if self._context_id is None:
            self._context_id = context_id
        elif context_id != self._context_id:
            raise CommandError(f"a PDV on context {context_id} inside a message on another")
        if control & COMMAND_BIT:
            if self._parsed is not None:
                raise CommandError("a command fragment after the command set")
            self._command += fragment
            if not control & LAST_FRAGMENT_BIT:
                return None
            self._parsed = parse_command(bytes(self._command))
            if self._parsed.has_data_set:
                return None
            return self._complete(None)
        if self._parsed is None:
            raise CommandError("a data set fragment before the command set")
        self._data += fragment
        return self._complete(bytes(self._data)) if control & LAST_FRAGMENT_BIT else None

    def _complete(self, data: bytes | None) -> Message:
        assert self._context_id is not None and self._parsed is not None
        message = Message(self._context_id, self._parsed, data)
        self._context_id, self._parsed = None, None
        self._command, self._data = bytearray(), bytearray()
        return message


@dataclass(frozen=True, slots=True)
class StatusFields:
    """A response's status and the fields PS3.7 Annex C relates to it."""

    status: int
    comment: str = ""
    error_id: int | None = None
    offending: tuple[int, ...] = ()
    attributes: tuple[int, ...] = ()
    """(0000,1005) Attribute Identifier List."""

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> StatusFields:
        """From a status dataset as :func:`mwl.scp.status_dataset` and
        :func:`mpps.scp.error_dataset` make them."""
        error_id = dataset.get("ErrorID")
        return cls(
            status=int(dataset.Status),
            comment=str(dataset.get("ErrorComment", "") or ""),
            error_id=int(error_id) if error_id is not None else None,
            offending=_tags(dataset.get("OffendingElement")),
            attributes=_tags(dataset.get("AttributeIdentifierList")),
        )


def _tags(value: Any) -> tuple[int, ...]:
    """AT values as pydicom gives them: absent, one tag, or several."""
    if value is None or value == "":
        return ()
    values = value if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    return tuple(int(tag) for tag in values)


def response_command(
    command_field: int,
    message_id: int,
    fields: StatusFields | int,
    *,
    sop_class: str,
    sop_instance: str = "",
    data_set: bool = False,
) -> bytes:
    """The command set of a response (PS3.7 9.3, 10.3): Affected SOP Class UID, Command Field
    (with bit 15), Message ID Being Responded To, Command Data Set Type, Status, the status's
    related fields, Affected SOP Instance UID when given; tag order, with its group length."""
    status = fields if isinstance(fields, StatusFields) else StatusFields(fields)
    elements = [
        _uid(AFFECTED_SOP_CLASS, sop_class),
        _us(COMMAND_FIELD, command_field | RESPONSE),
        _us(RESPONDED_TO, message_id),
        _us(DATA_SET_TYPE, DATA_SET_PRESENT if data_set else NO_DATA_SET),
        _us(STATUS, status.status),
    ]
    if status.offending:
        elements.append(_at(OFFENDING_ELEMENT, status.offending))
    if status.comment:
        elements.append(_text(ERROR_COMMENT, status.comment[:_ERROR_COMMENT_LENGTH]))
    if status.error_id is not None:
        elements.append(_us(ERROR_ID, status.error_id))
    if sop_instance:
        elements.append(_uid(AFFECTED_SOP_INSTANCE, sop_instance))
    if status.attributes:
        elements.append(_at(ATTRIBUTE_IDENTIFIER_LIST, status.attributes))
    return encode_command(elements)


def encode_command(elements: Sequence[bytes]) -> bytes:
    """(0000,0000) Command Group Length, then ``elements`` (encoded, in tag order)."""
    body = b"".join(elements)
    return _ELEMENT.pack(0x0000, 0x0000, 4) + struct.pack("<L", len(body)) + body


def _uid(element: int, uid: str) -> bytes:
    raw = uid.encode("ascii")
    raw += b"\0" * (len(raw) % 2)
    return _ELEMENT.pack(0x0000, element, len(raw)) + raw


def _us(element: int, value: int) -> bytes:
    return _ELEMENT.pack(0x0000, element, 2) + struct.pack("<H", value)


def _text(element: int, text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    raw += b" " * (len(raw) % 2)
    return _ELEMENT.pack(0x0000, element, len(raw)) + raw


def _at(element: int, tags: Sequence[int]) -> bytes:
    raw = b"".join(struct.pack("<HH", tag >> 16, tag & 0xFFFF) for tag in tags)
    return _ELEMENT.pack(0x0000, element, len(raw)) + raw


def decode_data_set(data: bytes, transfer_syntax: str) -> Dataset:
    """A received data set as a pydicom Dataset (its elements decoded as they are read)."""
    syntax = UID(transfer_syntax)
    dataset = decode(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian)
    if dataset is None:  # pynetdicom's decode returns None for a deflated syntax only
        raise ValueError(f"cannot decode a data set in {transfer_syntax}")
    return dataset
