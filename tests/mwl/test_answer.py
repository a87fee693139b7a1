"""Worklist item → C-FIND response identifier: only requested keys, Type 2 empty, SPS item
filtering, sequences, Specific Character Set, Latin-1 transliteration (PS3.4 K.2.2.1.2,
K.4.1.1.3; standards.md §3.2, §3.3); and the same identifier encoded directly
(IdentifierEncoder), byte for byte what pydicom writes, in the three transfer syntaxes."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom.dsutils import decode, encode

from mwl.answer import IdentifierEncoder, item_to_identifier
from mwl.model import DicomJson, PatientKey, SPSStatus, WorklistItem
from mwl.policy import AnswerCharset, WorklistPolicy
from mwl.query import ReturnKeys, identifier_to_request
from mwl.transliterate import to_latin1
from tests.mwl.test_query import NOW, identifier

UTF8, LATIN1 = AnswerCharset.UTF8, AnswerCharset.LATIN1


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def pn(alphabetic: str, ideographic: str = "") -> dict[str, Any]:
    name = {"Alphabetic": alphabetic}
    if ideographic:
        name["Ideographic"] = ideographic
    return element("PN", name)


def code(value: str, meaning: str) -> DicomJson:
    return {
        "00080100": element("SH", value),
        "00080102": element("SH", "L"),
        "00080104": element("LO", meaning),
    }


def stored_item(
    *, name: dict[str, Any] | None = None, timezone: str = "", extra: DicomJson | None = None
) -> WorklistItem:
    """A merged worklist item as :mod:`broker.store.items` builds it."""
    sps: DicomJson = {
        "00080060": element("CS", "CT"),
        "00400001": element("AE", "CT1", "CT2"),
        "00400002": element("DA", "20240501"),
        "00400003": element("TM", "093000"),
        "00400006": pn("Gómez^Ana"),
        "00400007": element("LO", "CT Thorax"),
        "00400008": element("SQ", code("P1", "Protocol 1"), code("P2", "Protocol 2")),
        "00400009": element("SH", "SPS1"),
        "00400010": element("SH", "ROOM 1"),
        "00400020": element("CS", "SCHEDULED"),
    }
    dataset: DicomJson = {
        "00080050": element("SH", "ACC1"),
        "00100010": name or pn("Doe^John"),
        "00100020": element("LO", "P1"),
        "00100030": element("DA", "19700101"),
        "00101030": element("DS", 80.5),
        "001021C0": element("US", 4),
        "0020000D": element("UI", "1.2.3"),
        "00321064": element("SQ", code("CT1", "CT Thorax")),
        "00380500": element("LO"),
        "00401001": element("SH", "RP1"),
        "00400100": element("SQ", sps),
        **(extra or {}),
    }
    if timezone:
        dataset["00080201"] = element("SH", timezone)
    return WorklistItem(
        step_id=1,
        status=SPSStatus.SCHEDULED,
        patient_key=PatientKey("P1", "HOSP"),
        study_uid="1.2.3",
        sps_id="SPS1",
        dataset=dict(sorted(dataset.items())),
    )


def keys_for(top: dict[str, Any] | None = None, sps: Any = None) -> ReturnKeys:
    request = identifier(top, sps)
    return identifier_to_request(
        request, policy=WorklistPolicy(), calling_ae="CT1", now=NOW
    ).return_keys


def tag(keyword: str) -> int:
    found = tag_for_keyword(keyword)
    assert found is not None
    return found


def tags(dataset: Dataset) -> list[int]:
    return [int(element.tag) for element in dataset]


def roundtrip(dataset: Dataset) -> tuple[bytes, Dataset]:
    """The answer as the SCU receives it (pynetdicom's encoder, explicit VR little endian)."""
    encoded = encode(dataset, False, True)
    assert encoded is not None
    return encoded, decode(BytesIO(encoded), False, True)


def test_only_requested_keys() -> None:
    answer = item_to_identifier(stored_item(), keys_for({"PatientName": "", "PatientID": ""}), UTF8)
    assert tags(answer) == [tag("PatientName"), tag("PatientID")]
    assert (str(answer.PatientName), answer.PatientID) == ("Doe^John", "P1")


@pytest.mark.parametrize(
    ("keyword", "vr"),
    [
        ("PatientSize", "DS"),
        ("ReferringPhysicianName", "PN"),
        ("PatientSex", "CS"),
        ("ReferencedStudySequence", "SQ"),
        ("MedicalAlerts", "LO"),
    ],
)
def test_requested_but_not_stored_is_zero_length(keyword: str, vr: str) -> None:
    answer = item_to_identifier(stored_item(), keys_for({keyword: [] if vr == "SQ" else ""}), UTF8)
    returned = answer[tag(keyword)]
    assert (returned.VR, returned.is_empty) == (vr, True)
    _, received = roundtrip(answer)
    assert received[tag(keyword)].is_empty


def test_stored_zero_length_attribute_stays_zero_length() -> None:
    answer = item_to_identifier(stored_item(), keys_for({"MedicalAlerts": ""}), UTF8)
    assert answer.MedicalAlerts == ""


def test_sps_item_carries_only_requested_keys() -> None:
    keys = keys_for(sps={"Modality": "", "ScheduledProcedureStepStartDate": "20240501"})
    answer = item_to_identifier(stored_item(), keys, UTF8)
    assert tags(answer) == [tag("ScheduledProcedureStepSequence")]
    (sps,) = answer.ScheduledProcedureStepSequence
    assert tags(sps) == [tag("Modality"), tag("ScheduledProcedureStepStartDate")]
    assert (sps.Modality, sps.ScheduledProcedureStepStartDate) == ("CT", "20240501")


@pytest.mark.parametrize("sps", [[], [{}]], ids=["zero-length", "empty item"])
def test_sps_sequence_without_item_keys_returns_the_whole_item(sps: list[Any]) -> None:
    keys = keys_for({"ScheduledProcedureStepSequence": sps})
    answer = item_to_identifier(stored_item(), keys, UTF8)
    (item,) = answer.ScheduledProcedureStepSequence
    assert len(item) == 10
    assert [c.CodeValue for c in item.ScheduledProtocolCodeSequence] == ["P1", "P2"]


def test_multi_valued_station_ae_is_returned_whole() -> None:
    keys = keys_for(sps={"ScheduledStationAETitle": "CT1"})
    answer = item_to_identifier(stored_item(), keys, UTF8)
    assert list(answer.ScheduledProcedureStepSequence[0].ScheduledStationAETitle) == ["CT1", "CT2"]
    raw, _ = roundtrip(answer)
    assert b"CT1\\CT2" in raw


def test_sequence_key_with_item_keys_filters_every_item() -> None:
    keys = keys_for(
        {"RequestedProcedureCodeSequence": [{"CodeValue": ""}]},
        {"ScheduledProtocolCodeSequence": [{"CodeMeaning": "", "CodingSchemeVersion": ""}]},
    )
    answer = item_to_identifier(stored_item(), keys, UTF8)
    (requested,) = answer.RequestedProcedureCodeSequence
    assert tags(requested) == [tag("CodeValue")]
    protocols = answer.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
    assert [(p.CodeMeaning, p.CodingSchemeVersion) for p in protocols] == [
        ("Protocol 1", ""),
        ("Protocol 2", ""),
    ]


def test_zero_length_sequence_key_returns_stored_items_whole() -> None:
    answer = item_to_identifier(
        stored_item(), keys_for({"RequestedProcedureCodeSequence": []}), UTF8
    )
    (requested,) = answer.RequestedProcedureCodeSequence
    assert (requested.CodeValue, requested.CodingSchemeDesignator) == ("CT1", "L")
    assert requested.CodeMeaning == "CT Thorax"


def test_numbers_and_uids() -> None:
    keys = keys_for({"PatientWeight": "", "PregnancyStatus": None, "StudyInstanceUID": ""})
    answer = item_to_identifier(stored_item(), keys, UTF8)
    raw, received = roundtrip(answer)
    assert (float(received.PatientWeight), received.PregnancyStatus) == (80.5, 4)
    assert received.StudyInstanceUID == "1.2.3"
    assert b"1.2.3\x00" in raw


@pytest.mark.parametrize(
    ("name", "requested", "charset", "expected"),
    [
        (pn("Doe^John"), {"PatientName": ""}, UTF8, None),
        (pn("Müller^Hans"), {"PatientName": ""}, UTF8, "ISO_IR 192"),
        (pn("Müller^Hans"), {"PatientName": ""}, LATIN1, "ISO_IR 100"),
        (pn("Wałęsa^Lech"), {"PatientName": ""}, LATIN1, None),
        (pn("Müller^Hans"), {"PatientID": ""}, UTF8, None),
    ],
    ids=["ascii", "utf-8", "latin-1", "transliterated to ascii", "not requested"],
)
def test_specific_character_set_only_when_needed(
    name: dict[str, Any], requested: dict[str, Any], charset: AnswerCharset, expected: str | None
) -> None:
    answer = item_to_identifier(stored_item(name=name), keys_for(requested), charset)
    assert answer.get("SpecificCharacterSet") == expected


def test_non_ascii_in_the_sps_item_sets_the_character_set() -> None:
    keys = keys_for(sps={"ScheduledPerformingPhysicianName": ""})
    answer = item_to_identifier(stored_item(), keys, LATIN1)
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    raw, received = roundtrip(answer)
    assert b"G\xf3mez^Ana" in raw
    assert str(received.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName) == (
        "Gómez^Ana"
    )


def test_utf8_answer_encodes_utf8() -> None:
    answer = item_to_identifier(
        stored_item(name=pn("Müller^Hans")), keys_for({"PatientName": ""}), UTF8
    )
    raw, received = roundtrip(answer)
    assert b"M\xc3\xbcller^Hans" in raw
    assert str(received.PatientName) == "Müller^Hans"


def test_latin1_transliterates_what_latin1_cannot_encode() -> None:
    item = stored_item(
        name=pn("Wałęsa-Müller^Łukasz"), extra={"00380500": element("LO", "Œdème ✓")}
    )
    answer = item_to_identifier(item, keys_for({"PatientName": "", "PatientState": ""}), LATIN1)
    assert str(answer.PatientName) == "Walesa-Müller^Lukasz"
    assert answer.PatientState == "OEdème ?"
    raw, received = roundtrip(answer)
    assert b"Walesa-M\xfcller^Lukasz" in raw
    assert received.PatientState == "OEdème ?"


@pytest.mark.parametrize(
    ("charset", "expected"),
    [(UTF8, "Yamada^Tarou=山田^太郎"), (LATIN1, "Yamada^Tarou")],
)
def test_person_name_groups(charset: AnswerCharset, expected: str) -> None:
    item = stored_item(name=pn("Yamada^Tarou", "山田^太郎"))
    answer = item_to_identifier(item, keys_for({"PatientName": ""}), charset)
    assert str(answer.PatientName) == expected
    _, received = roundtrip(answer)
    assert str(received.PatientName) == expected


@pytest.mark.parametrize(("timezone", "present"), [("+0200", True), ("", False)])
def test_timezone_offset_when_stored(timezone: str, present: bool) -> None:
    answer = item_to_identifier(stored_item(timezone=timezone), keys_for({"PatientID": ""}), UTF8)
    assert ("TimezoneOffsetFromUTC" in answer) is present
    if present:
        assert answer.TimezoneOffsetFromUTC == timezone


def test_answers_do_not_share_state() -> None:
    keys = keys_for({"ReferencedStudySequence": []})
    first = item_to_identifier(stored_item(), keys, UTF8)
    first.ReferencedStudySequence.append(Dataset())
    second = item_to_identifier(stored_item(), keys, UTF8)
    assert len(second.ReferencedStudySequence) == 0


def test_every_requested_key_round_trips_through_the_encoder() -> None:
    keys = keys_for(
        {
            "PatientName": "",
            "PatientID": "",
            "AccessionNumber": "",
            "ScheduledProcedureStepSequence": [],
        }
    )
    answer = item_to_identifier(stored_item(name=pn("Müller^Hans")), keys, UTF8)
    _, received = roundtrip(answer)
    assert received.AccessionNumber == "ACC1"
    sps = received.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledProcedureStepID, str(sps.ScheduledPerformingPhysicianName)) == (
        "SPS1",
        "Gómez^Ana",
    )


@pytest.mark.parametrize(
    ("text", "latin1"),
    [
        ("Doe", "Doe"),
        ("Müller Ærø ß", "Müller Ærø ß"),
        ("Łukasz Wałęsa", "Lukasz Walesa"),
        ("Dvořák Őz", "Dvorák Oz"),
        ("ǘ", "ü"),
        ("ﬁne œuvre", "fine oeuvre"),
        ("„quoted“ – dash", '"quoted" - dash'),
        ("山田", "??"),
    ],
)
def test_to_latin1(text: str, latin1: str) -> None:
    assert to_latin1(text) == latin1
    to_latin1(text).encode("latin-1")


# --- IdentifierEncoder: the same identifier, encoded directly ----------------------------------

SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
EVERY_KEY = {
    "AccessionNumber": "", "ReferringPhysicianName": "", "PatientName": "", "PatientID": "",
    "PatientBirthDate": "", "PatientSex": "", "PatientWeight": "", "PregnancyStatus": None,
    "PatientSize": "", "OtherPatientIDs": "", "PatientComments": "", "StudyInstanceUID": "",
    "RequestedProcedureCodeSequence": [], "ReferencedStudySequence": [], "PatientState": "",
    "RequestedProcedureID": "", "MedicalAlerts": "", "AdmissionID": "", "PatientAddress": "",
    "ReferencedPatientSequence": [], "ReferencedPatientPhotoSequence": [{"RetrieveURL": ""}],
    "EncapsulatedDocument": None, "TrianglePointIndexList": None, "FrameIncrementPointer": None,
    "DiffusionBValue": None, "Rows": None, "PixelSpacing": None,
}  # fmt: skip
"""Stored and not stored, of many VRs (text, PN, DS, US, FD, AT, OB, OW, UR in an item, SQ)."""
KEY_SETS = {
    "every key, SPS whole": (EVERY_KEY, []),
    "SPS item keys": (
        {"PatientName": "", "RequestedProcedureCodeSequence": [{"CodeValue": ""}]},
        {"Modality": "", "ScheduledStationAETitle": "", "ScheduledProcedureStepStartDate": "",
         "ScheduledPerformingPhysicianName": "", "ScheduledProtocolCodeSequence":
         [{"CodeMeaning": "", "CodingSchemeVersion": ""}], "ScheduledProcedureStepStatus": ""},
    ),
    "SPS empty item": ({"PatientID": ""}, {}),
    "nothing asked": ({}, None),
}  # fmt: skip
EXTRA: DicomJson = {
    "00081120": element("SQ", {}, {"00081150": element("UI", "1.2.840.10008.3.1.2.3.1")}),
    "00101000": element("LO", "X1", None, "Y22"),
    "00101040": element("LO", "Straße 1"),
    "00104000": element("LT", "line 1\r\nline 2 ü"),
    "00101020": element("DS", 1.75),
    "00081110": element("SQ"),
    "00102201": element("LO"),
    "00280009": element("AT", "00181063"),
    "00189087": element("FD", 1000.5),
    "00280010": element("US", 512),
    "00280030": element("DS", 0.5, 0.25),
    "00420011": {"vr": "OB", "InlineBinary": "AAECAw=="},
    "00660023": {"vr": "OW", "BulkDataURI": "http://example.org/1"},
    "00091001": {"vr": "OB", "InlineBinary": "AAEC"},
}
"""Multi-values with an empty one, non-ASCII text, an item with and one without attributes,
zero-length values, numbers, AT, inline and bulk binary, a private attribute."""
ITEMS = {
    "ascii": stored_item(extra={"00101040": element("LO", "Main Street")}),
    "utf-8": stored_item(name=pn("Müller^Hans"), extra=EXTRA, timezone="+0100"),
    "ideographic": stored_item(name=pn("Yamada^Tarou", "山田^太郎"), timezone="-0500"),
    "transliterated": stored_item(
        name=pn("Wałęsa-Müller^Łukasz"), extra={"00380500": element("LO", "Œdème ✓")}
    ),
}


def direct(item: WorklistItem, keys: ReturnKeys, charset: AnswerCharset, syntax: UID) -> bytes:
    return IdentifierEncoder(keys, charset, syntax).encode(item)


def via_pydicom(item: WorklistItem, keys: ReturnKeys, charset: AnswerCharset, syntax: UID) -> bytes:
    """What pynetdicom sends for :func:`item_to_identifier`'s Dataset."""
    encoded = encode(
        item_to_identifier(item, keys, charset), syntax.is_implicit_VR, syntax.is_little_endian
    )
    assert encoded is not None
    return encoded


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda uid: uid.name)
@pytest.mark.parametrize("charset", [UTF8, LATIN1], ids=["utf-8", "latin-1"])
@pytest.mark.parametrize("item_name", ITEMS)
@pytest.mark.parametrize("key_set", KEY_SETS)
def test_encoder_writes_what_pydicom_writes(
    key_set: str, item_name: str, charset: AnswerCharset, syntax: UID
) -> None:
    item = ITEMS[item_name]
    for implicit_request in (False, True):  # VRs as sent, or from the data dictionary
        keys = identifier_to_request(
            identifier(*KEY_SETS[key_set], implicit=implicit_request),
            policy=WorklistPolicy(), calling_ae="CT1", now=NOW,
        ).return_keys  # fmt: skip

        assert direct(item, keys, charset, syntax) == via_pydicom(item, keys, charset, syntax)


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda uid: uid.name)
def test_encoded_answer_decodes_to_the_stored_values(syntax: UID) -> None:
    keys = keys_for(EVERY_KEY, [])
    encoded = direct(ITEMS["utf-8"], keys, UTF8, syntax)

    received = decode(BytesIO(encoded), syntax.is_implicit_VR, syntax.is_little_endian)
    assert received.SpecificCharacterSet == "ISO_IR 192"
    assert (str(received.PatientName), received.PatientID) == ("Müller^Hans", "P1")
    assert (float(received.PatientWeight), received.PregnancyStatus) == (80.5, 4)
    assert received.TimezoneOffsetFromUTC == "+0100"
    assert received.PatientComments == "line 1\r\nline 2 ü"
    assert list(received.OtherPatientIDs) == ["X1", "", "Y22"]
    sps = received.ScheduledProcedureStepSequence[0]
    assert list(sps.ScheduledStationAETitle) == ["CT1", "CT2"]
    assert [c.CodeMeaning for c in sps.ScheduledProtocolCodeSequence] == [
        "Protocol 1",
        "Protocol 2",
    ]
    assert str(sps.ScheduledPerformingPhysicianName) == "Gómez^Ana"
    assert received.ReferencedStudySequence == []
    assert received["MedicalAlerts"].is_empty


def test_a_value_too_long_for_explicit_vr_is_written_as_pydicom_writes_it() -> None:
    """Over 64 KiB in a 2-byte-length VR: pydicom writes UN (PS3.5 6.2.2), and so do we."""
    item = stored_item(extra={"00101000": element("LO", *(["ID-0123456789"] * 6000))})
    keys = keys_for({"OtherPatientIDs": ""})
    with pytest.warns(UserWarning, match="64 kByte"):
        expected = via_pydicom(item, keys, UTF8, ExplicitVRLittleEndian)
    with pytest.warns(UserWarning, match="64 kByte"):
        assert direct(item, keys, UTF8, ExplicitVRLittleEndian) == expected
    assert direct(item, keys, UTF8, ImplicitVRLittleEndian) == via_pydicom(
        item, keys, UTF8, ImplicitVRLittleEndian
    )


@pytest.mark.parametrize("syntax", [DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, UID("1.2.3")])
def test_encoder_refuses_other_transfer_syntaxes(syntax: UID) -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        IdentifierEncoder(keys_for({"PatientID": ""}), UTF8, syntax)


def test_encoder_answers_do_not_share_state() -> None:
    encoder = IdentifierEncoder(keys_for({"PatientName": ""}), UTF8, ExplicitVRLittleEndian)

    non_ascii = encoder.encode(stored_item(name=pn("Müller^Hans")))
    ascii_only = encoder.encode(stored_item())

    assert b"ISO_IR 192" in non_ascii
    assert b"ISO_IR 192" not in ascii_only
