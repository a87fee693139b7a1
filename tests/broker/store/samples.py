"""Domain records as the mapper would produce them, for the store tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mwl.model import (
    DicomJson,
    OrderControl,
    OrderNumber,
    OrderRecord,
    PatientKey,
    PatientRecord,
    ProcedureRecord,
    StepRecord,
)
from mwl.ports import JournalEntry

SENDER = ("RIS", "HOSP")


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def pn(name: str) -> dict[str, Any]:
    return element("PN", {"Alphabetic": name})


def patient(
    patient_id: str = "P1", *, issuer: str = "HOSP", name: str = "Müller^Hans"
) -> PatientRecord:
    return PatientRecord(
        key=PatientKey(patient_id, issuer),
        name=name,
        attributes={
            "00100010": pn(name),
            "00100020": element("LO", patient_id),
            "00100021": element("LO", issuer),
            "00100030": element("DA", "19700101"),
            "00100040": element("CS", "M"),
        },
    )


def step(
    sps_id: str = "SPS1",
    *,
    station_aes: tuple[str, ...] = ("CT1",),
    start_date: str = "20240501",
    start_time: str = "0930",
    modality: str = "CT",
) -> StepRecord:
    return StepRecord(
        sps_id=sps_id,
        station_aes=station_aes,
        start_date=start_date,
        start_time=start_time,
        modality=modality,
        performing_physician="Gómez^Ana",
        station_name="CT-ROOM-1",
        location="RAD",
        description=f"step {sps_id}",
        attributes={
            "00400009": element("SH", sps_id),
            "00400002": element("DA", start_date),
            "00400003": element("TM", start_time),
            "00080060": element("CS", modality),
            "00400006": pn("Gómez^Ana"),
            "00400007": element("LO", f"step {sps_id}"),
        },
    )


def procedure(
    study_uid: str = "1.2.3.1",
    requested_procedure_id: str = "RP1",
    *,
    steps: tuple[StepRecord, ...] | None = None,
    extra: DicomJson | None = None,
) -> ProcedureRecord:
    return ProcedureRecord(
        study_uid=study_uid,
        requested_procedure_id=requested_procedure_id,
        description="CT head",
        attributes={
            "0020000D": element("UI", study_uid),
            "00401001": element("SH", requested_procedure_id),
            "00321060": element("LO", "CT head"),
            **(extra or {}),
        },
        steps=(step(),) if steps is None else steps,
    )


def order(
    placer: str = "PL1",
    *,
    filler: str | None = "FI1",
    accession: str = "ACC1",
    procedures: tuple[ProcedureRecord, ...] | None = None,
    control: OrderControl = OrderControl.NEW,
    admission_id: str = "V1",
    extra: DicomJson | None = None,
) -> OrderRecord:
    return OrderRecord(
        control=control,
        order_status="SC",
        placer=OrderNumber(placer, "RIS"),
        filler=None if filler is None else OrderNumber(filler, "PACS"),
        accession=accession,
        referring_physician="Dupré^Jean",
        admission_id=admission_id,
        attributes={
            "00080050": element("SH", accession),
            "00080090": pn("Dupré^Jean"),
            "00380010": element("LO", "V1"),
            **(extra or {}),
        },
        procedures=(procedure(),) if procedures is None else procedures,
    )


def journal_entry(
    control_id: str = "MSG1", ack_code: str = "AA", *, sender: tuple[str, str] = SENDER
) -> JournalEntry:
    ack = f"MSH|^~\\&|MWL|RAD|RIS|HOSP|||ACK^O01|A{control_id}\rMSA|{ack_code}|{control_id}"
    return JournalEntry(
        received_at=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
        peer="127.0.0.1:40000",
        raw=b"MSH|^~\\&|RIS|HOSP|MWL|RAD|20240501093000||ORM^O01|" + control_id.encode(),
        ack=ack.encode(),
        ack_code=ack_code,
        sending_application=sender[0],
        sending_facility=sender[1],
        control_id=control_id,
        message_type="ORM",
        trigger_event="O01",
        version="2.3.1",
        patient_id="P1",
        accession="ACC1",
    )
