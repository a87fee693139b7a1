"""SqlWorklistFinder: PS3.4 C.2.2.2 matching for every key and kind, on SQLite and PostgreSQL.

Three orders: A and B with a value for every key, Z with every value zero-length (no station
AE title, no start date) — Z matches only universal queries (K.2.2.1.1.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from broker.store import Store
from broker.store.finder import SqlWorklistFinder, like_pattern, worklist_statement
from mwl.matching import Match, MatchKey, MatchKind, TimeRange, WorklistQuery
from mwl.model import (
    OrderControl,
    OrderNumber,
    OrderRecord,
    PatientKey,
    PatientRecord,
    ProcedureRecord,
    SPSStatus,
    StepRecord,
)
from mwl.pn import fold_person_name
from mwl.ports import StoreFailure
from tests.broker.store.samples import SENDER, element, pn

SINGLE, WILDCARD, UIDS = MatchKind.SINGLE, MatchKind.WILDCARD, MatchKind.UID_LIST


@dataclass(frozen=True)
class Entry:
    """One order with one procedure and one step; every matching key's value."""

    sps_id: str
    station_aes: tuple[str, ...] = ()
    start: tuple[str, str] = ("", "")
    modality: str = ""
    performing: str = ""
    station_name: str = ""
    location: str = ""
    patient_name: str = ""
    patient_id: str = "ZZ"
    issuer: str = ""
    accession: str = ""
    procedure_id: str = ""
    procedure_description: str = ""
    study_uid: str = "1.2.9"
    admission_id: str = ""
    referring: str = ""


A = Entry(
    sps_id="SPS-A",
    station_aes=("CT1",),
    start=("20240501", "093000"),
    modality="CT",
    performing="Gómez^Ana",
    station_name="CT_ROOM",
    location="RAD%1",
    patient_name="Müller^Hans",
    patient_id="P1",
    issuer="HOSP",
    accession="ACC1",
    procedure_id="RP1",
    procedure_description="CT head 50%",
    study_uid="1.2.3.1",
    admission_id="V1",
    referring="Dupré^Jean",
)
B = Entry(
    sps_id="SPS-B",
    station_aes=("MR1", "MR2"),
    start=("20240502", "140000"),
    modality="MR",
    performing="Wong^Li",
    station_name="MRXROOM",
    location="ER",
    patient_name="Smith^John",
    patient_id="P2",
    issuer="OTHER",
    accession="ACC2",
    procedure_id="RP2",
    procedure_description="MR knee",
    study_uid="1.2.3.2",
    admission_id="V2",
    referring="House^Greg",
)
Z = Entry(sps_id="SPS-Z")


def records(entry: Entry) -> tuple[PatientRecord, OrderRecord]:
    date, time = entry.start
    step = StepRecord(
        sps_id=entry.sps_id,
        station_aes=entry.station_aes,
        start_date=date,
        start_time=time,
        modality=entry.modality,
        performing_physician=entry.performing,
        station_name=entry.station_name,
        location=entry.location,
        attributes={"00400009": element("SH", entry.sps_id), "00400002": element("DA", date)},
    )
    procedure = ProcedureRecord(
        study_uid=entry.study_uid,
        requested_procedure_id=entry.procedure_id,
        description=entry.procedure_description,
        attributes={"0020000D": element("UI", entry.study_uid)},
        steps=(step,),
    )
    order = OrderRecord(
        control=OrderControl.NEW,
        order_status="SC",
        placer=OrderNumber(f"PL-{entry.sps_id}", "RIS"),
        filler=None,
        accession=entry.accession,
        referring_physician=entry.referring,
        admission_id=entry.admission_id,
        attributes={"00080050": element("SH", *[entry.accession] if entry.accession else [])},
        procedures=(procedure,),
    )
    patient = PatientRecord(
        key=PatientKey(entry.patient_id, entry.issuer),
        name=entry.patient_name,
        attributes={"00100010": pn(entry.patient_name), "00100020": element("LO", "x")},
    )
    return patient, order


def add(store: Store, *entries: Entry, status: SPSStatus = SPSStatus.SCHEDULED) -> None:
    with store.unit_of_work() as uow:
        for entry in entries:
            patient, order = records(entry)
            row = uow.worklist.upsert_patient(patient)
            uow.worklist.add_order(row, order, status, sender=SENDER)
        uow.commit()


@pytest.fixture
def finder(store: Store) -> SqlWorklistFinder:
    add(store, A, B, Z)
    return store.finder()


def found(finder: SqlWorklistFinder, *matches: Match, **query: Any) -> list[str]:
    """The SPS IDs found, in the finder's order."""
    result = finder.find(WorklistQuery(matches=matches, **query))
    return [item.sps_id for item in result]


def match(key: MatchKey, kind: MatchKind, *values: str) -> Match:
    return Match(key, kind, values)


def folded(value: str) -> str:
    return fold_person_name(value)


SINGLE_VALUES = [
    (MatchKey.STATION_AE, "MR2", ["SPS-B"]),
    (MatchKey.MODALITY, "CT", ["SPS-A"]),
    (MatchKey.PERFORMING_PHYSICIAN, folded("gomez^ana"), ["SPS-A"]),
    (MatchKey.SPS_ID, "SPS-B", ["SPS-B"]),
    (MatchKey.SPS_STATUS, "SCHEDULED", ["SPS-Z", "SPS-A", "SPS-B"]),
    (MatchKey.STATION_NAME, "MRXROOM", ["SPS-B"]),
    (MatchKey.SPS_LOCATION, "RAD%1", ["SPS-A"]),
    (MatchKey.PATIENT_NAME, folded("SMITH^john"), ["SPS-B"]),
    (MatchKey.PATIENT_ID, "P1", ["SPS-A"]),
    (MatchKey.ISSUER_OF_PATIENT_ID, "OTHER", ["SPS-B"]),
    (MatchKey.ACCESSION, "ACC2", ["SPS-B"]),
    (MatchKey.REQUESTED_PROCEDURE_ID, "RP1", ["SPS-A"]),
    (MatchKey.REQUESTED_PROCEDURE_DESCRIPTION, "MR knee", ["SPS-B"]),
    (MatchKey.STUDY_UID, "1.2.3.1", ["SPS-A"]),
    (MatchKey.ADMISSION_ID, "V2", ["SPS-B"]),
    (MatchKey.REFERRING_PHYSICIAN, folded("Dupré^Jean"), ["SPS-A"]),
]


def test_every_key_is_covered() -> None:
    assert {key for key, _, _ in SINGLE_VALUES} == set(MatchKey)
    assert {key for key, _, _ in WILDCARDS} == set(MatchKey)


@pytest.mark.parametrize(("key", "value", "expected"), SINGLE_VALUES, ids=str)
def test_single_value(
    finder: SqlWorklistFinder, key: MatchKey, value: str, expected: list[str]
) -> None:
    assert found(finder, match(key, SINGLE, value)) == expected


def test_single_value_is_case_sensitive_except_pn(finder: SqlWorklistFinder) -> None:
    assert found(finder, match(MatchKey.MODALITY, SINGLE, "ct")) == []
    assert found(finder, match(MatchKey.ACCESSION, SINGLE, "acc1")) == []
    assert found(finder, match(MatchKey.PATIENT_NAME, SINGLE, folded("müller^HANS"))) == ["SPS-A"]


def test_several_single_values_match_any(finder: SqlWorklistFinder) -> None:
    assert found(finder, match(MatchKey.MODALITY, SINGLE, "MR", "CT", "US")) == ["SPS-A", "SPS-B"]
    assert found(finder, match(MatchKey.STATION_AE, SINGLE, "CT1", "MR1")) == ["SPS-A", "SPS-B"]


WILDCARDS = [
    (MatchKey.STATION_AE, "MR?", ["SPS-B"]),
    (MatchKey.MODALITY, "?T", ["SPS-A"]),
    (MatchKey.PERFORMING_PHYSICIAN, "WONG*", ["SPS-B"]),
    (MatchKey.SPS_ID, "SPS-?", ["SPS-Z", "SPS-A", "SPS-B"]),
    (MatchKey.SPS_STATUS, "SCHED*", ["SPS-Z", "SPS-A", "SPS-B"]),
    (MatchKey.STATION_NAME, "*_ROOM", ["SPS-A"]),
    (MatchKey.SPS_LOCATION, "RAD%*", ["SPS-A"]),
    (MatchKey.PATIENT_NAME, "MUL*^H?NS", ["SPS-A"]),
    (MatchKey.PATIENT_ID, "P*", ["SPS-A", "SPS-B"]),
    (MatchKey.ISSUER_OF_PATIENT_ID, "*O*", ["SPS-A", "SPS-B"]),
    (MatchKey.ACCESSION, "*1", ["SPS-A"]),
    (MatchKey.REQUESTED_PROCEDURE_ID, "RP?", ["SPS-A", "SPS-B"]),
    (MatchKey.REQUESTED_PROCEDURE_DESCRIPTION, "*50%", ["SPS-A"]),
    (MatchKey.STUDY_UID, "1.2.3.*", ["SPS-A", "SPS-B"]),
    (MatchKey.ADMISSION_ID, "?2", ["SPS-B"]),
    (MatchKey.REFERRING_PHYSICIAN, "*^JEAN", ["SPS-A"]),
]


@pytest.mark.parametrize(("key", "value", "expected"), WILDCARDS, ids=str)
def test_wildcard(
    finder: SqlWorklistFinder, key: MatchKey, value: str, expected: list[str]
) -> None:
    assert found(finder, match(key, WILDCARD, value)) == expected


def test_wildcard_star_is_any_sequence_question_mark_one_character(
    finder: SqlWorklistFinder,
) -> None:
    assert found(finder, match(MatchKey.ACCESSION, WILDCARD, "ACC1*")) == ["SPS-A"]  # also none
    assert found(finder, match(MatchKey.ACCESSION, WILDCARD, "AC*C1")) == ["SPS-A"]
    assert found(finder, match(MatchKey.ACCESSION, WILDCARD, "ACC?1")) == []
    assert found(finder, match(MatchKey.ACCESSION, WILDCARD, "????")) == ["SPS-A", "SPS-B"]
    assert found(finder, match(MatchKey.ACCESSION, WILDCARD, "?????")) == []
    assert found(finder, match(MatchKey.ACCESSION, WILDCARD, "acc*")) == []  # case-sensitive


def test_percent_underscore_and_backslash_in_values_are_literal(store: Store) -> None:
    add(
        store,
        Entry("S1", location="50%_off", study_uid="1.1"),
        Entry("S2", location="50XYoff", study_uid="1.2"),
        Entry("S3", location="5\\0", study_uid="1.3"),
        Entry("S4", location="5X0", study_uid="1.4"),
    )
    finder = store.finder()
    location = MatchKey.SPS_LOCATION
    assert found(finder, match(location, WILDCARD, "50%_*")) == ["S1"]
    assert found(finder, match(location, WILDCARD, "*%*")) == ["S1"]
    assert found(finder, match(location, WILDCARD, "*_*")) == ["S1"]
    assert found(finder, match(location, WILDCARD, "50??off")) == ["S1", "S2"]
    assert found(finder, match(location, WILDCARD, "5\\*")) == ["S3"]
    assert found(finder, match(location, WILDCARD, "5?0")) == ["S3", "S4"]
    assert found(finder, match(location, SINGLE, "50%_off")) == ["S1"]


def test_like_pattern() -> None:
    assert like_pattern("A*B?") == "A%B_"
    assert like_pattern("50%_x\\y*") == "50\\%\\_x\\\\y%"


def test_several_wildcards_match_any(finder: SqlWorklistFinder) -> None:
    values = ("CT*", "MR?")
    assert found(finder, match(MatchKey.STATION_AE, WILDCARD, *values)) == ["SPS-A", "SPS-B"]


def test_uid_list(finder: SqlWorklistFinder) -> None:
    uids = match(MatchKey.STUDY_UID, UIDS, "1.2.3.2", "1.2.3.1", "9.9")
    assert found(finder, uids) == ["SPS-A", "SPS-B"]
    assert found(finder, match(MatchKey.STUDY_UID, UIDS, "1.2.3.2")) == ["SPS-B"]


def test_multi_valued_station_ae_matches_any_and_returns_all(finder: SqlWorklistFinder) -> None:
    (item,) = finder.find(WorklistQuery(matches=(match(MatchKey.STATION_AE, SINGLE, "MR1"),)))
    (sps,) = item.dataset["00400100"]["Value"]
    assert sps["00400001"] == {"vr": "AE", "Value": ["MR1", "MR2"]}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (MatchKey.ACCESSION, "*1"),
        (MatchKey.ACCESSION, "?*"),
        (MatchKey.PATIENT_NAME, "*^*"),
        (MatchKey.STATION_AE, "*?"),
        (MatchKey.REQUESTED_PROCEDURE_ID, "*R*"),
    ],
)
def test_zero_length_stored_values_never_match_a_wildcard(
    finder: SqlWorklistFinder, key: MatchKey, value: str
) -> None:
    assert "SPS-Z" not in found(finder, match(key, WILDCARD, value))


@pytest.mark.parametrize(
    "match_",
    [
        Match(MatchKey.ACCESSION, SINGLE, ("",)),
        Match(MatchKey.ACCESSION, WILDCARD, ("*",)),
        Match(MatchKey.ACCESSION, WILDCARD, ("**",)),
        Match(MatchKey.STATION_AE, WILDCARD, ("*",)),
        Match(MatchKey.STUDY_UID, UIDS, ("",)),
    ],
)
def test_universal_values_match_zero_length_stored_values(
    finder: SqlWorklistFinder, match_: Match
) -> None:
    assert found(finder, match_) == ["SPS-Z", "SPS-A", "SPS-B"]
    assert found(finder) == ["SPS-Z", "SPS-A", "SPS-B"]


def test_a_zero_length_value_beside_others_adds_nothing(finder: SqlWorklistFinder) -> None:
    assert found(finder, match(MatchKey.ACCESSION, SINGLE, "", "ACC2")) == ["SPS-B"]


def test_start_range_is_one_period_across_days(finder: SqlWorklistFinder) -> None:
    assert found(finder, start=TimeRange("20240501100000", "20240502140000")) == ["SPS-B"]
    assert found(finder, start=TimeRange("20240501093000", "20240502135959")) == ["SPS-A"]
    assert found(finder, start=TimeRange("20240501000000", "20240502235959")) == [
        "SPS-A",
        "SPS-B",
    ]
    assert found(finder, start=TimeRange("20240501093001", "20240502135959")) == []


def test_open_start_ranges_never_match_a_zero_length_start(finder: SqlWorklistFinder) -> None:
    assert found(finder, start=TimeRange(None, "20240501235959")) == ["SPS-A"]
    assert found(finder, start=TimeRange("20240501235959", None)) == ["SPS-B"]
    assert found(finder, start=TimeRange(None, None)) == ["SPS-Z", "SPS-A", "SPS-B"]


def test_time_of_day_on_any_date(finder: SqlWorklistFinder) -> None:
    assert found(finder, time_of_day=TimeRange("090000", "100000")) == ["SPS-A"]
    assert found(finder, time_of_day=TimeRange("093000", "140000")) == ["SPS-A", "SPS-B"]
    assert found(finder, time_of_day=TimeRange(None, "120000")) == ["SPS-A"]
    assert found(finder, time_of_day=TimeRange("120000", None)) == ["SPS-B"]
    both = {"start": TimeRange("20240502000000", None), "time_of_day": TimeRange(None, "150000")}
    assert found(finder, **both) == ["SPS-B"]


def test_final_steps_hidden_unless_asked_or_matched_by_status(store: Store) -> None:
    add(store, A)
    add(store, B, status=SPSStatus.COMPLETED)
    finder = store.finder()
    assert found(finder) == ["SPS-A"]
    assert found(finder, include_final=True) == ["SPS-A", "SPS-B"]
    completed = match(MatchKey.SPS_STATUS, SINGLE, "COMPLETED")
    assert found(finder, completed) == ["SPS-B"]


def test_every_condition_must_hold(finder: SqlWorklistFinder) -> None:
    ae, modality = match(MatchKey.STATION_AE, SINGLE, "MR1"), match(MatchKey.MODALITY, SINGLE, "MR")
    today = TimeRange("20240502000000", "20240502235959")
    assert found(finder, ae, modality, start=today) == ["SPS-B"]
    assert found(finder, ae, match(MatchKey.MODALITY, SINGLE, "CT"), start=today) == []
    patient = match(MatchKey.PATIENT_ID, SINGLE, "P2")
    assert found(finder, patient, ae, start=TimeRange("20240501000000", "20240501235959")) == []


def test_limit(finder: SqlWorklistFinder) -> None:
    assert found(finder, limit=2) == ["SPS-Z", "SPS-A"]
    assert found(finder, limit=0) == []


def test_order_is_start_then_step_id(store: Store) -> None:
    same_time = ("20240501", "0800")
    add(
        store,
        Entry("LATE", start=("20240502", "0700"), study_uid="1.1"),
        Entry("FIRST", start=same_time, study_uid="1.2"),
        Entry("SECOND", start=same_time, study_uid="1.3"),
    )
    add(store, Entry("EARLY", start=("20240501", "0759"), study_uid="1.4"))
    finder = store.finder()
    assert found(finder) == ["EARLY", "FIRST", "SECOND", "LATE"]
    assert found(finder, match(MatchKey.PATIENT_ID, SINGLE, "ZZ")) == [
        "EARLY",
        "FIRST",
        "SECOND",
        "LATE",
    ]


def test_items_equal_the_stored_worklist_items(finder: SqlWorklistFinder, store: Store) -> None:
    by_finder = {item.step_id: item for item in finder.find(WorklistQuery())}
    assert by_finder == {item.step_id: item for item in store.worklist_items()}


def test_rows_hold_the_attributes_as_text_each_item_decodes_its_own(store: Store) -> None:
    """A chunk of decoded rows would be ~100,000 dicts outliving the garbage collector's young
    generation (module doc): the statement leaves the DICOM JSON as text."""
    add(store, A, B)
    with store.read_session() as session:
        statement = worklist_statement(WorklistQuery(), dialect=session.get_bind().dialect.name)
        rows = session.execute(statement).all()

    levels = ("patient_attributes", "order_attributes", "procedure_attributes", "step_attributes")
    assert {type(getattr(row, level)) for row in rows for level in levels} == {str}
    assert [item.dataset for item in store.finder().find(WorklistQuery())] == [
        item.dataset for item in store.worklist_items()
    ]


def test_items_stream_in_chunks_with_their_station_aes(store: Store) -> None:
    entries = [
        Entry(
            f"S{n}",
            station_aes=(f"AE{n}", "ALL"),
            start=("20240501", f"{n:02d}00"),
            study_uid=f"1.{n}",
        )
        for n in range(7)
    ]
    add(store, *entries)
    finder = SqlWorklistFinder(store.read_session, chunk=3)
    items = finder.find(WorklistQuery(matches=(match(MatchKey.STATION_AE, SINGLE, "ALL"),)))
    assert isinstance(items, Iterator)
    seen = [
        (item.sps_id, item.dataset["00400100"]["Value"][0]["00400001"]["Value"]) for item in items
    ]
    assert seen == [(f"S{n}", sorted([f"AE{n}", "ALL"])) for n in range(7)]


def test_an_abandoned_answer_gives_its_connection_back(finder: SqlWorklistFinder) -> None:
    for _ in range(20):  # more than the pool holds
        items = finder.find(WorklistQuery())
        next(items)
        items.close()
    assert len(found(finder)) == 3


def test_a_write_during_a_read_is_not_blocked(store: Store) -> None:
    add(store, A)
    items = store.finder().find(WorklistQuery())
    next(items)
    add(store, B)  # would time out if the open read held a write lock
    items.close()
    assert found(store.finder()) == ["SPS-A", "SPS-B"]


def test_database_errors_leave_as_store_failure() -> None:
    engine = create_engine("sqlite://")  # no tables
    try:
        finder = SqlWorklistFinder(lambda: Session(engine))
        items = finder.find(WorklistQuery())
        with pytest.raises(StoreFailure, match="no such table"):
            next(items)
    finally:
        engine.dispose()


def test_chunk_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="chunk"):
        SqlWorklistFinder(store.read_session, chunk=0)
