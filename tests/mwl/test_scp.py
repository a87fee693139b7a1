"""The C-FIND SCP generator (mwl.scp.find_worklist) on every status path, with a fake finder.

The real request parser (mwl.query) and answer builder (mwl.answer) run; only storage is
replaced, so each response sequence of PS3.4 K.4.1.3 is checked without a network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

from mwl.matching import MatchKey, WorklistQuery
from mwl.model import PatientKey, SPSStatus, WorklistItem
from mwl.policy import OverLimit, WorklistPolicy
from mwl.ports import StoreFailure
from mwl.scp import FindStatus, Response, find_worklist, status_dataset

NOW = datetime(2026, 11, 26, 10, 0)
SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
FF00, FF01, FE00 = 0xFF00, 0xFF01, 0xFE00


def worklist_item(n: int, *, stations: tuple[str, ...] = ("CT1",)) -> WorklistItem:
    """A stored worklist item as the store gives it (DICOM JSON, PS3.18 F.2)."""
    sps = {
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "00400001": {"vr": "AE", "Value": list(stations)},
        "00400002": {"vr": "DA", "Value": ["20261126"]},
        "00400003": {"vr": "TM", "Value": ["103000"]},
        "00400009": {"vr": "SH", "Value": [f"SPS{n}"]},
    }
    dataset = {
        "00080050": {"vr": "SH", "Value": [f"ACC{n}"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"SECRET^PATIENT{n}"}]},
        "00100020": {"vr": "LO", "Value": [f"PID{n}"]},
        "00100030": {"vr": "DA", "Value": ["19800101"]},
        "0020000D": {"vr": "UI", "Value": [f"1.2.826.0.1.{n}"]},
        "00400100": {"vr": "SQ", "Value": [sps]},
    }
    return WorklistItem(
        step_id=n,
        status=SPSStatus.SCHEDULED,
        patient_key=PatientKey(f"PID{n}"),
        study_uid=f"1.2.826.0.1.{n}",
        sps_id=f"SPS{n}",
        dataset=dataset,
    )


@dataclass
class FakeFinder:
    """A :class:`mwl.matching.WorklistFinder` over a list; fails after ``fail_after`` items."""

    items: list[WorklistItem]
    fail_after: int | None = None
    error: Exception = field(default_factory=lambda: StoreFailure("OperationalError: locked"))
    queries: list[WorklistQuery] = field(default_factory=list)
    closed: bool = False

    def find(self, query: WorklistQuery) -> Iterator[WorklistItem]:
        self.queries.append(query)
        return self._stream(query.limit)

    def _stream(self, limit: int | None) -> Iterator[WorklistItem]:
        try:
            for n, item in enumerate(self.items[:limit]):
                if n == self.fail_after:
                    raise self.error
                yield item
            if self.fail_after is not None and self.fail_after >= len(self.items):
                raise self.error
        finally:
            self.closed = True


def items(count: int) -> list[WorklistItem]:
    return [worklist_item(n) for n in range(1, count + 1)]


def broad_query(**top: str) -> Dataset:
    """What a CT sends: its modality, the keys it shows, an SPS item with return keys."""
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.PatientID = ""
    identifier.AccessionNumber = ""
    for keyword, value in top.items():
        setattr(identifier, keyword, value)
    sps = Dataset()
    sps.Modality = "CT"
    sps.ScheduledStationAETitle = ""
    sps.ScheduledProcedureStepID = ""
    identifier.ScheduledProcedureStepSequence = [sps]
    return identifier


def answer(
    identifier: Dataset,
    finder: FakeFinder,
    policy: WorklistPolicy | None = None,
    is_cancelled: Callable[[], bool] = lambda: False,
    transfer_syntax: UID | None = None,
) -> list[Response]:
    return list(
        find_worklist(
            identifier,
            calling_ae="CT1",
            finder=finder,
            policy=policy or WorklistPolicy(),
            now=NOW,
            is_cancelled=is_cancelled,
            transfer_syntax=transfer_syntax,
        )
    )


def statuses(responses: list[Response]) -> list[int]:
    return [status for status, _ in responses]


def cancel_after(calls: int) -> Callable[[], bool]:
    """A cancel check that turns true on its ``calls + 1``-th call."""
    seen = [0]

    def is_cancelled() -> bool:
        seen[0] += 1
        return seen[0] > calls

    return is_cancelled


# --- Pending and Success ---------------------------------------------------------------------


def test_one_pending_ff00_per_match_with_only_the_requested_keys() -> None:
    finder = FakeFinder(items(3))

    responses = answer(broad_query(), finder)

    assert statuses(responses) == [FF00, FF00, FF00]
    first = responses[0][1]
    assert first is not None
    assert [elem.keyword for elem in first] == [
        "AccessionNumber", "PatientName", "PatientID", "ScheduledProcedureStepSequence"
    ]  # fmt: skip
    (sps,) = first.ScheduledProcedureStepSequence
    assert (sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledProcedureStepID) == (
        "CT", "CT1", "SPS1"
    )  # fmt: skip
    accessions = [identifier.AccessionNumber for _, identifier in responses if identifier]
    assert accessions == ["ACC1", "ACC2", "ACC3"]
    assert finder.closed


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda uid: uid.name)
def test_with_a_transfer_syntax_each_identifier_comes_encoded_in_it(syntax: UID) -> None:
    as_datasets = answer(broad_query(), FakeFinder(items(3)))
    encoded = answer(broad_query(), FakeFinder(items(3)), transfer_syntax=syntax)

    assert statuses(encoded) == [FF00, FF00, FF00]
    for (_, dataset), (_, identifier) in zip(as_datasets, encoded, strict=True):
        assert isinstance(dataset, Dataset)
        assert identifier == encode(dataset, syntax.is_implicit_VR, syntax.is_little_endian)


@pytest.mark.parametrize(
    ("over_limit", "count", "expected"),
    [
        (OverLimit.REFUSE, 3, [0xA700]),
        (OverLimit.REFUSE, 2, [FF00, FF00]),
        (OverLimit.TRUNCATE, 5, [FF00, FF00]),
    ],
)
def test_encoded_answers_keep_to_the_maximum(
    over_limit: OverLimit, count: int, expected: list[int]
) -> None:
    finder = FakeFinder(items(count))
    policy = WorklistPolicy(max_matches=2, over_limit=over_limit)

    responses = answer(broad_query(), finder, policy, transfer_syntax=ExplicitVRLittleEndian)

    assert statuses(responses) == expected
    assert all(isinstance(found, bytes) for status, found in responses if status == FF00)
    assert finder.closed


def test_no_match_yields_nothing_so_only_success_is_sent() -> None:
    assert answer(broad_query(), FakeFinder([])) == []


def test_the_finder_gets_the_parsed_query_with_one_more_than_the_maximum() -> None:
    finder = FakeFinder(items(1))

    answer(broad_query(PatientID="PID1"), finder, WorklistPolicy(max_matches=7))

    (query,) = finder.queries
    assert query.limit == 8
    assert {match.key for match in query.matches} == {MatchKey.MODALITY, MatchKey.PATIENT_ID}


def test_unsupported_optional_key_with_a_value_gives_pending_ff01() -> None:
    identifier = broad_query(PatientBirthDate="19800101")

    responses = answer(identifier, FakeFinder(items(2)))

    assert statuses(responses) == [FF01, FF01]
    assert all(identifier is not None for _, identifier in responses)


def test_multi_valued_station_ae_comes_back_whole() -> None:
    finder = FakeFinder([worklist_item(1, stations=("MR1", "MR2"))])

    ((status, identifier),) = answer(broad_query(), finder)

    assert status == FF00
    assert identifier is not None
    assert list(identifier.ScheduledProcedureStepSequence[0].ScheduledStationAETitle) == [
        "MR1", "MR2"
    ]  # fmt: skip


# --- Cancel ----------------------------------------------------------------------------------


def test_cancel_seen_before_a_response_ends_with_fe00() -> None:
    finder = FakeFinder(items(3))

    responses = answer(broad_query(), finder, is_cancelled=cancel_after(1))

    assert statuses(responses) == [FF00, FE00]
    assert responses[-1] == (FE00, None)
    assert finder.closed


def test_cancel_before_the_first_response_sends_only_fe00() -> None:
    assert answer(broad_query(), FakeFinder(items(2)), is_cancelled=lambda: True) == [(FE00, None)]


def test_cancel_after_the_last_match_replaces_success() -> None:
    responses = answer(broad_query(), FakeFinder(items(2)), is_cancelled=cancel_after(2))

    assert statuses(responses) == [FF00, FF00, FE00]


# --- Failures with Error Comment -------------------------------------------------------------


def test_identifier_of_another_sop_class_gives_a900_with_comment_and_offending_element() -> None:
    identifier = broad_query()
    identifier.ScheduledProcedureStepSequence.append(Dataset())
    finder = FakeFinder(items(2))

    ((status, detail),) = answer(identifier, finder)

    assert status == 0xA900
    assert detail is not None
    assert detail.Status == 0xA900
    assert detail.ErrorComment == "SPS Sequence has 2 items; 1 allowed"
    assert detail.OffendingElement == 0x00400100
    assert finder.queries == []


def test_invalid_date_range_gives_the_parser_status_c100() -> None:
    identifier = broad_query()
    sps = identifier.ScheduledProcedureStepSequence[0]
    sps.ScheduledProcedureStepStartDate = "20261127-20261126"

    ((status, detail),) = answer(identifier, FakeFinder(items(1)))

    assert status == 0xC100
    assert detail is not None
    assert detail.OffendingElement == 0x00400002
    assert detail.ErrorComment == "SPS Start range ends before it starts"


def test_more_than_the_maximum_is_refused_a700_before_any_pending() -> None:
    finder = FakeFinder(items(3))
    policy = WorklistPolicy(max_matches=2, over_limit=OverLimit.REFUSE)

    ((status, detail),) = answer(broad_query(), finder, policy)

    assert status == 0xA700
    assert detail is not None
    assert (detail.Status, detail.ErrorComment) == (0xA700, "more than 2 matches; narrow the query")
    assert finder.closed


def test_exactly_the_maximum_is_answered() -> None:
    policy = WorklistPolicy(max_matches=2, over_limit=OverLimit.REFUSE)

    assert statuses(answer(broad_query(), FakeFinder(items(2)), policy)) == [FF00, FF00]


def test_more_than_the_maximum_is_truncated_when_the_policy_says_so() -> None:
    finder = FakeFinder(items(5))
    policy = WorklistPolicy(max_matches=2, over_limit=OverLimit.TRUNCATE)

    responses = answer(broad_query(), finder, policy)

    assert statuses(responses) == [FF00, FF00]
    assert finder.closed, "the finder's cursor is released at the cut"


@pytest.mark.parametrize(
    ("over_limit", "fail_after", "expected"),
    [
        (OverLimit.REFUSE, 0, [0xC110]),
        (OverLimit.REFUSE, 1, [0xC110]),  # read ahead: nothing was sent
        (OverLimit.TRUNCATE, 1, [FF00, 0xC110]),
    ],
)
def test_store_failure_gives_c001_worklist_store_unavailable(
    over_limit: OverLimit, fail_after: int, expected: list[int]
) -> None:
    finder = FakeFinder(items(3), fail_after=fail_after)

    responses = answer(broad_query(), finder, WorklistPolicy(over_limit=over_limit))

    assert statuses(responses) == expected
    detail = responses[-1][1]
    assert detail is not None
    assert detail.ErrorComment == "worklist store unavailable"


def test_unexpected_error_gives_c002_logged_without_patient_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mwl.scp")
    finder = FakeFinder(items(2), fail_after=0, error=RuntimeError("SECRET^PATIENT1 broke it"))

    ((status, detail),) = answer(broad_query(), finder)

    assert status == 0xC111
    assert detail is not None
    assert detail.ErrorComment == "internal error; see the SCP log"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "C-FIND from CT1 failed: RuntimeError (traceback at DEBUG)"
    ]
    assert "SECRET" not in caplog.text


def test_logs_above_debug_carry_counts_not_patient_data(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mwl.scp")

    answer(broad_query(PatientName="SECRET*"), FakeFinder(items(2)))

    assert caplog.messages == ["C-FIND from CT1: 2 matches"]
    assert "SECRET" not in caplog.text and "PID1" not in caplog.text


def test_status_dataset_comment_is_ascii_and_at_most_64_characters() -> None:
    detail = status_dataset(FindStatus.OUT_OF_RESOURCES, "é\\" * 40, (0x00100010, 0x00100020))

    assert detail.Status == 0xA700
    assert len(detail.ErrorComment) == 64
    assert detail.ErrorComment.isascii() and "\\" not in detail.ErrorComment
    assert list(detail.OffendingElement) == [0x00100010, 0x00100020]
