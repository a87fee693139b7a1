"""SqlMppsStore and SqlOutbox: MPPS instances, their step links, correlation, the outbox queue;
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.config import DatabaseConfig
from broker.store import SqlUnitOfWork, Store
from broker.store.outbox_queue import PENDING
from broker.store.schema import MppsStepLink, OutboxRow, PerformedStepRow
from mpps.model import StepReference
from mpps.ports import DuplicateInstance, LinkedStep, OutboxEntry
from mpps.report import OrderContext
from mwl.model import OrderNumber, SPSStatus
from mwl.ports import StoreFailure
from tests.broker.store.samples import SENDER, order, patient, procedure, step
from tests.mpps.datasets import MPPS_UID, completed, in_progress

STUDY_A1, STUDY_A2, STUDY_B = "1.2.3.1", "1.2.3.2", "1.2.3.9"


def schedule(store: Store) -> dict[str, int]:
    """Two orders: A (ACC1, PL1/FI1) with procedure A1 (RP1: SPS1, SPS2) and A2 (RP2: SPS1);
    B (ACC2, PL2) with procedure B (RP1: SPS1). Step ids by ``"<procedure>/<SPS ID>"``."""
    a_procedures = (
        procedure(STUDY_A1, "RP1", steps=(step("SPS1"), step("SPS2"))),
        procedure(STUDY_A2, "RP2", steps=(step("SPS1"),)),
    )
    a_order = replace(order(procedures=a_procedures), hl7_charset="8859/1")
    b_order = order("PL2", filler=None, accession="ACC2", procedures=(procedure(STUDY_B, "RP1"),))
    with store.unit_of_work() as uow:
        a = uow.worklist.add_order(
            uow.worklist.upsert_patient(patient()), a_order, SPSStatus.SCHEDULED, sender=SENDER
        )
        b = uow.worklist.add_order(
            uow.worklist.upsert_patient(patient("P2", name="Roe^Jane")),
            b_order,
            SPSStatus.SCHEDULED,
            sender=("RIS2", "OTHER"),
        )
        uow.commit()
    names = {STUDY_A1: "A1", STUDY_A2: "A2", STUDY_B: "B"}
    return {
        f"{names[proc.study_uid]}/{s.sps_id}": s.id
        for stored in (a, b)
        for proc in stored.procedures
        for s in proc.steps
    }


def matched(store: Store, **keys: str) -> list[int]:
    reference = StepReference(**{"study_uid": "", **keys})
    with store.mpps_unit_of_work() as uow:
        return [linked.step_id for linked in uow.mpps.match_steps(reference)]


# --- correlation ----------------------------------------------------------------------------


def test_sps_id_with_study_uid_picks_that_step(store: Store) -> None:
    steps = schedule(store)
    assert matched(store, study_uid=STUDY_A1, sps_id="SPS2") == [steps["A1/SPS2"]]
    assert matched(store, study_uid=STUDY_A2, sps_id="SPS1") == [steps["A2/SPS1"]]


def test_study_uid_alone_picks_every_step_of_its_procedure(store: Store) -> None:
    steps = schedule(store)
    assert matched(store, study_uid=STUDY_A1) == [steps["A1/SPS1"], steps["A1/SPS2"]]


def test_a_known_study_uid_wins_over_the_other_keys(store: Store) -> None:
    steps = schedule(store)
    found = matched(store, study_uid=STUDY_B, accession="ACC1", requested_procedure_id="RP2")
    assert found == [steps["B/SPS1"]]


def test_requested_procedure_id_alone_picks_every_procedure_with_it(store: Store) -> None:
    steps = schedule(store)
    expected = [steps["A1/SPS1"], steps["A1/SPS2"], steps["B/SPS1"]]
    assert matched(store, requested_procedure_id="RP1") == expected


def test_accession_alone_picks_every_step_of_the_order(store: Store) -> None:
    steps = schedule(store)
    expected = [steps["A1/SPS1"], steps["A1/SPS2"], steps["A2/SPS1"]]
    assert matched(store, accession="ACC1") == expected


def test_a_modality_generated_study_uid_falls_back_to_the_other_keys(store: Store) -> None:
    steps = schedule(store)
    found = matched(
        store, study_uid="2.25.1", accession="ACC1", requested_procedure_id="RP1", sps_id="SPS1"
    )
    assert found == [steps["A1/SPS1"]]


def test_every_key_an_item_carries_must_agree(store: Store) -> None:
    steps = schedule(store)
    assert matched(store, requested_procedure_id="RP1", accession="ACC2") == [steps["B/SPS1"]]
    assert matched(store, requested_procedure_id="RP2", accession="ACC2") == []
    assert matched(store, placer_number="PL1", requested_procedure_id="RP2") == [steps["A2/SPS1"]]
    assert matched(store, filler_number="FI1", accession="ACC2") == []


def test_an_sps_id_no_step_has_matches_nothing(store: Store) -> None:
    schedule(store)
    assert matched(store, study_uid=STUDY_A1, sps_id="SPS9") == []


@pytest.mark.parametrize(
    "keys",
    [{}, {"study_uid": "2.25.99"}, {"sps_id": "SPS1"}, {"accession": "NOPE"}],
    ids=["empty", "unknown-study", "sps-id-alone", "unknown-accession"],
)
def test_items_that_name_no_procedure_match_nothing(store: Store, keys: dict[str, str]) -> None:
    schedule(store)
    assert matched(store, **keys) == []


def test_a_linked_step_carries_its_order_context(store: Store) -> None:
    steps = schedule(store)
    with store.mpps_unit_of_work() as uow:
        (a2,) = uow.mpps.match_steps(StepReference(study_uid=STUDY_A2))
        (b,) = uow.mpps.match_steps(StepReference(study_uid=STUDY_B))
    assert a2.step_id == steps["A2/SPS1"]
    assert a2.status is SPSStatus.SCHEDULED
    assert a2.order == OrderContext(
        placer=OrderNumber("PL1", "RIS"),
        filler=OrderNumber("FI1", "PACS"),
        accession="ACC1",
        requested_procedure_id="RP2",
        study_uid=STUDY_A2,
        patient_id="P1",
        patient_issuer="HOSP",
        patient_name="Müller^Hans",
        ris_application="RIS",
        ris_facility="HOSP",
        hl7_charset="8859/1",
    )
    assert b.order_id != a2.order_id
    assert (b.order.filler, b.order.patient_name, b.order.ris_application) == (
        None,
        "Roe^Jane",
        "RIS2",
    )


# --- instances ------------------------------------------------------------------------------


def add_instance(store: Store, step_ids: list[int], *, calling_ae: str = "CT01") -> int:
    with store.mpps_unit_of_work() as uow:
        mpps_id = uow.mpps.add(in_progress(), calling_ae=calling_ae, step_ids=step_ids)
        uow.commit()
    return mpps_id


def test_an_added_instance_is_found_with_its_steps(store: Store) -> None:
    steps = schedule(store)
    mpps_id = add_instance(store, [steps["A2/SPS1"], steps["A1/SPS1"], steps["A2/SPS1"]])
    with store.mpps_unit_of_work() as uow:
        found = uow.mpps.find(MPPS_UID)
    assert found is not None
    assert found.id == mpps_id
    assert found.performed == in_progress()
    assert found.calling_ae == "CT01"
    assert [linked.step_id for linked in found.steps] == [steps["A1/SPS1"], steps["A2/SPS1"]]
    assert isinstance(found.steps[0], LinkedStep)
    assert found.steps[0].order.accession == "ACC1"
    assert not found.unscheduled


def test_an_unscheduled_instance_has_no_steps(store: Store) -> None:
    add_instance(store, [])
    with store.mpps_unit_of_work() as uow:
        found = uow.mpps.find(MPPS_UID)
    assert found is not None and found.unscheduled
    with Session(store.engine) as session:
        row = session.scalars(select(PerformedStepRow)).one()
    assert row.unscheduled
    assert (row.status, row.performed_station_ae, row.modality, row.pps_id) == (
        "IN PROGRESS",
        "CT01",
        "CT",
        "PPS-1",
    )
    assert (row.start_datetime, row.end_datetime) == ("20240102103000", "")


def test_find_is_none_for_an_unknown_uid(store: Store) -> None:
    with store.mpps_unit_of_work() as uow:
        assert uow.mpps.find("1.2.3.4.5") is None


def test_a_second_instance_with_one_uid_is_a_duplicate(store: Store) -> None:
    add_instance(store, [])
    with store.mpps_unit_of_work() as uow, pytest.raises(DuplicateInstance) as raised:
        uow.mpps.add(in_progress(), calling_ae="CT02", step_ids=[])
    assert isinstance(raised.value, StoreFailure)


def test_a_duplicate_found_at_commit_is_a_duplicate(store: Store) -> None:
    add_instance(store, [])
    session = Session(store.engine)
    session.add(
        PerformedStepRow(
            sop_instance_uid=MPPS_UID,
            status="IN PROGRESS",
            start_datetime="",
            end_datetime="",
            attributes={},
        )
    )
    with SqlUnitOfWork(session) as uow, pytest.raises(DuplicateInstance):
        uow.commit()


def test_update_replaces_the_state_and_the_dataset(store: Store) -> None:
    steps = schedule(store)
    mpps_id = add_instance(store, [steps["B/SPS1"]])
    with store.mpps_unit_of_work() as uow:
        uow.mpps.update(mpps_id, completed())
        uow.commit()
    with store.mpps_unit_of_work() as uow:
        found = uow.mpps.find(MPPS_UID)
    assert found is not None
    assert found.performed == completed()
    assert [linked.step_id for linked in found.steps] == [steps["B/SPS1"]]
    with Session(store.engine) as session:
        row = session.scalars(select(PerformedStepRow)).one()
    assert (row.status, row.end_datetime) == ("COMPLETED", "20240102104500")


def test_nothing_stays_without_a_commit(store: Store) -> None:
    steps = schedule(store)
    with store.mpps_unit_of_work() as uow:
        uow.mpps.add(in_progress(), calling_ae="CT01", step_ids=[steps["B/SPS1"]])
        uow.outbox.add(entry())
    with Session(store.engine) as session:
        assert session.scalars(select(PerformedStepRow)).all() == []
        assert session.scalars(select(MppsStepLink)).all() == []
        assert session.scalars(select(OutboxRow)).all() == []


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_find_locks_the_instance_row_on_postgresql(store: Store, database: DatabaseConfig) -> None:
    """A concurrent N-SET waits for this one (SQLite has one writer at a time anyway)."""
    add_instance(store, [])
    lock_probe = "SELECT id FROM mpps_instances WHERE sop_instance_uid = %s FOR UPDATE NOWAIT"
    with store.mpps_unit_of_work() as uow, psycopg.connect(database.url) as other:
        assert uow.mpps.find(MPPS_UID) is not None
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute(lock_probe, (MPPS_UID,))


# --- outbox ---------------------------------------------------------------------------------


def entry(**overrides: str) -> OutboxEntry:
    values = {
        "destination": "RIS",
        "kind": "hl7",
        "order_key": "order:1",
        "operation": "IP",
        "control_id": "C1",
    }
    values.update(overrides)
    return OutboxEntry(**values, event={"performed": {"status": "IN PROGRESS"}, "name": "Müller"})


def test_outbox_add_queues_a_pending_row_due_now(store: Store) -> None:
    before = datetime.now(UTC)
    with store.mpps_unit_of_work() as uow:
        first = uow.outbox.add(entry())
        second = uow.outbox.add(entry(control_id="C2", operation="CM"))
        uow.commit()
    assert second > first
    with Session(store.engine) as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
    assert [row.id for row in rows] == [first, second]
    row = rows[0]
    assert (row.destination, row.kind, row.order_key, row.operation, row.control_id) == (
        "RIS",
        "hl7",
        "order:1",
        "IP",
        "C1",
    )
    assert (row.state, row.attempts, row.payload, row.claimed_by) == (PENDING, 0, None, None)
    assert json.loads(row.event) == {"performed": {"status": "IN PROGRESS"}, "name": "Müller"}
    assert before - timedelta(seconds=1) <= row.next_attempt_at <= datetime.now(UTC)
