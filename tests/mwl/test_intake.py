"""Order lifecycle, ADT and ACK behaviour through the real processor and a real store.

Every test runs on an SQLite file and on PostgreSQL (tests/conftest.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.store import Store
from broker.store.schema import JournalRow
from hl7.ack import read_ack
from mwl.inbound import InboundProcessor, prepare
from mwl.intake import Intake
from mwl.model import SPSStatus, WorklistItem
from mwl.policy import MappingPolicy
from mwl.ports import StoreFailure, UnitOfWork
from tests.orders import adt, order

POLICY = MappingPolicy()
ZDS = "ZDS|1.2.3.4.5^100^Application^DICOM"


def send(processor: InboundProcessor, raw: bytes) -> tuple[str, str, tuple[str, ...]]:
    """Process one message; (MSA-1, MSA-3 text, ERR rows) of the ACK."""
    reply = read_ack(processor.process(prepare(raw, POLICY), raw, "127.0.0.1:50000"))
    return reply.code, reply.text, reply.errors


@pytest.fixture
def processor(store: Store) -> InboundProcessor:
    return InboundProcessor(store.unit_of_work, Intake(POLICY))


def items(store: Store, **filters: Any) -> list[WorklistItem]:
    return store.worklist_items(**filters)


def status_of(store: Store) -> list[SPSStatus]:
    return [item.status for item in items(store)]


def journal_count(store: Store) -> int:
    with store.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(JournalRow)) or 0)


def test_new_order_is_acked_after_commit_and_stored(
    store: Store, processor: InboundProcessor
) -> None:
    assert send(processor, order(zds=ZDS))[0] == "AA"
    [item] = items(store)
    assert (item.study_uid, item.sps_id, item.status) == ("1.2.3.4.5", "SPS1", SPSStatus.SCHEDULED)
    assert item.patient_key.patient_id == "12345"
    assert journal_count(store) == 1


def test_lifecycle_nw_xo_ca(store: Store, processor: InboundProcessor) -> None:
    send(processor, order(zds=ZDS))
    changed = order(
        orc="XO|P1^RIS|F1^RIS||SC||^^^202611271400",
        zds=ZDS,
        control_id="MSG2",
        pid="PID|||12345^^^HOSP||Changed^Name||19800101|M",
    )
    assert send(processor, changed)[0] == "AA"
    [item] = items(store)
    sps = item.dataset["00400100"]["Value"][0]
    assert sps["00400002"]["Value"] == ["20261127"]
    assert sps["00400003"]["Value"] == ["1400"]
    # XO never changes demographics (IHE RAD-13)
    assert item.dataset["00100010"]["Value"][0]["Alphabetic"] == "Doe^John"
    cancel = order(orc="CA|P1^RIS|F1^RIS||CA", zds=ZDS, control_id="MSG3")
    assert send(processor, cancel)[0] == "AA"
    assert status_of(store) == [SPSStatus.CANCELED]
    assert items(store, include_final=False) == []


def test_nw_in_progress_and_dc_after_start(store: Store, processor: InboundProcessor) -> None:
    send(processor, order(orc="NW|P1^RIS|F1^RIS||IP||^^^202611261030", zds=ZDS))
    assert status_of(store) == [SPSStatus.STARTED]
    send(processor, order(orc="DC|P1^RIS|F1^RIS||CA", zds=ZDS, control_id="MSG2"))
    assert status_of(store) == [SPSStatus.DISCONTINUED]


def test_status_changes_by_sc_and_xo_cm(store: Store, processor: InboundProcessor) -> None:
    send(processor, order(zds=ZDS))
    send(processor, order(orc="SC|P1^RIS|F1^RIS||IP", zds=ZDS, control_id="MSG2"))
    assert status_of(store) == [SPSStatus.STARTED]
    send(processor, order(orc="XO|P1^RIS|F1^RIS||CM||^^^202611261030", zds=ZDS, control_id="M3"))
    assert status_of(store) == [SPSStatus.COMPLETED]


def test_order_found_by_order_number_when_no_study_uid(
    store: Store, processor: InboundProcessor
) -> None:
    send(processor, order())  # Study Instance UID generated from the order's identity
    assert send(processor, order(orc="CA|P1^RIS|F1^RIS||CA", control_id="MSG2"))[0] == "AA"
    assert status_of(store) == [SPSStatus.CANCELED]


def test_duplicate_control_id_gets_the_original_ack_and_changes_nothing(
    store: Store, processor: InboundProcessor
) -> None:
    raw = order(zds=ZDS)
    first = processor.process(prepare(raw, POLICY), raw, "peer")
    again = processor.process(prepare(raw, POLICY), raw, "peer")
    assert again == first
    assert len(items(store)) == 1
    assert journal_count(store) == 1


def test_same_order_with_new_control_id_is_an_update(
    store: Store, processor: InboundProcessor
) -> None:
    send(processor, order(zds=ZDS))
    resent = order(orc="NW|P1^RIS|F1^RIS||SC||^^^202611280800", zds=ZDS, control_id="MSG2")
    assert send(processor, resent)[0] == "AA"
    [item] = items(store)
    assert item.dataset["00400100"]["Value"][0]["00400002"]["Value"] == ["20261128"]
    assert journal_count(store) == 2


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (order(orc="XO|P9^RIS|F9^RIS||SC||^^^202611261030", control_id="X1"), "ORC-2: 204"),
        (order(orc="CA|P9^RIS|F9^RIS||CA", control_id="X2"), "ORC-2: 204"),
        (order(orc="SC|P9^RIS|F9^RIS||IP", control_id="X3"), "ORC-2: 204"),
        (order(orc="NW|P1^RIS|F1^RIS||CM||^^^202611261030", control_id="X4"), "ORC-5: 103"),
    ],
    ids=["xo-unknown", "ca-unknown", "sc-unknown", "nw-cm-pair"],
)
def test_updates_of_unknown_orders_and_unknown_pairs_get_ae(
    store: Store, processor: InboundProcessor, raw: bytes, where: str
) -> None:
    code, text, errors = send(processor, raw)
    assert code == "AE"
    assert text
    assert any(where in err for err in errors)
    assert items(store) == []
    assert journal_count(store) == 1  # refused messages are journaled too


def test_content_error_is_ae_with_err_and_nothing_stored(
    store: Store, processor: InboundProcessor
) -> None:
    code, text, errors = send(processor, order(pid="PID|||||Doe^John"))
    assert code == "AE"
    assert "PID-3" in text
    assert any(err.startswith("PID-3: 101") for err in errors)
    assert items(store) == []


def test_store_failure_answers_ar_never_aa(store: Store) -> None:
    class BrokenUnitOfWork:
        def __enter__(self) -> UnitOfWork:
            raise StoreFailure("database is down")

        def __exit__(self, *args: object) -> None:
            return None

    broken = InboundProcessor(BrokenUnitOfWork, Intake(POLICY))  # type: ignore[arg-type,return-value]
    code, text, _ = send(broken, order(zds=ZDS))
    assert code == "AR"
    assert "send it again" in text
    assert items(store) == []


def test_adt_update_merge_and_change_id_move_items(
    store: Store, processor: InboundProcessor
) -> None:
    send(processor, order(zds=ZDS, pid="PID|||OLD1^^^HOSP||Old^Name||19800101|M"))
    update = adt("A08", "PID|||OLD1^^^HOSP||Renamed^Patient||19800101|M")
    assert send(processor, update)[0] == "AA"
    [item] = items(store)
    assert item.dataset["00100010"]["Value"][0]["Alphabetic"] == "Renamed^Patient"

    send(processor, adt("A01", "PID|||NEW1^^^HOSP||Survivor^Patient||19800101|M", control_id="A2"))
    merge = adt(
        "A40", "PID|||NEW1^^^HOSP||Survivor^Patient||19800101|M", mrg="MRG|OLD1^^^HOSP",
        control_id="A3",
    )  # fmt: skip
    assert send(processor, merge)[0] == "AA"
    [item] = items(store)
    assert item.patient_key.patient_id == "NEW1"
    assert item.dataset["00100010"]["Value"][0]["Alphabetic"] == "Survivor^Patient"

    change = adt(
        "A47", "PID|||NEW2^^^HOSP||Survivor^Patient||19800101|M", mrg="MRG|NEW1^^^HOSP",
        control_id="A4",
    )  # fmt: skip
    assert send(processor, change)[0] == "AA"
    [item] = items(store)
    assert item.patient_key.patient_id == "NEW2"
    assert item.dataset["00100020"]["Value"] == ["NEW2"]


def test_a47_onto_an_existing_other_patient_is_refused(
    store: Store, processor: InboundProcessor
) -> None:
    send(processor, adt("A04", "PID|||P1^^^HOSP||One^Patient", control_id="A1"))
    send(processor, adt("A04", "PID|||P2^^^HOSP||Two^Patient", control_id="A2"))
    change = adt("A47", "PID|||P2^^^HOSP||One^Patient", mrg="MRG|P1^^^HOSP", control_id="A3")
    code, _, errors = send(processor, change)
    assert code == "AE"
    assert any(err.startswith("PID-3: 205") for err in errors)


def test_ack_addresses_the_sender(processor: InboundProcessor) -> None:
    raw = order(zds=ZDS)
    reply = read_ack(processor.process(prepare(raw, POLICY), raw, "peer"))
    assert reply.control_id == "MSG1"
    header = reply.header
    assert (header.sending_application, header.sending_facility) == ("MWL", "RAD")
    assert (header.receiving_application, header.receiving_facility) == ("RIS", "HOSP")
    assert header.version == "2.3.1"
    assert datetime.now(UTC).year >= 2026


def test_a_study_uid_the_order_carried_wins_over_its_order_number(
    store: Store, processor: InboundProcessor
) -> None:
    send(processor, order(zds=ZDS))
    other = order(
        orc="NW|P2^RIS|F2^RIS||SC||^^^202611261030", zds="ZDS|1.2.3.4.6^100^Application^DICOM",
        control_id="MSG2",
    )  # fmt: skip
    send(processor, other)
    cancel = order(orc="CA|P1^RIS|F1^RIS||CA", zds="ZDS|1.2.3.4.6^100^Application^DICOM",
                   control_id="MSG3")  # fmt: skip
    assert send(processor, cancel)[0] == "AA"
    assert {(i.study_uid, i.status) for i in items(store)} == {
        ("1.2.3.4.5", SPSStatus.SCHEDULED),
        ("1.2.3.4.6", SPSStatus.CANCELED),
    }


def test_an_update_and_a_new_order_in_one_message(
    store: Store, processor: InboundProcessor
) -> None:
    send(processor, order(zds=ZDS))
    both = order(
        orc="XO|P1^RIS|F1^RIS||SC||^^^202611280800",
        zds=ZDS,
        control_id="MSG2",
        extra=(
            "ORC|NW|P2^RIS|F2^RIS||SC||^^^202611290900",
            "OBR|2|P2^RIS|F2^RIS|CTHEAD^CT Head^L||||||||||||||ACC2|RP2|SPS2||||CT",
            "ZDS|1.2.3.4.6^100^Application^DICOM",
        ),
    )
    assert send(processor, both)[0] == "AA"
    dates = {
        i.study_uid: i.dataset["00400100"]["Value"][0]["00400002"]["Value"] for i in items(store)
    }
    assert dates == {"1.2.3.4.5": ["20261128"], "1.2.3.4.6": ["20261129"]}
    cancel = order(orc="CA|P2^RIS|F2^RIS||CA", control_id="MSG3")
    assert send(processor, cancel)[0] == "AA"
    assert {(i.study_uid, i.status) for i in items(store)} == {
        ("1.2.3.4.5", SPSStatus.SCHEDULED),
        ("1.2.3.4.6", SPSStatus.CANCELED),
    }
