"""HL7 status messages to the RIS (standards.md §2.3), read back with our own decoder."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

import pytest

from hl7.codec import Message, Segment, decode
from mpps.model import PerformedStep
from mpps.report import MessageType, OrderContext, status_message, supports
from mpps.state import apply_set
from mwl.model import OrderNumber
from tests.mpps.datasets import (
    STUDY_UID,
    code_item,
    completed,
    completion,
    discontinued,
    in_progress,
    step_item,
)

NOW = datetime(2024, 1, 2, 11, 0, 5)

LATIN_1_ORDER = OrderContext(
    placer=OrderNumber("PL-1", "RIS"),
    filler=OrderNumber("FL-1", "BROKER"),
    accession="ACC-1",
    requested_procedure_id="RP-1",
    study_uid=STUDY_UID,
    patient_id="PAT-1",
    patient_issuer="HOSP",
    patient_name="Müller-Lüdenscheidt^Jürgen^Karl^Dr.^jun.",
    ris_application="RIS",
    ris_facility="RADIOLOGIE",
    hl7_charset="8859/1",
)


class Shape(NamedTuple):
    """A message type in a version: MSH-9 as sent and the segments after MSH."""

    message_type: MessageType
    version: str
    msh9: str
    segments: list[str]


class State(NamedTuple):
    """A performed step and what it reports: ORC-5 and ORU^R01 OBR-25 / OBX-11."""

    make: Callable[[], PerformedStep]
    order_status: str
    result_status: str


SHAPES = [
    Shape(MessageType.ORM_O01, "2.3.1", "ORM^O01", ["PID", "ORC", "OBR", "ZDS"]),
    Shape(MessageType.ORM_O01, "2.5.1", "ORM^O01^ORM_O01", ["PID", "ORC", "OBR", "ZDS"]),
    Shape(
        MessageType.OMG_O19, "2.5.1", "OMG^O19^OMG_O19", ["PID", "PV1", "ORC", "TQ1", "OBR", "OBX"]
    ),
    Shape(
        MessageType.OMI_O23, "2.5.1", "OMI^O23^OMI_O23", ["PID", "PV1", "ORC", "TQ1", "OBR", "IPC"]
    ),
    Shape(MessageType.ORU_R01, "2.3.1", "ORU^R01", ["PID", "PV1", "ORC", "OBR", "OBX"]),
    Shape(MessageType.ORU_R01, "2.5.1", "ORU^R01^ORU_R01", ["PID", "PV1", "ORC", "OBR", "OBX"]),
]
STATES = [
    State(in_progress, "IP", "I"),
    State(completed, "CM", "R"),
    State(lambda: discontinued(code_item("110501")), "DC", "X"),
]


def build(
    step: PerformedStep,
    order: OrderContext = LATIN_1_ORDER,
    message_type: MessageType = MessageType.ORM_O01,
    version: str = "2.3.1",
) -> bytes:
    return status_message(
        step,
        order,
        message_type=message_type,
        version=version,
        control_id="MPPS-1",
        now=NOW,
        application="MWLBROKER",
        facility="IMAGING",
    )


def segment(message: Message, name: str) -> Segment:
    found = message.first(name)
    assert found is not None, f"no {name}"
    return found


def segment_value(message: Message, name: str, field: int, comp: int = 1) -> str:
    return segment(message, name).value(field, comp)


def study_uid(message: Message, message_type: MessageType) -> str:
    """Where each shape carries the Study Instance UID (standards.md §1.1, §2.3 B/C)."""
    where = {
        MessageType.ORM_O01: ("ZDS", 1),
        MessageType.OMG_O19: ("OBX", 5),
        MessageType.OMI_O23: ("IPC", 3),
        MessageType.ORU_R01: ("OBX", 5),
    }
    return segment_value(message, *where[message_type])


@pytest.mark.parametrize("state", STATES, ids=["IN PROGRESS", "COMPLETED", "DISCONTINUED"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{s.message_type} v{s.version}" for s in SHAPES])
def test_status_message_reads_back(shape: Shape, state: State) -> None:
    message_type, version, order_status = shape.message_type, shape.version, state.order_status
    step = state.make()
    raw = build(step, message_type=message_type, version=version)
    message = decode(raw)
    header = message.header

    assert raw.split(b"\r")[0].split(b"|")[8].decode() == shape.msh9
    assert (header.message_type, header.trigger_event) == tuple(str(message_type).split("^"))
    assert (header.version, header.charset, header.control_id) == (version, "8859/1", "MPPS-1")
    assert header.sending_application == "MWLBROKER"
    assert header.receiving_application == "RIS"
    assert header.receiving_facility == "RADIOLOGIE"
    assert header.timestamp == "20240102110005"
    assert (message.charset.codec, message.charset.mismatch) == ("iso8859_1", False)
    assert [segment.name for segment in message.segments] == ["MSH", *shape.segments]
    assert not raw.endswith(b"\r")

    assert segment_value(message, "ORC", 1) == "SC"
    assert segment_value(message, "ORC", 5) == order_status
    assert segment(message, "ORC").field(2).components() == ("PL-1", "RIS")
    assert segment(message, "ORC").field(3).components() == ("FL-1", "BROKER")
    assert segment_value(message, "OBR", 2) == "PL-1"
    assert segment_value(message, "OBR", 3) == "FL-1"
    assert segment_value(message, "OBR", 7) == "20240102103000"
    assert segment_value(message, "OBR", 8) == ("" if order_status == "IP" else "20240102104500")
    assert segment_value(message, "OBR", 18) == "ACC-1"
    assert segment_value(message, "OBR", 19) == "RP-1"
    assert segment_value(message, "OBR", 20) == "SPS-1"
    assert segment_value(message, "OBR", 21) == "CT01"
    assert segment_value(message, "OBR", 24) == "CT"
    assert study_uid(message, message_type) == STUDY_UID

    pid = message.first("PID")
    assert pid is not None
    assert (pid.value(3), pid.value(3, 4)) == ("PAT-1", "HOSP")
    assert pid.field(5).components() == ("Müller-Lüdenscheidt", "Jürgen", "Karl", "jun.", "Dr.")
    assert "Müller-Lüdenscheidt".encode("latin-1") in raw

    if message_type in (MessageType.OMG_O19, MessageType.OMI_O23):
        assert segment_value(message, "TQ1", 7) == "20240102103000"
    if message_type is MessageType.ORU_R01:
        assert segment_value(message, "OBR", 25) == state.result_status
        assert segment_value(message, "OBX", 11) == state.result_status


def test_orm_zds_is_the_ihe_study_uid_reference() -> None:
    message = decode(build(in_progress()))
    zds = message.first("ZDS")
    assert zds is not None
    assert zds.field(1).components() == (STUDY_UID, "100", "Application", "DICOM")


def test_omg_obx_is_the_dicom_study_observation() -> None:
    message = decode(build(completed(), message_type=MessageType.OMG_O19, version="2.5.1"))
    obx = message.first("OBX")
    assert obx is not None
    assert (obx.value(1), obx.value(2), obx.value(5), obx.value(11)) == ("1", "ST", STUDY_UID, "O")
    assert obx.field(3).components() == ("113014", "DICOM Study", "DCM")


def test_omi_ipc_carries_accession_rp_study_sps_and_modality() -> None:
    message = decode(build(completed(), message_type=MessageType.OMI_O23, version="2.5.1"))
    ipc = message.first("IPC")
    assert ipc is not None
    assert [ipc.value(n) for n in range(1, 6)] == ["ACC-1", "RP-1", STUDY_UID, "SPS-1", "CT"]


def test_pv1_says_patient_class_unknown() -> None:
    message = decode(build(completed(), message_type=MessageType.OMG_O19, version="2.5.1"))
    assert segment_value(message, "PV1", 2) == "U"


def test_ascii_order_has_no_msh_18() -> None:
    order = OrderContext(
        accession="ACC-1", patient_id="PAT-1", patient_name="Doe^John", ris_application="RIS"
    )
    raw = build(in_progress(), order)
    assert raw.isascii()
    message = decode(raw)
    assert message.header.charset == ""
    assert raw.split(b"\r")[0].endswith(b"|2.3.1")


def test_characters_the_order_charset_lacks_become_question_marks() -> None:
    order = OrderContext(patient_name="Łukasz^Żółć", patient_id="PAT-1", hl7_charset="8859/1")
    message = decode(build(in_progress(), order))
    assert segment(message, "PID").field(5).components() == ("?ukasz", "?ó??")


def test_utf_8_order_is_answered_in_utf_8() -> None:
    order = OrderContext(patient_name="Łukasz^Żółć", hl7_charset="UNICODE UTF-8")
    raw = build(in_progress(), order, MessageType.OMI_O23, "2.5.1")
    assert "Łukasz".encode() in raw
    message = decode(raw)
    assert message.header.charset == "UNICODE UTF-8"
    assert segment(message, "PID").field(5).components() == ("Łukasz", "Żółć")


DELIMITERS = "A|B^C&D~E\\F"


@pytest.mark.parametrize(
    "text",
    [DELIMITERS, "A\\F\\B", "x\\.br\\y", "\\H\\bold\\N\\"],
    ids=["delimiters", "\\F\\ text", "\\.br\\ text", "\\H\\ text"],
)
def test_values_are_escaped_so_they_read_back_unchanged(text: str) -> None:
    """hl7apy alone would send ``A\\F\\B`` as is (read back as ``A|B``): we escape first."""
    family = text.replace("^", "")  # in a PN "^" separates the components
    order = OrderContext(
        placer=OrderNumber(text, "NS"),
        accession=text,
        patient_id=text,
        patient_name=f"{family}^Given",
    )
    message = decode(build(completed(), order, MessageType.ORU_R01, "2.5.1"))
    assert segment(message, "ORC").field(2).components() == (text, "NS")
    assert segment_value(message, "OBR", 18) == text
    assert segment_value(message, "PID", 3) == text
    assert segment(message, "PID").field(5).components() == (family, "Given")


def test_line_breaks_and_framing_bytes_become_spaces() -> None:
    order = OrderContext(accession="ACC\r\n1", patient_name="D\x1coe^Jo\x0bhn")
    raw = build(in_progress(), order)
    assert raw.count(b"\r") == 4
    assert b"\x1c" not in raw and b"\x0b" not in raw
    message = decode(raw)
    assert segment_value(message, "OBR", 18) == "ACC 1"
    assert segment(message, "PID").field(5).components() == ("D oe", "Jo hn")


def test_missing_identifiers_come_from_the_matching_scheduled_step() -> None:
    """Group case: the (0040,0270) item with the order's RP ID fills the gaps of the context."""
    items = [
        step_item(
            AccessionNumber="ACC-1", RequestedProcedureID="RP-1", ScheduledProcedureStepID="S1"
        ),
        step_item(
            AccessionNumber="ACC-2",
            RequestedProcedureID="RP-2",
            ScheduledProcedureStepID="S2",
            PlacerOrderNumberImagingServiceRequest="PL-2",
            FillerOrderNumberImagingServiceRequest="FL-2",
        ),
    ]
    step = in_progress(ScheduledStepAttributesSequence=items)
    message = decode(build(step, OrderContext(requested_procedure_id="RP-2")))
    assert [segment_value(message, "ORC", n) for n in (2, 3)] == ["PL-2", "FL-2"]
    assert [segment_value(message, "OBR", n) for n in (18, 19, 20)] == ["ACC-2", "RP-2", "S2"]
    assert segment_value(message, "ZDS", 1) == STUDY_UID


def test_procedure_code_goes_to_obr_4() -> None:
    step = apply_set(
        in_progress(),
        completion(ProcedureCodeSequence=[code_item("CTTHX", "99RIS", "CT Thorax")]),
    )
    message = decode(build(step))
    assert segment(message, "OBR").field(4).components() == ("CTTHX", "CT Thorax", "99RIS")


def test_fractional_seconds_are_cut_to_four_digits() -> None:
    message = decode(build(in_progress(PerformedProcedureStepStartTime="103000.123456")))
    assert segment_value(message, "OBR", 7) == "20240102103000.1234"


def test_incorrect_worklist_entry_is_reported_as_dc() -> None:
    """Whether to send it at all is the caller's decision (mpps.report docstring)."""
    message = decode(build(discontinued(code_item("110514"))))
    assert segment_value(message, "ORC", 5) == "DC"


SUPPORT = [
    (MessageType.ORM_O01, "2.3.1", True),
    (MessageType.ORM_O01, "2.5.1", True),
    (MessageType.ORU_R01, "2.3.1", True),
    (MessageType.OMG_O19, "2.3.1", False),
    (MessageType.OMG_O19, "2.4", True),
    (MessageType.OMI_O23, "2.4", False),
    (MessageType.OMI_O23, "2.5.1", True),
    (MessageType.ORM_O01, "2.2", False),
    (MessageType.ORM_O01, "3.0", False),
    (MessageType.ORM_O01, "", False),
]


@pytest.mark.parametrize(("message_type", "version", "expected"), SUPPORT)
def test_supports(message_type: MessageType, version: str, expected: bool) -> None:
    assert supports(message_type, version) is expected


def test_unsupported_combination_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="OMI"):
        build(in_progress(), message_type=MessageType.OMI_O23, version="2.3.1")
