"""Pure helpers behind the stored columns: PN folding, attribute merge, start date-time."""

from __future__ import annotations

import pytest

from broker.store.attributes import column_value, element_text, merge_attributes, start_datetime
from mwl.pn import fold_person_name
from tests.broker.store.samples import element, pn


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("Müller^Hans", "MULLER^HANS"),
        ("muller^hans", "MULLER^HANS"),
        ("MÜLLER^HANS", "MULLER^HANS"),
        ("Straße^Jürgen", "STRASSE^JURGEN"),
        ("Dvořák^Antonín", "DVORAK^ANTONIN"),
        ("Ｙａｍａｄａ^Ｔａｒｏ", "YAMADA^TARO"),  # full-width forms (NFKD)
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "YAMADA^TAROU=山田^太郎=やまだ^たろう"),
        ("ヤマダ^タロウ", "ヤマダ^タロウ"),  # kana voicing marks are not accents
        ("ﾔﾏﾀﾞ", "ヤマダ"),  # half-width katakana (NFKD), then recomposed (NFC)
        ("홍^길동", "홍^길동"),  # Hangul syllables: decomposed and recomposed
        ("क्षत्रिय", "क्षत्रिय"),  # Devanagari virama kept
        ("İlker", "ILKER"),  # casefold gives i + combining dot: dropped
        ("Nguyễn^Thị", "NGUYEN^THI"),
        ("DOE*^J?", "DOE*^J?"),  # wildcards survive, so a folded query matches
        ("", ""),
    ],
)
def test_fold_person_name(name: str, folded: str) -> None:
    assert fold_person_name(name) == folded


def test_merge_replaces_clears_and_keeps() -> None:
    stored = {
        "00100010": pn("A^B"),
        "00100030": element("DA", "19700101"),
        "00100040": element("CS", "M"),
    }
    new = {"00100010": pn("C^D"), "00100040": element("CS")}
    assert merge_attributes(stored, new) == {
        "00100010": pn("C^D"),
        "00100030": element("DA", "19700101"),
        "00100040": {"vr": "CS"},
    }
    assert stored["00100010"] == pn("A^B")  # not changed in place


@pytest.mark.parametrize(
    ("field", "attributes", "expected"),
    [
        ("NEW", {"00080060": element("CS", "MR")}, "NEW"),
        ("", {"00080060": element("CS", "MR")}, "MR"),
        ("", {"00080060": element("CS")}, ""),
        ("", {}, "OLD"),
    ],
)
def test_column_value(field: str, attributes: dict[str, object], expected: str) -> None:
    assert column_value(field, attributes, "00080060", "OLD") == expected


def test_element_text() -> None:
    attributes = {
        "00100010": element("PN", {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}),
        "00400001": element("AE", "CT1", "CT2"),
        "00100040": element("CS"),
    }
    assert element_text(attributes, "00100010") == "Yamada^Tarou=山田^太郎"
    assert element_text(attributes, "00400001") == "CT1\\CT2"
    assert element_text(attributes, "00100040") == ""
    assert element_text(attributes, "00080050") == ""


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        ("20240501", "093015", "20240501093015"),
        ("20240501", "0930", "20240501093000"),
        ("20240501", "09", "20240501090000"),
        ("20240501", "093015.5", "20240501093015"),
        ("20240501", "09:30:15", "20240501093015"),
        ("20240501", "", "20240501000000"),
        ("", "0930", ""),
    ],
)
def test_start_datetime(date: str, time: str, expected: str) -> None:
    assert start_datetime(date, time) == expected
