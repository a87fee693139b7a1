"""MppsService against a real store (SQLite and PostgreSQL): every status, the SPS status of
the linked steps, and the outbox rows written in the same transaction (standards.md §4)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.store import Store
from broker.store.schema import OutboxRow, PerformedStepRow
from mpps.attributes import tag
from mpps.model import PerformedStep
from mpps.policy import MppsPolicy
from mpps.ports import MppsUnitOfWork, OutboxEntry
from mpps.report import MessageType, OrderContext, status_message
from mpps.scp import (
    STORE_UNAVAILABLE,
    MppsService,
    StatusDestination,
    StatusEvent,
    read_status_event,
)
from mpps.state import NO_LONGER_UPDATABLE, NO_LONGER_UPDATABLE_COMMENT, MppsStatus
from mwl.model import OrderNumber, SPSStatus
from mwl.ports import StoreFailure
from tests.broker.store.samples import SENDER, order, patient, procedure, step
from tests.mpps.datasets import (
    MPPS_UID,
    STUDY_UID,
    code_item,
    completion,
    in_progress,
    n_create,
    series_item,
    step_item,
    wire,
)

TIMEOUT = 20.0
STUDY_2 = "1.2.826.0.1.3680043.2.1125.1.2"
STUDY_3 = "1.2.826.0.1.3680043.2.1125.1.3"
RIS = StatusDestination(name="RIS", message_type=MessageType.ORM_O01, version="2.3.1")
SUCCESS = (0x0000, None)
STEPS = "ScheduledStepAttributesSequence"
SECOND_ITEM = {
    "StudyInstanceUID": STUDY_2,
    "AccessionNumber": "ACC-2",
    "RequestedProcedureID": "RP-2",
    "ScheduledProcedureStepID": "SPS-2",
    "PlacerOrderNumberImagingServiceRequest": "PL-2",
    "FillerOrderNumberImagingServiceRequest": "FL-2",
}
UNSCHEDULED_ITEM = {
    "StudyInstanceUID": "2.25.424242",
    "AccessionNumber": "",
    "RequestedProcedureID": "",
    "ScheduledProcedureStepID": "",
    "RequestedProcedureDescription": "",
    "ScheduledProcedureStepDescription": "",
    "PlacerOrderNumberImagingServiceRequest": None,
    "FillerOrderNumberImagingServiceRequest": None,
}


@dataclass
class Site:
    """The store with two scheduled orders, and the service under test."""

    store: Store
    service: MppsService
    orders: dict[str, int]
    """Order row id by accession."""
    steps: dict[str, int]
    """Step row id by SPS ID."""
    wakes: list[int] = field(default_factory=list)

    def statuses(self) -> dict[str, SPSStatus]:
        items = self.store.worklist_items()
        return {item.sps_id: item.status for item in items}

    def outbox(self) -> list[OutboxRow]:
        with Session(self.store.engine) as session:
            return list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))

    def instances(self) -> list[PerformedStepRow]:
        with Session(self.store.engine) as session:
            return list(session.scalars(select(PerformedStepRow)))


def schedule(store: Store) -> tuple[dict[str, int], dict[str, int]]:
    """Order ACC-1 (PL-1/FL-1): procedures RP-1 (SPS-1) and RP-3 (SPS-3), the second with its
    own Study UID; order ACC-2 (PL-2/FL-2): RP-2 (SPS-2). All SCHEDULED."""
    first = order(
        "PL-1",
        filler="FL-1",
        accession="ACC-1",
        procedures=(
            procedure(STUDY_UID, "RP-1", steps=(step("SPS-1"),)),
            procedure(STUDY_3, "RP-3", steps=(step("SPS-3"),)),
        ),
    )
    second = order(
        "PL-2",
        filler="FL-2",
        accession="ACC-2",
        procedures=(procedure(STUDY_2, "RP-2", steps=(step("SPS-2"),)),),
    )
    with store.unit_of_work() as uow:
        patient_row = uow.worklist.upsert_patient(patient())
        stored = [
            uow.worklist.add_order(patient_row, record, SPSStatus.SCHEDULED, sender=SENDER)
            for record in (first, second)
        ]
        uow.commit()
    orders = {record.accession: s.id for record, s in zip((first, second), stored, strict=True)}
    steps = {st.sps_id: st.id for s in stored for st in s.steps}
    return orders, steps


def build(
    store: Store,
    *,
    destinations: Sequence[StatusDestination] = (RIS,),
    forwards: Sequence[str] = ("PACS",),
    policy: MppsPolicy | None = None,
    uow_factory: Callable[[], MppsUnitOfWork] | None = None,
) -> tuple[MppsService, list[int]]:
    counter = itertools.count(1)
    wakes: list[int] = []
    service = MppsService(
        uow_factory or store.mpps_unit_of_work,
        policy or MppsPolicy(),
        destinations=destinations,
        forwards=forwards,
        new_control_id=lambda: f"C{next(counter)}",
        on_commit=lambda: wakes.append(1),
    )
    return service, wakes


@pytest.fixture
def site(store: Store) -> Site:
    orders, steps = schedule(store)
    service, wakes = build(store)
    return Site(store, service, orders, steps, wakes)


def refusal(response: tuple[int, Dataset | None]) -> tuple[int, str, int | None, list[int]]:
    """(status, Error Comment, Error ID, Attribute Identifier List) of a failure."""
    status, dataset = response
    assert dataset is not None and dataset.Status == status
    assert dataset.ErrorComment.isascii() and 0 < len(dataset.ErrorComment) <= 64
    identifiers = dataset.get("AttributeIdentifierList", [])
    listed = list(identifiers) if isinstance(identifiers, MultiValue | list) else [identifiers]
    return status, dataset.ErrorComment, dataset.get("ErrorID"), [int(t) for t in listed]


def started(site: Site, request: Dataset | None = None) -> None:
    assert site.service.n_create(MPPS_UID, request or n_create(), "CT01") == SUCCESS


def kinds(rows: list[OutboxRow]) -> list[tuple[str, str, str, str]]:
    return [(row.kind, row.destination, row.order_key, row.operation) for row in rows]


# --- N-CREATE -------------------------------------------------------------------------------


def test_n_create_stores_starts_the_step_and_queues_ip_and_the_forward(site: Site) -> None:
    request = wire(n_create())
    assert site.service.n_create(MPPS_UID, request, "CT01") == SUCCESS
    assert site.statuses() == {
        "SPS-1": SPSStatus.STARTED,
        "SPS-2": SPSStatus.SCHEDULED,
        "SPS-3": SPSStatus.SCHEDULED,
    }
    (instance,) = site.instances()
    assert (instance.sop_instance_uid, instance.calling_ae, instance.unscheduled) == (
        MPPS_UID,
        "CT01",
        False,
    )
    order_key = f"order:{site.orders['ACC-1']}"
    rows = site.outbox()
    assert kinds(rows) == [
        ("hl7", "RIS", order_key, "IP"),
        ("dicom", "PACS", f"mpps:{MPPS_UID}", "N-CREATE"),
    ]
    assert [row.control_id for row in rows] == ["C1", "C2"]
    assert json.loads(rows[1].event) == {
        "sop_instance_uid": MPPS_UID,
        "dataset": request.to_json_dict(),
    }
    assert site.wakes == [1]


def test_the_status_event_gives_the_sender_what_the_report_needs(site: Site) -> None:
    started(site)
    event = read_status_event(json.loads(site.outbox()[0].event))
    assert isinstance(event, StatusEvent)
    assert event.performed.sop_instance_uid == MPPS_UID
    assert set(event.performed.dataset) == {f"{tag('ProcedureCodeSequence'):08X}"}
    assert replace(event.performed, dataset=in_progress().dataset) == in_progress()
    assert (event.message_type, event.version) == (MessageType.ORM_O01, "2.3.1")
    assert event.order == OrderContext(
        placer=OrderNumber("PL-1", "RIS"),
        filler=OrderNumber("FL-1", "PACS"),
        accession="ACC-1",
        requested_procedure_id="RP-1",
        study_uid=STUDY_UID,
        patient_id="P1",
        patient_issuer="HOSP",
        patient_name="Müller^Hans",
        ris_application="RIS",
        ris_facility="HOSP",
    )
    message = status_message(
        event.performed,
        event.order,
        message_type=event.message_type,
        version=event.version,
        control_id="C1",
        now=datetime(2024, 1, 2, 10, 30),
    )
    assert b"\rORC|SC|PL-1^RIS|FL-1^PACS||IP" in message


def test_the_status_message_is_rendered_when_queued(store: Store) -> None:
    schedule(store)
    moment = datetime(2026, 11, 26, 10, 30, 5).astimezone()
    service = MppsService(
        store.mpps_unit_of_work,
        MppsPolicy(),
        destinations=(RIS,),
        new_control_id=lambda: "C42",
        sender=("MWLBROKER", "RAD"),
        clock=lambda: moment,
    )
    assert service.n_create(MPPS_UID, n_create(), "CT01") == SUCCESS
    with Session(store.engine) as session:
        row = session.scalars(select(OutboxRow)).one()
    event = read_status_event(json.loads(row.event))
    expected = status_message(
        event.performed,
        event.order,
        control_id="C42",
        now=moment,
        application="MWLBROKER",
        facility="RAD",
    )
    assert row.payload == expected
    assert row.payload.startswith(b"MSH|^~\\&|MWLBROKER|RAD|RIS|HOSP|20261126103005||ORM^O01|C42|")


def test_a_message_that_cannot_be_rendered_is_queued_for_the_sender(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    schedule(store)
    impossible = StatusDestination(name="RIS", message_type=MessageType.OMI_O23, version="2.3.1")
    service, _ = build(store, destinations=(impossible,), forwards=())
    assert service.n_create(MPPS_UID, n_create(), "CT01") == SUCCESS  # the modality is not refused
    with Session(store.engine) as session:
        row = session.scalars(select(OutboxRow)).one()
    assert (row.operation, row.payload) == ("IP", None)  # the sender dead-letters it, with why
    assert "not rendered" in caplog.text


def test_the_status_event_keeps_of_the_dataset_what_the_message_shows(site: Site) -> None:
    request = n_create(ProcedureCodeSequence=[code_item("CTHEAD", "L", "CT Head")])
    started(site, request)
    event = read_status_event(json.loads(site.outbox()[0].event))
    full = in_progress(ProcedureCodeSequence=[code_item("CTHEAD", "L", "CT Head")])
    assert set(event.performed.dataset) == {f"{tag('ProcedureCodeSequence'):08X}"}

    def rendered(performed: PerformedStep) -> bytes:
        return status_message(performed, event.order, control_id="C1", now=datetime(2024, 1, 2))

    assert rendered(event.performed) == rendered(full)
    assert b"|CTHEAD^CT Head^L|" in rendered(event.performed)


N_CREATE_REFUSALS = [
    pytest.param(
        {"PerformedStationAETitle": None},
        MppsStatus.MISSING_ATTRIBUTE,
        [tag("PerformedStationAETitle")],
        id="0120",
    ),
    pytest.param(
        {"Modality": ""}, MppsStatus.MISSING_ATTRIBUTE_VALUE, [tag("Modality")], id="0121"
    ),
    pytest.param(
        {"PerformedProcedureStepStatus": "COMPLETED"},
        MppsStatus.INVALID_ATTRIBUTE_VALUE,
        [tag("PerformedProcedureStepStatus")],
        id="0106",
    ),
]


@pytest.mark.parametrize(("overrides", "status", "attributes"), N_CREATE_REFUSALS)
def test_n_create_refusals_store_nothing(
    site: Site, overrides: dict[str, Any], status: int, attributes: list[int]
) -> None:
    code, comment, error_id, listed = refusal(
        site.service.n_create(MPPS_UID, n_create(**overrides), "CT01")
    )
    assert (code, error_id, listed) == (status, None, attributes)
    assert comment
    assert site.instances() == [] and site.outbox() == [] and site.wakes == []
    assert set(site.statuses().values()) == {SPSStatus.SCHEDULED}


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.826.0.1.3680043.2.1125." + "1" * 40,  # 66 characters: over the UI column too
        "1.2.3.04",  # a leading zero
        "1.2.3.x",
        "",
    ],
)
def test_n_create_with_an_invalid_uid_is_0117_and_stores_nothing(site: Site, uid: str) -> None:
    code, comment, error_id, listed = refusal(site.service.n_create(uid, n_create(), "CT01"))
    assert (code, error_id, listed) == (0x0117, None, [])
    assert "not a valid UID" in comment
    assert site.instances() == [] and site.outbox() == [] and site.wakes == []
    assert set(site.statuses().values()) == {SPSStatus.SCHEDULED}


def test_n_create_of_a_stored_uid_is_a_duplicate(site: Site) -> None:
    started(site)
    response = site.service.n_create(MPPS_UID, n_create(), "CT02")
    assert refusal(response) == (0x0111, "MPPS SOP Instance exists already", None, [])
    assert len(site.instances()) == 1
    assert len(site.outbox()) == 2


def test_two_n_creates_of_one_uid_at_once_give_one_success_and_one_duplicate(site: Site) -> None:
    """The second runs while the first holds its transaction open; its INSERT clashes on the
    unique UID (PostgreSQL: waits for the first commit; SQLite: waits for the write lock)."""
    second_started = threading.Event()

    def first_factory() -> MppsUnitOfWork:
        uow = site.store.mpps_unit_of_work()
        commit = uow.commit

        def commit_after_the_second_started() -> None:
            assert second_started.wait(TIMEOUT)
            commit()

        uow.commit = commit_after_the_second_started  # type: ignore[method-assign]
        return uow

    def second_factory() -> MppsUnitOfWork:
        second_started.set()
        return site.store.mpps_unit_of_work()

    results: dict[str, tuple[int, Dataset | None]] = {}

    def run(name: str, factory: Callable[[], MppsUnitOfWork]) -> None:
        service, _ = build(site.store, uow_factory=factory)
        results[name] = service.n_create(MPPS_UID, n_create(), name)

    first = threading.Thread(target=run, args=("first", first_factory))
    first.start()
    second = threading.Thread(target=run, args=("second", second_factory))
    second.start()
    first.join(TIMEOUT)
    second.join(TIMEOUT)
    # Whichever reaches the store first wins (on SQLite the second may take the write lock
    # before the first has begun): exactly one success, the other a duplicate.
    winner, loser = ("first", "second") if results["first"] == SUCCESS else ("second", "first")
    assert results[winner] == SUCCESS
    assert refusal(results[loser])[:2] == (0x0111, "MPPS SOP Instance exists already")
    (instance,) = site.instances()
    assert instance.calling_ae == winner
    assert len(site.outbox()) == 2


def test_a_group_case_links_every_referenced_step(site: Site) -> None:
    request = n_create(**{STEPS: [step_item(), step_item(**SECOND_ITEM)]})
    started(site, request)
    assert site.statuses() == {
        "SPS-1": SPSStatus.STARTED,
        "SPS-2": SPSStatus.STARTED,
        "SPS-3": SPSStatus.SCHEDULED,
    }
    first, second = (f"order:{site.orders[acc]}" for acc in ("ACC-1", "ACC-2"))
    assert kinds(site.outbox())[:2] == [("hl7", "RIS", first, "IP"), ("hl7", "RIS", second, "IP")]
    assert site.service.n_set(MPPS_UID, completion(), "CT01") == SUCCESS
    assert site.statuses() == {
        "SPS-1": SPSStatus.COMPLETED,
        "SPS-2": SPSStatus.COMPLETED,
        "SPS-3": SPSStatus.SCHEDULED,
    }
    assert kinds(site.outbox())[3:] == [
        ("hl7", "RIS", first, "CM"),
        ("hl7", "RIS", second, "CM"),
        ("dicom", "PACS", f"mpps:{MPPS_UID}", "N-SET"),
    ]


def test_two_procedures_of_one_order_get_one_status_message(site: Site) -> None:
    third = {"StudyInstanceUID": STUDY_3, "RequestedProcedureID": "RP-3"}
    started(
        site,
        n_create(**{STEPS: [step_item(), step_item(**third, ScheduledProcedureStepID="SPS-3")]}),
    )
    assert site.statuses()["SPS-3"] is SPSStatus.STARTED
    assert kinds(site.outbox()) == [
        ("hl7", "RIS", f"order:{site.orders['ACC-1']}", "IP"),
        ("dicom", "PACS", f"mpps:{MPPS_UID}", "N-CREATE"),
    ]


def test_an_unscheduled_mpps_is_stored_and_forwarded_without_status(site: Site) -> None:
    started(site, n_create(**{STEPS: [step_item(**UNSCHEDULED_ITEM)]}))
    (instance,) = site.instances()
    assert instance.unscheduled
    assert set(site.statuses().values()) == {SPSStatus.SCHEDULED}
    assert kinds(site.outbox()) == [("dicom", "PACS", f"mpps:{MPPS_UID}", "N-CREATE")]
    assert site.service.n_set(MPPS_UID, completion(), "CT01") == SUCCESS
    assert kinds(site.outbox())[1:] == [("dicom", "PACS", f"mpps:{MPPS_UID}", "N-SET")]
    assert site.wakes == [1, 1]


def test_without_destinations_or_forwards_nothing_is_queued_and_nobody_woken(
    store: Store,
) -> None:
    schedule(store)
    service, wakes = build(store, destinations=(), forwards=())
    assert service.n_create(MPPS_UID, n_create(), "CT01") == SUCCESS
    with Session(store.engine) as session:
        assert session.scalars(select(OutboxRow)).all() == []
    assert wakes == []


def test_each_destination_gets_only_its_events(store: Store) -> None:
    orders, _ = schedule(store)
    completions_only = StatusDestination(
        name="BILLING", message_type=MessageType.OMG_O19, version="2.5.1", events=("CM",)
    )
    service, _ = build(store, destinations=(RIS, completions_only), forwards=())
    assert service.n_create(MPPS_UID, n_create(), "CT01") == SUCCESS
    assert service.n_set(MPPS_UID, completion(), "CT01") == SUCCESS
    with Session(store.engine) as session:
        rows = list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))
    key = f"order:{orders['ACC-1']}"
    assert kinds(rows) == [
        ("hl7", "RIS", key, "IP"),
        ("hl7", "RIS", key, "CM"),
        ("hl7", "BILLING", key, "CM"),
    ]
    billing = read_status_event(json.loads(rows[2].event))
    assert (billing.message_type, billing.version) == (MessageType.OMG_O19, "2.5.1")


# --- N-SET ----------------------------------------------------------------------------------


def test_n_set_of_an_unknown_uid_is_no_such_instance(site: Site) -> None:
    response = site.service.n_set(MPPS_UID, completion(), "CT01")
    assert refusal(response) == (0x0112, "No such MPPS SOP Instance", None, [])
    assert site.outbox() == []


def test_n_set_completed_hides_the_step_and_queues_cm(site: Site) -> None:
    started(site)
    assert site.service.n_set(MPPS_UID, wire(completion()), "CT01") == SUCCESS
    assert site.statuses()["SPS-1"] is SPSStatus.COMPLETED
    visible = site.store.worklist_items(accession="ACC-1", include_final=False)
    assert [item.sps_id for item in visible] == ["SPS-3"]
    assert kinds(site.outbox())[2:] == [
        ("hl7", "RIS", f"order:{site.orders['ACC-1']}", "CM"),
        ("dicom", "PACS", f"mpps:{MPPS_UID}", "N-SET"),
    ]
    assert json.loads(site.outbox()[3].event)["dataset"] == wire(completion()).to_json_dict()
    assert (site.instances()[0].status, site.wakes) == ("COMPLETED", [1, 1])


def discontinuation(*reasons: Dataset) -> Dataset:
    return completion(
        PerformedProcedureStepStatus="DISCONTINUED",
        PerformedSeriesSequence=[],
        PerformedProcedureStepDiscontinuationReasonCodeSequence=list(reasons),
    )


def test_n_set_discontinued_queues_dc(site: Site) -> None:
    started(site)
    assert site.service.n_set(MPPS_UID, discontinuation(code_item("110513")), "CT01") == SUCCESS
    assert site.statuses()["SPS-1"] is SPSStatus.DISCONTINUED
    assert kinds(site.outbox())[2][3] == "DC"


def test_incorrect_worklist_entry_reschedules_and_reports_sc(site: Site) -> None:
    started(site)
    assert site.service.n_set(MPPS_UID, discontinuation(code_item("110514")), "CT01") == SUCCESS
    assert site.statuses()["SPS-1"] is SPSStatus.SCHEDULED
    key = f"order:{site.orders['ACC-1']}"
    assert kinds(site.outbox())[2:] == [
        ("hl7", "RIS", key, "SC"),
        ("dicom", "PACS", f"mpps:{MPPS_UID}", "N-SET"),
    ]
    row = site.outbox()[2]
    assert row.payload is not None and b"\rORC|SC|PL-1^RIS|FL-1^PACS||SC\r" in row.payload
    event = read_status_event(json.loads(row.event))
    assert event.order_status == "SC"  # what the sender renders a row without payload from


def test_a_rescheduling_goes_to_no_oru_receiver_nor_one_without_sc(store: Store) -> None:
    schedule(store)
    results = StatusDestination(name="RESULTS", message_type=MessageType.ORU_R01)
    quiet = StatusDestination(name="QUIET", events=("IP", "CM", "DC"))
    service, _ = build(store, destinations=(RIS, results, quiet), forwards=())
    assert service.n_create(MPPS_UID, n_create(), "CT01") == SUCCESS
    assert service.n_set(MPPS_UID, discontinuation(code_item("110514")), "CT01") == SUCCESS
    with Session(store.engine) as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
    assert [(row.destination, row.operation) for row in rows] == [
        ("RIS", "IP"),
        ("RESULTS", "IP"),
        ("QUIET", "IP"),
        ("RIS", "SC"),
    ]


def test_incorrect_worklist_entry_without_rescheduling_is_an_ordinary_dc(store: Store) -> None:
    schedule(store)
    policy = MppsPolicy(reschedule_on_incorrect_entry=False)
    service, _ = build(store, policy=policy, forwards=())
    assert service.n_create(MPPS_UID, n_create(), "CT01") == SUCCESS
    assert service.n_set(MPPS_UID, discontinuation(code_item("110514")), "CT01") == SUCCESS
    with Session(store.engine) as session:
        operations = session.scalars(select(OutboxRow.operation).order_by(OutboxRow.id)).all()
    assert operations == ["IP", "DC"]


SECOND_MPPS = "1.2.826.0.1.3680043.2.1125.9.2"


def hl7_operations(site: Site) -> list[str]:
    return [row.operation for row in site.outbox() if row.kind == "hl7"]


def test_a_later_mpps_does_not_reopen_a_completed_step(site: Site) -> None:
    started(site)
    assert site.service.n_set(MPPS_UID, completion(), "CT01") == SUCCESS
    assert site.service.n_create(SECOND_MPPS, n_create(), "CT02") == SUCCESS
    assert site.statuses()["SPS-1"] is SPSStatus.COMPLETED
    assert site.service.n_set(SECOND_MPPS, discontinuation(code_item("110513")), "CT02") == (
        SUCCESS
    )
    assert site.statuses()["SPS-1"] is SPSStatus.COMPLETED
    assert hl7_operations(site) == ["IP", "CM"]  # the order heard nothing of the second MPPS
    assert {row.status for row in site.instances()} == {"COMPLETED", "DISCONTINUED"}


def test_a_procedure_performed_again_after_a_discontinuation_completes(site: Site) -> None:
    started(site)
    assert site.service.n_set(MPPS_UID, discontinuation(code_item("110513")), "CT01") == SUCCESS
    assert site.service.n_create(SECOND_MPPS, n_create(), "CT01") == SUCCESS
    assert site.statuses()["SPS-1"] is SPSStatus.DISCONTINUED  # not reopened by IN PROGRESS
    assert site.service.n_set(SECOND_MPPS, completion(), "CT01") == SUCCESS
    assert site.statuses()["SPS-1"] is SPSStatus.COMPLETED
    assert hl7_operations(site) == ["IP", "DC", "CM"]


def test_a_second_mpps_on_a_started_step_sends_no_second_ip(site: Site) -> None:
    started(site)
    assert site.service.n_create(SECOND_MPPS, n_create(), "CT02") == SUCCESS
    assert site.statuses()["SPS-1"] is SPSStatus.STARTED
    assert hl7_operations(site) == ["IP"]
    assert site.service.n_set(SECOND_MPPS, completion(), "CT02") == SUCCESS
    assert site.statuses()["SPS-1"] is SPSStatus.COMPLETED
    assert hl7_operations(site) == ["IP", "CM"]


def test_n_set_in_progress_forwards_but_reports_nothing(site: Site) -> None:
    started(site)
    update = Dataset()
    update.PerformedSeriesSequence = [series_item()]
    assert site.service.n_set(MPPS_UID, update, "CT01") == SUCCESS
    assert site.statuses()["SPS-1"] is SPSStatus.STARTED
    assert kinds(site.outbox())[2:] == [("dicom", "PACS", f"mpps:{MPPS_UID}", "N-SET")]


@pytest.mark.parametrize(
    "final",
    [completion(), discontinuation(code_item("110513"))],
    ids=["after-COMPLETED", "after-DISCONTINUED"],
)
def test_n_set_after_a_final_state_is_a710(site: Site, final: Dataset) -> None:
    started(site)
    assert site.service.n_set(MPPS_UID, final, "CT01") == SUCCESS
    queued = len(site.outbox())
    response = site.service.n_set(MPPS_UID, completion(), "CT01")
    assert refusal(response) == (
        0x0110,
        NO_LONGER_UPDATABLE_COMMENT,
        NO_LONGER_UPDATABLE,
        [],
    )
    assert len(site.outbox()) == queued


def test_n_set_of_a_not_allowed_attribute_is_refused(site: Site) -> None:
    started(site)
    modification = completion(PatientName="Other^Name", Modality="MR")
    status, comment, error_id, listed = refusal(site.service.n_set(MPPS_UID, modification, "CT01"))
    assert (status, error_id) == (0x0106, None)
    assert listed == [tag("PatientName"), tag("Modality")]
    assert comment.startswith("Not allowed in N-SET")
    assert site.instances()[0].status == "IN PROGRESS"
    assert len(site.outbox()) == 2


@pytest.mark.parametrize(
    ("modification", "status", "attributes"),
    [
        pytest.param(
            completion(PerformedSeriesSequence=[]),
            0x0121,
            [tag("PerformedSeriesSequence")],
            id="completed-without-series",
        ),
        pytest.param(
            completion(PerformedProcedureStepEndTime=None),
            0x0121,
            [tag("PerformedProcedureStepEndTime")],
            id="end-time-never-set",
        ),
        pytest.param(
            completion(PerformedSeriesSequence=[series_item(ProtocolName=None)]),
            0x0120,
            [tag("PerformedSeriesSequence"), tag("ProtocolName")],
            id="series-without-protocol",
        ),
    ],
)
def test_final_state_failures_keep_the_step_in_progress(
    site: Site, modification: Dataset, status: int, attributes: list[int]
) -> None:
    started(site)
    code, _, _, listed = refusal(site.service.n_set(MPPS_UID, modification, "CT01"))
    assert (code, listed) == (status, attributes)
    assert site.instances()[0].status == "IN PROGRESS"
    assert site.statuses()["SPS-1"] is SPSStatus.STARTED
    assert site.service.n_set(MPPS_UID, completion(), "CT01") == SUCCESS


# --- one transaction ------------------------------------------------------------------------


class FailingOutbox:
    def add(self, entry: OutboxEntry) -> int:
        raise StoreFailure("OperationalError: disk full")


def failing_outbox(store: Store) -> Callable[[], MppsUnitOfWork]:
    def factory() -> MppsUnitOfWork:
        uow = store.mpps_unit_of_work()
        uow.outbox = FailingOutbox()
        return uow

    return factory


def test_a_failing_outbox_leaves_nothing_of_the_n_create(site: Site) -> None:
    service, wakes = build(site.store, uow_factory=failing_outbox(site.store))
    response = service.n_create(MPPS_UID, n_create(), "CT01")
    assert refusal(response) == (0x0110, STORE_UNAVAILABLE, None, [])
    assert site.instances() == [] and site.outbox() == [] and wakes == []
    assert set(site.statuses().values()) == {SPSStatus.SCHEDULED}


def test_a_failing_outbox_leaves_nothing_of_the_n_set(site: Site) -> None:
    started(site)
    service, _ = build(site.store, uow_factory=failing_outbox(site.store))
    response = service.n_set(MPPS_UID, completion(), "CT01")
    assert refusal(response)[:2] == (0x0110, STORE_UNAVAILABLE)
    assert site.instances()[0].status == "IN PROGRESS"
    assert site.statuses()["SPS-1"] is SPSStatus.STARTED
    assert len(site.outbox()) == 2
    assert site.service.n_set(MPPS_UID, completion(), "CT01") == SUCCESS


def test_an_unreachable_store_is_a_processing_failure(site: Site) -> None:
    def unreachable() -> MppsUnitOfWork:
        raise StoreFailure("OperationalError: connection refused")

    service, _ = build(site.store, uow_factory=unreachable)
    for response in (
        service.n_create(MPPS_UID, n_create(), "CT01"),
        service.n_set(MPPS_UID, completion(), "CT01"),
    ):
        assert refusal(response) == (0x0110, STORE_UNAVAILABLE, None, [])


def test_a_failing_wake_up_does_not_undo_the_success(site: Site) -> None:
    def broken_wake() -> None:
        raise RuntimeError("sender gone")

    site.service.on_commit = broken_wake
    started(site)
    assert len(site.outbox()) == 2
