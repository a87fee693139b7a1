"""HL7 status messages to the RIS (standards.md §2.3), read back with our own decoder."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import NamedTuple

import pytest

import mpps.report
from hl7.charset import python_codec
from hl7.codec import Message, Segment, decode
from mpps.model import PerformedStep, StepReference
from mpps.report import (
    FIRST_VERSION,
    RESCHEDULED,
    MessageType,
    OrderContext,
    _facts,
    _hl7apy_message,
    _hl7apy_problem,
    check_layout,
    status_message,
    supports,
)
from mpps.state import apply_set
from mwl.dicomjson import code_item as json_code_item
from mwl.dicomjson import element_of
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


@pytest.mark.parametrize(
    ("message_type", "version"),
    [(MessageType.ORM_O01, "2.3.1"), (MessageType.OMG_O19, "2.5.1"), (MessageType.OMI_O23, "2.5")],
)
def test_a_rescheduled_step_is_reported_as_sc(message_type: MessageType, version: str) -> None:
    step = discontinued(code_item("110514"))
    raw = status_message(
        step,
        LATIN_1_ORDER,
        message_type=message_type,
        version=version,
        control_id="MPPS-1",
        now=NOW,
        order_status=RESCHEDULED,
    )
    message = decode(raw)
    assert (segment_value(message, "ORC", 1), segment_value(message, "ORC", 5)) == ("SC", "SC")
    expected = _hl7apy_message(
        _facts(
            step,
            LATIN_1_ORDER,
            message_type=message_type,
            version=version,
            control_id="MPPS-1",
            now=NOW,
            application="MWLBROKER",
            facility="",
            order_status=RESCHEDULED,
        )
    )
    assert raw == expected.encode(python_codec(LATIN_1_ORDER.hl7_charset), errors="replace")


SUPPORT = [
    (MessageType.ORM_O01, "2.3.1", True),
    (MessageType.ORM_O01, "2.5.1", True),
    (MessageType.ORU_R01, "2.3.1", True),
    (MessageType.OMG_O19, "2.3.1", False),
    (MessageType.OMG_O19, "2.4", False),  # no TQ1 before v2.5
    (MessageType.OMG_O19, "2.5", True),
    (MessageType.OMI_O23, "2.4", False),
    (MessageType.OMI_O23, "2.5.1", True),
    (MessageType.ORM_O01, "2.5.0", True),
    (MessageType.ORM_O01, "2.7", False),  # withdrawn: hl7apy has no ORM_O01 from v2.7
    (MessageType.ORU_R01, "2.7", True),
    (MessageType.ORU_R01, "2.8", False),  # hl7apy writes OBR-18 as OBR-16
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


REFUSED = [
    (MessageType.OMI_O23, "2.3.1", r"defined from v2\.5"),
    (MessageType.OMG_O19, "2.4", "No child named TQ1"),
    (MessageType.ORM_O01, "2.7", "Invalid name for Message: ORM_O01"),
    (MessageType.ORU_R01, "2.8", "OBR-16: hl7apy writes"),
    (MessageType.ORU_R01, "2.9", "hl7apy has no such version"),
    (MessageType.ORM_O01, "3.0", "hl7apy has no such version"),
]


@pytest.mark.parametrize(("message_type", "version", "reason"), REFUSED)
def test_layout_check_names_what_hl7apy_lacks(
    message_type: MessageType, version: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        check_layout(message_type, version)
    assert not supports(message_type, version)


BEFORE_FIRST_VERSION = {
    MessageType.ORM_O01: "2.2",
    MessageType.OMG_O19: "2.3.1",
    MessageType.OMI_O23: "2.4",
    MessageType.ORU_R01: "2.2",
}


@pytest.mark.parametrize("message_type", list(MessageType))
def test_hl7apy_lacks_each_structure_before_its_first_version(message_type: MessageType) -> None:
    """FIRST_VERSION refuses early; hl7apy, consulted alone, refuses the same versions."""
    before = BEFORE_FIRST_VERSION[message_type]
    assert FIRST_VERSION[message_type] > tuple(int(n) for n in before.split("."))
    assert _hl7apy_problem(message_type, before) is not None


def test_checked_message_types_are_written_without_an_hl7apy_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = build(completed(), message_type=MessageType.OMI_O23, version="2.5.1")

    def no_message(*args: object, **kwargs: object) -> None:
        raise AssertionError("hl7apy Message built for a status message")

    monkeypatch.setattr(mpps.report, "Message", no_message)
    assert build(completed(), message_type=MessageType.OMI_O23, version="2.5.1") == expected


class Rewrite(NamedTuple):
    """Values hl7apy does not write as given, and the segments it writes instead."""

    order: OrderContext
    message_type: MessageType
    version: str
    segments: tuple[bytes, ...]


REWRITES = {
    "blank name component dropped": Rewrite(
        OrderContext(patient_id="P1", patient_name="Doe^ ^John"),
        MessageType.ORM_O01,
        "2.3.1",
        (b"PID|||P1||Doe^^John",),
    ),
    "blank issuer dropped, blank ID still a field": Rewrite(
        OrderContext(patient_id=" ", patient_issuer=" "),
        MessageType.ORM_O01,
        "2.3.1",
        (b"PID|||",),
    ),
    "blank EI dropped, blank ST kept": Rewrite(
        OrderContext(accession=" ", requested_procedure_id="RP-1", study_uid=" "),
        MessageType.OMI_O23,
        "2.5.1",
        (
            b"OBR||PL-1|FL-1||||20240102103000||||||||||| |RP-1|SPS-1|CT01|||CT",
            b"IPC||RP-1||SPS-1|CT",
        ),
    ),
    "raw MSH-5 re-escaped": Rewrite(
        OrderContext(ris_application="RIS~2^\\X41\\^ ", ris_facility=" "),
        MessageType.ORM_O01,
        "2.3.1",
        (
            b"MSH|^~\\&|MWLBROKER|IMAGING|RIS\\R\\2^\\E\\X41\\E\\||20240102110005||ORM^O01"
            b"|MPPS-1|P|2.3.1",
        ),
    ),
    "truncation character escaped from v2.7": Rewrite(
        OrderContext(accession="A#1", ris_application="RIS#"),
        MessageType.ORU_R01,
        "2.7",
        (
            b"MSH|^~\\&#|MWLBROKER|IMAGING|RIS\\L\\||20240102110005||ORU^R01^ORU_R01|MPPS-1|P|2.7",
            b"OBR||PL-1|FL-1||||20240102103000|||||||||||A\\L\\1|RP-1|SPS-1|CT01|||CT|I",
        ),
    ),
}


@pytest.mark.parametrize("case", REWRITES.values(), ids=REWRITES.keys())
def test_writer_writes_what_hl7apy_writes_rather_than_a_plain_join(case: Rewrite) -> None:
    """Blank values of composite types and raw MSH-5/6 text (module docstring)."""
    step = in_progress()
    raw = build(step, case.order, case.message_type, case.version)
    segments = {segment[:3]: segment for segment in raw.split(b"\r")}
    assert [segments[segment[:3]] for segment in case.segments] == list(case.segments)
    assert raw == reference(step, case.order, case.message_type, case.version)


def reference(
    step: PerformedStep,
    order: OrderContext,
    message_type: MessageType,
    version: str,
    *,
    control_id: str = "MPPS-1",
    application: str = "MWLBROKER",
    facility: str = "IMAGING",
) -> bytes:
    """The message built field by field through hl7apy."""
    facts = _facts(
        step,
        order,
        message_type=message_type,
        version=version,
        control_id=control_id,
        now=NOW,
        application=application,
        facility=facility,
    )
    return _hl7apy_message(facts).encode(python_codec(order.hl7_charset), errors="replace")


PIECES = (
    *("", " ", "  ", "\u00a0", "A", "Zoë", "Łódź", "中文", "1.2.840.10008", "x" * 70),
    *("^", "&", "|", "~", "\\", "#", "{0}", "\\F\\", "\\X41\\", "\\.br\\", "\\H\\"),
    *("\r", "\n", "\r\n", "\x1c", "\x0b", "\t"),
)
"""Text pieces: blanks, non-ASCII, delimiters, escape sequences, line breaks, MLLP bytes."""
DATES = ("", "20240102")
TIMES = ("", "10", "1030", "103000", "103000.1", "103000.123456", "10^30", "10|30")
STEPS: tuple[Callable[[], PerformedStep], ...] = (
    in_progress,
    completed,
    lambda: discontinued(code_item("110501")),
)
DIFFERENTIAL = [
    *((MessageType.ORM_O01, version) for version in ("2.3.1", "2.4", "2.5", "2.5.1")),
    *((MessageType.OMG_O19, version) for version in ("2.5", "2.5.1", "2.7")),
    *((MessageType.OMI_O23, version) for version in ("2.5", "2.5.1")),
    *((MessageType.ORU_R01, version) for version in ("2.3.1", "2.4", "2.5", "2.5.1", "2.7")),
]
CASES = 20


def random_text(rng: random.Random, most: int = 4) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, most)))


def random_number(rng: random.Random) -> OrderNumber | None:
    return OrderNumber(random_text(rng), random_text(rng, 2)) if rng.random() < 0.7 else None


def random_name(rng: random.Random) -> str:
    """A DICOM PN: up to 6 components, sometimes a second (ideographic) group."""
    groups = rng.choice((1, 1, 2))
    return "=".join(
        "^".join(random_text(rng, 2) for _ in range(rng.randint(0, 6))) for _ in range(groups)
    )


def random_order(rng: random.Random) -> OrderContext:
    return OrderContext(
        placer=random_number(rng),
        filler=random_number(rng),
        accession=random_text(rng),
        requested_procedure_id=rng.choice(("RP-1", "", random_text(rng))),
        study_uid=rng.choice((STUDY_UID, "", random_text(rng))),
        patient_id=random_text(rng),
        patient_issuer=random_text(rng, 2),
        patient_name=random_name(rng),
        ris_application=random_text(rng, 6),
        ris_facility=random_text(rng, 6),
        hl7_charset=rng.choice(("", "8859/1", "UNICODE UTF-8")),
    )


def random_reference(rng: random.Random) -> StepReference:
    return StepReference(
        study_uid=random_text(rng),
        sps_id=random_text(rng),
        requested_procedure_id=rng.choice(("RP-1", random_text(rng))),
        accession=random_text(rng),
        placer_number=random_text(rng),
        filler_number=random_text(rng),
    )


def random_step(rng: random.Random) -> PerformedStep:
    step = rng.choice(STEPS)()
    codes = [json_code_item(*(random_text(rng) for _ in range(3)))] if rng.random() < 0.5 else []
    tag = element_of("ProcedureCodeSequence")[0]
    references = tuple(random_reference(rng) for _ in range(rng.randint(0, 2)))
    return replace(
        step,
        dataset={**step.dataset, tag: {"vr": "SQ", "Value": codes}},
        references=references or step.references,
        performed_station_ae=random_text(rng),
        modality=random_text(rng, 2),
        start_date=rng.choice(DATES),
        start_time=rng.choice(TIMES),
        end_date=rng.choice(DATES),
        end_time=rng.choice(TIMES),
    )


@pytest.mark.parametrize(
    ("message_type", "version"), DIFFERENTIAL, ids=[f"{t} v{v}" for t, v in DIFFERENTIAL]
)
def test_writer_matches_hl7apy_byte_for_byte(message_type: MessageType, version: str) -> None:
    rng = random.Random(f"{message_type} {version}")
    for case in range(CASES):
        step, order = random_step(rng), random_order(rng)
        control_id, application, facility = (random_text(rng, 2) for _ in range(3))
        expected = reference(
            step,
            order,
            message_type,
            version,
            control_id=control_id,
            application=application,
            facility=facility,
        )
        written = status_message(
            step,
            order,
            message_type=message_type,
            version=version,
            control_id=control_id,
            now=NOW,
            application=application,
            facility=facility,
        )
        assert written == expected, f"case {case}: {order!r} {step!r}"
