"""SqlWorklistStore: every WorklistStore method, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import inspect, select

from broker.store import Store
from broker.store.schema import Order, Patient, ScheduledStep, StepStationAE
from mwl.model import OrderNumber, PatientKey, PatientRecord, SPSStatus, WorklistItem
from mwl.ports import DuplicateMessage, StoredOrder, StoreFailure
from tests.broker.store.samples import SENDER, element, order, patient, pn, procedure, step


def add(store: Store, **order_fields: Any) -> StoredOrder:
    with store.unit_of_work() as uow:
        patient_row = uow.worklist.upsert_patient(patient())
        stored = uow.worklist.add_order(
            patient_row, order(**order_fields), SPSStatus.SCHEDULED, sender=SENDER
        )
        uow.commit()
    return stored


def only_item(store: Store, **keys: Any) -> WorklistItem:
    (item,) = store.worklist_items(**keys)
    return item


def sps(item: WorklistItem) -> dict[str, Any]:
    (sps_item,) = item.dataset["00400100"]["Value"]
    result: dict[str, Any] = sps_item
    return result


def test_find_patient_is_none_for_an_unknown_key(store: Store) -> None:
    with store.unit_of_work() as uow:
        assert uow.worklist.find_patient(PatientKey("P1", "HOSP")) is None


def test_upsert_patient_creates_once_per_key(store: Store) -> None:
    with store.unit_of_work() as uow:
        first = uow.worklist.upsert_patient(patient())
        again = uow.worklist.upsert_patient(patient())
        other_issuer = uow.worklist.upsert_patient(patient(issuer=""))
        uow.commit()
    with store.unit_of_work() as uow:
        assert uow.worklist.find_patient(PatientKey("P1", "HOSP")) == first == again
        assert uow.worklist.find_patient(PatientKey("P1")) == other_issuer != first


def test_upsert_patient_merges_demographics(store: Store) -> None:
    with store.unit_of_work() as uow:
        row = uow.worklist.upsert_patient(patient())
        attributes = {"00100010": pn("Müller^Hans^Peter"), "00100040": element("CS")}
        update = PatientRecord(key=PatientKey("P1", "HOSP"), name="", attributes=attributes)
        merged = uow.worklist.upsert_patient(update)
        uow.commit()
    assert merged == row
    with store.read_session() as session:
        stored = session.get_one(Patient, row)
        assert (stored.name, stored.name_folded) == ("Müller^Hans^Peter", "MULLER^HANS^PETER")
        assert stored.sex == ""  # a zero-length element clears
        assert stored.attributes["00100040"] == {"vr": "CS"}
        assert stored.birth_date == "19700101"  # an absent element is kept
        assert stored.attributes["00100030"] == element("DA", "19700101")


def test_upsert_patient_without_demographics_keeps_them(store: Store) -> None:
    with store.unit_of_work() as uow:
        row = uow.worklist.upsert_patient(patient())
        again = uow.worklist.upsert_patient(patient(name="Other^Name"), demographics=False)
        uow.commit()
    assert again == row
    with store.read_session() as session:
        assert session.get_one(Patient, row).name == "Müller^Hans"


def test_concurrent_upserts_of_a_new_patient_make_one_row(store: Store) -> None:
    results: list[int | BaseException] = []

    def upsert_in_other_unit() -> None:
        try:
            with store.unit_of_work() as uow:
                results.append(uow.worklist.upsert_patient(patient()))
                uow.commit()
        except BaseException as exc:
            results.append(exc)

    with store.unit_of_work() as uow:
        first = uow.worklist.upsert_patient(patient())
        other = threading.Thread(target=upsert_in_other_unit)
        other.start()  # waits for our commit: for the row lock, or SQLite's write lock
        uow.commit()
    other.join(timeout=30)
    assert results == [first]


def test_add_order_stores_procedures_steps_and_sender(store: Store) -> None:
    two_steps = (step("SPS1"), step("SPS2", station_aes=("MR1", "MR2", "MR1"), modality="MR"))
    stored = add(store, procedures=(procedure(steps=two_steps), procedure("1.2.3.2", "RP2")))

    assert stored.placer == OrderNumber("PL1", "RIS")
    assert stored.filler == OrderNumber("FI1", "PACS")
    assert [p.study_uid for p in stored.procedures] == ["1.2.3.1", "1.2.3.2"]
    assert [(s.sps_id, s.status) for s in stored.steps] == [
        ("SPS1", SPSStatus.SCHEDULED),
        ("SPS2", SPSStatus.SCHEDULED),
        ("SPS1", SPSStatus.SCHEDULED),
    ]
    with store.read_session() as session:
        row = session.get_one(Order, stored.id)
        assert (row.sending_application, row.sending_facility) == SENDER
        assert row.referring_physician_folded == "DUPRE^JEAN"
        assert set(session.scalars(select(StepStationAE.ae_title))) == {"CT1", "MR1", "MR2"}


def test_add_order_without_filler(store: Store) -> None:
    stored = add(store, filler=None)
    assert stored.filler is None
    with store.unit_of_work() as uow:
        assert uow.worklist.find_order(None, OrderNumber("FI1", "PACS")) is None
        assert uow.worklist.find_order(OrderNumber("PL1", "RIS"), None) == stored


def test_find_order_by_placer_else_filler(store: Store) -> None:
    stored = add(store)
    with store.unit_of_work() as uow:
        find = uow.worklist.find_order
        assert find(OrderNumber("PL1", "RIS"), None) == stored
        assert find(OrderNumber("UNKNOWN", "RIS"), OrderNumber("FI1", "PACS")) == stored
        assert find(None, OrderNumber("FI1", "PACS")) == stored
        assert find(OrderNumber("PL1", "OTHER"), None) is None  # the namespace is part of it
        assert find(None, None) is None


def test_find_order_by_study(store: Store) -> None:
    stored = add(store, procedures=(procedure(), procedure("1.2.3.2", "RP2")))
    with store.unit_of_work() as uow:
        assert uow.worklist.find_order_by_study("1.2.3.2") == stored
        assert uow.worklist.find_order_by_study("9.9.9") is None


def test_worklist_item_merges_every_level(store: Store) -> None:
    stored = add(store)
    item = only_item(store)
    assert item.step_id == stored.steps[0].id
    assert (item.status, item.patient_key, item.study_uid, item.sps_id) == (
        SPSStatus.SCHEDULED,
        PatientKey("P1", "HOSP"),
        "1.2.3.1",
        "SPS1",
    )
    dataset = item.dataset
    assert dataset["00100010"] == pn("Müller^Hans")  # patient
    assert dataset["00080050"] == element("SH", "ACC1")  # order
    assert dataset["00401001"] == element("SH", "RP1")  # requested procedure
    assert "00400009" not in dataset
    assert sps(item)["00400009"] == element("SH", "SPS1")
    assert sps(item)["00400020"] == element("CS", "SCHEDULED")
    assert sps(item)["00400001"] == element("AE", "CT1")


def test_multi_valued_station_ae(store: Store) -> None:
    add(store, procedures=(procedure(steps=(step(station_aes=("CT2", "CT1")),)),))
    assert sps(only_item(store))["00400001"] == element("AE", "CT1", "CT2")


@pytest.mark.parametrize(
    ("start_time", "expected"),
    [
        ("0930", "20240501093000"),
        ("093015.123456", "20240501093015"),
        ("09", "20240501090000"),
        ("09:30:15", "20240501093015"),
        ("", "20240501000000"),
    ],
)
def test_start_datetime_is_zero_padded(store: Store, start_time: str, expected: str) -> None:
    add(store, procedures=(procedure(steps=(step(start_time=start_time),)),))
    with store.read_session() as session:
        assert session.scalars(select(ScheduledStep.start_datetime)).one() == expected


def test_update_order_merges_and_adds(store: Store) -> None:
    stored = add(store, procedures=(procedure(steps=(step("SPS1"), step("SPS2"))),))
    changed = order(
        accession="ACC2",
        procedures=(
            procedure(
                steps=(
                    step("SPS1", station_aes=("CT2", "CT3"), start_time="1000", modality="MR"),
                    step("SPS3"),
                ),
                extra={"00321060": element("LO", "CT head and neck")},
            ),
            procedure("1.2.3.2", "RP2", steps=(step("SPS9"),)),
        ),
        admission_id="",
        extra={"00380010": element("LO")},
    )
    with store.unit_of_work() as uow:
        uow.worklist.set_step_status([stored.steps[1].id], SPSStatus.ARRIVED)
        uow.worklist.update_order(stored, changed, SPSStatus.READY)
        uow.commit()

    items = {(i.study_uid, i.sps_id): i for i in store.worklist_items()}
    assert sorted(items) == [
        ("1.2.3.1", "SPS1"),
        ("1.2.3.1", "SPS2"),
        ("1.2.3.1", "SPS3"),
        ("1.2.3.2", "SPS9"),
    ]
    updated = items["1.2.3.1", "SPS1"]
    assert updated.step_id == stored.steps[0].id
    assert updated.status == SPSStatus.SCHEDULED  # an update leaves the status alone
    assert updated.dataset["00080050"] == element("SH", "ACC2")
    assert updated.dataset["00380010"] == {"vr": "LO"}  # cleared
    assert updated.dataset["00321060"] == element("LO", "CT head and neck")
    assert sps(updated)["00400001"] == element("AE", "CT2", "CT3")
    assert sps(updated)["00080060"] == element("CS", "MR")
    assert items["1.2.3.1", "SPS2"].status == SPSStatus.ARRIVED  # absent: left as it is
    assert items["1.2.3.1", "SPS3"].status == SPSStatus.READY  # new step
    assert items["1.2.3.2", "SPS9"].status == SPSStatus.READY  # new procedure
    with store.read_session() as session:
        row = session.get_one(ScheduledStep, stored.steps[0].id)
        assert (row.start_datetime, row.modality, row.version) == ("20240501100000", "MR", 2)
        order_row = session.get_one(Order, stored.id)
        assert (order_row.accession, order_row.admission_id) == ("ACC2", "")
    with store.unit_of_work() as uow:
        assert uow.worklist.find_order_by_study("1.2.3.2") == uow.worklist.find_order(
            OrderNumber("PL1", "RIS"), None
        )


def test_update_order_matches_procedure_by_requested_procedure_id(store: Store) -> None:
    stored = add(store)
    resent = order(procedures=(procedure("1.2.3.99", "RP1", steps=(step("SPS1"),)),))
    with store.unit_of_work() as uow:
        uow.worklist.update_order(stored, resent, SPSStatus.SCHEDULED)
        uow.commit()
    item = only_item(store)
    assert (item.step_id, item.study_uid) == (stored.steps[0].id, "1.2.3.1")


def test_update_order_fills_in_the_filler_number(store: Store) -> None:
    stored = add(store, filler=None)
    with store.unit_of_work() as uow:
        uow.worklist.update_order(stored, order(filler="FI7"), SPSStatus.SCHEDULED)
        uow.commit()
    with store.unit_of_work() as uow:
        found = uow.worklist.find_order(None, OrderNumber("FI7", "PACS"))
    assert found is not None
    assert found.id == stored.id


def test_set_step_status(store: Store) -> None:
    stored = add(store, procedures=(procedure(steps=(step("SPS1"), step("SPS2"))),))
    first, second = (s.id for s in stored.steps)
    with store.unit_of_work() as uow:
        uow.worklist.set_step_status([first], SPSStatus.STARTED)
        uow.worklist.set_step_status(iter([second]), SPSStatus.CANCELED)
        uow.worklist.set_step_status([], SPSStatus.COMPLETED)
        uow.commit()
    with store.unit_of_work() as uow:
        found = uow.worklist.find_order_by_study("1.2.3.1")
    assert found is not None
    assert [s.status for s in found.steps] == [SPSStatus.STARTED, SPSStatus.CANCELED]
    assert [i.sps_id for i in store.worklist_items(include_final=False)] == ["SPS1"]
    assert sps(store.worklist_items()[1])["00400020"] == element("CS", "CANCELED")
    with store.read_session() as session:
        assert session.get_one(ScheduledStep, first).version == 2


def test_worklist_items_filters(store: Store) -> None:
    add(store)
    add(store, placer="PL2", accession="ACC2", procedures=(procedure("1.2.3.2", "RP2"),))
    assert [i.study_uid for i in store.worklist_items(accession="ACC2")] == ["1.2.3.2"]
    assert [i.study_uid for i in store.worklist_items(study_uid="1.2.3.1")] == ["1.2.3.1"]
    assert len(store.worklist_items(patient_id="P1")) == 2
    assert store.worklist_items(patient_id="P2") == []


def test_move_orders_and_mark_merged(store: Store) -> None:
    add(store)
    add(store, placer="PL2", procedures=(procedure("1.2.3.2", "RP2"),))
    with store.unit_of_work() as uow:
        prior = uow.worklist.upsert_patient(patient())
        surviving = uow.worklist.upsert_patient(patient("P2"))
        assert uow.worklist.move_orders(prior, surviving) == 2
        assert uow.worklist.move_orders(prior, surviving) == 0
        uow.worklist.mark_merged(prior, surviving)
        uow.commit()
    assert {i.patient_key for i in store.worklist_items()} == {PatientKey("P2", "HOSP")}
    assert store.worklist_items(patient_id="P1") == []
    with store.read_session() as session:
        assert session.get_one(Patient, prior).merged_into_id == surviving
        assert session.get_one(Patient, surviving).merged_into_id is None


def test_change_patient_key(store: Store) -> None:
    stored = add(store)
    with store.unit_of_work() as uow:
        uow.worklist.change_patient_key(stored.patient_id, PatientKey("P9", ""))
        uow.commit()
    with store.unit_of_work() as uow:
        assert uow.worklist.find_patient(PatientKey("P9")) == stored.patient_id
        assert uow.worklist.find_patient(PatientKey("P1", "HOSP")) is None
    item = only_item(store)
    assert item.patient_key == PatientKey("P9")
    assert item.dataset["00100020"] == element("LO", "P9")
    assert item.dataset["00100021"] == {"vr": "LO"}


def test_change_patient_key_to_a_taken_key_fails(store: Store) -> None:
    with store.unit_of_work() as uow:
        first = uow.worklist.upsert_patient(patient("P1"))
        uow.worklist.upsert_patient(patient("P2"))
        uow.commit()
    with store.unit_of_work() as uow, pytest.raises(StoreFailure):
        uow.worklist.change_patient_key(first, PatientKey("P2", "HOSP"))


def test_a_study_uid_belongs_to_one_order(store: Store) -> None:
    add(store)
    with pytest.raises(StoreFailure):
        add(store, placer="PL2")


def test_constraint_violations_are_store_failures(store: Store) -> None:
    with store.unit_of_work() as uow, pytest.raises(StoreFailure) as failure:
        uow.worklist.add_order(10_000, order(), SPSStatus.SCHEDULED, sender=SENDER)  # no patient
    assert not isinstance(failure.value, DuplicateMessage)


def test_add_order_writes_every_column(store: Store) -> None:
    before = datetime.now(UTC)
    stored = add(store, procedures=(procedure(steps=(step(station_aes=("CT2", "CT1", "CT2")),)),))
    with store.read_session() as session:
        order_row = session.get_one(Order, stored.id)
        (procedure_row,) = order_row.procedures
        (step_row,) = procedure_row.steps
        patient_row = session.get_one(Patient, stored.patient_id)
        station_aes = [ae.ae_title for ae in step_row.station_aes]
    assert columns(patient_row, "created_at", "updated_at") == {
        "id": stored.patient_id, "patient_id": "P1", "issuer": "HOSP", "name": "Müller^Hans",
        "name_folded": "MULLER^HANS", "birth_date": "19700101", "sex": "M",
        "attributes": patient().attributes, "merged_into_id": None,
    }  # fmt: skip
    assert columns(order_row, "created_at", "updated_at") == {
        "id": stored.id, "patient_id": stored.patient_id, "placer_number": "PL1",
        "placer_namespace": "RIS", "filler_number": "FI1", "filler_namespace": "PACS",
        "accession": "ACC1", "referring_physician": "Dupré^Jean",
        "referring_physician_folded": "DUPRE^JEAN", "admission_id": "V1",
        "sending_application": "RIS", "sending_facility": "HOSP", "hl7_charset": "",
        "attributes": order().attributes,
    }  # fmt: skip
    assert columns(procedure_row) == {
        "id": stored.procedures[0].id, "order_id": stored.id, "study_uid": "1.2.3.1",
        "requested_procedure_id": "RP1", "description": "CT head",
        "attributes": procedure().attributes,
    }  # fmt: skip
    assert columns(step_row, "updated_at") == {
        "id": stored.steps[0].id, "procedure_id": stored.procedures[0].id, "sps_id": "SPS1",
        "status": "SCHEDULED", "start_date": "20240501", "start_time": "0930",
        "start_datetime": "20240501093000", "modality": "CT",
        "performing_physician": "Gómez^Ana", "performing_physician_folded": "GOMEZ^ANA",
        "station_name": "CT-ROOM-1", "location": "RAD", "description": "step SPS1",
        "attributes": step().attributes, "version": 1,
    }  # fmt: skip
    assert station_aes == ["CT1", "CT2"]
    for row in (patient_row, order_row):
        assert before <= row.created_at <= row.updated_at <= datetime.now(UTC)
    assert before <= step_row.updated_at <= datetime.now(UTC)


def columns(row: object, *timestamps: str) -> dict[str, Any]:
    """The row's column values, but ``timestamps``."""
    table = inspect(row).mapper.local_table
    return {c.key: getattr(row, c.key) for c in table.columns if c.key not in timestamps}


def test_add_order_returns_what_the_lookups_find(store: Store) -> None:
    stored = add(
        store,
        procedures=(
            procedure("1.2.3.1", "RP1", steps=(step("SPS1"), step("SPS2"), step("SPS3"))),
            procedure("1.2.3.2", "RP2", steps=()),
            procedure("1.2.3.3", "RP3", steps=(step("SPS1"), step("SPS4", station_aes=()))),
        ),
    )
    assert [(p.study_uid, [s.sps_id for s in p.steps]) for p in stored.procedures] == [
        ("1.2.3.1", ["SPS1", "SPS2", "SPS3"]),
        ("1.2.3.2", []),
        ("1.2.3.3", ["SPS1", "SPS4"]),
    ]
    with store.unit_of_work() as uow:
        assert uow.worklist.find_order_for(["1.2.3.3"], None, None) == stored
    with store.read_session() as session:
        versions = session.execute(select(ScheduledStep.sps_id, ScheduledStep.version)).all()
        aes = session.execute(select(StepStationAE.step_id, StepStationAE.ae_title)).all()
    assert sorted(versions) == [("SPS1", 1), ("SPS1", 1), ("SPS2", 1), ("SPS3", 1), ("SPS4", 1)]
    assert sorted(aes) == sorted((s.id, "CT1") for s in stored.steps if s.sps_id != "SPS4")


def test_find_order_for_takes_study_uids_then_placer_then_filler(store: Store) -> None:
    first = add(store, placer="PL1", filler="FI1", procedures=(procedure("1.2.3.1"),))
    second = add(store, placer="PL2", filler="FI2", procedures=(procedure("1.2.3.2"),))
    third = add(store, placer="PL3", filler="FI3", procedures=(procedure("1.2.3.3"),))
    add(store, placer="PL1", filler="FI4", procedures=(procedure("1.2.3.4"),))
    pl1, pl2, fi1, fi3 = (OrderNumber("PL1", "RIS"), OrderNumber("PL2", "RIS"),
                          OrderNumber("FI1", "PACS"), OrderNumber("FI3", "PACS"))  # fmt: skip
    with store.unit_of_work() as uow:
        find = uow.worklist.find_order_for
        assert find(["9.9", "1.2.3.2", "1.2.3.1"], pl1, fi1) == second  # the first UID known
        assert find(["1.2.3.1", "1.2.3.2"], pl2, None) == first
        assert find(["9.9"], pl2, fi1) == second  # placer before filler
        assert find([], OrderNumber("PL9", "RIS"), fi3) == third
        assert find([], OrderNumber("", "RIS"), fi1) == first  # an empty number is no number
        assert find([], pl1, None) == first  # the first of two orders with one placer number
        assert find([], OrderNumber("PL2", "OTHER"), None) is None
        assert find(["9.9"], None, None) is None
        assert find([], None, None) is None


def test_core_reads_see_the_orm_changes_of_their_unit(store: Store) -> None:
    changed = order(procedures=(procedure(steps=(step("SPS1", modality="MR"), step("SPS2"))),))
    with store.unit_of_work() as uow:
        patient_row = uow.worklist.upsert_patient(patient())
        stored = uow.worklist.add_order(patient_row, order(), SPSStatus.SCHEDULED, sender=SENDER)
        uow.worklist.update_order(stored, changed, SPSStatus.READY)  # ORM, not flushed yet
        found = uow.worklist.find_order_for(["1.2.3.1"], None, None)
        assert found is not None
        assert [(s.id, s.sps_id, s.status) for s in found.steps] == [
            (stored.steps[0].id, "SPS1", SPSStatus.SCHEDULED),
            (found.steps[1].id, "SPS2", SPSStatus.READY),
        ]
        uow.commit()
    with store.read_session() as session:
        rows = session.execute(
            select(ScheduledStep.sps_id, ScheduledStep.modality, ScheduledStep.version)
        ).all()
    assert sorted(rows) == [("SPS1", "MR", 2), ("SPS2", "CT", 1)]


def test_update_order_in_a_later_unit_sees_the_inserted_rows(store: Store) -> None:
    stored = add(store)
    with store.unit_of_work() as uow:
        found = uow.worklist.find_order_for([], OrderNumber("PL1", "RIS"), None)
        assert found == stored
        mr = (procedure(steps=(step(modality="MR"),)),)
        uow.worklist.update_order(found, order(accession="ACC2"), SPSStatus.SCHEDULED)
        uow.worklist.update_order(found, order(accession="ACC3", procedures=mr), SPSStatus.READY)
        uow.commit()
    item = only_item(store)
    assert item.dataset["00080050"] == element("SH", "ACC3")
    assert sps(item)["00080060"] == element("CS", "MR")
    with store.read_session() as session:
        assert session.get_one(ScheduledStep, stored.steps[0].id).version == 2
