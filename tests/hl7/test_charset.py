"""MSH-18 → codec / DICOM term and the decoding fallback (standards.md §5)."""

from __future__ import annotations

import codecs
import random

import pytest

from hl7.charset import (
    ASCII,
    CHARSETS,
    UTF8_BOM,
    Decoded,
    decode_text,
    dicom_term,
    lookup,
    python_codec,
)

TABLE_0211 = [
    ("", "ascii", ""),
    ("ASCII", "ascii", ""),
    ("ISO IR6", "ascii", ""),
    ("8859/1", "iso8859_1", "ISO_IR 100"),
    ("8859/2", "iso8859_2", "ISO_IR 101"),
    ("8859/3", "iso8859_3", "ISO_IR 109"),
    ("8859/4", "iso8859_4", "ISO_IR 110"),
    ("8859/5", "iso8859_5", "ISO_IR 144"),
    ("8859/6", "iso8859_6", "ISO_IR 127"),
    ("8859/7", "iso8859_7", "ISO_IR 126"),
    ("8859/8", "iso8859_8", "ISO_IR 138"),
    ("8859/9", "iso8859_9", "ISO_IR 148"),
    ("8859/15", "iso8859_15", "ISO_IR 192"),
    ("UNICODE UTF-8", "utf-8", "ISO_IR 192"),
    ("UNICODE", "utf-8", "ISO_IR 192"),
    ("ISO IR14", "shift_jis", "ISO_IR 13"),
    ("ISO IR87", "iso2022_jp", "ISO 2022 IR 87"),
    ("ISO IR159", "iso2022_jp_2", "ISO 2022 IR 159"),
    ("KS X 1001", "euc_kr", "ISO 2022 IR 149"),
    ("GB 18030-2000", "gb18030", "GB18030"),
]


@pytest.mark.parametrize(("term", "codec", "dicom"), TABLE_0211)
def test_table_0211_rows(term: str, codec: str, dicom: str) -> None:
    row = lookup(term)
    assert row is not None
    assert (row.codec, row.dicom) == (codec, dicom)
    assert python_codec(term) == codec
    assert dicom_term(term) == dicom


def test_every_codec_exists() -> None:
    for row in CHARSETS.values():
        codecs.lookup(row.codec)


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        (" 8859/1 ", "8859/1"),
        ("unicode  utf-8", "UNICODE UTF-8"),
        ("UTF-8", "UNICODE UTF-8"),
        ("utf8", "UNICODE UTF-8"),
        ("ISO-8859-15", "8859/15"),
        ("iso8859-1", "8859/1"),
        ("8859-2", "8859/2"),
    ],
)
def test_aliases_and_spelling(term: str, expected: str) -> None:
    assert lookup(term) == CHARSETS[expected]


@pytest.mark.parametrize("term", ["KLINGON", "8859/99", "UNICODE UTF-16", "CNS 11643-1992"])
def test_unknown_terms(term: str) -> None:
    assert lookup(term) is None
    assert python_codec(term) == "ascii"
    assert dicom_term(term) == ""


def test_empty_is_ascii() -> None:
    assert lookup("  ") is ASCII


# --- decode_text: one case per rule of the module docstring ---------------------------------

UTF8_AE = "Bär".encode()
LATIN1_AE = "Bär".encode("latin-1")

DECODE_CASES = [
    # rule 1: BOM
    (UTF8_BOM + UTF8_AE, "", Decoded("Bär", "utf-8", "", False)),
    (UTF8_BOM + UTF8_AE, "UNICODE UTF-8", Decoded("Bär", "utf-8", "UNICODE UTF-8", False)),
    (UTF8_BOM + UTF8_AE, "8859/1", Decoded("Bär", "utf-8", "8859/1", True)),
    (UTF8_BOM + LATIN1_AE, "", Decoded("Bär", "latin-1", "", True)),
    # rule 2: unknown value → undeclared, mismatch
    (UTF8_AE, "KLINGON", Decoded("Bär", "utf-8", "KLINGON", True)),
    (LATIN1_AE, "KLINGON", Decoded("Bär", "latin-1", "KLINGON", True)),
    (b"Bar", "KLINGON", Decoded("Bar", "ascii", "KLINGON", True)),
    # rule 3a: declared UTF-8
    (UTF8_AE, "UNICODE UTF-8", Decoded("Bär", "utf-8", "UNICODE UTF-8", False)),
    (LATIN1_AE, "UNICODE UTF-8", Decoded("Bär", "latin-1", "UNICODE UTF-8", True)),
    # rule 3b: declared single-byte
    (LATIN1_AE, "8859/1", Decoded("Bär", "iso8859_1", "8859/1", False)),
    (UTF8_AE, "8859/1", Decoded("Bär", "utf-8", "8859/1", True)),
    (b"Bar", "8859/1", Decoded("Bar", "iso8859_1", "8859/1", False)),
    ("€".encode("iso8859_15"), "8859/15", Decoded("€", "iso8859_15", "8859/15", False)),
    (LATIN1_AE, "ASCII", Decoded("Bär", "latin-1", "ASCII", True)),
    (b"x\xa1", "8859/6", Decoded("x\ufffd", "iso8859_6", "8859/6", True)),
    # rule 3c: declared multi-byte sets
    ("中文".encode("gb18030"), "GB 18030-2000", Decoded("中文", "gb18030", "GB 18030-2000", False)),
    ("日本".encode("iso2022_jp"), "ISO IR87", Decoded("日本", "iso2022_jp", "ISO IR87", False)),
    ("한국".encode("euc_kr"), "KS X 1001", Decoded("한국", "euc_kr", "KS X 1001", False)),
    ("ｱｲ".encode("shift_jis"), "ISO IR14", Decoded("ｱｲ", "shift_jis", "ISO IR14", False)),
    # ... UTF-8 only when the declared codec fails (UTF-8 "ä" is valid EUC-KR, "€" is not)
    ("5 €".encode(), "KS X 1001", Decoded("5 €", "utf-8", "KS X 1001", True)),
    (b"\xff\xfe", "KS X 1001", Decoded("\xff\xfe", "latin-1", "KS X 1001", True)),
    # rule 4: undeclared
    (b"Bar", "", Decoded("Bar", "ascii", "", False)),
    (UTF8_AE, "", Decoded("Bär", "utf-8", "", False)),
    (LATIN1_AE, "", Decoded("Bär", "latin-1", "", False)),
]


@pytest.mark.parametrize(("raw", "declared", "expected"), DECODE_CASES)
def test_decode_text_rules(raw: bytes, declared: str, expected: Decoded) -> None:
    assert decode_text(raw, declared) == expected


def test_fallback_codec_is_configurable() -> None:
    raw = "Ωμέγα".encode("iso8859_7")
    assert decode_text(raw, "", "iso8859_7") == Decoded("Ωμέγα", "iso8859_7", "", False)


def test_unknown_fallback_codec_uses_latin1() -> None:
    decoded = decode_text(LATIN1_AE, "", "no-such-codec")
    assert (decoded.text, decoded.codec) == ("Bär", "latin-1")


def test_fallback_that_cannot_decode_replaces_and_flags() -> None:
    decoded = decode_text(LATIN1_AE, "", "ascii")
    assert decoded == Decoded("B\ufffdr", "ascii", "", True)


def test_declared_value_is_stripped() -> None:
    assert decode_text(LATIN1_AE, " 8859/1 ").declared == "8859/1"


@pytest.mark.parametrize("declared", [row[0] for row in TABLE_0211] + ["KLINGON"])
def test_decode_text_never_raises(declared: str) -> None:
    rng = random.Random(declared)
    for _ in range(200):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        decoded = decode_text(raw, declared)
        assert isinstance(decoded.text, str)
