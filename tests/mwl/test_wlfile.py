"""DCMTK worklist files → patient and order records (mwl.wlfile).

DCMTK's ten sample items (tests/data/dcmtk-wlist) are built with pydicom here, so these tests
need no DCMTK; one test also converts the dumps with ``dump2dcm`` and checks that the files
give the same records.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mwl.model import OrderControl, OrderNumber, PatientKey, SPSStatus
from mwl.policy import MappingPolicy, MissingKeyPolicy
from mwl.wlfile import WorklistFileError, dataset_to_order, read_worklist_file, step_status
from tests.interop.dcmtk import SAMPLES, dump2dcm, require_tools, sample_datasets
from tests.interop.dcmtk import write_worklist_file as write

# stem: patient ID, name, accession, study UID suffix, RP ID, SPS ID, AEs, date, time,
# modality, performing physician
EXPECTED = {
    "wklist1": ("AV35674", "VIVALDI^ANTONIO", "00000", "3.2.101", "RP454G234", "SPD3445",
                ("AA32", "AA33"), "19951015", "085607", "MR", "JOHNSON"),
    "wklist2": ("AV35674", "VIVALDI^ANTONIO", "00002", "3.2.102", "RP488M9439", "SPD1342",
                ("AB45",), "19960406", "160700", "CT", "ROSS"),
    "wklist3": ("AV35674", "VIVALDI^ANTONIO", "00003", "3.2.103", "RP56567", "SPD4564",
                ("CC56", "NN77"), "19960123", "135558", "CR", "CONARD"),
    "wklist4": ("HF", "HAYDN^FRANZ^JOSEPH", "00004", "3.2.104", "RP634265", "SPD73843",
                ("AA32",), "19960103", "165709", "US", "MEYER"),
    "wklist5": ("HF", "HAYDN^FRANZ^JOSEPH", "00005", "3.2.105", "RP4734734", "SPD1234",
                ("AB45", "DD56"), "19951206", "094500", "CR", "COOPER"),
    "wklist6": ("HF", "HAYDN^FRANZ^JOSEPH", "00006", "3.2.106", "RP57463", "SPD9478",
                ("FG56", "ER67", "JJ56", "TZ77"), "19930606", "153600", "CT", "ROSS"),
    "wklist7": ("BLV734623", "BEETHOVEN^LUDWIG^VAN", "00007", "3.2.107", "RP44580", "SPD43645",
                ("AZ01",), "19960502", "140956", "NM", "JOHNSON"),
    "wklist8": ("BLV734623", "BEETHOVEN^LUDWIG^VAN", "00008", "3.2.108", "RP472", "SPD8265",
                ("DS45", "NN77", "GH67"), "19960423", "110856", "CT", "ROSS"),
    "wklist9": ("MWA484763", "MOZART^WOLFGANG^AMADEUS", "00009", "3.2.109", "RP34734H328",
                "SPD57584", ("AA67",), "19931204", "075644", "CT", "JOHNSON"),
    "wklist10": ("MWA484763", "MOZART^WOLFGANG^AMADEUS", "00001", "3.2.110", "RP4474", "SPD4548",
                 ("TT67",), "19960805", "175609", "MR", "BROWN"),
}  # fmt: skip


def summary(dataset: Dataset) -> tuple[object, ...]:
    """The EXPECTED columns of one converted item."""
    patient, order = dataset_to_order(dataset, path="test")
    [procedure] = order.procedures
    [step] = procedure.steps
    return (
        patient.key.patient_id, patient.name, order.accession, procedure.study_uid[-7:],
        procedure.requested_procedure_id, step.sps_id, step.station_aes, step.start_date,
        step.start_time, step.modality, step.performing_physician,
    )  # fmt: skip


STEP_KEYWORDS = {
    "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "Modality", "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus", "ScheduledPerformingPhysicianName",
}  # fmt: skip


def item(**overrides: object) -> Dataset:
    """A complete one-step worklist item; keyword=None removes an attribute."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "P1"
    ds.AccessionNumber = "ACC1"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.RequestedProcedureID = "RP1"
    step = Dataset()
    step.ScheduledStationAETitle = "CT1"
    step.ScheduledProcedureStepStartDate = "20261126"
    step.ScheduledProcedureStepStartTime = "0930"
    step.Modality = "CT"
    step.ScheduledProcedureStepID = "SPS1"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    for keyword, value in overrides.items():
        target = step if keyword in STEP_KEYWORDS else ds
        if value is None:
            if keyword in target:
                delattr(target, keyword)
        else:
            setattr(target, keyword, value)
    return ds


def reason(dataset: Dataset, policy: MappingPolicy | None = None) -> str:
    with pytest.raises(WorklistFileError) as caught:
        dataset_to_order(dataset, policy=policy, path="item.wl")
    assert caught.value.path == "item.wl"
    return caught.value.reason


# --- DCMTK's samples -------------------------------------------------------------------------


@pytest.mark.parametrize("stem", list(EXPECTED))
def test_dcmtk_sample_items_convert(stem: str) -> None:
    assert summary(sample_datasets()[stem]) == EXPECTED[stem]


def test_sample_order_is_a_new_scheduled_order() -> None:
    patient, order = dataset_to_order(sample_datasets()["wklist1"])

    assert order.control is OrderControl.NEW
    assert order.order_status == "SCHEDULED"
    assert (order.placer, order.filler) == (None, None)
    [procedure] = order.procedures
    assert not procedure.study_uid_generated
    assert procedure.description == "EXAM6"
    assert [step_status(step) for step in procedure.steps] == [SPSStatus.SCHEDULED]
    assert patient.key == PatientKey("AV35674")


def test_attributes_go_to_their_level() -> None:
    patient, order = dataset_to_order(sample_datasets()["wklist1"])
    procedure = order.procedures[0]
    step = procedure.steps[0]

    # patient identification/demographics; medical alerts and allergies stay with the order
    assert set(patient.attributes) == {"00100010", "00100020", "00100030", "00100040"}
    assert set(order.attributes) == {"00080050", "00321032", "00102000", "00102110"}
    assert set(procedure.attributes) == {"0020000D", "00321060", "00401001", "00401003"}
    assert step.attributes["00400001"] == {"vr": "AE", "Value": ["AA32", "AA33"]}
    assert step.attributes["00400006"] == {"vr": "PN", "Value": [{"Alphabetic": "JOHNSON"}]}
    assert step.attributes["00400012"] == {"vr": "LO"}  # zero-length stays zero-length
    assert "00080005" not in {**patient.attributes, **order.attributes, **procedure.attributes}


def test_duplicate_element_in_a_dump_keeps_the_first_value_like_dump2dcm() -> None:
    assert sample_datasets()["wklist2"].AccessionNumber == "00002"


def test_dump2dcm_files_give_the_same_records(tmp_path: Path) -> None:
    require_tools("dump2dcm")
    datasets = sample_datasets()
    for dump in SAMPLES:
        from_file = read_worklist_file(dump2dcm(dump, tmp_path / f"{dump.stem}.wl"))

        assert from_file == dataset_to_order(datasets[dump.stem]), dump.name


def test_dump2dcm_latin1_text_is_decoded(tmp_path: Path) -> None:
    require_tools("dump2dcm")
    dump = tmp_path / "latin1.dump"
    text = (DUMP_HEAD + "(0010,0010) PN  [M\xfcller^J\xf6rg]\n" + DUMP_STEP).encode("latin-1")
    dump.write_bytes(text)

    patient, _ = read_worklist_file(dump2dcm(dump, tmp_path / "latin1.wl"))

    assert patient.name == "Müller^Jörg"
    assert patient.attributes["00100010"]["Value"] == [{"Alphabetic": "Müller^Jörg"}]


DUMP_HEAD = "(0008,0005) CS  [ISO_IR 100]\n(0010,0020) LO  [P1]\n(0020,000d) UI  [1.2.3]\n"
DUMP_STEP = (
    "(0040,0100) SQ\n(fffe,e000) -\n(0008,0060) CS  [MR]\n(0040,0001) AE  [MR1]\n"
    "(0040,0002) DA  [20261126]\n(0040,0003) TM  [0800]\n(0040,0009) SH  [S1]\n"
    "(fffe,e00d) -\n(fffe,e0dd) -\n(0040,1001) SH  [RP1]\n"
)


# --- character sets --------------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192"])
def test_text_is_decoded_with_the_files_character_set(tmp_path: Path, charset: str) -> None:
    path = write(item(SpecificCharacterSet=charset, PatientName="Müller^Jörg"), tmp_path / "a.wl")

    patient, _ = read_worklist_file(path)

    assert patient.name == "Müller^Jörg"


def test_bytes_that_do_not_match_the_character_set_refuse_the_file(tmp_path: Path) -> None:
    dataset = item(SpecificCharacterSet="ISO_IR 192")
    dataset.add_new(0x00100010, "PN", b"M\xfcller")  # Latin-1 bytes under a UTF-8 label
    path = write(dataset, tmp_path / "a.wl")

    with pytest.raises(WorklistFileError, match="does not match its character set"):
        read_worklist_file(path)


def test_unsupported_character_set_is_refused() -> None:
    assert "'ISO_IR 203' is not supported" in reason(item(SpecificCharacterSet="ISO_IR 203"))


# --- identifiers -----------------------------------------------------------------------------


def test_missing_study_uid_is_generated_from_the_items_identity() -> None:
    first = dataset_to_order(item(StudyInstanceUID=None))[1].procedures[0]
    rescheduled = item(StudyInstanceUID=None, ScheduledProcedureStepStartDate="20270101")
    again = dataset_to_order(rescheduled)[1].procedures[0]
    other = dataset_to_order(item(StudyInstanceUID=None, AccessionNumber="ACC2"))

    assert first.study_uid_generated
    assert first.study_uid.startswith("2.25.")
    assert first.study_uid == again.study_uid  # scheduling data is not identity
    assert other[1].procedures[0].study_uid != first.study_uid
    assert first.attributes["0020000D"] == {"vr": "UI", "Value": [first.study_uid]}


def test_generated_study_uid_uses_the_site_root() -> None:
    policy = MappingPolicy(uid_root="1.2.826.0.1.3680043.10.999.")
    procedure = dataset_to_order(item(StudyInstanceUID=None), policy=policy)[1].procedures[0]

    assert procedure.study_uid.startswith("1.2.826.0.1.3680043.10.999.")


def test_missing_ids_are_generated_from_accession_and_rp_id() -> None:
    dataset = item(RequestedProcedureID=None, ScheduledProcedureStepID=None)
    second = copy.deepcopy(dataset.ScheduledProcedureStepSequence[0])
    dataset.ScheduledProcedureStepSequence.append(second)

    procedure = dataset_to_order(dataset)[1].procedures[0]

    assert procedure.requested_procedure_id == "ACC1"
    assert [step.sps_id for step in procedure.steps] == ["ACC1", "ACC1-2"]
    assert procedure.steps[1].attributes["00400009"] == {"vr": "SH", "Value": ["ACC1-2"]}
    assert procedure.attributes["00401001"] == {"vr": "SH", "Value": ["ACC1"]}


def test_missing_rp_id_falls_back_to_the_placer_number() -> None:
    dataset = item(AccessionNumber=None, RequestedProcedureID=None)
    dataset.PlacerOrderNumberImagingServiceRequest = "PL-7"
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "RIS"
    dataset.OrderPlacerIdentifierSequence = Sequence([issuer])

    _, order = dataset_to_order(dataset)

    assert order.placer == OrderNumber("PL-7", "RIS")
    assert order.procedures[0].requested_procedure_id == "PL-7"
    assert "00402016" in order.attributes and "00400026" in order.attributes


def test_missing_keys_without_identity_are_refused() -> None:
    dataset = item(AccessionNumber=None, RequestedProcedureID=None, StudyInstanceUID=None)

    assert "cannot be generated" in reason(dataset)


@pytest.mark.parametrize(
    ("policy", "removed", "expected"),
    [
        (MappingPolicy(missing_study_uid=MissingKeyPolicy.REJECT), "StudyInstanceUID",
         "(0020,000D) Study Instance UID is missing and the site policy is to reject"),
        (MappingPolicy(missing_requested_procedure_id=MissingKeyPolicy.REJECT),
         "RequestedProcedureID", "(0040,1001) Requested Procedure ID is missing"),
        (MappingPolicy(missing_sps_id=MissingKeyPolicy.REJECT), "ScheduledProcedureStepID",
         "SPS item 1: (0040,0009) SPS ID is missing"),
    ],
)  # fmt: skip
def test_site_policy_rejects_missing_keys(
    policy: MappingPolicy, removed: str, expected: str
) -> None:
    assert expected in reason(item(**{removed: None}), policy)


# --- refused items ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("removed", "expected"),
    [
        ("PatientID", "(0010,0020) PatientID is missing or empty (Type 1)"),
        ("PatientName", "(0010,0010) PatientName is missing or empty (Type 1)"),
        ("ScheduledStationAETitle", "SPS item 1: (0040,0001) ScheduledStationAETitle"),
        ("ScheduledProcedureStepStartDate", "SPS item 1: (0040,0002)"),
        ("ScheduledProcedureStepStartTime", "SPS item 1: (0040,0003)"),
        ("Modality", "SPS item 1: (0008,0060) Modality is missing or empty"),
        ("ScheduledProcedureStepSequence", "Scheduled Procedure Step Sequence is empty"),
    ],
)
def test_items_without_type1_keys_are_refused(removed: str, expected: str) -> None:
    assert expected in reason(item(**{removed: None}))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"StudyInstanceUID": "1.2.03"}, "Study Instance UID '1.2.03' is not a valid UID"),
        ({"ScheduledProcedureStepID": "S" * 17}, "longer than 16 characters (SH)"),
        ({"ScheduledProcedureStepStatus": "PAUSED"}, "SPS Status 'PAUSED' is none of"),
    ],
)
def test_invalid_values_are_refused(overrides: dict[str, object], expected: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom warns as the test sets them
        dataset = item(**overrides)

    assert expected in reason(dataset)


def test_two_steps_with_one_sps_id_are_refused() -> None:
    dataset = item()
    twin = copy.deepcopy(dataset.ScheduledProcedureStepSequence[0])
    dataset.ScheduledProcedureStepSequence.append(twin)

    assert reason(dataset) == "two SPS items have the SPS ID 'SPS1'"


def test_files_that_are_not_dicom_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.wl"
    text.write_text("not a worklist\n")
    empty = tmp_path / "empty.wl"
    empty.write_bytes(b"")

    for path in (text, empty, tmp_path / "missing.wl"):
        with pytest.raises(WorklistFileError) as caught:
            read_worklist_file(path)
        assert caught.value.path == str(path)
        assert "DICOM" in caught.value.reason


# --- statuses, steps, private elements -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "status"),
    [("STARTED", SPSStatus.STARTED), ("CANCELLED", SPSStatus.CANCELED), ("", SPSStatus.SCHEDULED)],
)
def test_sps_status_gives_the_order_and_step_status(value: str, status: SPSStatus) -> None:
    _, order = dataset_to_order(item(ScheduledProcedureStepStatus=value))

    assert order.order_status == status.value
    assert step_status(order.procedures[0].steps[0]) is status


def test_several_sps_items_are_several_steps_of_one_procedure() -> None:
    dataset = item()
    second = copy.deepcopy(dataset.ScheduledProcedureStepSequence[0])
    second.ScheduledProcedureStepID = "SPS2"
    second.ScheduledStationAETitle = ["MR1", "MR2"]
    second.Modality = "MR"
    dataset.ScheduledProcedureStepSequence.append(second)

    [procedure] = dataset_to_order(dataset)[1].procedures

    assert [(s.sps_id, s.modality, s.station_aes) for s in procedure.steps] == [
        ("SPS1", "CT", ("CT1",)),
        ("SPS2", "MR", ("MR1", "MR2")),
    ]


def test_private_elements_are_dropped() -> None:
    dataset = item()
    dataset.add_new(0x00090010, "LO", "ACME")
    dataset.add_new(0x00091001, "LO", "secret")
    dataset.ScheduledProcedureStepSequence[0].add_new(0x00190010, "LO", "ACME")

    patient, order = dataset_to_order(dataset)
    procedure = order.procedures[0]

    every = {**patient.attributes, **order.attributes, **procedure.attributes}
    assert not [tag for tag in every if tag.startswith("0009")]
    assert not [tag for tag in procedure.steps[0].attributes if tag.startswith("0019")]
