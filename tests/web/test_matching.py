"""A C-FIND query matched in memory by the finder's rules (used by the preview and the
C-FIND log); the finder's own tests (tests/broker/store/test_finder.py) pin the rules."""

from __future__ import annotations

import pytest

from broker.web.matching import ItemKeys, matches, mismatches
from mwl.matching import Match, MatchKey, MatchKind, TimeRange, WorklistQuery

ITEM = ItemKeys(
    values={
        MatchKey.STATION_AE: ("CT1", "CT2"),
        MatchKey.MODALITY: ("CT",),
        MatchKey.PATIENT_NAME: ("MULLER^HANS",),
        MatchKey.STATION_NAME: ("",),
        MatchKey.STUDY_UID: ("1.2.3",),
    },
    start_datetime="20261126103000",
    status="SCHEDULED",
)


def query(*found: Match, **values: object) -> WorklistQuery:
    return WorklistQuery(matches=found, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (Match(MatchKey.STATION_AE, MatchKind.SINGLE, ("CT2",)), True),
        (Match(MatchKey.STATION_AE, MatchKind.SINGLE, ("MR1", "CT1")), True),
        (Match(MatchKey.STATION_AE, MatchKind.WILDCARD, ("C?3",)), False),
        (Match(MatchKey.PATIENT_NAME, MatchKind.WILDCARD, ("MUL*",)), True),
        (Match(MatchKey.PATIENT_NAME, MatchKind.SINGLE, ("MULLER",)), False),
        (Match(MatchKey.STATION_NAME, MatchKind.WILDCARD, ("*X",)), False),
        (Match(MatchKey.STUDY_UID, MatchKind.UID_LIST, ("1.2", "1.2.3")), True),
    ],
)
def test_keys_match_as_in_the_finder(match: Match, expected: bool) -> None:
    assert matches(ITEM, query(match)) is expected


def test_start_ranges_and_time_of_day() -> None:
    assert matches(ITEM, query(start=TimeRange("20261126000000", "20261126235959")))
    assert matches(ITEM, query(start=TimeRange(None, "20261126103000")))
    assert not matches(ITEM, query(start=TimeRange("20261127000000", None)))
    assert matches(ITEM, query(time_of_day=TimeRange("100000", "110000")))
    why = mismatches(ITEM, query(time_of_day=TimeRange("120000", None)))
    assert why == ["SPS start time 103000 is outside 120000–…"]


def test_final_steps_only_when_asked() -> None:
    done = ItemKeys(values=ITEM.values, start_datetime=ITEM.start_datetime, status="COMPLETED")
    assert not matches(done, query())
    assert matches(done, query(include_final=True))
