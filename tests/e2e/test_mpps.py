"""The MPPS loop over real sockets: HL7 order → MWL C-FIND → MPPS N-CREATE / N-SET → worklist
status and outbox rows.

One broker (SQLite in a temporary directory, HL7 and DICOM on 127.0.0.1 port 0, parsing in the
listener process) with one ``[[outbound]]`` RIS and one ``[[mpps_forward]]`` peer. A modality
(pynetdicom SCU) queries its worklist, copies the item's keys into the Scheduled Step Attributes
Sequence as PS3.4 F.7.2.1.2 asks, and reports the procedure. Delivery of the queued messages is
the sender's business: here only the rows are checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.dicom import MODALITY_WORKLIST_FIND
from broker.store.schema import OutboxRow
from hl7.ack import read_ack
from hl7.client import MLLPClient
from mpps.scp import read_status_event
from mwl.model import OrderNumber
from tests.broker.test_mpps_service import SCP_AE, TIMEOUT, Site, broker_config, running
from tests.mpps.datasets import code_item, completion, n_create, step_item
from tests.orders import order

STATION = "E2E_CT"


def order_message(n: int) -> bytes:
    """ORM^O01 NW for order MPPS<n>, accession MPPSACC<n>, scheduled on station E2E_CT."""
    number = f"MPPS{n}"
    orc = f"NW|{number}^RIS|{number}^RIS||SC||^^^202611261030" + "|" * 11 + STATION
    obr = (
        f"OBR|1|{number}^RIS|{number}^RIS|CTHEAD^CT Head^L"
        + "|" * 14
        + f"MPPSACC{n}|MPPSRP{n}|MPPSSPS{n}||||CT"
    )
    return order(orc=orc, obr=obr, control_id=f"MPPS{n}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running(broker_config(tmp_path_factory.mktemp("mpps-e2e"))) as broker:
        with MLLPClient("127.0.0.1", broker.hl7_port, ack_timeout=TIMEOUT) as client:
            for n in (1, 2):
                assert read_ack(client.send(order_message(n))).code == "AA"
        yield Site(broker)


def worklist(site: Site, accession: str) -> list[Dataset]:
    """The modality's C-FIND by accession (default statuses: final steps hidden)."""
    identifier = Dataset()
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID",
                    "RequestedProcedureID"):  # fmt: skip
        setattr(identifier, keyword, "")
    identifier.AccessionNumber = accession
    sps = Dataset()
    sps.ScheduledProcedureStepID = sps.ScheduledProcedureStepStatus = ""
    sps.ScheduledStationAETitle = sps.Modality = ""
    identifier.ScheduledProcedureStepSequence = [sps]
    scu = AE(ae_title=STATION)
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = TIMEOUT
    scu.add_requested_context(MODALITY_WORKLIST_FIND)
    assoc = scu.associate("127.0.0.1", site.broker.dicom_port, ae_title=SCP_AE)
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(identifier, MODALITY_WORKLIST_FIND))
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0x0000
    return [found for _, found in responses if found is not None]


def status_of(site: Site, accession: str) -> str | None:
    found = worklist(site, accession)
    if not found:
        return None
    (item,) = found
    return str(item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus)


def performed_from(item: Dataset) -> Dataset:
    """The N-CREATE a modality sends for the worklist item it picked."""
    reference = step_item(
        StudyInstanceUID=item.StudyInstanceUID,
        AccessionNumber=item.AccessionNumber,
        RequestedProcedureID=item.RequestedProcedureID,
        ScheduledProcedureStepID=item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID,
        PlacerOrderNumberImagingServiceRequest=None,
        FillerOrderNumberImagingServiceRequest=None,
    )
    return n_create(
        ScheduledStepAttributesSequence=[reference],
        PatientName=item.PatientName,
        PatientID=item.PatientID,
        PerformedStationAETitle=STATION,
    )


def outbox(site: Site) -> list[OutboxRow]:
    with Session(site.store.engine) as session:
        return list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))


def test_order_to_completed_procedure(site: Site) -> None:
    (item,) = worklist(site, "MPPSACC1")
    assert item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "SCHEDULED"
    uid = generate_uid()

    assert site.create(uid, performed_from(item)).Status == 0x0000
    assert status_of(site, "MPPSACC1") == "STARTED"

    assert site.set(uid, completion()).Status == 0x0000
    assert status_of(site, "MPPSACC1") is None  # COMPLETED: hidden from the default worklist

    rows = [row for row in outbox(site) if uid in row.event]
    assert [(row.kind, row.destination, row.operation) for row in rows] == [
        ("hl7", "RIS", "IP"),
        ("dicom", "PACS", "N-CREATE"),
        ("hl7", "RIS", "CM"),
        ("dicom", "PACS", "N-SET"),
    ]
    assert all(row.state == "pending" for row in rows)
    assert rows[0].order_key == rows[2].order_key != rows[1].order_key == f"mpps:{uid}"
    event = read_status_event(json.loads(rows[2].event))
    assert (event.order.placer, event.order.accession, event.order.study_uid) == (
        OrderNumber("MPPS1", "RIS"),
        "MPPSACC1",
        item.StudyInstanceUID,
    )
    assert (event.order.ris_application, event.order.ris_facility) == ("RIS", "HOSP")
    assert event.performed.status == "COMPLETED"


def test_incorrect_worklist_entry_offers_the_step_again(site: Site) -> None:
    (item,) = worklist(site, "MPPSACC2")
    uid = generate_uid()
    assert site.create(uid, performed_from(item)).Status == 0x0000
    assert status_of(site, "MPPSACC2") == "STARTED"
    wrong_entry = completion(
        PerformedProcedureStepStatus="DISCONTINUED",
        PerformedSeriesSequence=[],
        PerformedProcedureStepDiscontinuationReasonCodeSequence=[code_item("110514")],
    )
    assert site.set(uid, wrong_entry).Status == 0x0000
    assert status_of(site, "MPPSACC2") == "SCHEDULED"
    operations = [(row.kind, row.operation) for row in outbox(site) if uid in row.event]
    assert operations == [("hl7", "IP"), ("dicom", "N-CREATE"), ("hl7", "SC"), ("dicom", "N-SET")]
