"""Delivery bookkeeping of the outbox: claims, outcomes, operator actions, depth.

The writing side is :class:`broker.store.outbox_queue.SqlOutbox` (rows added in the MPPS
transaction); this module is the sending side, safe with several broker processes on one
PostgreSQL database (ARCHITECTURE.md "Scaling out").

Claims. :func:`claim_due` takes ``pending`` rows that are due (``next_attempt_at <= now``),
whose lease is free or expired, and that are the **oldest pending row of their
``(destination, order_key)``**; it writes ``claimed_by`` / ``claimed_until`` and commits. On
PostgreSQL the rows are selected ``FOR UPDATE SKIP LOCKED``: two processes claiming at once
take disjoint rows and never wait for each other; on SQLite the unit of work's ``BEGIN
IMMEDIATE`` serialises claims (one node). A claim is a lease: a process that dies leaves its
rows to whoever claims after ``claimed_until``.

Ordering. Only the head of each ``(destination, order_key)`` sequence is ever claimable, so
the next message of an order waits until the previous one left ``pending`` (sent, dead or
discarded). A row backing off (``next_attempt_at`` in the future) holds back only the later
rows of its own order and destination; other orders and destinations go on.

Outcomes (:func:`record`) are fenced by ``claimed_by``: a process whose lease was taken over
cannot overwrite the outcome of the process that holds the row now. Every attempt counts in
``attempts``; the bytes of the first attempt are kept (:func:`save_payloads`) so a retry sends
the same message with the same control ID.

:class:`OutboxLedger` runs each operation in its own transaction; the module functions take a
session for callers that compose them. Database errors leave as :class:`mwl.ports.StoreFailure`.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from broker.store.engine import READ_ONLY
from broker.store.errors import store_errors
from broker.store.schema import OutboxRow


class State(enum.StrEnum):
    """``outbox.state``."""

    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"
    """Refused by the receiver (AE, a DICOM failure status); waits for an operator."""
    DISCARDED = "discarded"
    """Given up by an operator."""


class Outcome(enum.StrEnum):
    """What one attempt ended in."""

    SENT = "sent"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A row this process holds until ``claimed_until``."""

    id: int
    destination: str
    kind: str
    order_key: str
    operation: str
    control_id: str
    event: dict[str, Any]
    payload: bytes | None
    attempts: int
    """Attempts made before this claim."""
    claimed_until: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """The outcome of one attempt, for :func:`record`."""

    id: int
    outcome: Outcome
    error: str = ""
    ack: bytes | None = None
    next_attempt_at: datetime | None = None
    """When to try again (:attr:`Outcome.RETRY` only)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One row as an operator sees it (no event, no payload)."""

    id: int
    destination: str
    kind: str
    order_key: str
    operation: str
    control_id: str
    state: State
    attempts: int
    next_attempt_at: datetime
    claimed_by: str | None
    last_error: str
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationDepth:
    """Queue depth of one destination, for metrics."""

    destination: str
    pending: int
    dead: int
    oldest_pending: datetime | None
    """``created_at`` of the oldest pending row (its age is the delivery lag)."""

    def oldest_age(self, now: datetime) -> float:
        """Seconds the oldest pending row has waited; 0 when nothing is pending."""
        return 0.0 if self.oldest_pending is None else (now - self.oldest_pending).total_seconds()


_CLAIMED_COLUMNS = (
    OutboxRow.id,
    OutboxRow.destination,
    OutboxRow.kind,
    OutboxRow.order_key,
    OutboxRow.operation,
    OutboxRow.control_id,
    OutboxRow.event,
    OutboxRow.payload,
    OutboxRow.attempts,
)


_OUTBOX = cast(Table, OutboxRow.__table__)
_HELD = and_(  # pending and claimed by the worker bound as ``worker``
    _OUTBOX.c.state == State.PENDING.value, _OUTBOX.c.claimed_by == bindparam("worker")
)
_CLAIM = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(claimed_by=bindparam("worker"), claimed_until=bindparam("until"))
)
_SAVE_PAYLOAD = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"), _HELD, _OUTBOX.c.payload.is_(None))
    .values(payload=bindparam("bytes"))
)
_ATTEMPTED = {  # every outcome: one attempt more, the claim released, the reply kept
    "attempts": _OUTBOX.c.attempts + 1,
    "claimed_by": None,
    "claimed_until": None,
    "ack": bindparam("reply"),
}
_RECORD = update(_OUTBOX).where(_OUTBOX.c.id == bindparam("row_id"), _HELD)
_RECORD_SENT = _RECORD.values(
    {**_ATTEMPTED, "state": State.SENT.value, "sent_at": bindparam("when")}
)
_RECORD_DEAD = _RECORD.values(
    {**_ATTEMPTED, "state": State.DEAD.value, "last_error": bindparam("reason")}
)
_RECORD_RETRY = _RECORD.values(
    {**_ATTEMPTED, "last_error": bindparam("reason"), "next_attempt_at": bindparam("due")}
)
"""The bookkeeping of each round (claim, payloads, outcomes) as Core statements built once:
at a round per message, building ORM bulk updates per call cost more than the delivery."""


# --- claims ----------------------------------------------------------------------------------


def claim_due(
    session: Session,
    *,
    worker: str,
    now: datetime,
    lease: float,
    limit: int,
    destinations: Collection[str] | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` due head-of-order rows for ``lease`` seconds and commit.

    ``destinations`` limits the claim to the receivers this process knows (None: any).
    """
    if destinations is not None and not destinations:
        return []
    chosen = sorted(destinations) if destinations is not None else None
    query = _due_query(limit, len(chosen) if chosen is not None else None)
    parameters: dict[str, Any] = {"now": now}
    if chosen is not None:
        parameters |= {"destination": chosen[0]} if len(chosen) == 1 else {"destinations": chosen}
    with store_errors():
        connection = session.connection()
        rows = connection.execute(query, parameters).all()
        until = now + timedelta(seconds=lease)
        if rows:
            ids = [row.id for row in rows]
            connection.execute(_CLAIM, {"ids": ids, "worker": worker, "until": until})
        session.commit()
    return [_claimed(row, until) for row in rows]


@functools.cache
def _due_query(limit: int, destinations: int | None) -> Any:
    """Due head-of-order rows, oldest first: of any destination (None), of the one bound as
    ``destination`` (1), or of those bound as ``destinations``. Built once per shape."""
    table = _OUTBOX
    earlier = table.alias("earlier")
    blocked = exists().where(
        earlier.c.destination == table.c.destination,
        earlier.c.order_key == table.c.order_key,
        earlier.c.state == State.PENDING.value,
        earlier.c.id < table.c.id,
    )
    query = (
        select(*(table.c[column.key] for column in _CLAIMED_COLUMNS))
        .where(
            table.c.state == State.PENDING.value,
            table.c.next_attempt_at <= bindparam("now"),
            or_(table.c.claimed_until.is_(None), table.c.claimed_until < bindparam("now")),
            ~blocked,
        )
        .order_by(table.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # SQLite: no clause; BEGIN IMMEDIATE serialises
    )
    if destinations == 1:
        query = query.where(table.c.destination == bindparam("destination"))
    elif destinations is not None:
        query = query.where(table.c.destination.in_(bindparam("destinations", expanding=True)))
    return query


def _claimed(row: Any, until: datetime) -> Claimed:
    return Claimed(
        id=row.id,
        destination=row.destination,
        kind=row.kind,
        order_key=row.order_key,
        operation=row.operation,
        control_id=row.control_id,
        event=json.loads(row.event),
        payload=row.payload,
        attempts=row.attempts,
        claimed_until=until,
    )


def _held_by(worker: str) -> Any:
    return and_(OutboxRow.state == State.PENDING.value, OutboxRow.claimed_by == worker)


def renew(
    session: Session, ids: Collection[int], *, worker: str, now: datetime, lease: float
) -> set[int]:
    """Extend the unexpired claims of ``worker`` on ``ids``; the ids still held."""
    with store_errors():
        held = set(
            session.scalars(
                update(OutboxRow)
                .where(OutboxRow.id.in_(list(ids)), _held_by(worker), OutboxRow.claimed_until > now)
                .values(claimed_until=now + timedelta(seconds=lease))
                .returning(OutboxRow.id)
            )
        )
        session.commit()
    return held


def release(
    session: Session,
    ids: Collection[int],
    *,
    worker: str,
    not_before: datetime | None = None,
    reason: str = "",
) -> int:
    """Give claims back unattempted (stopping, or the destination is unreachable); with
    ``not_before`` they are not due before then. The number of rows released."""
    values: dict[str, Any] = {"claimed_by": None, "claimed_until": None}
    if not_before is not None:
        values["next_attempt_at"] = not_before
    if reason:
        values["last_error"] = reason
    with store_errors():
        released = session.execute(
            update(OutboxRow).where(OutboxRow.id.in_(list(ids)), _held_by(worker)).values(values)
        )
        session.commit()
    return _count(released)


# --- attempts --------------------------------------------------------------------------------


def save_payloads(session: Session, payloads: Mapping[int, bytes], *, worker: str) -> set[int]:
    """Fix the rendered bytes of rows that have none yet; the ids now safe to send."""
    saved: set[int] = set()
    with store_errors():
        connection = session.connection()
        for row_id, payload in payloads.items():
            parameters = {"row_id": row_id, "worker": worker, "bytes": payload}
            if _count(connection.execute(_SAVE_PAYLOAD, parameters)):
                saved.add(row_id)
        session.commit()
    return saved


def record(session: Session, results: Sequence[Result], *, worker: str, now: datetime) -> int:
    """Store the outcome of each attempt (fenced by the claim); the number recorded.

    One execution per kind of outcome, its rows as an executemany: psycopg sends them in one
    pipeline (one round trip for a round's deliveries, not one each).
    """
    by_statement: dict[Any, list[dict[str, Any]]] = {}
    for result in results:
        statement, values = _outcome(result, now)
        parameters = {"row_id": result.id, "worker": worker, "reply": result.ack, **values}
        by_statement.setdefault(statement, []).append(parameters)
    recorded = 0
    with store_errors():
        connection = session.connection()
        for statement, rows in by_statement.items():
            recorded += _count(connection.execute(statement, rows))
        session.commit()
    return recorded


def _outcome(result: Result, now: datetime) -> tuple[Any, dict[str, Any]]:
    """The prebuilt statement of ``result``'s outcome and its own parameters."""
    match result.outcome:
        case Outcome.SENT:
            return _RECORD_SENT, {"when": now}
        case Outcome.DEAD:
            return _RECORD_DEAD, {"reason": result.error}
        case Outcome.RETRY:
            if result.next_attempt_at is None:
                raise ValueError("a retry needs next_attempt_at")
            return _RECORD_RETRY, {"reason": result.error, "due": result.next_attempt_at}
    raise ValueError(f"unknown outcome {result.outcome!r}")


# --- operators -------------------------------------------------------------------------------


def retry(session: Session, row_id: int, *, now: datetime) -> bool:
    """A dead or discarded row back to pending (attempts from 0, due now), or a pending row
    due now; False when there is no such row or it was sent."""
    with store_errors():
        done = session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == row_id, OutboxRow.state != State.SENT.value)
            .values(_retry_values(now))
        )
        session.commit()
    return _count(done) == 1


def retry_all_dead(session: Session, *, now: datetime) -> int:
    """Every dead row back to pending; the number of rows."""
    with store_errors():
        done = session.execute(
            update(OutboxRow).where(OutboxRow.state == State.DEAD.value).values(_retry_values(now))
        )
        session.commit()
    return _count(done)


def _retry_values(now: datetime) -> dict[str, Any]:
    # A revived row starts its back-off over; a pending row only becomes due now.
    pending = OutboxRow.state == State.PENDING.value
    return {  # the claim of a pending row stays: its sender records the attempt in flight
        "attempts": case((pending, OutboxRow.attempts), else_=0),
        "state": State.PENDING.value,
        "next_attempt_at": now,
    }


def discard(session: Session, row_id: int) -> bool:
    """Give up a pending or dead row; False when there is no such row or it was sent."""
    with store_errors():
        done = session.execute(
            update(OutboxRow)
            .where(
                OutboxRow.id == row_id,
                OutboxRow.state.in_([State.PENDING.value, State.DEAD.value]),
            )
            .values(state=State.DISCARDED.value, claimed_by=None, claimed_until=None)
        )
        session.commit()
    return _count(done) == 1


def entries(session: Session, *, state: State | None = None, limit: int = 100) -> list[Entry]:
    """Rows in ``id`` order, optionally of one state."""
    query = select(OutboxRow).order_by(OutboxRow.id).limit(limit)
    if state is not None:
        query = query.where(OutboxRow.state == state.value)
    with store_errors():
        return [_entry(row) for row in session.scalars(query)]


def _entry(row: OutboxRow) -> Entry:
    return Entry(
        id=row.id,
        destination=row.destination,
        kind=row.kind,
        order_key=row.order_key,
        operation=row.operation,
        control_id=row.control_id,
        state=State(row.state),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        claimed_by=row.claimed_by,
        last_error=row.last_error,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )


def depth(session: Session) -> list[DestinationDepth]:
    """Pending and dead rows per destination, with the oldest pending row's time."""
    pending = OutboxRow.state == State.PENDING.value
    query = (
        select(
            OutboxRow.destination,
            func.count().filter(pending),
            func.count().filter(OutboxRow.state == State.DEAD.value),
            func.min(OutboxRow.created_at).filter(pending),
        )
        .where(OutboxRow.state.in_([State.PENDING.value, State.DEAD.value]))
        .group_by(OutboxRow.destination)
        .order_by(OutboxRow.destination)
    )
    with store_errors():
        rows = session.execute(query).all()
    return [_depth(*row) for row in rows]


def _depth(destination: str, pending: int, dead: int, oldest: datetime | None) -> DestinationDepth:
    return DestinationDepth(
        destination=destination, pending=pending, dead=dead, oldest_pending=oldest
    )


def _count(result: Any) -> int:
    return int(result.rowcount)


# --- one transaction per call ----------------------------------------------------------------


class OutboxLedger:
    """The functions above, each in a session of its own (one transaction per call)."""

    def __init__(self, engine: Engine) -> None:
        self._writers: Callable[[], Session] = sessionmaker(engine, expire_on_commit=False)
        readers = engine.execution_options(**{READ_ONLY: True})  # SQLite: no write lock
        self._readers: Callable[[], Session] = sessionmaker(readers, expire_on_commit=False)

    @contextmanager
    def _session(self, *, read_only: bool = False) -> Iterator[Session]:
        with store_errors(), (self._readers if read_only else self._writers)() as session:
            yield session

    def claim_due(
        self,
        *,
        worker: str,
        now: datetime,
        lease: float,
        limit: int,
        destinations: Collection[str] | None = None,
    ) -> list[Claimed]:
        with self._session() as session:
            return claim_due(
                session,
                worker=worker,
                now=now,
                lease=lease,
                limit=limit,
                destinations=destinations,
            )

    def renew(self, ids: Collection[int], *, worker: str, now: datetime, lease: float) -> set[int]:
        with self._session() as session:
            return renew(session, ids, worker=worker, now=now, lease=lease)

    def release(
        self,
        ids: Collection[int],
        *,
        worker: str,
        not_before: datetime | None = None,
        reason: str = "",
    ) -> int:
        with self._session() as session:
            return release(session, ids, worker=worker, not_before=not_before, reason=reason)

    def save_payloads(self, payloads: Mapping[int, bytes], *, worker: str) -> set[int]:
        with self._session() as session:
            return save_payloads(session, payloads, worker=worker)

    def save_payload(self, row_id: int, payload: bytes, *, worker: str) -> bool:
        return row_id in self.save_payloads({row_id: payload}, worker=worker)

    def record(self, results: Sequence[Result], *, worker: str, now: datetime) -> int:
        with self._session() as session:
            return record(session, results, worker=worker, now=now)

    def mark_sent(self, row_id: int, ack: bytes | None, now: datetime, *, worker: str) -> bool:
        result = Result(id=row_id, outcome=Outcome.SENT, ack=ack)
        return self.record([result], worker=worker, now=now) == 1

    def mark_retry(
        self, row_id: int, error: str, next_attempt_at: datetime, *, worker: str, now: datetime
    ) -> bool:
        result = Result(
            id=row_id, outcome=Outcome.RETRY, error=error, next_attempt_at=next_attempt_at
        )
        return self.record([result], worker=worker, now=now) == 1

    def mark_dead(
        self, row_id: int, error: str, ack: bytes | None, *, worker: str, now: datetime
    ) -> bool:
        result = Result(id=row_id, outcome=Outcome.DEAD, error=error, ack=ack)
        return self.record([result], worker=worker, now=now) == 1

    def retry(self, row_id: int, *, now: datetime) -> bool:
        with self._session() as session:
            return retry(session, row_id, now=now)

    def retry_all_dead(self, *, now: datetime) -> int:
        with self._session() as session:
            return retry_all_dead(session, now=now)

    def discard(self, row_id: int) -> bool:
        with self._session() as session:
            return discard(session, row_id)

    def entries(self, *, state: State | None = None, limit: int = 100) -> list[Entry]:
        with self._session(read_only=True) as session:
            return entries(session, state=state, limit=limit)

    def depth(self) -> list[DestinationDepth]:
        with self._session(read_only=True) as session:
            return depth(session)
