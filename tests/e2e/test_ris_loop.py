"""The whole loop with the RIS at both ends, over real sockets on 127.0.0.1.

HL7 order in over MLLP → MWL C-FIND → MPPS N-CREATE → the fake RIS receives IP → N-SET
COMPLETED → it receives CM → the step is gone from the worklist. Then the outbox's promises:
a broker stopped between commit and delivery delivers after its restart, and two broker
processes (``mwl-broker serve``) on one PostgreSQL database drain one outbox with every
message delivered exactly once and in order per order.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from broker.app import Broker
from broker.config import (
    Config,
    DatabaseConfig,
    DicomConfig,
    HL7Config,
    HttpConfig,
    OutboundConfig,
    OutboxConfig,
)
from broker.dicom import MODALITY_WORKLIST_FIND
from broker.mpps_service import MODALITY_PERFORMED_PROCEDURE_STEP as MPPS
from broker.store import Store, migrate
from broker.store.outbox import OutboxLedger, State
from hl7.ack import read_ack
from hl7.client import MLLPClient
from mpps.model import PPSStatus
from tests.fake_ris import FakeRIS, Received, queue, status_entry
from tests.mpps.datasets import completion, n_create, step_item
from tests.orders import order

TIMEOUT = 20.0
SCP_AE = "MWLBROKER"
STATION = "LOOP_CT"
FAST = OutboxConfig(poll_interval=0.1, retry_initial=0.05, retry_factor=2.0, retry_max=0.2,
                    lease=30.0)  # fmt: skip


def config(directory: Path, ris_port: int) -> Config:
    return Config(
        database=DatabaseConfig(url=f"sqlite:///{directory / 'loop.db'}"),
        hl7=HL7Config(port=0, parse_workers=-1),
        dicom=DicomConfig(port=0, ae_title=SCP_AE),
        http=HttpConfig(port=0),
        outbound=(OutboundConfig(name="RIS", host="127.0.0.1", port=ris_port, ack_timeout=2.0),),
        outbox=FAST,
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
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(TIMEOUT * 2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


# --- the modality and the RIS's order ----------------------------------------------------------


def send_order(broker: Broker, n: int) -> None:
    number = f"LOOP{n}"
    orc = f"NW|{number}^RIS|{number}^RIS||SC||^^^202611261030" + "|" * 11 + STATION
    obr = (f"OBR|1|{number}^RIS|{number}^RIS|CTHEAD^CT Head^L" + "|" * 14
           + f"LOOPACC{n}|LOOPRP{n}|LOOPSPS{n}||||CT")  # fmt: skip
    message = order(orc=orc, obr=obr, control_id=f"LOOP{n}")
    with MLLPClient("127.0.0.1", broker.hl7_port, ack_timeout=TIMEOUT) as client:
        assert read_ack(client.send(message)).code == "AA"


def association(broker: Broker, context: str) -> object:
    scu = AE(ae_title=STATION)
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = TIMEOUT
    scu.add_requested_context(context)
    assoc = scu.associate("127.0.0.1", broker.dicom_port, ae_title=SCP_AE)
    assert assoc.is_established
    return assoc


def worklist(broker: Broker, accession: str) -> list[Dataset]:
    """The modality's C-FIND by accession (final steps are hidden by default)."""
    identifier = Dataset()
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "RequestedProcedureID"):
        setattr(identifier, keyword, "")
    identifier.AccessionNumber = accession
    sps = Dataset()
    sps.ScheduledProcedureStepID = sps.ScheduledProcedureStepStatus = sps.Modality = ""
    identifier.ScheduledProcedureStepSequence = [sps]
    assoc = association(broker, MODALITY_WORKLIST_FIND)
    try:
        responses = list(assoc.send_c_find(identifier, MODALITY_WORKLIST_FIND))  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    assert responses[-1][0].Status == 0x0000
    return [found for _, found in responses if found is not None]


def report(broker: Broker, uid: str, dataset: Dataset, *, create: bool) -> int:
    """N-CREATE or N-SET of the MPPS ``uid``; the response status."""
    assoc = association(broker, MPPS)
    try:
        if create:
            status, _ = assoc.send_n_create(dataset, MPPS, uid)  # type: ignore[attr-defined]
        else:
            status, _ = assoc.send_n_set(dataset, MPPS, uid)  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    return int(status.Status)


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
    return n_create(ScheduledStepAttributesSequence=[reference], PatientName=item.PatientName,
                    PatientID=item.PatientID, PerformedStationAETitle=STATION)  # fmt: skip


def statuses(ris: FakeRIS, placer: str) -> list[str]:
    return [r.order_status for r in ris.received if r.placer == placer]


# --- the loop ------------------------------------------------------------------------------------


def test_order_to_worklist_to_ris_and_back(tmp_path: Path) -> None:
    with FakeRIS() as ris, running(config(tmp_path, ris.port)) as broker:
        send_order(broker, 1)
        (item,) = worklist(broker, "LOOPACC1")
        uid = generate_uid()

        assert report(broker, uid, performed_from(item), create=True) == 0x0000
        assert ris.wait_for(lambda got: statuses(ris, "LOOP1") == ["IP"], TIMEOUT)

        assert report(broker, uid, completion(), create=False) == 0x0000
        assert ris.wait_for(lambda got: statuses(ris, "LOOP1") == ["IP", "CM"], TIMEOUT)
        assert worklist(broker, "LOOPACC1") == []  # COMPLETED: hidden from the worklist

    ip, cm = ris.received
    assert ip.control_id != cm.control_id
    assert sorted(ris.counts().values()) == [1, 1]
    assert b"LOOPACC1" in cm.raw and item.StudyInstanceUID.encode() in cm.raw


def test_a_message_committed_before_a_stop_goes_out_after_the_restart(tmp_path: Path) -> None:
    with FakeRIS() as ris:
        ris.down()
        with running(config(tmp_path, ris.port)) as broker:
            send_order(broker, 2)
            (item,) = worklist(broker, "LOOPACC2")
            assert report(broker, generate_uid(), performed_from(item), create=True) == 0x0000
        # stopped: the IP message is committed and not delivered
        assert ris.received == []
        ris.up()
        with running(config(tmp_path, ris.port)):
            assert ris.wait_for(lambda got: statuses(ris, "LOOP2") == ["IP"], TIMEOUT)
        assert list(ris.counts().values()) == [1]


# --- two broker processes on one PostgreSQL database -------------------------------------------

ORDERS = 100
SENT_LINE = re.compile(r"outbox RIS: (\w+) (IP|CM) attempt \d+: sent")


class BrokerProcess:
    """``mwl-broker serve`` in a subprocess; its log lines collected as they come."""

    def __init__(self, config_file: Path, name: str) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MWL_BROKER_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "--config", str(config_file)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=environment,
        )  # fmt: skip
        self.lines: list[str] = []
        self._condition = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"{name}-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._condition:
                self.lines.append(line)
                self._condition.notify_all()

    def wait_for_line(self, text: str) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: any(text in line for line in self.lines),
                                            TIMEOUT * 2)  # fmt: skip

    def sent(self) -> list[str]:
        with self._condition:
            return [m.group(1) for line in self.lines if (m := SENT_LINE.search(line))]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(TIMEOUT * 2)
        self._reader.join(TIMEOUT)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return code


@pytest.fixture
def empty_postgres(postgres_database: str) -> str:
    with psycopg.connect(postgres_database, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    migrate(DatabaseConfig(url=postgres_database))
    return postgres_database


def serve_config(path: Path, url: str, ris_port: int) -> Path:
    path.write_text(
        f"""
[database]
url = "{url}"
[hl7]
port = 0
parse_workers = 1
[dicom]
port = 0
[http]
port = 0
[outbox]
poll_interval = 0.1
retry_initial = 0.05
retry_max = 0.2
[[outbound]]
name = "RIS"
host = "127.0.0.1"
port = {ris_port}
""",
        encoding="utf-8",
    )
    return path


def in_order(received: list[Received]) -> bool:
    seen: dict[str, list[str]] = {}
    for message in received:
        seen.setdefault(message.placer, []).append(message.order_status)
    return all(sequence == ["IP", "CM"] for sequence in seen.values())


@pytest.mark.postgres
def test_two_brokers_drain_one_outbox_exactly_once(empty_postgres: str, tmp_path: Path) -> None:
    with FakeRIS() as ris:
        config_file = serve_config(tmp_path / "broker.toml", empty_postgres, ris.port)
        brokers = [BrokerProcess(config_file, name) for name in ("one", "two")]
        try:
            for broker in brokers:
                assert broker.wait_for_line("outbox sender"), "".join(broker.lines)
            with Store.open(DatabaseConfig(url=empty_postgres)) as store:
                entries = [status_entry(n, state) for n in range(ORDERS)
                           for state in (PPSStatus.IN_PROGRESS, PPSStatus.COMPLETED)]  # fmt: skip
                queue(store, *entries)
                assert ris.wait_for_distinct(2 * ORDERS, TIMEOUT * 3)
        finally:
            codes = [broker.stop() for broker in brokers]
    with Store.open(DatabaseConfig(url=empty_postgres)) as store:  # recorded before they stopped
        pending = OutboxLedger(store.engine).entries(state=State.PENDING)

    assert codes == [0, 0], "".join(brokers[0].lines[-20:] + brokers[1].lines[-20:])
    counts = ris.counts()
    assert len(counts) == 2 * ORDERS and set(counts.values()) == {1}  # each exactly once
    assert in_order(ris.received)
    assert pending == []
    sent = [broker.sent() for broker in brokers]
    assert all(sent), "both processes delivered"
    assert sorted(sent[0] + sent[1]) == sorted(counts)
