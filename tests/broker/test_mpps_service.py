"""The MPPS SOP Class on a started broker, over real associations on 127.0.0.1 port 0.

A pynetdicom MPPS SCU sends N-CREATE / N-SET; every status of :mod:`mpps.scp` arrives with
its Error Comment, Error ID and (N-SET) Attribute Identifier List; an N-CREATE without Affected
SOP Instance UID gets one; each of the three transfer syntaxes works; the wiring from
``[[outbound]]`` / ``[[mpps_forward]]`` decides the outbox rows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.dimse_scu import associate_rq
from broker.app import Broker
from broker.config import (
    Config,
    DatabaseConfig,
    DicomConfig,
    ForwardConfig,
    HL7Config,
    HttpConfig,
    OutboundConfig,
)
from broker.dicom import VERIFICATION, DicomServer
from broker.dicom.dimse import N_CREATE_RQ, N_SET_RQ
from broker.mpps_service import (
    CONTROL_ID_LENGTH,
    MODALITY_PERFORMED_PROCEDURE_STEP,
    build_mpps_service,
    new_control_id,
    status_destinations,
)
from broker.store import Store
from broker.store.schema import OutboxRow, PerformedStepRow
from mpps.policy import MppsPolicy
from mpps.ports import MppsUnitOfWork
from mpps.report import MessageType
from mpps.scp import MppsService, Response, StatusDestination
from mpps.state import NO_LONGER_UPDATABLE, NO_LONGER_UPDATABLE_COMMENT
from mwl.model import SPSStatus
from mwl.policy import WorklistPolicy
from tests.broker.store.samples import SENDER, order, patient, procedure, step
from tests.broker.test_dicom_protocol import Peer, command
from tests.mpps.datasets import completion, n_create, step_item
from tests.mpps.test_scp import schedule
from tests.mwl.test_scp import FakeFinder

TIMEOUT = 20.0
SCP_AE = "MWLBROKER"
MPPS = MODALITY_PERFORMED_PROCEDURE_STEP
SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
OUTBOUND = (
    OutboundConfig(name="RIS", host="127.0.0.1", port=2575),
    OutboundConfig(name="OFF", host="127.0.0.1", port=2576, enabled=False),
)
FORWARDS = (ForwardConfig(name="PACS", ae_title="PACS", host="127.0.0.1", port=11112),)


def broker_config(directory: Path) -> Config:
    return Config(
        database=DatabaseConfig(url=f"sqlite:///{directory / 'broker.db'}"),
        hl7=HL7Config(port=0, parse_workers=-1),
        dicom=DicomConfig(port=0, ae_title=SCP_AE),
        http=HttpConfig(port=0),
        outbound=OUTBOUND,
        mpps_forward=FORWARDS,
    )


@contextmanager
def running(config: Config) -> Iterator[Broker]:
    """The broker on an event loop of its own thread, so the test can block on sockets."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="broker-loop")
    thread.start()
    broker = Broker(config)
    try:
        asyncio.run_coroutine_threadsafe(broker.start(), loop).result(TIMEOUT)
        yield broker
    finally:
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


@contextmanager
def mpps_association(
    port: int, *, syntax: UID = ImplicitVRLittleEndian, handlers: list[Any] | None = None
) -> Iterator[Association]:
    """An association of a modality's MPPS SCU; released on the way out."""
    scu = AE(ae_title="CT01")
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = TIMEOUT
    scu.add_requested_context(MPPS, [syntax])
    scu.add_requested_context(VERIFICATION)
    assoc = scu.associate("127.0.0.1", port, ae_title=SCP_AE, evt_handlers=handlers or [])
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()


@dataclass(frozen=True)
class Site:
    broker: Broker

    @property
    def store(self) -> Store:
        assert self.broker.store is not None
        return self.broker.store

    def create(self, uid: str | None, dataset: Dataset, **kwargs: Any) -> Dataset:
        with mpps_association(self.broker.dicom_port, **kwargs) as assoc:
            status, _ = assoc.send_n_create(dataset, MPPS, uid)
        return status

    def set(self, uid: str, dataset: Dataset, **kwargs: Any) -> Dataset:
        with mpps_association(self.broker.dicom_port, **kwargs) as assoc:
            status, _ = assoc.send_n_set(dataset, MPPS, uid)
        return status

    def outbox(self, uid: str) -> list[tuple[str, str, str]]:
        with Session(self.store.engine) as session:
            rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
        return [
            (row.kind, row.destination, row.operation)
            for row in rows
            if row.order_key == f"mpps:{uid}" or uid in row.event
        ]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running(broker_config(tmp_path_factory.mktemp("mpps"))) as broker:
        assert broker.store is not None
        schedule(broker.store)
        yield Site(broker)


def attribute_list(status: Dataset) -> list[int]:
    """(0000,1005) of a response status: one tag or several."""
    value = status.get("AttributeIdentifierList", [])
    return [int(tag) for tag in (value if isinstance(value, MultiValue | list) else [value])]


# --- success --------------------------------------------------------------------------------


def scheduled_step(store: Store, number: str) -> Dataset:
    """A new SCHEDULED order with one step; its (0040,0270) item."""
    record = order(
        f"PL-{number}",
        filler=f"FL-{number}",
        accession=f"ACC-{number}",
        procedures=(procedure(f"1.2.3.99.{number}", f"RP-{number}", steps=(step(f"S{number}"),)),),
    )
    with store.unit_of_work() as uow:
        uow.worklist.add_order(
            uow.worklist.upsert_patient(patient()), record, SPSStatus.SCHEDULED, sender=SENDER
        )
        uow.commit()
    return step_item(
        StudyInstanceUID=f"1.2.3.99.{number}",
        AccessionNumber=f"ACC-{number}",
        RequestedProcedureID=f"RP-{number}",
        ScheduledProcedureStepID=f"S{number}",
        PlacerOrderNumberImagingServiceRequest=f"PL-{number}",
        FillerOrderNumberImagingServiceRequest=f"FL-{number}",
    )


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda syntax: syntax.name)
def test_n_create_and_n_set_succeed_in_each_transfer_syntax(site: Site, syntax: UID) -> None:
    uid = generate_uid()
    item = scheduled_step(site.store, str(SYNTAXES.index(syntax)))
    request = n_create(ScheduledStepAttributesSequence=[item])
    assert site.create(uid, request, syntax=syntax).Status == 0x0000
    assert site.set(uid, completion(), syntax=syntax).Status == 0x0000
    assert site.outbox(uid) == [
        ("hl7", "RIS", "IP"),
        ("dicom", "PACS", "N-CREATE"),
        ("hl7", "RIS", "CM"),
        ("dicom", "PACS", "N-SET"),
    ]


def test_n_create_without_a_uid_gets_one_from_the_scp(site: Site) -> None:
    received: list[Dataset] = []

    def keep_command(event: Event) -> None:
        received.append(event.message.command_set)

    handlers = [(evt.EVT_DIMSE_RECV, keep_command)]
    assert site.create(None, n_create(), handlers=handlers).Status == 0x0000
    (command,) = received
    uid = str(command.AffectedSOPInstanceUID)
    assert uid.startswith("1.") and len(uid) <= 64
    with Session(site.store.engine) as session:
        uids = session.scalars(select(PerformedStepRow.sop_instance_uid)).all()
    assert uid in uids
    assert site.set(uid, completion()).Status == 0x0000


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "status", "comment", "attributes"),
    [
        ({"PerformedStationAETitle": None}, 0x0120, "N-CREATE: missing (0040,0241)", [0x00400241]),
        ({"Modality": ""}, 0x0121, "N-CREATE: no value in (0008,0060)", [0x00080060]),
        (
            {"PerformedProcedureStepStatus": "COMPLETED"},
            0x0106,
            "N-CREATE status must be IN PROGRESS, not 'COMPLETED'",
            [0x00400252],
        ),
    ],
    ids=["0120", "0121", "0106"],
)
def test_n_create_refusals_arrive_with_their_comment_and_attribute_list(
    site: Site, overrides: dict[str, Any], status: int, comment: str, attributes: list[int]
) -> None:
    """The N-CREATE-RSP carries (0000,1005) Attribute Identifier List (PS3.7 C.4.2); read from
    the command set as received, pynetdicom's N-CREATE status has no place for it."""
    received: list[Dataset] = []

    def keep_command(event: Event) -> None:
        received.append(event.message.command_set)

    uid = generate_uid()
    answer = site.create(uid, n_create(**overrides), handlers=[(evt.EVT_DIMSE_RECV, keep_command)])
    assert (answer.Status, answer.ErrorComment) == (status, comment)
    (command,) = received
    assert attribute_list(command) == attributes
    assert command.AffectedSOPInstanceUID == uid
    assert "ErrorID" not in answer
    assert site.outbox(uid) == []


def test_a_duplicate_n_create_is_0111(site: Site) -> None:
    uid = generate_uid()
    assert site.create(uid, n_create()).Status == 0x0000
    answer = site.create(uid, n_create())
    assert (answer.Status, answer.ErrorComment) == (0x0111, "MPPS SOP Instance exists already")


def test_n_set_of_an_unknown_uid_is_0112(site: Site) -> None:
    answer = site.set(generate_uid(), completion())
    assert (answer.Status, answer.ErrorComment) == (0x0112, "No such MPPS SOP Instance")


def test_n_set_after_completed_is_0110_a710(site: Site) -> None:
    uid = generate_uid()
    site.create(uid, n_create())
    site.set(uid, completion())
    answer = site.set(uid, completion())
    assert (answer.Status, answer.ErrorComment, answer.ErrorID) == (
        0x0110,
        NO_LONGER_UPDATABLE_COMMENT,
        NO_LONGER_UPDATABLE,
    )


def test_n_set_of_a_not_allowed_attribute_lists_it(site: Site) -> None:
    uid = generate_uid()
    site.create(uid, n_create())
    answer = site.set(uid, completion(PatientName="Other^Name"))
    assert (answer.Status, answer.ErrorComment) == (0x0106, "Not allowed in N-SET: (0010,0010)")
    assert attribute_list(answer) == [0x00100010]


def test_a_store_failure_is_0110_store_unavailable(tmp_path: Path) -> None:
    with running(broker_config(tmp_path)) as broker:
        with sqlite3.connect(tmp_path / "broker.db") as database:
            database.execute("ALTER TABLE mpps_instances RENAME TO mpps_elsewhere")
        answer = Site(broker).create(generate_uid(), n_create())
    assert (answer.Status, answer.ErrorComment) == (0x0110, "MPPS store unavailable")


def unused_store() -> MppsUnitOfWork:
    pytest.fail("the store is not used")


class Exploding(MppsService):
    def n_create(self, sop_instance_uid: str, dataset: Dataset, calling_ae: str) -> Response:
        raise RuntimeError("a bug")

    def n_set(self, sop_instance_uid: str, modification: Dataset, calling_ae: str) -> Response:
        raise RuntimeError("a bug")


def test_an_unexpected_error_is_0110_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    service = Exploding(unused_store, MppsPolicy(), new_control_id=new_control_id)
    server = DicomServer(DicomConfig(port=0), FakeFinder([]), WorklistPolicy(), service)
    with server, mpps_association(server.port) as assoc:
        created, _ = assoc.send_n_create(n_create(), MPPS, generate_uid())
        updated, _ = assoc.send_n_set(completion(), MPPS, generate_uid())
    for answer in (created, updated):
        assert (answer.Status, answer.ErrorComment) == (0x0110, "internal error; see the SCP log")
    assert "a bug" in caplog.text


def test_without_a_service_the_mpps_context_is_not_accepted() -> None:
    server = DicomServer(DicomConfig(port=0), FakeFinder([]), WorklistPolicy())
    with server:
        scu = AE(ae_title="CT01")
        scu.add_requested_context(MPPS)
        scu.add_requested_context(VERIFICATION)
        assoc = scu.associate("127.0.0.1", server.port, ae_title=SCP_AE)
        try:
            accepted = {context.abstract_syntax for context in assoc.accepted_contexts}
        finally:
            assoc.release()
    assert accepted == {VERIFICATION}


# --- wiring ---------------------------------------------------------------------------------


def test_only_enabled_receivers_become_status_destinations() -> None:
    omg = OutboundConfig(
        name="OMG", host="h", port=1, message_type="OMG^O19", version="2.5.1", events=("CM",)
    )
    assert status_destinations((*OUTBOUND, omg)) == [
        StatusDestination(name="RIS", message_type=MessageType.ORM_O01, version="2.3.1"),
        StatusDestination(
            name="OMG", message_type=MessageType.OMG_O19, version="2.5.1", events=("CM",)
        ),
    ]


def test_the_disabled_receiver_gets_nothing(site: Site) -> None:
    uid = generate_uid()
    site.create(uid, n_create())
    assert [row for row in site.outbox(uid) if row[1] == "OFF"] == []


def test_control_ids_fit_msh_10_and_differ() -> None:
    ids = {new_control_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(value) == CONTROL_ID_LENGTH and value.isalnum() for value in ids)


def test_build_wires_the_on_commit_hook(tmp_path: Path) -> None:
    woken: list[int] = []
    config = broker_config(tmp_path)
    with Store.open(config.database) as store:
        service = build_mpps_service(config, store.mpps_unit_of_work, lambda: woken.append(1))
    assert service.on_commit is not None
    service.on_commit()
    assert woken == [1]


# --- broken requests --------------------------------------------------------------------------


def test_broken_attribute_lists_get_a_status_never_an_internal_error(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """N-CREATE / N-SET whose data set is a valid one corrupted, cut, or noise: each answered
    with a DICOM status (0110 undecodable, 0120 missing, 0112 unknown …), none reaching the
    handlers' internal-error path."""
    caplog.set_level(logging.ERROR, logger="broker.dicom")
    good = encode(n_create(), True, True)
    assert good is not None
    rng = random.Random(27)
    statuses: set[int | None] = set()
    for _ in range(150):
        data = bytearray(good)
        match rng.randrange(3):
            case 0:
                for _ in range(rng.randrange(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            case 1:
                data = data[: rng.randrange(1, len(data))]
            case _:
                data = bytearray(rng.randbytes(rng.randrange(0, 300)))
        field = rng.choice([N_CREATE_RQ, N_SET_RQ])
        scu = Peer(site.broker.dicom_port)
        try:
            scu.send(associate_rq("CT01", SCP_AE, MPPS, ImplicitVRLittleEndian, 0))
            assert scu.pdu() is not None
            request = command(field, 1, MPPS, data_set=True, instance=generate_uid())
            scu.request(request, bytes(data))
            statuses.add(scu.response().unsigned(0x0900))
        finally:
            scu.close()

    assert not [r for r in caplog.records if r.name == "broker.dicom"], caplog.text
    assert None not in statuses
    assert {0x0110, 0x0112, 0x0120} <= statuses
