"""HL7 order messages → worklist commands (IHE Scheduled Workflow, standards.md §1).

:func:`message_to_command` is the one entry point: it dispatches on MSH-9 and MSH-12 and
returns a :data:`mwl.model.Command`, or raises :class:`hl7.errors.HL7Error` carrying the ACK
(AR for unsupported type/event/version, AE with ERR rows for content errors). It is pure —
no I/O, no clock — so it runs in the parse worker processes.

Segment groups (standards.md §1.1, §1.4): the patient part is everything before the first
ORC; each ORC starts an order group; each OBR in it starts a block that owns the NTE, ZDS,
IPC and OBX segments after it. ORM^O01 and OMG^O19 blocks give one step per OBR (OBR-19 /
OBR-20 / OBR-24, ZDS-1); OMI^O23 blocks give one step per IPC (IPC-1…IPC-9).
"""

from __future__ import annotations

from hl7.codec import Message
from hl7.errors import ErrorCode, ErrorLocation, MessageError, MessageRejected
from mwl import adt, order_parts
from mwl.groups import split_groups
from mwl.model import Command, OrderMessage
from mwl.patient import patient_from_message
from mwl.policy import MappingPolicy

SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1"})
"""MSH-12 versions accepted (issue scope: ORM v2.3–2.5, OMI/OMG v2.5.1, ADT)."""

ORDER_MESSAGES = frozenset({("ORM", "O01"), ("OMI", "O23"), ("OMG", "O19")})
ADT_EVENTS = frozenset({"A01", "A04", "A05", "A08", "A31", "A40", "A47"})


def normalise_version(version: str) -> str:
    """``2.5.0`` → ``2.5`` (sample 19 sends it); other values unchanged."""
    parts = version.strip().split(".")
    while len(parts) > 2 and parts[-1] == "0":
        parts.pop()
    return ".".join(parts)


def check_supported(message: Message) -> None:
    """AR with ERR 200/201/203 for what the broker does not take (standards.md §2.4)."""
    header = message.header
    msh9 = ErrorLocation("MSH", 1, 9)
    kind = header.message_type.upper()
    event = header.trigger_event.upper()
    if kind not in {"ORM", "OMI", "OMG", "ADT"}:
        raise MessageRejected.single(
            ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            f"message type {kind or '(empty)'} is not accepted",
            msh9,
        )
    if (kind, event) not in ORDER_MESSAGES and not (kind == "ADT" and event in ADT_EVENTS):
        raise MessageRejected.single(
            ErrorCode.UNSUPPORTED_EVENT,
            f"event {kind}^{event or '(empty)'} is not accepted",
            ErrorLocation("MSH", 1, 9, 0, 2),
        )
    version = normalise_version(header.version)
    if version not in SUPPORTED_VERSIONS:
        raise MessageRejected.single(
            ErrorCode.UNSUPPORTED_VERSION,
            f"HL7 version {header.version or '(empty)'} is not accepted "
            f"(supported: {', '.join(sorted(SUPPORTED_VERSIONS))})",
            ErrorLocation("MSH", 1, 12),
        )


def message_to_command(message: Message, policy: MappingPolicy) -> Command:
    """Map a decoded message to what the intake must do."""
    check_supported(message)
    if not message.header.control_id.strip():
        raise MessageError.single(
            ErrorCode.REQUIRED_FIELD_MISSING,
            "MSH-10 message control ID is empty: it is needed to acknowledge the message",
            ErrorLocation("MSH", 1, 10),
        )
    if message.header.message_type.upper() == "ADT":
        return adt.adt_to_command(message)
    return order_message(message, policy)


def order_message(message: Message, policy: MappingPolicy) -> OrderMessage:
    """ORM^O01 / OMI^O23 / OMG^O19 → :class:`OrderMessage` (standards.md §1.2 table)."""
    patient_segments, groups = split_groups(message)
    if not groups:
        raise MessageError.single(
            ErrorCode.SEGMENT_SEQUENCE,
            "the message has no ORC segment: no order to schedule",
            ErrorLocation("ORC", 1),
        )
    patient = patient_from_message(message, patient_segments)
    context = order_parts.Context(
        message=message,
        policy=policy,
        patient_segments=patient_segments,
        sending_facility=message.header.sending_facility,
    )
    orders = order_parts.merge_orders([order_parts.order_from_group(g, context) for g in groups])
    return OrderMessage(
        patient=patient, orders=tuple(orders), sending_facility=message.header.sending_facility
    )
