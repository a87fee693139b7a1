"""Outbox delivery against a scripted fake RIS (and a pynetdicom MPPS peer) over loopback.

The sender runs on an event loop of its own thread, as in the broker; rows are queued through
the store as the MPPS service queues them and the sender is woken as ``on_commit`` wakes it.
Waiting is on the fake RIS's condition or on the recorded outcomes, with timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.events import Event

from broker.config import Config, ForwardConfig, OutboundConfig, OutboxConfig
from broker.mpps_service import MODALITY_PERFORMED_PROCEDURE_STEP
from broker.outbound import (
    ACK_OUTCOMES,
    DicomChannel,
    OutboundSender,
    ack_outcome,
    dicom_outcome,
    render_status,
    retry_delay,
)
from broker.store import Store
from broker.store.outbox import OutboxLedger, Outcome, Result, State
from broker.store.schema import OutboxRow
from hl7.codec import decode
from mpps.model import PPSStatus
from mpps.ports import OutboxEntry
from tests.fake_ris import AE_TEXT, FakeRIS, Received, always, first_then, queue, status_entry
from tests.mpps.datasets import completion, n_create

TIMEOUT = 10.0
FAST = OutboxConfig(poll_interval=0.05, retry_initial=0.05, retry_factor=2.0, retry_max=0.2,
                    lease=30.0)  # fmt: skip


class WatchedLedger(OutboxLedger):
    """The ledger, telling waiting tests about every outcome recorded."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.engine)
        self.results: list[Result] = []
        self._condition = threading.Condition()

    def record(self, results: Sequence[Result], *, worker: str, now: datetime) -> int:
        recorded = super().record(results, worker=worker, now=now)
        with self._condition:
            self.results += results
            self._condition.notify_all()
        return recorded

    def wait_for(self, predicate: Callable[[list[Result]], bool], timeout: float = TIMEOUT) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: predicate(self.results), timeout)

    def outcomes(self, row_id: int) -> list[Outcome]:
        with self._condition:
            return [r.outcome for r in self.results if r.id == row_id]


@contextmanager
def sending(sender: OutboundSender) -> Iterator[OutboundSender]:
    """``sender`` started on an event loop in a thread of its own; stopped afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sender-loop")
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(sender.start(), loop).result(TIMEOUT)
        yield sender
    finally:
        asyncio.run_coroutine_threadsafe(sender.stop(5.0), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


def receiver(name: str, port: int, ack_timeout: float = 0.5) -> OutboundConfig:
    return OutboundConfig(name=name, host="127.0.0.1", port=port, connect_timeout=1.0,
                          ack_timeout=ack_timeout)  # fmt: skip


def hl7_sender(ledger: OutboxLedger, *receivers: OutboundConfig) -> OutboundSender:
    return OutboundSender.from_config(Config(outbound=receivers, outbox=FAST), ledger)


@pytest.fixture
def ledger(store: Store) -> WatchedLedger:
    return WatchedLedger(store)


def stored(store: Store, row_id: int) -> OutboxRow:
    with store.read_session() as session:
        row = session.get(OutboxRow, row_id)
        assert row is not None
        return row


def in_order_per_order(received: list[Received]) -> bool:
    """IP before CM for every placer number, nothing twice."""
    seen: dict[str, list[str]] = {}
    for message in received:
        seen.setdefault(message.placer, []).append(message.order_status)
    return all(statuses in (["IP"], ["IP", "CM"]) for statuses in seen.values())


def both(orders: range) -> list[OutboxEntry]:
    """IP and CM of every order, in the order the MPPS service queues them."""
    ips = [status_entry(n) for n in orders]
    cms = [status_entry(n, PPSStatus.COMPLETED) for n in orders]
    return [entry for pair in zip(ips, cms, strict=True) for entry in pair]


# --- outcomes ----------------------------------------------------------------------------------


def test_everything_arrives_once_and_in_order_per_order(
    store: Store, ledger: WatchedLedger
) -> None:
    entries = both(range(1, 6))
    with FakeRIS() as ris, sending(hl7_sender(ledger, receiver("RIS", ris.port))) as sender:
        ids = queue(store, *entries)
        sender.wake()
        assert ris.wait_for_count(10, TIMEOUT)
        assert ledger.wait_for(lambda results: len(results) == 10)

    assert sorted(ris.counts().values()) == [1] * 10
    assert {r.control_id for r in ris.received} == {e.control_id for e in entries}
    assert in_order_per_order(ris.received)
    for row_id in ids:
        row = stored(store, row_id)
        assert (row.state, row.attempts) == (State.SENT, 1)
        assert row.ack is not None and b"MSA|AA|" + row.control_id.encode() in row.ack
        assert row.payload is not None and row.sent_at is not None


def test_the_message_is_the_status_report(store: Store, ledger: WatchedLedger) -> None:
    entry = status_entry(7, PPSStatus.COMPLETED)
    with FakeRIS() as ris, sending(hl7_sender(ledger, receiver("RIS", ris.port))) as sender:
        queue(store, entry)
        sender.wake()
        assert ris.wait_for_count(1, TIMEOUT)

    message = decode(ris.received[0].raw)
    assert message.header.control_id == entry.control_id
    assert message.header.message_type == "ORM"
    assert message.header.sending_application == "MWLBROKER"
    assert message.header.receiving_application == "RIS"
    assert ris.received[0].order_status == "CM"
    assert ris.received[0].placer == "PL7"


def test_ae_is_dead_lettered_with_its_reason(store: Store, ledger: WatchedLedger) -> None:
    ip1, _cm1, _ip2 = entries = [status_entry(1), status_entry(1, PPSStatus.COMPLETED),
                               status_entry(2)]  # fmt: skip

    def refuse_ip1(received: Received) -> str:
        return "AE" if received.control_id == ip1.control_id else "AA"

    with FakeRIS(refuse_ip1) as ris, sending(hl7_sender(ledger, receiver("RIS", ris.port))) as s:
        dead, cm, other = queue(store, *entries)
        s.wake()
        assert ledger.wait_for(lambda results: len(results) == 3)

    row = stored(store, dead)
    assert (row.state, row.attempts) == (State.DEAD, 1)
    assert AE_TEXT in row.last_error and "204" in row.last_error
    assert stored(store, cm).state == stored(store, other).state == State.SENT  # not blocked
    assert ris.counts()[ip1.control_id] == 1


def test_ar_is_retried_with_the_same_bytes_and_control_id(
    store: Store, ledger: WatchedLedger
) -> None:
    entry = status_entry(1)
    with (
        FakeRIS(first_then("AR", "AA", times=2)) as ris,
        sending(hl7_sender(ledger, receiver("RIS", ris.port))) as sender,
    ):
        (row_id,) = queue(store, entry)
        sender.wake()
        assert ledger.wait_for(lambda results: Outcome.SENT in ledger.outcomes(row_id))

    assert [r.control_id for r in ris.received] == [entry.control_id] * 3
    assert len({r.raw for r in ris.received}) == 1
    assert ledger.outcomes(row_id) == [Outcome.RETRY, Outcome.RETRY, Outcome.SENT]
    row = stored(store, row_id)
    assert (row.state, row.attempts) == (State.SENT, 3)
    assert row.payload == ris.received[0].raw


@pytest.mark.parametrize("failure", ["silent", "close"])
def test_no_answer_is_retried(store: Store, ledger: WatchedLedger, failure: str) -> None:
    with (
        FakeRIS(first_then(failure)) as ris,
        sending(hl7_sender(ledger, receiver("RIS", ris.port, ack_timeout=0.3))) as sender,
    ):
        (row_id,) = queue(store, status_entry(1))
        sender.wake()
        assert ledger.wait_for(lambda results: Outcome.SENT in ledger.outcomes(row_id))

    assert ledger.outcomes(row_id) == [Outcome.RETRY, Outcome.SENT]
    expected = "no ACK" if failure == "silent" else "closed"
    assert expected in ledger.results[0].error


def test_a_ris_that_is_down_gets_everything_once_it_is_up(
    store: Store, ledger: WatchedLedger
) -> None:
    entries = both(range(1, 4))
    with FakeRIS() as ris, sending(hl7_sender(ledger, receiver("RIS", ris.port))) as sender:
        ris.down()
        ids = queue(store, *entries)
        sender.wake()
        assert ledger.wait_for(lambda results: len(results) >= 3)  # a few refused attempts
        ris.up()
        assert ris.wait_for_count(6, TIMEOUT)
        assert ledger.wait_for(lambda results: sum(r.outcome is Outcome.SENT for r in results) == 6)

    assert sorted(ris.counts().values()) == [1] * 6
    assert in_order_per_order(ris.received)
    assert all(stored(store, row_id).state == State.SENT for row_id in ids)
    refused = [r for r in ledger.results if r.outcome is Outcome.RETRY]
    assert refused and all("connect" in r.error for r in refused)


def test_a_failing_order_does_not_block_another(store: Store, ledger: WatchedLedger) -> None:
    def reject_order_1(received: Received) -> str:
        return "AR" if received.placer == "PL1" else "AA"

    with (
        FakeRIS(reject_order_1) as ris,
        sending(hl7_sender(ledger, receiver("RIS", ris.port))) as sender,
    ):
        ip1, _cm1, ip2, cm2 = queue(store, *both(range(1, 3)))
        sender.wake()
        assert ledger.wait_for(lambda _: {Outcome.SENT} == set(ledger.outcomes(cm2)))
        assert ledger.wait_for(lambda _: len(ledger.outcomes(ip1)) >= 3)

    statuses = [(r.placer, r.order_status) for r in ris.received]
    assert ("PL2", "IP") in statuses and ("PL2", "CM") in statuses
    assert ("PL1", "CM") not in statuses  # held back behind its IP
    assert len({r.control_id for r in ris.received if r.placer == "PL1"}) == 1
    assert stored(store, ip2).state == State.SENT


def test_a_slow_destination_does_not_hold_up_another(store: Store, ledger: WatchedLedger) -> None:
    with (
        FakeRIS(always("silent")) as slow,
        FakeRIS() as quick,
        sending(
            hl7_sender(ledger, receiver("SLOW", slow.port, 2.0), receiver("QUICK", quick.port))
        ) as sender,
    ):
        queue(store, status_entry(1, destination="SLOW"), status_entry(2, destination="SLOW"))
        sender.wake()
        assert slow.wait_for_count(1, TIMEOUT)  # SLOW is now waiting for an ACK
        queue(store, status_entry(3, destination="QUICK"))
        sender.wake()
        assert quick.wait_for_count(1, 1.5)  # well before SLOW's ACK timeout
        assert len(slow.received) == 1


def test_claims_are_renewed_when_the_lease_could_run_out(
    store: Store, ledger: WatchedLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    renewals: list[list[int]] = []
    renew = ledger.renew

    def counted(ids: Sequence[int], **kwargs: Any) -> set[int]:
        renewals.append(list(ids))
        return renew(ids, **kwargs)

    monkeypatch.setattr(ledger, "renew", counted)
    short = OutboxConfig(retry_initial=0.05, lease=1.0)  # < connect + ACK timeout
    with FakeRIS() as ris:
        config = Config(outbound=(receiver("RIS", ris.port),), outbox=short)
        with sending(OutboundSender.from_config(config, ledger)) as sender:
            ids = queue(store, *(status_entry(n) for n in range(3)))
            sender.wake()
            assert ledger.wait_for(lambda results: len(results) == 3)

    assert renewals[0] == ids  # before the first send, for the whole round
    assert all(stored(store, row_id).state == State.SENT for row_id in ids)
    assert sorted(ris.counts().values()) == [1, 1, 1]


def test_a_message_that_cannot_be_rendered_is_dead(store: Store, ledger: WatchedLedger) -> None:
    broken = status_entry(1)
    event = {**broken.event, "message_type": "OMI^O23", "version": "2.3.1"}  # OMI needs 2.5
    entry = OutboxEntry(
        destination=broken.destination,
        kind=broken.kind,
        order_key=broken.order_key,
        operation=broken.operation,
        control_id=broken.control_id,
        event=event,
    )
    with FakeRIS() as ris, sending(hl7_sender(ledger, receiver("RIS", ris.port))) as sender:
        (row_id,) = queue(store, entry)
        sender.wake()
        assert ledger.wait_for(lambda results: len(results) == 1)

    row = stored(store, row_id)
    assert row.state == State.DEAD and "cannot render" in row.last_error
    assert ris.received == []


def test_stop_gives_unsent_claims_back(store: Store, ledger: WatchedLedger) -> None:
    with FakeRIS(always("silent")) as ris:
        sender = hl7_sender(ledger, receiver("RIS", ris.port, ack_timeout=1.0))
        with sending(sender):
            first, *others = queue(store, status_entry(1), status_entry(2), status_entry(3))
            sender.wake()
            assert ris.wait_for_count(1, TIMEOUT)
        # stop waited for the send in flight (its ACK timeout), then gave the others back

    assert ledger.outcomes(first) == [Outcome.RETRY]
    for row_id in others:
        row = stored(store, row_id)
        assert (row.state, row.attempts, row.claimed_by) == (State.PENDING, 0, None)


def test_rows_of_other_destinations_are_left_alone(store: Store, ledger: WatchedLedger) -> None:
    with FakeRIS() as ris, sending(hl7_sender(ledger, receiver("RIS", ris.port))) as sender:
        (elsewhere,) = queue(store, status_entry(1, destination="OTHER"))
        queue(store, status_entry(2))
        sender.wake()
        assert ris.wait_for_count(1, TIMEOUT)
        assert ledger.wait_for(lambda results: len(results) == 1)

    assert stored(store, elsewhere).claimed_by is None


# --- the rules as tables ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "expected"), [(1, 5.0), (2, 10.0), (3, 20.0), (8, 600.0), (5000, 600.0)]
)
def test_retry_delay_grows_and_is_capped(attempts: int, expected: float) -> None:
    settings = OutboxConfig(retry_initial=5.0, retry_factor=2.0, retry_max=600.0)
    assert retry_delay(attempts, settings) == expected


def ack_of(code: str, control_id: str = "C1", *extra: str) -> bytes:
    segments = ["MSH|^~\\&|RIS||MWLBROKER||20250101||ACK^O01|X|P|2.5", f"MSA|{code}|{control_id}"]
    return "\r".join([*segments, *extra]).encode()


@pytest.mark.parametrize(("code", "outcome"), sorted(ACK_OUTCOMES.items()))
def test_ack_codes(code: str, outcome: Outcome) -> None:
    assert ack_outcome(ack_of(code), "C1").outcome is outcome


def test_ae_reason_has_msa_3_and_err() -> None:
    ack = ack_of("AE", "C1", "ERR||PID^1^3|204^Unknown key identifier^HL70357|E||||no patient")
    ack = ack.replace(b"MSA|AE|C1", b"MSA|AE|C1|Patient unknown")
    attempt = ack_outcome(ack, "C1")
    assert attempt.outcome is Outcome.DEAD
    assert attempt.error.startswith("AE: Patient unknown; PID-3: 204")
    assert "no patient" in attempt.error


@pytest.mark.parametrize("ack", [b"garbage", b"MSH|^~\\&|RIS\rPID|1", ack_of("XX")])
def test_an_unreadable_or_unknown_ack_is_retried(ack: bytes) -> None:
    assert ack_outcome(ack, "C1").outcome is Outcome.RETRY


def test_an_ack_for_another_message_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert ack_outcome(ack_of("AA", "OTHER"), "C1").outcome is Outcome.SENT
    assert "answers control ID 'OTHER'" in caplog.text


@pytest.mark.parametrize(
    ("operation", "status", "outcome"),
    [
        ("N-CREATE", 0x0000, Outcome.SENT),
        ("N-SET", 0x0001, Outcome.SENT),
        ("N-SET", 0xB000, Outcome.SENT),
        ("N-CREATE", 0x0111, Outcome.SENT),
        ("N-SET", 0x0111, Outcome.DEAD),
        ("N-SET", 0x0110, Outcome.DEAD),
        ("N-CREATE", 0x0120, Outcome.DEAD),
        ("N-CREATE", 0xC000, Outcome.DEAD),
        ("N-CREATE", 0x0213, Outcome.RETRY),
        ("N-CREATE", 0xA700, Outcome.RETRY),
        ("N-SET", None, Outcome.RETRY),
    ],
)
def test_dicom_statuses(operation: str, status: int | None, outcome: Outcome) -> None:
    assert dicom_outcome(operation, status)[0] is outcome


def test_render_status_uses_our_application_and_facility() -> None:
    entry = status_entry(3)
    payload = render_status(
        entry.event, entry.control_id, datetime(2025, 1, 2, 3, 4, 5), "BRK^SITE"
    )
    header = decode(payload).header
    assert (header.sending_application, header.sending_facility) == ("BRK", "SITE")
    assert (header.control_id, header.timestamp) == (entry.control_id, "20250102030405")


# --- MPPS forwarded to a DICOM peer ----------------------------------------------------------


class MppsPeer:
    """A pynetdicom MPPS SCP on 127.0.0.1 that answers ``statuses`` in turn (then Success)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[str, str]] = []
        self._condition = threading.Condition()
        ae = AE(ae_title="PEER")
        ae.add_supported_context(MODALITY_PERFORMED_PROCEDURE_STEP)
        handlers = [(evt.EVT_N_CREATE, self._answer), (evt.EVT_N_SET, self._answer)]
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = int(self.server.server_address[1])

    def _answer(self, event: Event) -> tuple[int, Dataset | None]:
        kind = "N-CREATE" if event.event is evt.EVT_N_CREATE else "N-SET"
        uid = str(event.request.AffectedSOPInstanceUID or event.request.RequestedSOPInstanceUID)
        with self._condition:
            self.requests.append((kind, uid))
            self._condition.notify_all()
            status = self.statuses.pop(0) if self.statuses else 0x0000
        return status, (Dataset() if status == 0 else None)

    def wait_for_count(self, count: int) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: len(self.requests) >= count, TIMEOUT)

    def close(self) -> None:
        self.server.shutdown()


def forward_entries(uid: str) -> list[OutboxEntry]:
    create = {"sop_instance_uid": uid, "dataset": n_create().to_json_dict()}
    final = {"sop_instance_uid": uid, "dataset": completion().to_json_dict()}
    return [
        OutboxEntry(destination="PEER", kind="dicom", order_key=f"mpps:{uid}",
                    operation=operation, control_id=f"{uid[-6:]}{operation}", event=event)
        for operation, event in (("N-CREATE", create), ("N-SET", final))
    ]  # fmt: skip


def dicom_sender(ledger: OutboxLedger, port: int) -> OutboundSender:
    peer = ForwardConfig(name="PEER", ae_title="PEER", host="127.0.0.1", port=port)
    return OutboundSender.from_config(Config(mpps_forward=(peer,), outbox=FAST), ledger)


@contextmanager
def mpps_peer(*statuses: int) -> Iterator[MppsPeer]:
    peer = MppsPeer(*statuses)
    try:
        yield peer
    finally:
        peer.close()


def test_mpps_is_forwarded_in_order(store: Store, ledger: WatchedLedger) -> None:
    with mpps_peer() as peer, sending(dicom_sender(ledger, peer.port)) as sender:
        ids = queue(store, *forward_entries("1.2.3.4"), *forward_entries("1.2.3.5"))
        sender.wake()
        assert peer.wait_for_count(4)
        assert ledger.wait_for(lambda results: len(results) == 4)

    assert peer.requests.index(("N-CREATE", "1.2.3.4")) < peer.requests.index(("N-SET", "1.2.3.4"))
    assert all(stored(store, row_id).state == State.SENT for row_id in ids)


def test_a_duplicate_n_create_counts_as_sent_and_a_failure_is_dead(
    store: Store, ledger: WatchedLedger
) -> None:
    with mpps_peer(0x0111, 0x0110) as peer, sending(dicom_sender(ledger, peer.port)) as sender:
        created, refused = queue(store, *forward_entries("1.2.3.4"))
        sender.wake()
        assert ledger.wait_for(lambda results: len(results) == 2)

    assert stored(store, created).state == State.SENT
    row = stored(store, refused)
    assert (row.state, row.last_error) == (State.DEAD, "status 0x0110")


def test_an_unreachable_peer_is_retried(store: Store, ledger: WatchedLedger) -> None:
    with mpps_peer() as peer:
        port = peer.port
    with sending(dicom_sender(ledger, port)) as sender:
        created, later = queue(store, *forward_entries("1.2.3.4"))
        sender.wake()
        assert ledger.wait_for(lambda results: len(results) >= 2)

    assert set(ledger.outcomes(created)) == {Outcome.RETRY}
    assert ledger.outcomes(later) == []  # held back behind the N-CREATE
    assert "no association" in stored(store, created).last_error


def test_the_forwarding_scu_keeps_patient_data_out_of_pynetdicoms_logs() -> None:
    _config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = True
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG)

    DicomChannel(ForwardConfig(name="PACS", ae_title="PACS", host="127.0.0.1", port=1),
                 calling_ae="MWLBROKER")  # fmt: skip

    assert not _config.LOG_REQUEST_IDENTIFIERS and not _config.LOG_RESPONSE_IDENTIFIERS
    assert logging.getLogger("pynetdicom").level == logging.WARNING
