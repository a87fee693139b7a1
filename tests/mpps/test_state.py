"""MPPS N-CREATE / N-SET rules, one row per status code path (standards.md §4.1–4.5)."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import Dataset
from pydicom.config import disable_value_validation
from pydicom.datadict import dictionary_VR

from mpps.attributes import N_SET_NOT_ALLOWED
from mpps.model import PerformedStep, PPSStatus, StepReference
from mpps.state import (
    NO_LONGER_UPDATABLE,
    MppsError,
    MppsStatus,
    apply_set,
    create,
    moves,
    references,
    step_status_for,
)
from mwl.dicomjson import element_of
from mwl.model import SPSStatus
from tests.mpps.datasets import (
    MPPS_UID,
    STUDY_UID,
    code_item,
    completed,
    completion,
    dataset,
    discontinued,
    in_progress,
    n_create,
    series_item,
    step_item,
    wire,
)

INVALID = MppsStatus.INVALID_ATTRIBUTE_VALUE
MISSING = MppsStatus.MISSING_ATTRIBUTE
EMPTY = MppsStatus.MISSING_ATTRIBUTE_VALUE
STEPS = "ScheduledStepAttributesSequence"
SERIES = "PerformedSeriesSequence"


def tag(keyword: str) -> int:
    return int(element_of(keyword)[0], 16)


def refused(call: Any, *args: Any) -> MppsError:
    with pytest.raises(MppsError) as caught:
        call(*args)
    error = caught.value
    assert error.comment.isascii()
    assert 0 < len(error.comment) <= 64
    return error


# --- N-CREATE -------------------------------------------------------------------------------

STATUS = "PerformedProcedureStepStatus"
START_DATE = "PerformedProcedureStepStartDate"
START_TIME = "PerformedProcedureStepStartTime"
END_DATE = "PerformedProcedureStepEndDate"
END_TIME = "PerformedProcedureStepEndTime"
STUDY = "StudyInstanceUID"
PROTOCOL = "ProtocolName"
SERIES_UID = "SeriesInstanceUID"

TYPE_1 = (
    STEPS,
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    START_DATE,
    START_TIME,
    STATUS,
    "Modality",
)


def row(name: str, overrides: dict[str, Any], status: int, *keywords: str) -> Any:
    """One table row: request changes → status and Attribute Identifier List."""
    return pytest.param(overrides, status, keywords, id=name)


N_CREATE_REFUSALS = [
    row("status COMPLETED", {STATUS: "COMPLETED"}, INVALID, STATUS),
    row("status DISCONTINUED", {STATUS: "DISCONTINUED"}, INVALID, STATUS),
    row("status unknown", {STATUS: "STARTED"}, INVALID, STATUS),
    *[row(f"{kw} absent", {kw: None}, MISSING, kw) for kw in TYPE_1],
    *[row(f"{kw} empty", {kw: [] if kw == STEPS else ""}, EMPTY, kw) for kw in TYPE_1],
    row("item without Study UID", {STEPS: [step_item(**{STUDY: None})]}, MISSING, STEPS, STUDY),
    row("item with empty Study UID", {STEPS: [step_item(**{STUDY: ""})]}, EMPTY, STEPS, STUDY),
    row(
        "second group item without Study UID",
        {STEPS: [step_item(), step_item(**{STUDY: None})]},
        MISSING,
        STEPS,
        STUDY,
    ),
    row(
        "absent beats empty",
        {"Modality": None, "PerformedProcedureStepID": ""},
        MISSING,
        "Modality",
    ),
    row(
        "several absent",
        {"Modality": None, "PerformedStationAETitle": None},
        MISSING,
        "PerformedStationAETitle",
        "Modality",
    ),
    row("start date not a date", {START_DATE: "20241332"}, INVALID, START_DATE),
    row("start date too short", {START_DATE: "2024011"}, INVALID, START_DATE),
    row("start time hour 25", {START_TIME: "250000"}, INVALID, START_TIME),
    row("start time fraction without seconds", {START_TIME: "1030.5"}, INVALID, START_TIME),
    row("end date 30 February", {END_DATE: "20240230"}, INVALID, END_DATE),
    row(
        "charset pydicom cannot decode",
        {"SpecificCharacterSet": "ISO_IR 203"},
        INVALID,
        "SpecificCharacterSet",
    ),
]


@pytest.mark.parametrize(("overrides", "status", "keywords"), N_CREATE_REFUSALS)
def test_n_create_refused(overrides: dict[str, Any], status: int, keywords: tuple[str]) -> None:
    with disable_value_validation():  # pydicom would warn about the malformed values
        request = n_create(**overrides)
    error = refused(create, MPPS_UID, request)
    assert (error.status, error.attributes, error.error_id) == (
        status,
        tuple(tag(kw) for kw in keywords),
        None,
    )


def test_n_create_comment_names_the_tags_and_fits_64_characters() -> None:
    error = refused(create, MPPS_UID, n_create(**{kw: None for kw in TYPE_1}))
    assert error.comment.startswith("N-CREATE: missing (0040,0270) (0040,0253)")
    assert error.comment.endswith("...")
    assert len(error.attributes) == len(TYPE_1)


def test_n_create_status_comment_says_what_was_sent() -> None:
    error = refused(create, MPPS_UID, n_create(PerformedProcedureStepStatus="COMPLETED"))
    assert error.comment == "N-CREATE status must be IN PROGRESS, not 'COMPLETED'"


def test_n_create_undecodable_list_is_a_processing_failure() -> None:
    class Broken(Dataset):
        def to_json_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            raise ValueError("bad raw value")

    broken = Broken()
    broken.update(n_create())
    error = refused(create, MPPS_UID, broken)
    assert (error.status, error.attributes) == (MppsStatus.PROCESSING_FAILURE, ())
    assert error.comment == "Attribute list could not be decoded (ValueError)"


def test_n_create_builds_the_step() -> None:
    step = in_progress()
    assert step == PerformedStep(
        sop_instance_uid=MPPS_UID,
        status=PPSStatus.IN_PROGRESS,
        dataset=step.dataset,
        references=(
            StepReference(
                study_uid=STUDY_UID,
                sps_id="SPS-1",
                requested_procedure_id="RP-1",
                accession="ACC-1",
                placer_number="PL-1",
                filler_number="FL-1",
            ),
        ),
        pps_id="PPS-1",
        performed_station_ae="CT01",
        modality="CT",
        start_date="20240102",
        start_time="103000",
    )
    assert step.dataset == n_create().to_json_dict()


def test_n_create_tolerates_absent_type_2_attributes() -> None:
    """Real modalities omit Type 2 attributes; they are stored as absent."""
    type_2 = ["PatientName", "PatientID", "StudyID", "PerformedStationName", SERIES]
    step = create(
        MPPS_UID, n_create(**dict.fromkeys(type_2), **{STEPS: [dataset(StudyInstanceUID="1.2.3")]})
    )
    assert not any(element_of(kw)[0] in step.dataset for kw in type_2)
    assert step.references == (StepReference(study_uid="1.2.3"),)


@pytest.mark.parametrize("time", ["10", "1030", "103000", "103000.1", "103000.123456", "235960"])
def test_n_create_accepts_every_tm_form(time: str) -> None:
    assert in_progress(PerformedProcedureStepStartTime=time).start_time == time


def test_n_create_group_case_gives_one_reference_per_item() -> None:
    items = [
        step_item(
            AccessionNumber="ACC-1", RequestedProcedureID="RP-1", ScheduledProcedureStepID="S1"
        ),
        step_item(
            AccessionNumber="ACC-2", RequestedProcedureID="RP-2", ScheduledProcedureStepID="S2"
        ),
    ]
    step = in_progress(ScheduledStepAttributesSequence=items)
    assert [
        (r.study_uid, r.accession, r.requested_procedure_id, r.sps_id) for r in step.references
    ] == [
        (STUDY_UID, "ACC-1", "RP-1", "S1"),
        (STUDY_UID, "ACC-2", "RP-2", "S2"),
    ]
    assert not any(r.is_empty for r in step.references)


def test_n_create_unscheduled_step_has_an_empty_reference() -> None:
    """PS3.4 F.7.2.1.2 note 3: only an SCU-generated Study UID, the rest zero-length."""
    unscheduled = step_item(
        StudyInstanceUID="1.2.3.99",
        AccessionNumber="",
        RequestedProcedureID="",
        ScheduledProcedureStepID="",
        PlacerOrderNumberImagingServiceRequest=None,
        FillerOrderNumberImagingServiceRequest=None,
    )
    (reference,) = in_progress(ScheduledStepAttributesSequence=[unscheduled]).references
    assert reference == StepReference(study_uid="1.2.3.99")
    assert reference.is_empty


def test_references_reads_a_pydicom_dataset_and_dicom_json_alike() -> None:
    ds = n_create(ScheduledStepAttributesSequence=[step_item(), step_item(AccessionNumber="B")])
    assert (
        references(ds)
        == references(ds.to_json_dict())
        == in_progress(**{STEPS: list(ds[STEPS].value)}).references
    )
    assert len(references(ds)) == 2


# --- character sets -------------------------------------------------------------------------

LATIN_1_CREATE = {"SpecificCharacterSet": "ISO_IR 100", "PatientName": "Müller^Jürgen"}


def test_ascii_text_needs_no_specific_character_set() -> None:
    step = create(MPPS_UID, wire(n_create(SpecificCharacterSet="ISO_IR 100")))
    assert step.charset == ""
    assert "00080005" not in step.dataset


def test_latin_1_n_create_is_stored_as_unicode() -> None:
    step = create(MPPS_UID, wire(n_create(**LATIN_1_CREATE)))
    assert step.charset == "ISO_IR 192"
    assert step.dataset["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
    assert step.dataset["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]


def test_n_set_in_utf_8_combines_with_a_latin_1_n_create() -> None:
    """PS3.4 F.7.2.2.1/.3: the SCP combines both sets; both are decoded, stored as ISO_IR 192."""
    created = create(MPPS_UID, wire(n_create(**LATIN_1_CREATE)))
    modification = completion(
        SpecificCharacterSet="ISO_IR 192",
        PerformedSeriesSequence=[series_item(OperatorsName="Żółć^Łukasz")],
        CommentsOnThePerformedProcedureStep="Kontrastmittel: Ärger mit Ω",
    )
    step = apply_set(created, wire(modification))
    assert step.charset == "ISO_IR 192"
    assert step.dataset["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
    (series,) = step.dataset["00400340"]["Value"]
    assert series["00081070"]["Value"] == [{"Alphabetic": "Żółć^Łukasz"}]
    assert step.dataset["00400280"]["Value"] == ["Kontrastmittel: Ärger mit Ω"]
    restored = wire(Dataset.from_json(step.dataset))
    assert str(restored.PatientName) == "Müller^Jürgen"
    assert str(restored.PerformedSeriesSequence[0].OperatorsName) == "Żółć^Łukasz"


def test_ascii_n_set_keeps_the_unicode_of_the_stored_step() -> None:
    created = create(MPPS_UID, wire(n_create(**LATIN_1_CREATE)))
    step = apply_set(created, wire(completion()))
    assert step.charset == "ISO_IR 192"


# --- N-SET ----------------------------------------------------------------------------------


@pytest.mark.parametrize("final", [completed, discontinued], ids=["COMPLETED", "DISCONTINUED"])
def test_n_set_after_final_state_is_a_processing_failure_a710(final: Any) -> None:
    """PS3.4 F.7.2.2.4 (standards.md §4.2)."""
    error = refused(apply_set, final(), completion())
    assert (error.status, error.error_id, error.attributes) == (
        MppsStatus.PROCESSING_FAILURE,
        NO_LONGER_UPDATABLE,
        (),
    )
    assert error.error_id == 0xA710
    assert error.comment == "Performed Procedure Step Object may no longer be updated"


def value_for(keyword: str) -> Any:
    vr = str(dictionary_VR(tag(keyword)))
    samples: dict[str, Any] = {"SQ": [], "DA": "20240101", "TM": "101010", "PN": "Doe^Jane"}
    return samples.get(vr, "X")


@pytest.mark.parametrize("keyword", N_SET_NOT_ALLOWED)
def test_n_set_refuses_attributes_not_allowed(keyword: str) -> None:
    """Table F.7.2-1 "Not allowed" → 0106 with the tag (module docstring of mpps.state)."""
    error = refused(apply_set, in_progress(), completion(**{keyword: value_for(keyword)}))
    assert (error.status, error.attributes) == (INVALID, (tag(keyword),))
    assert error.comment.startswith("Not allowed in N-SET: (")


def test_n_set_lists_every_attribute_not_allowed() -> None:
    modification = completion(PatientName="Doe^Jane", Modality="MR", StudyID="9")
    error = refused(apply_set, in_progress(), modification)
    assert error.attributes == (tag("PatientName"), tag("Modality"), tag("StudyID"))


COMPLETED_WITHOUT = [
    row("end date absent", {END_DATE: None}, MISSING, END_DATE),
    row("end date empty", {END_DATE: ""}, EMPTY, END_DATE),
    row("end time empty", {END_TIME: ""}, EMPTY, END_TIME),
    row("series empty", {SERIES: []}, EMPTY, SERIES),
    row(
        "Protocol Name absent",
        {SERIES: [series_item(**{PROTOCOL: None})]},
        MISSING,
        SERIES,
        PROTOCOL,
    ),
    row(
        "Series UID absent",
        {SERIES: [series_item(**{SERIES_UID: None})]},
        MISSING,
        SERIES,
        SERIES_UID,
    ),
    row("Protocol Name empty", {SERIES: [series_item(**{PROTOCOL: ""})]}, EMPTY, SERIES, PROTOCOL),
    row(
        "second series item without UID value",
        {SERIES: [series_item(), series_item(**{SERIES_UID: ""})]},
        EMPTY,
        SERIES,
        SERIES_UID,
    ),
]
DISCONTINUED_WITHOUT = [
    row("end time absent", {END_TIME: None}, MISSING, END_TIME),
    row(
        "Protocol Name absent",
        {SERIES: [series_item(**{PROTOCOL: None})]},
        MISSING,
        SERIES,
        PROTOCOL,
    ),
]
N_SET_REFUSALS = [
    row("status unknown", {STATUS: "ABORTED"}, INVALID, STATUS),
    row("status lower case", {STATUS: "completed"}, INVALID, STATUS),
    row("status empty", {STATUS: ""}, EMPTY, STATUS),
    row("end time malformed", {END_TIME: "109900"}, INVALID, END_TIME),
    *[pytest.param(*param.values, id=f"COMPLETED, {param.id}") for param in COMPLETED_WITHOUT],
    *[
        pytest.param(
            {STATUS: "DISCONTINUED", **param.values[0]},
            *param.values[1:],
            id=f"DISCONTINUED, {param.id}",
        )
        for param in DISCONTINUED_WITHOUT
    ],
]


@pytest.mark.parametrize(("overrides", "status", "keywords"), N_SET_REFUSALS)
def test_n_set_refused(overrides: dict[str, Any], status: int, keywords: tuple[str]) -> None:
    """The N-CREATE here leaves out End Date/Time: absent from the N-SET means absent (0120)."""
    created = in_progress(PerformedProcedureStepEndDate=None, PerformedProcedureStepEndTime=None)
    with disable_value_validation():  # pydicom would warn about the malformed values
        modification = completion(**overrides)
    error = refused(apply_set, created, modification)
    assert (error.status, error.attributes) == (status, tuple(tag(kw) for kw in keywords))


def test_final_state_requires_a_series_sequence_for_completed() -> None:
    created = in_progress(PerformedSeriesSequence=None)
    error = refused(apply_set, created, completion(PerformedSeriesSequence=None))
    assert (error.status, error.attributes) == (MISSING, (tag(SERIES),))
    assert error.comment == "COMPLETED: missing (0040,0340)"


def test_final_state_is_checked_on_the_merged_step() -> None:
    """End date/time from N-CREATE and the series from an earlier N-SET count at COMPLETED."""
    created = in_progress(
        PerformedProcedureStepEndDate="20240102", PerformedProcedureStepEndTime="1100"
    )
    progress = apply_set(created, dataset(PerformedSeriesSequence=[series_item()]))
    assert progress.status is PPSStatus.IN_PROGRESS
    step = apply_set(progress, dataset(PerformedProcedureStepStatus="COMPLETED"))
    assert (step.status, step.end_date, step.end_time) == (PPSStatus.COMPLETED, "20240102", "1100")


@pytest.mark.parametrize("series", [[], None], ids=["empty series", "no series"])
def test_discontinued_may_have_no_series(series: list[Any] | None) -> None:
    created = in_progress(PerformedSeriesSequence=series)
    modification = completion(
        PerformedProcedureStepStatus="DISCONTINUED", PerformedSeriesSequence=series
    )
    assert apply_set(created, modification).status is PPSStatus.DISCONTINUED


def test_n_set_in_progress_needs_no_final_values() -> None:
    step = apply_set(
        in_progress(),
        dataset(PerformedProcedureStepStatus="IN PROGRESS", PerformedSeriesSequence=[]),
    )
    assert (step.status, step.end_date) == (PPSStatus.IN_PROGRESS, "")


def test_n_set_replaces_top_level_attributes_and_whole_sequences() -> None:
    first = series_item(SeriesInstanceUID="1.2.3.1", ProtocolName="Scout")
    second = series_item(SeriesInstanceUID="1.2.3.2", ProtocolName="Thorax")
    third = series_item(SeriesInstanceUID="1.2.3.3", ProtocolName="Abdomen")
    progress = apply_set(
        in_progress(),
        dataset(PerformedSeriesSequence=[first], PerformedProcedureStepDescription="Scout only"),
    )
    step = apply_set(
        progress,
        completion(
            PerformedSeriesSequence=[second, third],
            PerformedProcedureStepDescription="CT Thorax/Abdomen",
        ),
    )
    series = step.dataset["00400340"]["Value"]
    assert [item["0020000E"]["Value"][0] for item in series] == ["1.2.3.2", "1.2.3.3"]
    assert step.dataset["00400254"]["Value"] == ["CT Thorax/Abdomen"]
    assert (step.end_date, step.end_time) == ("20240102", "104500")
    created = in_progress().dataset
    assert all(step.dataset[key] == created[key] for key in ("00100010", "00400270", "00400253"))


def test_n_set_keeps_identity_of_the_stored_step() -> None:
    step = completed()
    assert (step.sop_instance_uid, step.pps_id, step.modality, step.references) == (
        MPPS_UID,
        "PPS-1",
        "CT",
        in_progress().references,
    )


def test_n_set_does_not_change_the_stored_step() -> None:
    created = in_progress()
    before = dict(created.dataset)
    apply_set(created, completion())
    assert created.dataset == before
    assert created.status is PPSStatus.IN_PROGRESS


# --- discontinuation and the worklist status ------------------------------------------------


def reason(*codes: tuple[str, str]) -> Any:
    return lambda: discontinued(*(code_item(value, scheme) for value, scheme in codes))


EQUIPMENT_FAILURE = ("110501", "DCM")
INCORRECT_ENTRY = ("110514", "DCM")
STEP_STATUS = [
    pytest.param(in_progress, True, SPSStatus.STARTED, id="in progress"),
    pytest.param(completed, True, SPSStatus.COMPLETED, id="completed"),
    pytest.param(discontinued, True, SPSStatus.DISCONTINUED, id="discontinued, no reason"),
    pytest.param(reason(EQUIPMENT_FAILURE), True, SPSStatus.DISCONTINUED, id="equipment failure"),
    pytest.param(reason(INCORRECT_ENTRY), True, SPSStatus.SCHEDULED, id="incorrect entry"),
    pytest.param(
        reason(EQUIPMENT_FAILURE, INCORRECT_ENTRY), True, SPSStatus.SCHEDULED, id="among reasons"
    ),
    pytest.param(reason(INCORRECT_ENTRY), False, SPSStatus.DISCONTINUED, id="flag off"),
    pytest.param(reason(("110514", "99LOCAL")), True, SPSStatus.DISCONTINUED, id="other scheme"),
]


@pytest.mark.parametrize(("make", "reschedule", "expected"), STEP_STATUS)
def test_step_status_for(make: Any, reschedule: bool, expected: SPSStatus) -> None:
    """standards.md §2.2 and §4.5."""
    step = make()
    assert step_status_for(step, reschedule_on_incorrect_entry=reschedule) is expected


def test_discontinuation_reasons_are_read() -> None:
    step = discontinued(code_item("110501"), code_item("110514"))
    assert step.discontinuation_reasons == ("110501", "110514")
    assert step.status is PPSStatus.DISCONTINUED


def test_mpps_error_keeps_what_the_response_needs() -> None:
    error = MppsError(0x0120, "x" * 80, attributes=[0x00400252, 0x00400252, 0x00080060])
    assert (error.status, len(error.comment), error.attributes) == (
        0x0120,
        64,
        (0x00400252, 0x00080060),
    )
    assert str(error).startswith("0120H ")


def test_malformed_date_from_the_wire_is_invalid_not_a_decoding_failure() -> None:
    """pydicom passes a raw DA of the right length and characters through; the check answers."""
    with disable_value_validation():
        request = wire(n_create(PerformedProcedureStepStartDate="20241332"))
    error = refused(create, MPPS_UID, request)
    assert (error.status, error.attributes) == (INVALID, (tag("PerformedProcedureStepStartDate"),))


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (SPSStatus.SCHEDULED, SPSStatus.STARTED, True),
        (SPSStatus.ARRIVED, SPSStatus.STARTED, True),
        (SPSStatus.STARTED, SPSStatus.STARTED, False),
        (SPSStatus.STARTED, SPSStatus.COMPLETED, True),
        (SPSStatus.STARTED, SPSStatus.DISCONTINUED, True),
        (SPSStatus.STARTED, SPSStatus.SCHEDULED, True),
        (SPSStatus.COMPLETED, SPSStatus.STARTED, False),
        (SPSStatus.COMPLETED, SPSStatus.DISCONTINUED, False),
        (SPSStatus.COMPLETED, SPSStatus.SCHEDULED, False),
        (SPSStatus.COMPLETED, SPSStatus.COMPLETED, False),
        (SPSStatus.DISCONTINUED, SPSStatus.STARTED, False),
        (SPSStatus.DISCONTINUED, SPSStatus.COMPLETED, True),
        (SPSStatus.CANCELED, SPSStatus.STARTED, False),
        (SPSStatus.CANCELED, SPSStatus.COMPLETED, True),
    ],
)
def test_an_mpps_moves_a_step_forward_only(
    current: SPSStatus, new: SPSStatus, expected: bool
) -> None:
    assert moves(current, new) is expected
