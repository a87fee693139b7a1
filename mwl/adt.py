"""ADT patient messages → patient commands (IHE RAD-1 / RAD-12, standards.md §1.1).

A01/A04/A05/A08/A31 carry demographics (PID); A40 merges the prior patient (MRG-1) into the
surviving one (PID-3); A47 changes a patient's identifier from MRG-1 to PID-3.
"""

from __future__ import annotations

from hl7.codec import Message, Segment
from hl7.errors import ErrorCode, ErrorLocation, MessageError
from mwl.dicomjson import NULL
from mwl.model import Command, PatientIdChange, PatientKey, PatientMerge, PatientUpdate
from mwl.patient import patient_from_pid


def adt_to_command(message: Message) -> Command:
    """Dispatch on the trigger event (MSH-9.2)."""
    pid = _required_segment(message, "PID")
    patient = patient_from_pid(pid, observations=message.all("OBX"))
    event = message.header.trigger_event.upper()
    if event not in {"A40", "A47"}:
        return PatientUpdate(patient=patient)
    if len(message.all("MRG")) > 1:
        raise MessageError.single(
            ErrorCode.SEGMENT_SEQUENCE,
            "one PID/MRG pair per message is supported: send each merge as its own message",
            ErrorLocation("MRG", 2),
        )
    prior = prior_key(_required_segment(message, "MRG"))
    if event == "A40":
        return PatientMerge(surviving=patient, prior=prior)
    return PatientIdChange(patient=patient, prior=prior)


def prior_key(mrg: Segment) -> PatientKey:
    """MRG-1 Prior Patient Identifier List, first repetition: ID and assigning authority."""
    value = mrg.value(1)
    if not value or value == NULL:
        raise MessageError.single(
            ErrorCode.REQUIRED_FIELD_MISSING,
            "MRG-1 prior patient identifier is missing",
            ErrorLocation("MRG", mrg.sequence, 1),
        )
    return PatientKey(value, mrg.value(1, 4))


def _required_segment(message: Message, name: str) -> Segment:
    segment = message.first(name)
    if segment is None:
        raise MessageError.single(
            ErrorCode.SEGMENT_SEQUENCE, f"{name} segment is missing", ErrorLocation(name, 1)
        )
    return segment
