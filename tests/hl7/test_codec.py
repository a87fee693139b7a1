"""ER7 decoding, table-driven from the sample files (tests/data/hl7, SOURCES.md)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from hl7 import fields
from hl7.charset import UTF8_BOM
from hl7.codec import NULL, Field, Header, Message, decode, read_header
from hl7.errors import ErrorCode, MessageError
from hl7.escape import Delimiters, escape, unescape

SAMPLES = Path(__file__).parents[1] / "data" / "hl7"
SAMPLE_FILES = sorted(SAMPLES.glob("*.hl7"))


def sample(prefix: str) -> bytes:
    (path,) = SAMPLES.glob(f"{prefix}_*.hl7")
    return path.read_bytes()


def structure(message: Message) -> list[Any]:
    """Everything the decoder produced, for comparing two decodings."""
    return [
        (s.name, s.sequence, s.position, [s.field(n).repetitions for n in range(1, 60)])
        for s in message.segments
    ]


def msg(
    *segments: str, msh: str = "MSH|^~\\&|APP|FAC|BRK|HOSP|20240101||ORM^O01|C1|P|2.5.1"
) -> bytes:
    return "\r".join((msh, *segments)).encode()


# --- samples ----------------------------------------------------------------------------------

HEADERS = {
    "01": ("ORM^O01", "103106", "2.3.1", "", "PID PV1 ORC OBR ZDS"),
    "02": ("OMI^O23", "100112", "2.5.1", "", "PID PV1 ORC TQ1 OBR IPC OBX OBX"),
    "03": (
        "OMI^O23^OMI_O23",
        "1001125",
        "2.5.1",
        "8859/1",
        "PID NTE PV1 ORC TQ1 OBR OBX OBX NTE IPC",
    ),
    "05": (
        "OMG^O19^OMG_O19",
        "1001124",
        "2.5.1",
        "8859/1",
        "PID NTE PV1 ORC TQ1 OBR OBX OBX NTE ZDS",
    ),
    "06": ("ADT^A08", "100212", "2.5.1", "", "EVN PID PV1"),
    "07": ("ADT^A40^ADT_A39", "1002122", "2.5.1", "8859/1", "PID NTE MRG"),
    "10": ("ORM^O01", "269539", "2.3.1", "", "PID PV1 ORC OBR OBX OBX"),
    "11": ("ORM^O01", "03139638", "2.3.1", "8859/1", "PID ORC OBR ZDS"),
    "12": (
        "ORM^O01^ORM_O01",
        "6af22cb1-38af-4dc7-93d5-83e749394237",
        "2.3.1",
        "8859/15",
        "PID PV1 ORC OBR ZDS",
    ),
    "14": ("ORM^O01", "20231109114936-111717488", "2.3.1", "", "PID PV1 ORC OBR OBX ZDS"),
    "16": ("ORM^O01^ORM_O01", "20250130152802966", "2.5", "", "PID ORC OBR"),
    "19": ("ORM^O01", "1000000001", "2.5.0", "", "PID ORC OBR"),
}
SENDERS = {
    "01": ("MESA_OF", "XYZ_RADIOLOGY"),
    "10": ("myhospital.org", "myhospital.org"),
    "12": ("ECSIMAGING", "CORADIX"),
    "16": ("Institut Ste Catherine", "Institut Ste Catherine"),
}


def test_every_sample_has_a_header_row() -> None:
    assert sorted(p.name[:2] for p in SAMPLE_FILES) == sorted(HEADERS)


@pytest.mark.parametrize("prefix", sorted(HEADERS))
def test_sample_header_and_segments(prefix: str) -> None:
    message_type, control, version, charset, names = HEADERS[prefix]
    message = decode(sample(prefix))
    h = message.header
    assert "^".join((h.message_type, h.trigger_event, h.message_structure)).rstrip("^") == (
        message_type
    )
    assert (h.control_id, h.version, h.charset) == (control, version, charset)
    assert (h.field_separator, h.encoding_characters, h.processing_id) == ("|", "^~\\&", "P")
    assert [s.name for s in message.segments] == ["MSH", *names.split()]
    assert [s.position for s in message.segments] == list(range(len(message.segments)))
    if prefix in SENDERS:
        assert h.sender == SENDERS[prefix]


def test_header_details() -> None:
    h = decode(sample("10")).header
    assert (h.receiving_application, h.receiving_facility) == ("", "")
    assert h.timestamp == "2017-04-25 07:31:13.123456"
    h = decode(sample("03")).header
    assert (h.receiving_application, h.receiving_facility) == ("MESA_IM", "XYZ_IMAGE_MANAGER")
    assert h.timestamp == "20220324193155"
    assert decode(sample("16")).header.accept_ack_type == "AL"
    assert decode(sample("01")).header.charset == ""  # MSH-18 is a single space


@pytest.mark.parametrize(
    ("version", "expected"),
    [("2.5.0", (2, 5, 0)), ("2.3.1", (2, 3, 1)), ("2.5", (2, 5)), ("", ()), ("2.x", ())],
)
def test_version_tuple(version: str, expected: tuple[int, ...]) -> None:
    assert Header(version=version).version_tuple == expected


def test_segment_access() -> None:
    message = decode(sample("02"))
    obx = message.all("OBX")
    assert [(s.sequence, s.position) for s in obx] == [(1, 7), (2, 8)]
    assert message.first("OBX") is obx[0]
    assert message.first("NTE") is None and message.all("NTE") == ()
    msh = message.segments[0]
    assert (msh.raw(1), msh.raw(2), msh.raw(9), msh.raw(10)) == ("|", "^~\\&", "OMI^O23", "100112")
    assert msh.value(1) == "|" and msh.value(2) == "^~\\&"
    assert msh.raw(400) == "" and msh.raw(0) == "" and msh.field(400).is_empty
    ipc = message.first("IPC")
    assert ipc is not None
    assert ipc.value(6, 2) == "ProtocolMeaning" and ipc.value(6, comp=3) == "ProtocolScheme"
    assert message.text.split("\r")[0].startswith("MSH|^~\\&|MESA_OF")


def test_field_shape() -> None:
    pid = decode(sample("16")).first("PID")
    assert pid is not None
    ids = pid.field(3)
    assert len(ids.repetitions) == 2
    assert ids.get(2, 4, 2) == "1.2.250.1.213.1.4.8"
    assert ids.get(2, 4) == "ASIP-SANTE-INS-NIR"
    assert ids.components(1) == ("202303295", "", "", "icap84.org", "PI")
    assert ids.get(3) == "" and ids.get(1, 9) == "" and ids.get(1, 4, 9) == "" and ids.get(0) == ""
    assert pid.value(5, 7, rep=2) == "L"


def test_z_segment_fields() -> None:
    zds = decode(sample("01")).first("ZDS")
    assert zds is not None
    assert zds.field(1).components() == ("1.113654.3.13.1026", "100", "Application", "DICOM")


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name[:2])
def test_hl7apy_and_splitting_agree(path: Path) -> None:
    message = decode(path.read_bytes())
    library = fields.library_version(message.header.version)
    assert library is not None
    d = message.header.delimiters
    for segment in message.segments:
        for n in range(3 if segment.name == "MSH" else 1, len(segment.text.split("|")) + 1):
            raw, name = segment.raw(n), f"{segment.name}_{n}"
            split = fields._split_reps(raw, d)
            if raw and not segment.name.startswith("Z"):
                try:
                    parsed = fields._hl7apy_reps(raw, name, library, d)
                except LookupError:  # a field hl7apy's library does not define
                    continue
                assert parsed == split, name


@pytest.mark.parametrize(
    ("name", "text", "version"),
    [
        ("PID_5", "DOE^^^X^ ^^L~ ^A", "2.5.1"),
        ("PID_3", "^^&b&&d^", "2.5"),
        ("OBR_34", "a&&c^20170101", "2.3.1"),
        ("PID_5", "a^b^c^d^e^f^g^h^i^j^k^l^m^n^^^q", "2.5"),
        ("PID_8", 'abc^""^^x', "2.5"),
        ("OBX_5", "x^ ^y&&z", "2.5.1"),
        ("OBX_1", "01", "2.5"),
        ("PID_7", "20170505111800.12345+0100^x", "2.5"),
    ],
)
def test_hl7apy_and_splitting_agree_on_awkward_fields(name: str, text: str, version: str) -> None:
    d = Delimiters()
    assert fields._hl7apy_reps(text, name, version, d) == fields._split_reps(text, d)


def test_hl7apy_parses_each_field_layout_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = fields.parse_field

    def counting(text: str, **kwargs: Any) -> Any:
        calls.append(kwargs["name"])
        return real(text, **kwargs)

    monkeypatch.setattr(fields, "parse_field", counting)
    monkeypatch.setattr(fields, "_LAYOUTS", {})
    fields.parse.cache_clear()
    for name in ("DOE^JOHN", "ROE^JANE", "DOE^JOHN"):  # one layout: x^x
        pid = decode(msg(f"PID|1||123^^^HOSP||{name}")).first("PID")
        assert pid is not None and pid.value(5, 1) == name.split("^")[0]
    assert calls == ["PID_5"]
    pid = decode(msg("PID|1||123^^^HOSP||DOE^JOHN^^^DR")).first("PID")  # a new layout
    assert pid is not None and pid.value(5, 5) == "DR"
    assert calls == ["PID_5", "PID_5"]
    lone = decode(msg("PID|1||123")).first("PID")  # a lone value is not given to hl7apy
    assert lone is not None and lone.value(3) == "123"
    assert calls == ["PID_5", "PID_5"]


def test_layout_replaces_values_by_placeholders() -> None:
    d = Delimiters()
    assert fields.layout("DOE^JOHN^^ ^DR~X&Y", d) == "x^x^^ ^x~x&x"


def test_typed_leaves_keep_the_sender_text() -> None:
    obx = decode(msg("OBX|01|NM|^Body Weight||065.50|kg")).first("OBX")
    assert obx is not None
    assert (obx.value(1), obx.value(5)) == ("01", "065.50")


def test_versions_hl7apy_lacks_fall_back_to_splitting() -> None:
    raw = msg("PID|1||123||DOE^JOHN", msh="MSH|^~\\&|A|B|C|D|||ORM^O01|1|P|9.9")
    pid = decode(raw).first("PID")
    assert pid is not None and pid.value(5, 2) == "JOHN"
    assert fields.library_version("2.5.0") == "2.5"
    assert fields.library_version("2.7.1") == "2.7"
    assert fields.library_version("9.9") is None


# --- framing, separators, BOM, embedded line breaks -------------------------------------------


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name[:2])
@pytest.mark.parametrize("separator", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
def test_segment_separators_give_equal_results(path: Path, separator: bytes) -> None:
    raw = path.read_bytes()
    canonical = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    reference = decode(canonical)
    other = decode(canonical.replace(b"\r", separator))
    assert other.header == reference.header
    assert structure(other) == structure(reference)
    assert other.text == reference.text


def test_mllp_bytes_bom_and_whitespace_are_stripped() -> None:
    raw = sample("01")
    reference = decode(raw)
    for wrapped in (
        b"\x0b" + raw + b"\x1c\r",
        UTF8_BOM + raw,
        b"\x0b" + UTF8_BOM + raw + b"\r\n\r\n",
    ):
        message = decode(wrapped)
        assert structure(message) == structure(reference)
        assert message.header == reference.header


def test_bom_sample_19() -> None:
    message = decode(sample("19"))
    assert message.segments[0].name == "MSH"
    assert not message.text.startswith("\ufeff")
    assert (message.charset.codec, message.charset.mismatch) == ("utf-8", False)
    obr = message.first("OBR")
    assert obr is not None and obr.value(4) == "ä"


def test_embedded_line_break_joins_previous_segment() -> None:
    raw = msg("NTE|1||first line", "second line", "", "third", "OBR|1||X")
    message = decode(raw)
    assert [s.name for s in message.segments] == ["MSH", "NTE", "OBR"]
    nte = message.first("NTE")
    assert nte is not None and nte.value(3) == "first line\nsecond line\nthird"
    assert decode(raw.replace(b"\r", b"\r\n")).first("NTE") is not None


def test_segment_without_fields_and_lowercase_lines() -> None:
    message = decode(msg("PID|1", "ZZZ", "obr|1"))
    assert [s.name for s in message.segments] == ["MSH", "PID", "ZZZ"]
    zzz = message.first("ZZZ")
    assert zzz is not None and zzz.text == "ZZZ\nobr|1"


# --- escapes and nulls ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", "a|b^c&d~e\\f"),
        ("line 1\\.br\\line 2", "line 1\r\nline 2"),
        ("a\\X0D\\\\X0A\\b", "a\r\nb"),
        ("a\\X0D0A\\b", "a\r\nb"),
        ("\\H\\bold\\N\\ text", "bold text"),
        ("B\\XC3A4\\r", "Bär"),
        ("odd \\X123\\ kept", "odd \\X123\\ kept"),
        ("unknown \\Z99\\ kept", "unknown \\Z99\\ kept"),
        ("C:\\temp\\file", "C:\\temp\\file"),
        ("unterminated \\F", "unterminated \\F"),
        ("\\.sp\\", "\\.sp\\"),
    ],
)
def test_unescape(escaped: str, text: str) -> None:
    assert unescape(escaped, codec="utf-8") == text


def test_hex_escape_uses_the_message_codec() -> None:
    assert unescape("\\XE9\\", codec="iso8859_1") == "é"
    assert unescape("\\XA4\\", codec="iso8859_15") == "€"
    assert unescape("\\XC3A9\\", codec="ascii") == "é"  # not ASCII: UTF-8, then Latin-1
    assert unescape("\\XE9\\", codec="ascii") == "é"


def test_escapes_inside_fields() -> None:
    raw = msg("NTE|1||Dose 5\\S\\10 mg \\T\\ note\\.br\\next^B\\XC3A4\\r&x\\F\\y")
    nte = decode(raw).first("NTE")
    assert nte is not None
    assert nte.value(3) == "Dose 5^10 mg & note\r\nnext"
    assert nte.value(3, 2) == "Bär" and nte.value(3, 2, 2) == "x|y"
    assert nte.raw(3).startswith("Dose 5\\S\\10")


@pytest.mark.parametrize(
    "text", ["a|b^c&d~e\\f", "line 1\r\nline 2", "cr\ronly", "lf\nonly", "Bär €", ""]
)
def test_escape_round_trip(text: str) -> None:
    assert unescape(escape(text), codec="utf-8") == text


def test_escape_output() -> None:
    assert escape("a|b^c&d~e\\f\r\ng") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g"
    assert escape("a|b", "@#$%", field_separator="!") == "a|b"
    assert escape("a!b@c$", "@#$%", field_separator="!") == "a$F$b$S$c$E$"


def test_custom_separators() -> None:
    raw = b"MSH!@#$%!APP!FAC!!!!!ORM@O01!C9!P!2.5.1\rPID!1!!123@@@H!!DOE@JO$F$HN#DOE@J"
    message = decode(raw)
    assert message.header.encoding_characters == "@#$%"
    assert message.header.delimiters == Delimiters("!", "@", "#", "$", "%")
    pid = message.first("PID")
    assert pid is not None
    assert pid.value(5, 2) == "JO!HN" and pid.value(5, 2, rep=2) == "J"
    assert pid.value(3, 4) == "H"


def test_truncation_character_v27() -> None:
    raw = b"MSH|^~\\&#|A|B|C|D|||ORM^O01|1|P|2.7\rNTE|1||50\\P\\ off"
    message = decode(raw)
    assert message.header.encoding_characters == "^~\\&#"
    nte = message.first("NTE")
    assert nte is not None and nte.value(3) == "50# off"


def test_explicit_null() -> None:
    pid = decode(msg('PID|1||123||DOE^""|||""')).first("PID")
    assert pid is not None
    sex = pid.field(8)
    assert sex.is_null and not sex.is_empty and sex.get() == NULL == Field.NULL == '""'
    assert pid.value(5, 2) == NULL and not pid.field(5).is_null
    assert pid.field(9).is_empty and not pid.field(9).is_null


def test_whitespace_only_values_are_empty() -> None:
    pid = decode(msg("PID|1|| ||DOE^ ^X")).first("PID")
    assert pid is not None
    assert pid.field(3).is_empty
    assert pid.field(5).components() == ("DOE", "", "X")


# --- charsets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "where", "expected", "charset"),
    [
        ("03", "OBR-31.2", "motor score from 12 –35.,comorbidity", ("utf-8", True)),
        ("10", "PID-5.1", "VANILLÉ", ("latin-1", False)),
        ("10", "OBR-4.2", "3 TERRITOIRES ANATOMIQUES OU PLUS AVEC INJECTION é", ("latin-1", False)),
        ("11", "OBR-4.2", "CT cérébral", ("iso8859_1", False)),
        ("12", "PID-5.1", "LLOxxx", ("iso8859_15", False)),
        ("19", "OBR-4.1", "ä", ("utf-8", False)),
    ],
)
def test_sample_charsets(prefix: str, where: str, expected: str, charset: tuple[str, bool]) -> None:
    message = decode(sample(prefix))
    name, n, comp = where.replace("-", ".").split(".")
    found = message.first(name)
    assert found is not None
    assert expected in found.value(int(n), int(comp))
    assert (message.charset.codec, message.charset.mismatch) == charset


def test_8859_15_euro_sign() -> None:
    raw = sample("12").replace(b"LLOxxx^Simxxx^^^^^D", b"LLO\xa4^Simxxx^^^^^D")
    pid = decode(raw).first("PID")
    assert pid is not None and pid.value(5) == "LLO€"


def test_fallback_charset_and_stub_alias() -> None:
    raw = msg("PID|1||1||NAME").replace(b"NAME", b"\xc4\xe5")  # no MSH-18, not UTF-8
    latin = decode(raw).first("PID")
    assert latin is not None and latin.value(5) == "Äå"
    greek = decode(raw, fallback_charset="iso8859_7").first("PID")
    assert greek is not None and greek.value(5) == "Δε"
    alias = decode(raw, default_charset="iso8859_7").first("PID")
    assert alias is not None and alias.value(5) == "Δε"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x0b\x1c\r",
        b"   \r\n",
        UTF8_BOM,
        b"garbage",
        b"PID|1||123",
        b"MSH",
        b"MSH ^~\\&|",
        b"MSHA^~\\&|",
        b"MSH|^~",
        b"MSH|^^\\&|A",
        b"MSH|^~\\&&|A",
        b"MSH|^~\\|&|A",
        b"MSH|^~\\&abc|",
        b"\rPID|1\rMSH|^~\\&|",
        "MSH|^~\\&|A".encode("utf-16"),
    ],
)
def test_bad_input_raises_message_error(raw: bytes) -> None:
    with pytest.raises(MessageError) as info:
        decode(raw)
    codes = {detail.code for detail in info.value.details}
    assert codes <= {ErrorCode.SEGMENT_SEQUENCE, ErrorCode.DATA_TYPE}
    assert all(d.location is not None and d.location.segment == "MSH" for d in info.value.details)


def test_non_bytes_input_is_a_message_error() -> None:
    with pytest.raises(MessageError):
        decode("MSH|^~\\&|A")  # type: ignore[arg-type]


def test_random_bytes_raise_only_message_error() -> None:
    rng = random.Random(7)
    base = sample("01")
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            message = decode(bytes(data))
        except MessageError:
            continue
        for segment in message.segments:
            for n in range(1, 30):
                segment.field(n)


# --- read_header --------------------------------------------------------------------------------


def test_read_header_matches_decode() -> None:
    for path in SAMPLE_FILES:
        raw = path.read_bytes()
        assert read_header(raw) == decode(raw).header


def test_read_header_truncated_and_framed() -> None:
    raw = b"\x0b" + sample("11")[:66]  # cut inside MSH-11
    header = read_header(raw)
    assert header is not None
    assert (header.sending_application, header.message_type, header.control_id) == (
        "QDOC",
        "ORM",
        "03139638",
    )
    assert (header.processing_id, header.version) == ("P", "")
    assert read_header(b"\x00junk" + sample("01")[:60]) is not None


@pytest.mark.parametrize("raw", [b"", b"garbage", b"MSH", b"MSH|^~", b"\xff" * 5000])
def test_read_header_returns_none(raw: bytes) -> None:
    assert read_header(raw) is None


def test_read_header_never_raises() -> None:
    rng = random.Random(3)
    for _ in range(300):
        read_header(bytes(rng.randrange(256) for _ in range(rng.randrange(80))))
    assert read_header(None) is None  # type: ignore[arg-type]
