"""Delivery bookkeeping: claims, per-order sequencing, leases, outcomes, operator actions.

Every test runs on SQLite and PostgreSQL (the ``store`` fixture); the ``SKIP LOCKED`` tests
need two PostgreSQL sessions at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from broker.config import DatabaseConfig
from broker.store import Store, migrate
from broker.store.outbox import Claimed, OutboxLedger, Outcome, Result, State
from broker.store.schema import OutboxRow
from mpps.model import PPSStatus
from mwl.ports import StoreFailure
from tests.broker.store.test_unit_of_work import closed_port
from tests.fake_ris import queue, status_entry

A, B = "node-a:1:aa", "node-b:2:bb"
LEASE = 60.0


@pytest.fixture
def ledger(store: Store) -> OutboxLedger:
    return OutboxLedger(store.engine)


def now() -> datetime:
    return datetime.now(UTC)


def claim(
    ledger: OutboxLedger,
    worker: str = A,
    *,
    at: datetime | None = None,
    limit: int = 100,
    destinations: list[str] | None = None,
) -> list[int]:
    rows = ledger.claim_due(
        worker=worker, now=at or now(), lease=LEASE, limit=limit, destinations=destinations
    )
    return [row.id for row in rows]


def row(store: Store, row_id: int) -> OutboxRow:
    with store.read_session() as session:
        found = session.get(OutboxRow, row_id)
        assert found is not None
        return found


# --- claims and order ------------------------------------------------------------------------


def test_a_claim_takes_due_rows_and_holds_them(store: Store, ledger: OutboxLedger) -> None:
    ids = queue(store, status_entry(1), status_entry(2))
    rows = ledger.claim_due(worker=A, now=now(), lease=LEASE, limit=10)

    assert [r.id for r in rows] == ids
    first = rows[0]
    assert isinstance(first, Claimed)
    assert (first.destination, first.kind, first.order_key, first.operation) == (
        "RIS", "hl7", "order:1", "IP",
    )  # fmt: skip
    assert first.payload is None and first.attempts == 0
    assert first.event["message_type"] == "ORM^O01"
    stored = row(store, ids[0])
    assert stored.claimed_by == A
    assert stored.claimed_until == first.claimed_until
    assert claim(ledger, B) == []  # leased to A


def test_only_the_oldest_pending_row_of_an_order_is_claimed(
    store: Store, ledger: OutboxLedger
) -> None:
    ip1, cm1, ip2 = queue(
        store,
        status_entry(1),
        status_entry(1, PPSStatus.COMPLETED),
        status_entry(2),
    )
    assert claim(ledger) == [ip1, ip2]

    assert ledger.mark_sent(ip1, b"ACK", now(), worker=A)
    assert claim(ledger, B) == [cm1]


def test_a_row_backing_off_holds_back_only_its_own_order(
    store: Store, ledger: OutboxLedger
) -> None:
    ip1, cm1, ip2 = queue(
        store, status_entry(1), status_entry(1, PPSStatus.COMPLETED), status_entry(2)
    )
    claim(ledger, limit=1)
    later = now() + timedelta(seconds=30)
    assert ledger.mark_retry(ip1, "AR: busy", later, worker=A, now=now())

    assert claim(ledger, B) == [ip2]  # not cm1: ip1 of its order is still pending
    assert claim(ledger, B, at=later + timedelta(seconds=1)) == [ip1]
    assert cm1 not in claim(ledger, B, at=later + timedelta(seconds=1))


def test_orders_are_sequenced_per_destination(store: Store, ledger: OutboxLedger) -> None:
    ris_ip, ris_cm, pacs_ip = queue(
        store,
        status_entry(1, destination="RIS"),
        status_entry(1, PPSStatus.COMPLETED, destination="RIS"),
        status_entry(1, destination="PACS"),
    )
    assert claim(ledger) == [ris_ip, pacs_ip]
    assert claim(ledger, B, destinations=["PACS"]) == []
    assert ris_cm not in claim(ledger, B)


def test_a_claim_is_limited_to_destinations_and_count(store: Store, ledger: OutboxLedger) -> None:
    ids = queue(store, *(status_entry(n) for n in range(5)), status_entry(9, destination="X"))
    assert claim(ledger, destinations=["RIS"], limit=2) == ids[:2]
    assert claim(ledger, destinations=[]) == []
    assert claim(ledger, destinations=["X"]) == ids[5:]


def test_rows_not_yet_due_are_not_claimed(store: Store, ledger: OutboxLedger) -> None:
    queue(store, status_entry(1))
    assert claim(ledger, at=now() - timedelta(minutes=5)) == []


def test_an_expired_lease_can_be_claimed_by_another_process(
    store: Store, ledger: OutboxLedger
) -> None:
    (ip1,) = queue(store, status_entry(1))
    claim(ledger, A)
    expired = now() + timedelta(seconds=LEASE + 1)

    assert claim(ledger, B, at=expired) == [ip1]
    assert row(store, ip1).claimed_by == B
    # A's late outcome no longer counts: B holds the row
    assert not ledger.mark_sent(ip1, b"late", now(), worker=A)
    assert row(store, ip1).state == State.PENDING


def test_renew_extends_only_claims_still_held(store: Store, ledger: OutboxLedger) -> None:
    ip1, ip2 = queue(store, status_entry(1), status_entry(2))
    claim(ledger, A)
    assert ledger.release([ip2], worker=A) == 1

    held = ledger.renew([ip1, ip2], worker=A, now=now(), lease=LEASE * 2)

    assert held == {ip1}
    assert row(store, ip1).claimed_until > now() + timedelta(seconds=LEASE * 1.5)


def test_release_gives_a_claim_back_unattempted(store: Store, ledger: OutboxLedger) -> None:
    (ip1,) = queue(store, status_entry(1))
    claim(ledger)
    later = now() + timedelta(seconds=20)
    assert ledger.release([ip1], worker=B) == 0  # not B's
    assert ledger.release([ip1], worker=A, not_before=later, reason="unreachable") == 1

    stored = row(store, ip1)
    assert (stored.attempts, stored.claimed_by, stored.last_error) == (0, None, "unreachable")
    assert claim(ledger, B) == []
    assert claim(ledger, B, at=later) == [ip1]


# --- attempts ----------------------------------------------------------------------------------


def test_the_first_payload_is_kept(store: Store, ledger: OutboxLedger) -> None:
    (ip1,) = queue(store, status_entry(1))
    claim(ledger)
    assert ledger.save_payload(ip1, b"first", worker=A)
    assert not ledger.save_payload(ip1, b"second", worker=A)
    assert not ledger.save_payload(ip1, b"other", worker=B)
    ledger.mark_retry(ip1, "timeout", now(), worker=A, now=now())

    (again,) = ledger.claim_due(worker=B, now=now(), lease=LEASE, limit=1)
    assert again.payload == b"first"
    assert again.attempts == 1


def test_outcomes_are_recorded(store: Store, ledger: OutboxLedger) -> None:
    sent, dead, retried = queue(store, status_entry(1), status_entry(2), status_entry(3))
    claim(ledger)
    due = now() + timedelta(seconds=5)
    recorded = ledger.record(
        [
            Result(id=sent, outcome=Outcome.SENT, ack=b"AA"),
            Result(id=dead, outcome=Outcome.DEAD, error="AE: Unknown accession", ack=b"AE"),
            Result(id=retried, outcome=Outcome.RETRY, error="AR", next_attempt_at=due),
        ],
        worker=A,
        now=now(),
    )
    assert recorded == 3
    states = {i: (row(store, i).state, row(store, i).attempts) for i in (sent, dead, retried)}
    assert states == {sent: ("sent", 1), dead: ("dead", 1), retried: ("pending", 1)}
    assert row(store, sent).sent_at is not None and row(store, sent).ack == b"AA"
    assert row(store, dead).last_error == "AE: Unknown accession"
    assert row(store, retried).next_attempt_at == due
    assert row(store, retried).claimed_by is None


def test_a_retry_needs_a_time(store: Store, ledger: OutboxLedger) -> None:
    (row_id,) = queue(store, status_entry(1))
    claim(ledger)
    with pytest.raises(ValueError, match="next_attempt_at"):
        ledger.record([Result(id=row_id, outcome=Outcome.RETRY)], worker=A, now=now())
    assert ledger.entries()[0].attempts == 0  # nothing recorded


def test_a_dead_row_does_not_hold_back_its_order(store: Store, ledger: OutboxLedger) -> None:
    ip1, cm1 = queue(store, status_entry(1), status_entry(1, PPSStatus.COMPLETED))
    claim(ledger)
    ledger.mark_dead(ip1, "AE: no such order", b"AE", worker=A, now=now())
    assert claim(ledger, B) == [cm1]


# --- operators ---------------------------------------------------------------------------------


def test_retry_revives_a_dead_row_from_scratch(store: Store, ledger: OutboxLedger) -> None:
    ip1, ip2 = queue(store, status_entry(1), status_entry(2))
    claim(ledger)
    for row_id in (ip1, ip2):
        ledger.mark_dead(row_id, "AE", None, worker=A, now=now())

    assert ledger.retry(ip1, now=now())
    assert (row(store, ip1).state, row(store, ip1).attempts) == ("pending", 0)
    assert ledger.retry_all_dead(now=now()) == 1
    assert claim(ledger, B) == [ip1, ip2]
    assert not ledger.retry(10_000, now=now())


def test_retry_makes_a_waiting_row_due_now(store: Store, ledger: OutboxLedger) -> None:
    (ip1,) = queue(store, status_entry(1))
    claim(ledger)
    ledger.mark_retry(ip1, "AR", now() + timedelta(hours=1), worker=A, now=now())

    assert ledger.retry(ip1, now=now())
    assert row(store, ip1).attempts == 1  # a pending row keeps its count
    assert claim(ledger, B) == [ip1]


def test_discard_gives_up_and_unblocks_the_order(store: Store, ledger: OutboxLedger) -> None:
    ip1, cm1 = queue(store, status_entry(1), status_entry(1, PPSStatus.COMPLETED))
    claim(ledger)
    ledger.mark_sent(ip1, b"AA", now(), worker=A)

    assert not ledger.discard(ip1)  # sent already
    assert ledger.discard(cm1)
    assert row(store, cm1).state == State.DISCARDED
    assert not ledger.retry(ip1, now=now())
    assert ledger.retry(cm1, now=now())


def test_entries_and_depth(store: Store, ledger: OutboxLedger) -> None:
    ip1, ip2, ip3 = queue(store, status_entry(1), status_entry(2), status_entry(3, destination="X"))
    claim(ledger, limit=1)
    ledger.mark_dead(ip1, "AE: bad", None, worker=A, now=now())

    assert [e.id for e in ledger.entries()] == [ip1, ip2, ip3]
    (dead,) = ledger.entries(state=State.DEAD)
    assert (dead.id, dead.state, dead.last_error, dead.attempts) == (ip1, State.DEAD, "AE: bad", 1)
    assert [e.id for e in ledger.entries(state=State.PENDING, limit=1)] == [ip2]

    depth = {d.destination: d for d in ledger.depth()}
    assert (depth["RIS"].pending, depth["RIS"].dead) == (1, 1)
    assert (depth["X"].pending, depth["X"].dead) == (1, 0)
    oldest = depth["RIS"].oldest_pending
    assert oldest is not None and oldest.tzinfo is not None
    assert 0 <= depth["RIS"].oldest_age(now()) < 60


def test_depth_of_an_empty_outbox(ledger: OutboxLedger) -> None:
    assert ledger.depth() == []


def test_database_errors_leave_as_store_failure() -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/x?connect_timeout=5"
    with Store.open(DatabaseConfig(url=url)) as unreachable, pytest.raises(StoreFailure):
        OutboxLedger(unreachable.engine).claim_due(worker=A, now=now(), lease=1, limit=1)


# --- several processes on PostgreSQL -------------------------------------------------------


@pytest.fixture
def postgres_store(postgres_database: str) -> Iterator[Store]:
    """An open store on an empty, migrated PostgreSQL database."""
    with psycopg.connect(postgres_database, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    database = DatabaseConfig(url=postgres_database)
    migrate(database)
    with Store.open(database) as opened:
        yield opened


@pytest.mark.postgres
def test_skip_locked_claims_pass_a_locked_row(postgres_store: Store) -> None:
    store = postgres_store
    ip1, _cm1, ip2 = queue(
        store, status_entry(1), status_entry(1, PPSStatus.COMPLETED), status_entry(2)
    )
    ledger = OutboxLedger(store.engine)
    with Session(store.engine) as other:  # another process in the middle of claiming ip1
        other.execute(select(OutboxRow).where(OutboxRow.id == ip1).with_for_update())
        with ThreadPoolExecutor(1) as pool:
            claimed = pool.submit(claim, ledger, B).result(timeout=10)  # does not wait
        assert claimed == [ip2]  # not ip1 (locked), not cm1 (ip1 is still pending)
        other.rollback()
    assert claim(ledger, B) == [ip1]


@pytest.mark.postgres
def test_concurrent_claims_are_disjoint(postgres_store: Store) -> None:
    store = postgres_store
    ids = queue(store, *(status_entry(n) for n in range(200)))
    ledger = OutboxLedger(store.engine)
    start = threading.Barrier(4)

    def claim_all(worker: str) -> list[int]:
        start.wait(10)
        taken: list[int] = []
        while batch := claim(ledger, worker, limit=7):
            taken += batch
        return taken

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(claim_all, [f"w{n}" for n in range(4)]))

    every = [row_id for taken in results for row_id in taken]
    assert sorted(every) == ids  # each row exactly once
    with store.read_session() as session:
        owners = session.execute(text("SELECT count(DISTINCT claimed_by) FROM outbox")).scalar()
    assert owners is not None and owners >= 2
