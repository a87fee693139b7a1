"""``mwl-broker outbox list|retry|discard`` and ``mwl-broker mpps list`` on both databases."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from broker.cli import main, table
from broker.config import DatabaseConfig
from broker.logs import HANDLER_NAME
from broker.store import Store
from broker.store.outbox import OutboxLedger, State
from mwl.model import SPSStatus
from tests.broker.store.samples import order, patient
from tests.broker.store.test_unit_of_work import closed_port
from tests.fake_ris import queue, status_entry
from tests.mpps.datasets import MPPS_UID, in_progress

WORKER = "cli-test:1:aa"


@pytest.fixture(autouse=True)
def configured(monkeypatch: pytest.MonkeyPatch, database: DatabaseConfig) -> None:
    for name in list(os.environ):
        if name.startswith("MWL_BROKER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MWL_BROKER_DATABASE_URL", database.url)


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
    root.setLevel(level)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def dead_rows(store: Store, *numbers: int) -> list[int]:
    """Rows the RIS refused: claimed, attempted once, dead."""
    ids = queue(store, *(status_entry(n, control_id=f"CTL{n}") for n in numbers))
    ledger = OutboxLedger(store.engine)
    now = datetime.now(UTC)
    ledger.claim_due(worker=WORKER, now=now, lease=60, limit=100)
    for row_id in ids:
        ledger.mark_dead(row_id, "AE: Unknown accession", None, worker=WORKER, now=now)
    return ids


def state(store: Store, row_id: int) -> State:
    (entry,) = [e for e in OutboxLedger(store.engine).entries() if e.id == row_id]
    return entry.state


def test_outbox_list_shows_pending_messages(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = queue(store, status_entry(1, control_id="CTL1"), status_entry(2, control_id="CTL2"))

    code, out, _ = run(capsys, "outbox", "list")

    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[:4] == ["ID", "STATE", "DESTINATION", "ORDER"]
    assert [line.split()[:6] for line in lines] == [
        [str(ids[0]), "pending", "RIS", "order:1", "IP", "CTL1"],
        [str(ids[1]), "pending", "RIS", "order:2", "IP", "CTL2"],
    ]


def test_outbox_list_dead_shows_the_reason(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    (dead,) = dead_rows(store, 1)
    queue(store, status_entry(2))

    code, out, _ = run(capsys, "outbox", "list", "--dead")

    assert code == 0
    (line,) = out.splitlines()[1:]
    assert line.split()[:2] == [str(dead), "dead"]
    assert line.endswith("AE: Unknown accession")


def test_an_empty_list_says_so(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "outbox", "list", "--dead")
    assert code == 0 and out.splitlines()[1] == "(none)"


def test_outbox_retry_one_and_all_dead(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    first, second, third = dead_rows(store, 1, 2, 3)

    assert run(capsys, "outbox", "retry", str(first))[:2] == (0, f"message {first} queued again\n")
    assert state(store, first) == State.PENDING
    assert run(capsys, "outbox", "retry", "--all-dead")[:2] == (0, "2 dead messages queued again\n")
    assert state(store, second) == state(store, third) == State.PENDING


def test_outbox_discard(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    (row_id,) = queue(store, status_entry(1))
    code, out, _ = run(capsys, "outbox", "discard", str(row_id))
    assert (code, out) == (0, f"message {row_id} discarded\n")
    assert state(store, row_id) == State.DISCARDED


@pytest.mark.parametrize("action", ["retry", "discard"])
def test_an_unknown_id_fails(store: Store, capsys: pytest.CaptureFixture[str], action: str) -> None:
    code, _, err = run(capsys, "outbox", action, "4242")
    assert code == 1
    assert "no message 4242" in err


@pytest.mark.parametrize(
    "argv", [["outbox"], ["outbox", "retry"], ["outbox", "retry", "1", "--all-dead"], ["mpps"]]
)
def test_usage_errors(store: Store, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert run(capsys, *argv)[0] == 2


def test_mpps_list(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    with store.unit_of_work() as uow:
        patient_row = uow.worklist.upsert_patient(patient())
        stored = uow.worklist.add_order(
            patient_row, order(accession="ACC-7"), SPSStatus.SCHEDULED, sender=("RIS", "HOSP")
        )
        uow.commit()
    with store.mpps_unit_of_work() as uow:
        uow.mpps.add(in_progress(), calling_ae="CT1", step_ids=[stored.steps[0].id])
        other = replace(in_progress(PerformedStationAETitle="MR01"), sop_instance_uid="1.2.3.99")
        uow.mpps.add(other, calling_ae="MR1", step_ids=[])
        uow.commit()

    code, out, _ = run(capsys, "mpps", "list")

    assert code == 0
    header, newest, oldest = out.splitlines()
    assert header.split()[:4] == ["ID", "STATUS", "START", "END"]
    assert "IN PROGRESS" in oldest and "2024-01-02 10:30:00" in oldest
    assert oldest.split()[-3:] == ["no", "ACC-7", MPPS_UID]
    assert newest.split()[-2:] == ["yes", "1.2.3.99"]
    assert "MR01" in newest


def test_a_store_failure_is_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/x?connect_timeout=5"
    monkeypatch.setenv("MWL_BROKER_DATABASE_URL", url)
    code, _, err = run(capsys, "outbox", "list")
    assert code == 1 and "outbox list failed" in err


def test_table_aligns_columns() -> None:
    assert table(["A", "BB"], [["xxx", "y"], ["z", "w"]]) == ["A    BB", "xxx  y", "z    w"]
