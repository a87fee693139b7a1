"""Original-mode ACKs (standards.md §2.4): shapes per version, ERR encodings, round trips."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hl7 import fields
from hl7.ack import AckReply, build_ack, read_ack
from hl7.codec import Header, decode, read_header
from hl7.errors import AckCode, ErrorCode, ErrorDetail, ErrorLocation, MessageError

SAMPLES = Path(__file__).parents[1] / "data" / "hl7"
WHEN = datetime(2024, 1, 2, 3, 4, 5)


def header(prefix: str) -> Header:
    (path,) = SAMPLES.glob(f"{prefix}_*.hl7")
    return decode(path.read_bytes()).header


def ack(head: Header | None, code: AckCode = AckCode.ACCEPT, **kwargs: Any) -> str:
    raw = build_ack(head, code, control_id="ACK1", timestamp=WHEN, **kwargs)
    return raw.decode(kwargs.get("codec", "ascii"))


MISSING_PID3 = ErrorDetail(
    ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 missing", ErrorLocation("PID", 1, 3)
)


def test_v231_accept() -> None:
    assert ack(header("01")) == (
        "MSH|^~\\&|MESA_IM|XYZ_IMAGE_MANAGER|MESA_OF|XYZ_RADIOLOGY|20240102030405||ACK^O01|ACK1"
        "|P|2.3.1\rMSA|AA|103106"
    )


def test_v251_error_with_err() -> None:
    text = ack(header("03"), AckCode.ERROR, details=[MISSING_PID3], text="rejected")
    assert text.split("\r") == [
        "MSH|^~\\&|MESA_IM|XYZ_IMAGE_MANAGER|MESA_OF|XYZ_RADIOLOGY|20240102030405||ACK^O23^ACK"
        "|ACK1|P|2.5.1||||||8859/1",
        "MSA|AE|1001125|rejected",
        "ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 missing",
    ]


def test_v231_err_is_eld_in_err1() -> None:
    details = [
        ErrorDetail(ErrorCode.REQUIRED_FIELD_MISSING, "no Study UID", ErrorLocation("ZDS", 1, 1)),
        ErrorDetail(ErrorCode.INTERNAL_ERROR, ""),
    ]
    segments = ack(header("01"), AckCode.ERROR, details=details).split("\r")
    assert segments[2:] == [
        "ERR|ZDS^1^1^101&no Study UID&HL70357",
        "ERR|^^^207&Application internal error&HL70357",
    ]


def test_v251_err_full_location_and_severity() -> None:
    where = ErrorLocation("OBR", 2, 4, repetition=1, component=2, subcomponent=1)
    details = [
        ErrorDetail(ErrorCode.DATA_TYPE, "bad date", where, severity="W"),
        ErrorDetail(ErrorCode.UNSUPPORTED_EVENT, "O99 & co"),
    ]
    segments = ack(header("02"), AckCode.REJECT, details=details).split("\r")
    assert segments[2:] == [
        "ERR||OBR^2^4^1^2^1|102^Data type error^HL70357|W||||bad date",
        "ERR|||201^Unsupported event code^HL70357|E||||O99 \\T\\ co",
    ]


@pytest.mark.parametrize(
    ("version", "message_type", "err"),
    [
        ("2.3", "ACK^O01", "ERR|PID^1^3^101&PID-3 missing&HL70357"),
        ("2.3.1", "ACK^O01", "ERR|PID^1^3^101&PID-3 missing&HL70357"),
        ("2.4", "ACK^O01^ACK", "ERR|PID^1^3^101&PID-3 missing&HL70357"),
        (
            "2.5",
            "ACK^O01^ACK",
            "ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 missing",
        ),
        (
            "2.5.0",
            "ACK^O01^ACK",
            "ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 missing",
        ),
        (
            "2.8",
            "ACK^O01^ACK",
            "ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 missing",
        ),
        (
            "junk",
            "ACK^O01^ACK",
            "ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 missing",
        ),
    ],
)
def test_shape_follows_version(version: str, message_type: str, err: str) -> None:
    inbound = Header(trigger_event="O01", version=version, control_id="9")
    msh, _msa, err_segment = ack(inbound, AckCode.ERROR, details=[MISSING_PID3]).split("\r")
    assert msh.split("|")[8] == message_type
    assert msh.split("|")[11] == version
    assert err_segment == err


def test_sender_and_receiver_are_swapped() -> None:
    reply = read_ack(build_ack(header("11"), AckCode.ACCEPT, control_id="A9", timestamp=WHEN))
    assert (reply.header.sending_application, reply.header.sending_facility) == ("AGFA", "AGFA")
    assert reply.header.receiving_application == "QDOC"
    assert reply.header.receiving_facility == "HL7V1.1"


def test_our_names_when_inbound_msh5_msh6_are_empty() -> None:
    msh = ack(header("10"), facility="RAD|1").split("\r")[0]
    fields = msh.split("|")
    assert fields[2:6] == ["MWLBROKER", "RAD\\F\\1", "myhospital.org", "myhospital.org"]


def test_no_header_uses_standard_separators_and_defaults() -> None:
    text = ack(None, AckCode.REJECT, details=[MISSING_PID3], text="unreadable")
    assert text.split("\r") == [
        "MSH|^~\\&|MWLBROKER||||20240102030405||ACK^^ACK|ACK1|P|2.5.1",
        "MSA|AR||unreadable",
        "ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 missing",
    ]


def test_header_from_read_header_addresses_the_ack() -> None:
    (path,) = SAMPLES.glob("12_*.hl7")
    head = read_header(path.read_bytes()[:4096])
    msa = ack(head, AckCode.REJECT).split("\r")[1]
    assert msa == "MSA|AR|6af22cb1-38af-4dc7-93d5-83e749394237"


def test_text_and_ids_are_escaped() -> None:
    text = ack(header("01"), AckCode.ERROR, text="bad|value^x&y~z\\w")
    assert text.split("\r")[1] == "MSA|AE|103106|bad\\F\\value\\S\\x\\T\\y\\R\\z\\E\\w"
    msh = build_ack(None, AckCode.ACCEPT, control_id="a|b", timestamp=WHEN).decode()
    assert msh.split("\r")[0].endswith("|a\\F\\b|P|2.5.1")


def test_inbound_separators_are_reused() -> None:
    inbound = decode(b"MSH!@#$%!APP!FAC!BRK!HOSP!!!ORM@O01!C9!P!2.3.1").header
    text = ack(inbound, AckCode.ERROR, text="a!b@c", details=[MISSING_PID3])
    assert text.split("\r") == [
        "MSH!@#$%!BRK!HOSP!APP!FAC!20240102030405!!ACK@O01!ACK1!P!2.3.1",
        "MSA!AE!C9!a$F$b$S$c",
        "ERR!PID@1@3@101%PID-3 missing%HL70357",
    ]
    reply = read_ack(text.encode())
    assert (reply.control_id, reply.text) == ("C9", "a!b@c")


def test_round_trip_through_read_ack() -> None:
    raw = build_ack(
        header("03"),
        AckCode.ERROR,
        control_id="ACK7",
        timestamp=WHEN,
        details=[MISSING_PID3, ErrorDetail(ErrorCode.UNKNOWN_KEY, "no such order")],
        text="see ERR",
    )
    reply = read_ack(b"\x0b" + raw + b"\x1c\r")
    assert reply == AckReply(
        code="AE",
        control_id="1001125",
        text="see ERR",
        errors=(
            "PID-3: 101 Required field missing (PID-3 missing)",
            "204 Unknown key identifier (no such order)",
        ),
        header=reply.header,
    )
    assert (reply.header.message_type, reply.header.control_id) == ("ACK", "ACK7")


def test_read_ack_of_v231_err() -> None:
    raw = build_ack(
        header("01"), AckCode.ERROR, control_id="X", timestamp=WHEN, details=[MISSING_PID3]
    )
    assert read_ack(raw).errors == ("PID-3: 101 PID-3 missing",)


def test_latin1_echo() -> None:
    inbound = header("11")
    raw = build_ack(
        inbound, AckCode.ERROR, control_id="X", timestamp=WHEN, text="données", codec="iso8859_1"
    )
    assert b"donn\xe9es" in raw
    assert raw.split(b"\r")[0].endswith(b"|8859/1")
    reply = read_ack(raw)
    assert (reply.text, reply.header.charset) == ("données", "8859/1")
    ascii_ack = build_ack(inbound, AckCode.ERROR, control_id="X", timestamp=WHEN, text="données")
    assert b"donn?es" in ascii_ack


def test_unknown_codec_falls_back_to_ascii() -> None:
    raw = build_ack(None, AckCode.ACCEPT, control_id="X", timestamp=WHEN, text="é", codec="nope")
    assert raw.endswith(b"MSA|AA||?")


def test_build_ack_does_not_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("hl7apy used")

    monkeypatch.setattr(fields, "parse_field", fail)
    build_ack(header("03"), AckCode.ERROR, control_id="X", timestamp=WHEN, details=[MISSING_PID3])


@pytest.mark.parametrize(
    "payload", [b"", b"garbage", b"MSH|^~\\&|A|B|C|D|||ORM^O01|1|P|2.5\rPID|1"]
)
def test_read_ack_rejects_non_acks(payload: bytes) -> None:
    with pytest.raises(MessageError):
        read_ack(payload)
