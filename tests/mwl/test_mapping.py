"""Table-driven mapping tests: real-world sample messages → worklist attributes.

Each row names a sample from tests/data/hl7 (see SOURCES.md there) and the DICOM attributes its
first scheduled step must carry, as the modality would see them (standards.md §1.2, §1.3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hl7.codec import decode
from hl7.errors import AckCode, ErrorCode, HL7Error
from mwl.dicomjson import element_of
from mwl.mapping import message_to_command
from mwl.model import OrderMessage, PatientIdChange, PatientMerge, PatientUpdate
from mwl.policy import LongIdentifierPolicy, MappingPolicy, MissingKeyPolicy, StationRule
from tests.orders import order

DATA = Path(__file__).parent.parent / "data" / "hl7"
SPS = "ScheduledProcedureStepSequence"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def value(dataset: dict[str, Any], keyword: str) -> Any:
    """The value of ``keyword`` as a modality would read it ("" when empty, None when absent)."""
    element = dataset.get(element_of(keyword)[0])
    if element is None:
        return None
    values = element.get("Value", [])
    if not values:
        return ""
    first = values[0]
    if isinstance(first, dict) and "Alphabetic" in first:
        return first["Alphabetic"]
    return values if len(values) > 1 else first


def items(command: OrderMessage) -> list[dict[str, Any]]:
    """Flattened worklist items: top-level attributes with the step's SPS item under SPS."""
    found = []
    for record in command.orders:
        for proc in record.procedures:
            for step in proc.steps:
                top = {**command.patient.attributes, **record.attributes, **proc.attributes}
                top[element_of(SPS)[0]] = {"vr": "SQ", "Value": [step.attributes]}
                found.append(top)
    return found


def step_value(item: dict[str, Any], keyword: str) -> Any:
    return value(item[element_of(SPS)[0]]["Value"][0], keyword)


POLICY = MappingPolicy(procedure_modality={"CTCRANE": "CT"})

CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "01_dcm4che_ORM_O01_v231_MESA_ZDS.hl7",
        {
            "PatientName": "DOE^J1",
            "PatientID": "583295",
            "IssuerOfPatientID": "ADT1",
            "PatientSex": "M",
            "AccessionNumber": "MOF5026",
            "RequestedProcedureID": "RP1026",
            "StudyInstanceUID": "1.113654.3.13.1026",
            "PlacerOrderNumberImagingServiceRequest": "A103Z",
            "FillerOrderNumberImagingServiceRequest": "B103Z",
            "ReferringPhysicianName": "NELL^FREDERICK^P^DR",
            "RequestingPhysician": "ESTRADA^JAIME^P^DR",
            "RequestedProcedureDescription": "Procedure 1",
            "RequestedProcedurePriority": "STAT",
            "PatientTransportArrangements": "WALK",
            "AdmissionID": "V103-1",
            "RouteOfAdmissions": "E",
        },
        {
            "ScheduledProcedureStepID": "SPS2032",
            "Modality": "MR",
            "ScheduledProcedureStepStartDate": "20000701",
            "ScheduledProcedureStepStartTime": "0900",
            "ScheduledProcedureStepDescription": "SP Action Item X1_A1",
            "ScheduledPerformingPhysicianName": "ESTRADA^JAIME^P^DR",
            "ScheduledStationAETitle": "ANY",
        },
    ),
    (
        "02_dcm4che_OMI_O23_v251_IPC_veterinary.hl7",
        {
            "PatientName": "DOE^Shadow",
            "PatientID": "4711471151",
            "IssuerOfPatientID": "zxcv",
            "PatientBirthDate": "20141014",
            "PatientWeight": "15",
            "PatientSize": "0.4",
            "AccessionNumber": "ACC",
            "RequestedProcedureID": "RPID",
            "StudyInstanceUID": "1.2.392.200036.9125.0.199402091242.1",
            "RequestedProcedureDescription": "Head CT",
        },
        {
            "ScheduledProcedureStepID": "SPSID",
            "Modality": "CT",
            "ScheduledStationAETitle": "MODALITY",
            # SH values cut to 16 characters (standards.md §1.3 "Truncation")
            "ScheduledStationName": "ScheduledStation",
            "ScheduledProcedureStepLocation": "ScheduledProcedu",
            "ScheduledProcedureStepDescription": "ProtocolMeaning",
            "ScheduledProcedureStepStartDate": "20000816",
            "ScheduledProcedureStepStartTime": "1510",
        },
    ),
    (
        "05_dcm4che_OMG_O19_v251_Eyecare_ZDS.hl7",
        {
            "PatientName": "Smith^Lucy^Mark",
            "PatientComments": "PatientComments",
            "AccessionNumber": "AccessionNumber",
            "RequestedProcedureID": "RequestedProcID",
            "StudyInstanceUID": "1.2.392.200036.9125.0.198811291108.7",
            # a PN component group holds at most 64 characters (PS3.5 6.2)
            "ReferringPhysicianName": "ReferringPhysicianFN^ReferringPhysicianGN"
            "^ReferringPhysicianMN^D",
            "PregnancyStatus": 3,
            "AdmissionID": "AdmissionIDFromVisitNo",
            "MedicalAlerts": "MedicalAlerts",
            "PatientState": "PatientState",
            "RequestedProcedureComments": "RequestedProcedureComments",
            "PatientWeight": "65",
            "PatientSize": "1.65",
        },
        {
            # 19 characters: shortened to SH by the default LongIdentifierPolicy.SHORTEN
            "ScheduledProcedureStepID": "Scheduled16dd758",
            "Modality": "CT",
        },
    ),
    (
        "10_orthanctools_ORM_O01_v231_latin1_noMSH18_OBX_weight.hl7",
        {
            # XPN prefix (component 5) goes to the PN prefix slot, not the suffix (§1.3)
            "PatientName": "VANILLÉ^LAURA^^Mme",
            "PatientMotherBirthName": "MAIDEN",
            "PatientBirthDate": "19521103",
            "PatientSex": "F",
            "PatientWeight": "62",
            "PatientSize": "1.90",
            "AccessionNumber": "269539",
            # LO: at most 64 bytes of UTF-8, cut on a character boundary
            "RequestedProcedureDescription": "SCANNER É DE 3 TERRITOIRES ANATOMIQUES OU PLUS "
            "AVEC INJECTION",
        },
        {
            "Modality": "CT",
            "ScheduledProcedureStepStartDate": "20170914",
            "ScheduledProcedureStepStartTime": "1537",
            "ScheduledPerformingPhysicianName": "",
        },
    ),
    (
        "11_orthanctools_ORM_O01_v231_QDOC_8859-1_ORC_SC_IP_ZDS.hl7",
        {
            "PatientName": "DUBOIS^Jean",
            "PatientID": "123456Q",
            "AccessionNumber": "0897456",
            "StudyInstanceUID": "1.2.41.0.1.1.202.123.42.21.5832143.5832122",
            "RequestedProcedureDescription": "CT cérébral",
        },
        {"Modality": "CT", "ScheduledProcedureStepID": "0897456"},
    ),
    (
        "12_orthanctools_ORM_O01_v231_ECSIMAGING_8859-15_ZDS.hl7",
        {
            "PatientName": "LLOxxx^Simxxx",
            "PatientBirthDate": "19550812",
            "PatientSex": "F",
            "AccessionNumber": "",
            "StudyInstanceUID": "1.3.6.1.4.1.31672.1.2.1.973852.91.1596520991.411",
            "RequestedProcedureID": "3264557",
            "RequestedProcedureDescription": "IRM FOIE IV",
        },
        {
            "Modality": "MR",  # "NMR" through the default modality map
            "ScheduledProcedureStepStartDate": "20201001",
            "ScheduledProcedureStepStartTime": "141000",
            "ScheduledProcedureStepDescription": "IRM FOIE IV",
        },
    ),
    (
        "14_orthanctools_ORM_O01_v231_AssistoVet_ZDS_vet.hl7",
        {
            "PatientName": "BENARD^HORUS",
            "PatientID": "3951-1",
            "StudyInstanceUID": "1.2.4.0.13.1.4.2252867.20231109114936",
            "RequestedProcedureID": "ECHO2",
            "PatientWeight": "36.000",
        },
        {"Modality": "US", "ScheduledProcedureStepID": "202311091b7f9741"},
    ),
    (
        "16_orthanctools_ORM_O01_v25_InstSteCatherine_INS_NIR.hl7",
        {
            "PatientName": "TEST^LUCIEN",
            "PatientID": "202303295",
            "IssuerOfPatientID": "icap84.org",
            "AccessionNumber": "1714293",
        },
        {
            "Modality": "DX",
            "ScheduledProcedureStepStartDate": "20250130",
            "ScheduledProcedureStepStartTime": "163000",
        },
    ),
    (
        "19_orthanctools_ORM_O01_v250_VETERA_BOM_CRLF_utf8.hl7",
        {"PatientName": "GP.Software^Vetera", "PatientID": "999888777"},
        {
            "ScheduledProcedureStepStartDate": "20170731",
            "ScheduledProcedureStepStartTime": "081517",
            "ScheduledProcedureStepDescription": "ä",
        },
    ),
]


@pytest.mark.parametrize(("sample", "top", "step"), CASES, ids=[c[0][:2] for c in CASES])
def test_sample_maps_to_worklist_attributes(
    sample: str, top: dict[str, Any], step: dict[str, Any]
) -> None:
    raw = load(sample)
    if sample.startswith("11_"):  # sent as a status update (ORC-1 SC); mapped here as NW
        raw = raw.replace(b"ORC|SC|", b"ORC|NW|")
    command = message_to_command(decode(raw), POLICY)
    assert isinstance(command, OrderMessage)
    item = items(command)[0]
    assert {k: value(item, k) for k in top} == top
    assert {k: step_value(item, k) for k in step} == step


def test_status_update_carries_the_order_keys_without_a_schedule() -> None:
    sample = load("11_orthanctools_ORM_O01_v231_QDOC_8859-1_ORC_SC_IP_ZDS.hl7")
    command = message_to_command(decode(sample), POLICY)
    assert isinstance(command, OrderMessage)
    [order_record] = command.orders
    assert (order_record.control.value, order_record.order_status) == ("SC", "IP")
    assert order_record.filler is not None and order_record.filler.number == "N4568254"
    [procedure] = order_record.procedures
    assert procedure.study_uid == "1.2.41.0.1.1.202.123.42.21.5832143.5832122"
    assert procedure.steps == ()


def test_other_patient_ids_and_issuer_qualifiers_sample_16() -> None:
    command = message_to_command(
        decode(load("16_orthanctools_ORM_O01_v25_InstSteCatherine_INS_NIR.hl7")), POLICY
    )
    assert isinstance(command, OrderMessage)
    others = command.patient.attributes[element_of("OtherPatientIDsSequence")[0]]["Value"]
    assert value(others[0], "PatientID") == "139061305567914"
    assert value(others[0], "IssuerOfPatientID") == "ASIP-SANTE-INS-NIR"


def test_ipc_repeated_station_ae_titles_are_multi_valued() -> None:
    raw = (
        load("03_dcm4che_OMI_O23_v251_IPC_ImagingOrder.hl7")
        .replace(b"ScheduledStationAET1~ScheduledStationAET2", b"CT_ROOM1~CT_ROOM2")
        .replace(b"ScheduledProcStepID", b"SPS-1")
    )
    command = message_to_command(decode(raw), POLICY)
    assert isinstance(command, OrderMessage)
    step = command.orders[0].procedures[0].steps[0]
    assert step.station_aes == ("CT_ROOM1", "CT_ROOM2")
    item = items(command)[0]
    assert step_value(item, "ScheduledStationAETitle") == ["CT_ROOM1", "CT_ROOM2"]
    # The en dash arrives as UTF-8 although MSH-18 says 8859/1 (documented fallback)
    assert "12 –35." in value(item, "ReasonForTheRequestedProcedure")


def test_station_ae_title_too_long_is_refused_naming_ipc_9() -> None:
    with pytest.raises(HL7Error) as caught:
        message_to_command(decode(load("03_dcm4che_OMI_O23_v251_IPC_ImagingOrder.hl7")), POLICY)
    assert caught.value.ack_code is AckCode.ERROR
    detail = caught.value.details[0]
    assert (detail.code, str(detail.location)) == (ErrorCode.DATA_TYPE, "IPC-9")


def test_adt_messages_map_to_patient_commands() -> None:
    update = message_to_command(decode(load("06_dcm4che_ADT_A08_v251.hl7")), POLICY)
    assert isinstance(update, PatientUpdate)
    assert (update.patient.key.patient_id, update.patient.name) == ("583295", "Smith^Shadow")
    merge = message_to_command(decode(load("07_dcm4che_ADT_A40_PatientMerge_v251.hl7")), POLICY)
    assert isinstance(merge, PatientMerge)
    assert (merge.prior.patient_id, merge.surviving.key.patient_id) == ("OLD_PID_1", "NEW_PID_1")
    a47 = load("07_dcm4che_ADT_A40_PatientMerge_v251.hl7").replace(b"ADT^A40^ADT_A39", b"ADT^A47")
    change = message_to_command(decode(a47), POLICY)
    assert isinstance(change, PatientIdChange)
    assert change.prior.patient_id == "OLD_PID_1"


def test_generated_study_uid_is_deterministic_and_policy_reject_refuses() -> None:
    first = message_to_command(decode(order()), POLICY)
    again = message_to_command(decode(order().replace(b"MSG1", b"MSG2")), POLICY)
    assert isinstance(first, OrderMessage) and isinstance(again, OrderMessage)
    uid = first.orders[0].procedures[0].study_uid
    assert uid.startswith("2.25.") and first.orders[0].procedures[0].study_uid_generated
    assert again.orders[0].procedures[0].study_uid == uid
    rooted = message_to_command(
        decode(order()), MappingPolicy(uid_root="1.2.826.0.1.3680043.10.99")
    )
    assert isinstance(rooted, OrderMessage)
    assert rooted.orders[0].procedures[0].study_uid.startswith("1.2.826.0.1.3680043.10.99.")
    with pytest.raises(HL7Error) as caught:
        message_to_command(
            decode(order()), MappingPolicy(missing_study_uid=MissingKeyPolicy.REJECT)
        )
    assert str(caught.value.details[0].location) == "ZDS-1"


def test_missing_rp_and_sps_ids_are_generated_from_the_accession() -> None:
    obr = "OBR|1|P1^RIS|F1^RIS|CTHEAD^CT Head^L||||||||||||||ACC1||||||CT"
    command = message_to_command(decode(order(obr=obr)), POLICY)
    assert isinstance(command, OrderMessage)
    proc = command.orders[0].procedures[0]
    assert (proc.requested_procedure_id, proc.steps[0].sps_id) == ("ACC1", "ACC1")
    with pytest.raises(HL7Error) as caught:
        message_to_command(
            decode(order(obr=obr)), MappingPolicy(missing_sps_id=MissingKeyPolicy.REJECT)
        )
    assert str(caught.value.details[0].location) == "OBR-20"


def test_several_obr_with_one_rp_and_sps_add_protocol_codes() -> None:
    obr1 = "OBR|1|P1^RIS|F1^RIS|CT1^CT Head^L^PC1^Plain^L||||||||||||||ACC1|RP1|SPS1||||CT"
    obr2 = "OBR|2|P1^RIS|F1^RIS|CT1^CT Head^L^PC2^Contrast^L||||||||||||||ACC1|RP1|SPS1||||CT"
    obr3 = "OBR|3|P1^RIS|F1^RIS|CT2^CT Neck^L||||||||||||||ACC1|RP2|SPS2||||CT"
    raw = order(obr="\r".join([obr1, obr2, obr3]))
    command = message_to_command(decode(raw), POLICY)
    assert isinstance(command, OrderMessage)
    procs = command.orders[0].procedures
    assert [p.requested_procedure_id for p in procs] == ["RP1", "RP2"]
    assert len({p.study_uid for p in procs}) == 2
    protocols = procs[0].steps[0].attributes[element_of("ScheduledProtocolCodeSequence")[0]]
    assert [value(i, "CodeValue") for i in protocols["Value"]] == ["PC1", "PC2"]


def test_timezone_offset_and_explicit_null() -> None:
    raw = order(
        orc="NW|P1^RIS|F1^RIS||SC||^^^202611261030+0100",
        pid='PID|||12345^^^HOSP||Doe^John||""|M',
    )
    command = message_to_command(decode(raw), POLICY)
    assert isinstance(command, OrderMessage)
    item = items(command)[0]
    assert value(item, "TimezoneOffsetFromUTC") == "+0100"
    assert step_value(item, "ScheduledProcedureStepStartTime") == "1030"
    assert value(item, "PatientBirthDate") == ""  # HL7 "" → zero-length: delete the value


def test_station_rules_and_modality_map() -> None:
    policy = MappingPolicy(
        modality_map={"CAT": "CT"},
        station_rules=(
            StationRule(station_ae=("MR1",), modality="MR"),
            StationRule(station_ae=("CT_A", "CT_B"), modality="CT", station_name="CT room"),
        ),
    )
    obr = "OBR|1|P1^RIS|F1^RIS|CTHEAD^CT Head^L||||||||||||||ACC1|RP1|SPS1||||CAT"
    command = message_to_command(decode(order(obr=obr)), policy)
    assert isinstance(command, OrderMessage)
    step = command.orders[0].procedures[0].steps[0]
    assert (step.modality, step.station_aes, step.station_name) == (
        "CT",
        ("CT_A", "CT_B"),
        "CT room",
    )


@pytest.mark.parametrize(
    ("raw", "ack", "code", "where"),
    [
        (
            order().replace(b"ORM^O01", b"ORU^R01"),
            AckCode.REJECT,
            ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            "MSH-9",
        ),
        (
            order().replace(b"ORM^O01", b"ORM^O02"),
            AckCode.REJECT,
            ErrorCode.UNSUPPORTED_EVENT,
            "MSH-9.2",
        ),
        (order(version="2.9"), AckCode.REJECT, ErrorCode.UNSUPPORTED_VERSION, "MSH-12"),
        (
            order().replace(b"|MSG1|", b"||"),
            AckCode.ERROR,
            ErrorCode.REQUIRED_FIELD_MISSING,
            "MSH-10",
        ),
        (order(pid="PID|||||Doe^John"), AckCode.ERROR, ErrorCode.REQUIRED_FIELD_MISSING, "PID-3"),
        (
            order(orc="ZZ|P1^RIS|F1^RIS||SC||^^^202611261030"),
            AckCode.ERROR,
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            "ORC-1",
        ),
        (
            order(orc="NW|P1^RIS|F1^RIS||SC"),
            AckCode.ERROR,
            ErrorCode.REQUIRED_FIELD_MISSING,
            "ORC-7.4",
        ),
        (
            order(orc="NW|P1^RIS|F1^RIS||SC||^^^2026-11-26"),
            AckCode.ERROR,
            ErrorCode.DATA_TYPE,
            "ORC-7.4",
        ),
        (
            order(obr="OBR|1|P1^RIS|F1^RIS|X^Y||||||||||||||ACC1|RP1|SPS1"),
            AckCode.ERROR,
            ErrorCode.REQUIRED_FIELD_MISSING,
            "OBR-24",
        ),
        (
            order(zds="ZDS|not a uid^100^Application^DICOM"),
            AckCode.ERROR,
            ErrorCode.DATA_TYPE,
            "ZDS-1",
        ),
        (order().split(b"\rORC")[0], AckCode.ERROR, ErrorCode.SEGMENT_SEQUENCE, "ORC"),
        (order().split(b"\rOBR")[0], AckCode.ERROR, ErrorCode.SEGMENT_SEQUENCE, "OBR"),
    ],
    ids=[
        "type",
        "event",
        "version",
        "msh10",
        "pid3",
        "orc1",
        "no-start",
        "bad-start",
        "no-modality",
        "bad-uid",
        "no-orc",
        "no-obr",
    ],
)
def test_bad_orders_are_refused_with_the_field_named(
    raw: bytes, ack: AckCode, code: ErrorCode, where: str
) -> None:
    with pytest.raises(HL7Error) as caught:
        message_to_command(decode(raw), POLICY)
    assert caught.value.ack_code is ack
    detail = caught.value.details[0]
    assert (detail.code, str(detail.location)) == (code, where)
    assert detail.message


def test_long_identifier_policies() -> None:
    obr = "OBR|1|P1^RIS|F1^RIS|X^Y||||||||||||||ACCESSION-NUMBER-42|RP1|SPS1||||CT"
    for policy, expected in [
        (LongIdentifierPolicy.TRUNCATE, "ACCESSION-NUMBER"),
        (LongIdentifierPolicy.SHORTEN, "ACCESSION"),
    ]:
        command = message_to_command(decode(order(obr=obr)), MappingPolicy(long_identifiers=policy))
        assert isinstance(command, OrderMessage)
        accession = command.orders[0].accession
        assert accession.startswith(expected) and len(accession) == 16
    with pytest.raises(HL7Error) as caught:
        message_to_command(
            decode(order(obr=obr)), MappingPolicy(long_identifiers=LongIdentifierPolicy.REJECT)
        )
    assert str(caught.value.details[0].location) == "OBR-18"
