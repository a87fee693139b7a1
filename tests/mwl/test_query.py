"""C-FIND identifier → ParsedRequest: every matching rule of standards.md §3.2, table-driven.

Identifiers are encoded with pydicom and decoded as pynetdicom hands them to the SCP, so values
arrive the way a modality's request does (character set, multi-values, trailing padding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pynetdicom.dsutils import decode, encode

from mwl.matching import Match, MatchKey, MatchKind, TimeRange
from mwl.pn import fold_person_name
from mwl.policy import AnswerCharset, CallerRule, WorklistPolicy
from mwl.query import (
    INVALID_DATE_TIME,
    INVALID_UID,
    NOT_SOP_CLASS,
    UNDECODABLE,
    ParsedRequest,
    QueryError,
    ReturnKey,
    ReturnKeys,
    identifier_to_request,
)

NOW = datetime(2024, 5, 1, 9, 30)
SPS = 0x00400100
K = MatchKey
SINGLE, WILDCARD, UIDS = MatchKind.SINGLE, MatchKind.WILDCARD, MatchKind.UID_LIST


def tag(keyword: str) -> int:
    found = tag_for_keyword(keyword)
    assert found is not None, keyword
    return found


def put(dataset: Dataset, keyword: str, value: Any) -> None:
    """One attribute: a str (``\\`` separates values), a list of values, a list of dicts
    (sequence items), or ``(VR, value)`` to send another VR than the dictionary's."""
    vr = str(dictionary_VR(keyword))
    if isinstance(value, tuple):
        vr, value = value
    if vr == "SQ":
        value = [dataset_of(item) for item in value]
    dataset[tag(keyword)] = DataElement(tag(keyword), vr, value, validation_mode=config.IGNORE)


def dataset_of(attributes: Mapping[str, Any]) -> Dataset:
    dataset = Dataset()
    for keyword, value in attributes.items():
        put(dataset, keyword, value)
    return dataset


def identifier(
    top: Mapping[str, Any] | None = None,
    sps: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    charset: str | list[str] | None = None,
    implicit: bool = False,
) -> Dataset:
    """A request identifier as the SCP receives it (encoded, then decoded by pynetdicom)."""
    dataset = dataset_of(top or {})
    if charset is not None:
        dataset.SpecificCharacterSet = charset
    if sps is not None:
        put(dataset, "ScheduledProcedureStepSequence", [sps] if isinstance(sps, Mapping) else sps)
    encoded = encode(dataset, implicit, True)
    assert encoded is not None
    return decode(BytesIO(encoded), implicit, True)


def parse(
    dataset: Dataset,
    policy: WorklistPolicy | None = None,
    calling_ae: str = "CT1",
    now: datetime = NOW,
) -> ParsedRequest:
    return identifier_to_request(
        dataset, policy=policy or WorklistPolicy(), calling_ae=calling_ae, now=now
    )


# --- Single Value, Wild Card, Universal, List of UID, PN (C.2.2.2.1–4) ---------------------

MATCHES: list[tuple[str, dict[str, Any], dict[str, Any] | None, set[Match]]] = [
    ("single value", {"PatientID": "P1"}, None, {Match(K.PATIENT_ID, SINGLE, ("P1",))}),
    ("spaces insignificant", {"PatientID": "  P1  "}, None, {Match(K.PATIENT_ID, SINGLE, ("P1",))}),
    ("zero length is universal", {"PatientID": ""}, None, set()),
    ("spaces only is universal", {"AccessionNumber": "   "}, None, set()),
    ("only * is universal", {"PatientName": "*"}, None, set()),
    ("** is universal", {"AccessionNumber": "**"}, None, set()),
    ("wild card *", {"AccessionNumber": "ACC*"}, None, {Match(K.ACCESSION, WILDCARD, ("ACC*",))}),
    ("wild card ?", {"AccessionNumber": "AC?1"}, None, {Match(K.ACCESSION, WILDCARD, ("AC?1",))}),
    ("% and _ literal", {"PatientID": "A%B_C"}, None, {Match(K.PATIENT_ID, SINGLE, ("A%B_C",))}),
    ("% _ in wild card", {"PatientID": "A%_*"}, None, {Match(K.PATIENT_ID, WILDCARD, ("A%_*",))}),
    (
        "PN folded",
        {"PatientName": "müller*"},
        None,
        {Match(K.PATIENT_NAME, WILDCARD, ("MULLER*",))},
    ),
    (
        "PN single folded",
        {"PatientName": "Müller^Hans"},
        None,
        {Match(K.PATIENT_NAME, SINGLE, ("MULLER^HANS",))},
    ),
    ("PN trailing ^", {"PatientName": "Doe^^^"}, None, {Match(K.PATIENT_NAME, SINGLE, ("DOE",))}),
    (
        "referring PN",
        {"ReferringPhysicianName": "smith*"},
        None,
        {Match(K.REFERRING_PHYSICIAN, WILDCARD, ("SMITH*",))},
    ),
    ("UID single", {"StudyInstanceUID": "1.2.3"}, None, {Match(K.STUDY_UID, SINGLE, ("1.2.3",))}),
    (
        "UID list",
        {"StudyInstanceUID": "1.2.3\\1.2.40"},
        None,
        {Match(K.STUDY_UID, UIDS, ("1.2.3", "1.2.40"))},
    ),
    (
        "UID list duplicates",
        {"StudyInstanceUID": ["1.2.3", "1.2.3"]},
        None,
        {Match(K.STUDY_UID, SINGLE, ("1.2.3",))},
    ),
    (
        "optional top-level keys",
        {
            "IssuerOfPatientID": "HOSP",
            "RequestedProcedureID": "RP1",
            "RequestedProcedureDescription": "CT *",
            "AdmissionID": "ADM1",
        },
        None,
        {
            Match(K.ISSUER_OF_PATIENT_ID, SINGLE, ("HOSP",)),
            Match(K.REQUESTED_PROCEDURE_ID, SINGLE, ("RP1",)),
            Match(K.REQUESTED_PROCEDURE_DESCRIPTION, WILDCARD, ("CT *",)),
            Match(K.ADMISSION_ID, SINGLE, ("ADM1",)),
        },
    ),
    (
        "SPS item keys",
        {},
        {
            "ScheduledStationAETitle": "CT1",
            "Modality": "CT",
            "ScheduledPerformingPhysicianName": "gómez*",
            "ScheduledProcedureStepID": "SPS1",
            "ScheduledStationName": "ROOM 1",
            "ScheduledProcedureStepLocation": "RAD",
        },
        {
            Match(K.STATION_AE, SINGLE, ("CT1",)),
            Match(K.MODALITY, SINGLE, ("CT",)),
            Match(K.PERFORMING_PHYSICIAN, WILDCARD, ("GOMEZ*",)),
            Match(K.SPS_ID, SINGLE, ("SPS1",)),
            Match(K.STATION_NAME, SINGLE, ("ROOM 1",)),
            Match(K.SPS_LOCATION, SINGLE, ("RAD",)),
        },
    ),
    ("CS is case-sensitive", {}, {"Modality": "ct"}, {Match(K.MODALITY, SINGLE, ("ct",))}),
    (
        "wild card on AE",
        {},
        {"ScheduledStationAETitle": "CT?"},
        {Match(K.STATION_AE, WILDCARD, ("CT?",))},
    ),
    (
        "several values: any-of",
        {},
        {"Modality": "CT\\MR"},
        {Match(K.MODALITY, SINGLE, ("CT", "MR"))},
    ),
    (
        "several values, one wild",
        {},
        {"ScheduledStationAETitle": ["CT1", "MR*"]},
        {Match(K.STATION_AE, WILDCARD, ("CT1", "MR*"))},
    ),
    ("several values with *", {}, {"Modality": ["CT", "*"]}, set()),
    ("empty SPS item is universal", {}, {}, set()),
    ("zero-length SPS is universal", {"ScheduledProcedureStepSequence": []}, None, set()),
]


@pytest.mark.parametrize(
    ("top", "sps", "expected"), [m[1:] for m in MATCHES], ids=[m[0] for m in MATCHES]
)
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_matching_types(
    top: dict[str, Any], sps: dict[str, Any] | None, expected: set[Match], implicit: bool
) -> None:
    query = parse(identifier(top, sps, implicit=implicit)).query
    assert set(query.matches) == expected
    assert len(query.matches) == len(expected)


# --- Range and combined date-time (C.2.2.2.5, Table K.6-1 remark) --------------------------

PERIODS: list[tuple[str, str | None, str | None, TimeRange | None, TimeRange | None]] = [
    ("date", "20240501", None, TimeRange("20240501000000", "20240501235959"), None),
    ("date range", "20240501-20240503", None, TimeRange("20240501000000", "20240503235959"), None),
    ("date up to", "-20240503", None, TimeRange(None, "20240503235959"), None),
    ("date from", "20240501-", None, TimeRange("20240501000000", None), None),
    ("ACR-NEMA date", "2024.05.01", None, TimeRange("20240501000000", "20240501235959"), None),
    (
        "date and time ranges: one period",
        "20060705-20060707",
        "1000-1800",
        TimeRange("20060705100000", "20060707180000"),
        None,
    ),
    (
        "date, time range",
        "20240501",
        "1000-1800",
        TimeRange("20240501100000", "20240501180000"),
        None,
    ),
    ("date and time", "20240501", "1000", TimeRange("20240501100000", "20240501100000"), None),
    ("date, time from", "20240501", "1000-", TimeRange("20240501100000", "20240501235959"), None),
    ("date, time to", "20240501", "-1800", TimeRange("20240501000000", "20240501180000"), None),
    ("date from, time range", "20240501-", "1000-1800", TimeRange("20240501100000", None), None),
    ("date to, time range", "-20240503", "1000-1800", TimeRange(None, "20240503180000"), None),
    (
        "period over midnight",
        "20240501-20240502",
        "2200-0600",
        TimeRange("20240501220000", "20240502060000"),
        None,
    ),
    ("TM by meaning", "20240501", "10-11", TimeRange("20240501100000", "20240501110000"), None),
    (
        "TM fraction cut",
        "20240501",
        "100000.5-175959.999999",
        TimeRange("20240501100000", "20240501175959"),
        None,
    ),
    (
        "TM colons",
        "20240501",
        "10:00-18:00:30",
        TimeRange("20240501100000", "20240501180030"),
        None,
    ),
    ("time only", None, "0800-1200", None, TimeRange("080000", "120000")),
    ("time only single", None, "0930", None, TimeRange("093000", "093000")),
    ("time only to", None, "-12", None, TimeRange(None, "120000")),
    ("universal date and time", "", "", None, None),
    ("range of nothing", "-", None, None, None),
]


@pytest.mark.parametrize(
    ("date", "time", "start", "time_of_day"), [p[1:] for p in PERIODS], ids=[p[0] for p in PERIODS]
)
def test_start_date_and_time(
    date: str | None, time: str | None, start: TimeRange | None, time_of_day: TimeRange | None
) -> None:
    sps = {"ScheduledProcedureStepStartDate": date, "ScheduledProcedureStepStartTime": time}
    request = identifier(sps={k: v for k, v in sps.items() if v is not None})
    query = parse(request).query
    assert (query.start, query.time_of_day) == (start, time_of_day)
    assert query.matches == ()


# --- Errors: A900 structure, C100 date/time, C101 UID, C102 decoding ------------------------

ERRORS: list[tuple[str, Dataset, int, tuple[int, ...], str]] = [
    (
        "two SPS items",
        identifier(sps=[{"Modality": "CT"}, {"Modality": "MR"}]),
        NOT_SOP_CLASS,
        (SPS,),
        "SPS Sequence has 2 items; 1 allowed",
    ),
    (
        "two items in a return-key sequence",
        identifier({"ReferencedStudySequence": [{}, {}]}),
        NOT_SOP_CLASS,
        (tag("ReferencedStudySequence"),),
        "ReferencedStudySequence has 2 items; 1 allowed",
    ),
    (
        "matching key with another VR",
        identifier({"PatientID": ("SH", "P1")}),
        NOT_SOP_CLASS,
        (tag("PatientID"),),
        "PatientID has VR SH; LO expected",
    ),
    (
        "SPS Sequence not a sequence",
        identifier({"ScheduledProcedureStepSequence": ("LO", "x")}),
        NOT_SOP_CLASS,
        (SPS,),
        "SPS Sequence has VR LO; SQ expected",
    ),
    (
        "sequence sent as text",
        identifier({"ReferencedStudySequence": ("LO", "x")}),
        NOT_SOP_CLASS,
        (tag("ReferencedStudySequence"),),
        "ReferencedStudySequence has VR LO; SQ expected",
    ),
    (
        "impossible month",
        identifier(sps={"ScheduledProcedureStepStartDate": "20061301"}),
        INVALID_DATE_TIME,
        (tag("ScheduledProcedureStepStartDate"),),
        "Invalid SPS Start Date '20061301'",
    ),
    (
        "not a date",
        identifier(sps={"ScheduledProcedureStepStartDate": "May 1st"}),
        INVALID_DATE_TIME,
        (tag("ScheduledProcedureStepStartDate"),),
        "Invalid SPS Start Date 'May 1st'",
    ),
    (
        "date range backwards",
        identifier(sps={"ScheduledProcedureStepStartDate": "20240503-20240501"}),
        INVALID_DATE_TIME,
        (tag("ScheduledProcedureStepStartDate"),),
        "SPS Start range ends before it starts",
    ),
    (
        "day with a time range over midnight",
        identifier(
            sps={
                "ScheduledProcedureStepStartDate": "20240501",
                "ScheduledProcedureStepStartTime": "2200-0600",
            }
        ),
        INVALID_DATE_TIME,
        (tag("ScheduledProcedureStepStartDate"), tag("ScheduledProcedureStepStartTime")),
        "SPS Start range ends before it starts",
    ),
    (
        "time range over midnight",
        identifier(sps={"ScheduledProcedureStepStartTime": "2200-0600"}),
        INVALID_DATE_TIME,
        (tag("ScheduledProcedureStepStartTime"),),
        "SPS Start Time range crosses midnight",
    ),
    (
        "hour 25",
        identifier(sps={"ScheduledProcedureStepStartTime": "2500"}),
        INVALID_DATE_TIME,
        (tag("ScheduledProcedureStepStartTime"),),
        "Invalid SPS Start Time '2500'",
    ),
    (
        "several dates",
        identifier(sps={"ScheduledProcedureStepStartDate": ["20240501", "20240502"]}),
        INVALID_DATE_TIME,
        (tag("ScheduledProcedureStepStartDate"),),
        "SPS Start Date has several values",
    ),
    (
        "invalid UID",
        identifier({"StudyInstanceUID": "1.2.abc"}),
        INVALID_UID,
        (tag("StudyInstanceUID"),),
        "Invalid UID '1.2.abc' in Study Instance UID",
    ),
    (
        "invalid UID in a list",
        identifier({"StudyInstanceUID": ["1.2.3", "1..2"]}),
        INVALID_UID,
        (tag("StudyInstanceUID"),),
        "Invalid UID '1..2' in Study Instance UID",
    ),
    (
        "wild card in a UID",
        identifier({"StudyInstanceUID": "1.2.*"}),
        INVALID_UID,
        (tag("StudyInstanceUID"),),
        "Invalid UID '1.2.*' in Study Instance UID",
    ),
]


@pytest.mark.parametrize(
    ("request_", "status", "offending", "comment"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
def test_errors(request_: Dataset, status: int, offending: tuple[int, ...], comment: str) -> None:
    with pytest.raises(QueryError) as raised:
        parse(request_)
    assert (raised.value.status, raised.value.offending, raised.value.comment) == (
        status,
        offending,
        comment,
    )


def test_error_comment_fits_lo_in_ascii() -> None:
    long_uid = "1.2." + "9" * 80 + "é"
    with pytest.raises(QueryError) as raised:
        parse(identifier({"StudyInstanceUID": long_uid}))
    comment = raised.value.comment
    assert len(comment) <= 64
    assert comment.isascii()
    assert "\\" not in comment


class _Broken(Dataset):
    """A dataset whose Patient ID cannot be converted, as a corrupt request would be."""

    def __getitem__(self, key: Any) -> Any:
        if key == tag("PatientID"):
            raise ValueError("corrupt")
        return super().__getitem__(key)


def test_undecodable_value_is_c102() -> None:
    broken = _Broken()
    broken.PatientID = "P1"
    with pytest.raises(QueryError) as raised:
        parse(broken)
    assert (raised.value.status, raised.value.offending) == (UNDECODABLE, (tag("PatientID"),))
    assert raised.value.comment == "Cannot decode PatientID"


# --- Return keys (K.2.2.1.2) and unsupported optional keys (K.2.2.1.1.2, FF01) -------------


def test_return_keys_are_the_requested_keys() -> None:
    request = identifier(
        {"PatientName": "Doe*", "PatientID": "", "PatientBirthDate": ""},
        {"ScheduledStationAETitle": "CT1", "Modality": "", "ScheduledProcedureStepStartDate": ""},
    )
    keys = parse(request).return_keys
    assert keys.tags == (tag("PatientName"), tag("PatientID"), tag("PatientBirthDate"), SPS)
    assert keys.get(tag("PatientName")) == ReturnKey(tag("PatientName"), "PN")
    assert keys.sps_item is not None
    assert keys.sps_item.tags == (
        tag("Modality"),
        tag("ScheduledStationAETitle"),
        tag("ScheduledProcedureStepStartDate"),
    )


@pytest.mark.parametrize(
    ("sps_value", "item"),
    [([], None), ([{}], None)],
    ids=["zero-length", "empty item"],
)
def test_sps_sequence_without_item_keys_asks_for_all(
    sps_value: list[dict[str, Any]], item: ReturnKeys | None
) -> None:
    keys = parse(identifier({"ScheduledProcedureStepSequence": sps_value})).return_keys
    assert keys.keys == (ReturnKey(SPS, "SQ", item),)


def test_nested_sequences_carry_their_item_keys() -> None:
    request = identifier(
        {"RequestedProcedureCodeSequence": [{"CodeValue": "", "CodeMeaning": ""}]},
        {"ScheduledProtocolCodeSequence": []},
    )
    keys = parse(request).return_keys
    code = keys.get(tag("RequestedProcedureCodeSequence"))
    assert code is not None and code.item is not None
    assert code.item.tags == (tag("CodeValue"), tag("CodeMeaning"))
    assert keys.sps_item == ReturnKeys((ReturnKey(tag("ScheduledProtocolCodeSequence"), "SQ"),))


def test_sps_sequence_not_requested_is_not_returned() -> None:
    keys = parse(identifier({"PatientID": ""})).return_keys
    assert keys.get(SPS) is None
    assert keys.sps_item is None


UNSUPPORTED: list[tuple[str, dict[str, Any], dict[str, Any] | None, tuple[int, ...]]] = [
    ("valued optional key", {"PatientBirthDate": "19700101"}, None, (tag("PatientBirthDate"),)),
    ("universal optional key", {"PatientSex": ""}, None, ()),
    (
        "valued SPS description",
        {},
        {"ScheduledProcedureStepDescription": "CT*"},
        (tag("ScheduledProcedureStepDescription"),),
    ),
    (
        "value in a return-key sequence",
        {"RequestedProcedureCodeSequence": [{"CodeValue": "X1", "CodeMeaning": ""}]},
        None,
        (tag("CodeValue"),),
    ),
    ("SPS key outside the SPS item", {"Modality": "CT"}, None, (tag("Modality"),)),
    (
        "never matched: charset and timezone",
        {"SpecificCharacterSet": "ISO_IR 100", "TimezoneOffsetFromUTC": "+0100"},
        None,
        (),
    ),
    ("SPS status is matched", {}, {"ScheduledProcedureStepStatus": "SCHEDULED"}, ()),
]


@pytest.mark.parametrize(
    ("top", "sps", "unsupported"), [u[1:] for u in UNSUPPORTED], ids=[u[0] for u in UNSUPPORTED]
)
def test_unsupported_optional_keys(
    top: dict[str, Any], sps: dict[str, Any] | None, unsupported: tuple[int, ...]
) -> None:
    parsed = parse(identifier(top, sps))
    assert parsed.unsupported == unsupported
    for offending in unsupported:
        if offending != tag("CodeValue"):
            keys = parsed.return_keys.sps_item if sps else parsed.return_keys
            assert keys is not None and offending in keys.tags


def test_charset_and_timezone_are_no_return_keys() -> None:
    request = identifier({"SpecificCharacterSet": "ISO_IR 100", "TimezoneOffsetFromUTC": ""})
    assert parse(request).return_keys == ReturnKeys()


def test_private_attributes_are_neither_matched_nor_returned() -> None:
    request = Dataset()
    request.PatientID = ""
    request.add_new(0x00090010, "LO", "ACME")
    request.add_new(0x00091001, "LO", "secret")
    parsed = parse(request)
    assert parsed.return_keys.tags == (tag("PatientID"),)
    assert parsed.unsupported == (0x00090010, 0x00091001)


# --- Status, limit, caller defaults, charset --------------------------------------------------


@pytest.mark.parametrize(
    ("policy_final", "status", "include_final"),
    [(False, None, False), (True, None, True), (False, "", False), (False, "COMPLETED", True)],
)
def test_include_final(policy_final: bool, status: str | None, include_final: bool) -> None:
    sps = {} if status is None else {"ScheduledProcedureStepStatus": status}
    query = parse(identifier(sps=sps), WorklistPolicy(include_final=policy_final)).query
    assert query.include_final is include_final


@pytest.mark.parametrize(("max_matches", "limit"), [(10, 11), (10_000, 10_001), (0, None)])
def test_limit_is_one_more_than_the_maximum(max_matches: int, limit: int | None) -> None:
    assert parse(identifier(), WorklistPolicy(max_matches=max_matches)).query.limit == limit


def policy_for(**rule: Any) -> WorklistPolicy:
    return WorklistPolicy(callers=(CallerRule(ae_title="CT1", **rule),))


CALLERS: list[tuple[str, dict[str, Any], dict[str, Any], set[Match]]] = [
    ("own station", {"own_station_only": True}, {}, {Match(K.STATION_AE, SINGLE, ("CT1",))}),
    (
        "own station, universal key",
        {"own_station_only": True},
        {"ScheduledStationAETitle": ""},
        {Match(K.STATION_AE, SINGLE, ("CT1",))},
    ),
    (
        "station list: any of",
        {"station_ae": ("CT1", "CT2")},
        {},
        {Match(K.STATION_AE, SINGLE, ("CT1", "CT2"))},
    ),
    (
        "request's station wins",
        {"own_station_only": True},
        {"ScheduledStationAETitle": "MR1"},
        {Match(K.STATION_AE, SINGLE, ("MR1",))},
    ),
    ("modality", {"modality": "CT"}, {"Modality": ""}, {Match(K.MODALITY, SINGLE, ("CT",))}),
    (
        "request's modality wins",
        {"modality": "CT"},
        {"Modality": "MR"},
        {Match(K.MODALITY, SINGLE, ("MR",))},
    ),
    ("no defaults", {}, {}, set()),
]


@pytest.mark.parametrize(
    ("rule", "sps", "expected"), [c[1:] for c in CALLERS], ids=[c[0] for c in CALLERS]
)
def test_caller_defaults(rule: dict[str, Any], sps: dict[str, Any], expected: set[Match]) -> None:
    parsed = parse(identifier(sps=sps), policy_for(**rule), calling_ae=" CT1 ")
    assert set(parsed.query.matches) == expected


def test_other_callers_get_no_defaults() -> None:
    policy = policy_for(own_station_only=True, modality="CT", hours_around_now=2)
    query = parse(identifier(sps={}), policy, calling_ae="MR1").query
    assert (query.matches, query.start) == ((), None)


@pytest.mark.parametrize(
    ("sps", "start"),
    [
        ({}, TimeRange("20240501073000", "20240501113000")),
        ({"ScheduledProcedureStepStartDate": ""}, TimeRange("20240501073000", "20240501113000")),
        (
            {"ScheduledProcedureStepStartDate": "20240502"},
            TimeRange("20240502000000", "20240502235959"),
        ),
        ({"ScheduledProcedureStepStartTime": "0800-1000"}, None),
    ],
    ids=["no keys", "universal date", "date given", "time given"],
)
def test_hours_around_now(sps: dict[str, Any], start: TimeRange | None) -> None:
    assert parse(identifier(sps=sps), policy_for(hours_around_now=2)).query.start == start


def test_aware_now_is_local_wall_clock() -> None:
    now = datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
    local = now.astimezone()
    expected = TimeRange(
        (local - timedelta(hours=1)).strftime("%Y%m%d%H%M%S"),
        (local + timedelta(hours=1)).strftime("%Y%m%d%H%M%S"),
    )
    assert parse(identifier(), policy_for(hours_around_now=1), now=now).query.start == expected


@pytest.mark.parametrize(
    ("policy", "calling_ae", "charset"),
    [
        (WorklistPolicy(), "CT1", AnswerCharset.UTF8),
        (WorklistPolicy(charset=AnswerCharset.LATIN1), "CT1", AnswerCharset.LATIN1),
        (policy_for(charset=AnswerCharset.LATIN1), "CT1", AnswerCharset.LATIN1),
        (policy_for(charset=AnswerCharset.LATIN1), "MR1", AnswerCharset.UTF8),
    ],
)
def test_answer_charset(policy: WorklistPolicy, calling_ae: str, charset: AnswerCharset) -> None:
    assert parse(identifier(), policy, calling_ae=calling_ae).charset is charset


@pytest.mark.parametrize(
    ("charset", "name", "encoded"),
    [
        ("ISO_IR 100", "Müller*", b"M\xfcller*"),
        ("ISO_IR 192", "Łukasz*", "Łukasz*".encode()),
        (["", "ISO 2022 IR 87"], "山田*", b"\x1b$B;3ED\x1b(B*"),
    ],
    ids=["latin-1", "utf-8", "iso-2022-jp"],
)
def test_request_character_set_decodes_values(
    charset: str | list[str], name: str, encoded: bytes
) -> None:
    top = {"PatientName": name}
    dataset = dataset_of(top)
    dataset.SpecificCharacterSet = charset
    raw = encode(dataset, False, True)
    assert raw is not None and encoded in raw
    request = identifier(top, {"ScheduledPerformingPhysicianName": name}, charset=charset)
    matches = set(parse(request).query.matches)
    assert matches == {
        Match(K.PATIENT_NAME, WILDCARD, (fold_person_name(name),)),
        Match(K.PERFORMING_PHYSICIAN, WILDCARD, (fold_person_name(name),)),
    }


def test_latin1_request_folds_to_ascii() -> None:
    request = identifier({"PatientName": "müller^jürgen"}, charset="ISO_IR 100")
    assert parse(request).query.matches == (Match(K.PATIENT_NAME, SINGLE, ("MULLER^JURGEN",)),)
