"""The outbox for operators: pending and dead-lettered messages, their health per destination,
and the two things an operator does with them — retry and discard.

Retry and discard go through :mod:`broker.store.outbox` (the sender's own bookkeeping) in one
transaction with their ``ops`` journal row (:mod:`broker.web.audit`): the row is locked
(``FOR UPDATE`` on PostgreSQL; SQLite's writer lock), its state checked, the audit row added,
and the store function commits both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from broker.store import Store
from broker.store import outbox as ledger
from broker.store.errors import store_errors
from broker.store.schema import OutboxRow
from broker.web import audit
from broker.web.errors import Conflict, NotFound
from broker.web.journal_read import msa_code, order_id_of
from broker.web.pages import Page, count, text_match

OPEN_STATES = ("pending", "dead")
STATES = ("pending", "dead", "sent", "discarded")
_RETRYABLE = frozenset({"pending", "dead", "discarded"})
_DISCARDABLE = frozenset({"pending", "dead"})


@dataclass(frozen=True, kw_only=True)
class OutboxFilter:
    states: tuple[str, ...] = OPEN_STATES
    destination: str | None = None
    control_id: str | None = None
    order_id: int | None = None


class OutboxSummary(BaseModel):
    id: int
    destination: str
    kind: str
    operation: str
    order_key: str
    order_id: int | None
    control_id: str
    state: str
    attempts: int
    next_attempt_at: datetime
    claimed_by: str | None
    last_error: str
    ack_code: str
    created_at: datetime
    sent_at: datetime | None


class DestinationHealth(BaseModel):
    destination: str
    pending: int
    dead: int
    oldest_pending: datetime | None
    oldest_pending_seconds: float


def list_outbox(
    session: Session, wanted: OutboxFilter, *, offset: int, limit: int
) -> Page[OutboxSummary]:
    query = select(OutboxRow).where(*_conditions(wanted))
    total = count(session, query)
    rows = session.scalars(query.order_by(OutboxRow.id).offset(offset).limit(limit)).all()
    return Page[OutboxSummary](
        items=[outbox_summary(row) for row in rows], total=total, offset=offset, limit=limit
    )


def outbox_of_order(session: Session, order_id: int) -> list[OutboxSummary]:
    rows = session.scalars(
        select(OutboxRow).where(OutboxRow.order_key == f"order:{order_id}").order_by(OutboxRow.id)
    ).all()
    return [outbox_summary(row) for row in rows]


def health(session: Session, now: datetime) -> list[DestinationHealth]:
    return [
        DestinationHealth(
            destination=depth.destination,
            pending=depth.pending,
            dead=depth.dead,
            oldest_pending=depth.oldest_pending,
            oldest_pending_seconds=round(depth.oldest_age(now), 3),
        )
        for depth in ledger.depth(session)
    ]


def outbox_summary(row: OutboxRow) -> OutboxSummary:
    return OutboxSummary(
        id=row.id,
        destination=row.destination,
        kind=row.kind,
        operation=row.operation,
        order_key=row.order_key,
        order_id=order_id_of(row.order_key),
        control_id=row.control_id,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        claimed_by=row.claimed_by,
        last_error=row.last_error,
        ack_code=msa_code(row.ack or b""),
        created_at=row.created_at,
        sent_at=row.sent_at,
    )


def retry(store: Store, row_id: int, *, who: str, now: datetime) -> OutboxSummary:
    """Dead or discarded → pending, attempts from 0, due now; a pending one: due now."""
    return _act(store, row_id, audit.Action.RETRY, _RETRYABLE, who=who, now=now)


def discard(store: Store, row_id: int, *, who: str, now: datetime) -> OutboxSummary:
    """Pending or dead → discarded: the sender gives it up (the order's later messages go)."""
    return _act(store, row_id, audit.Action.DISCARD, _DISCARDABLE, who=who, now=now)


def _act(
    store: Store,
    row_id: int,
    action: audit.Action,
    allowed: frozenset[str],
    *,
    who: str,
    now: datetime,
) -> OutboxSummary:
    with store_errors(), Session(store.engine, expire_on_commit=False) as session:
        row = session.scalars(
            select(OutboxRow).where(OutboxRow.id == row_id).with_for_update()
        ).one_or_none()
        if row is None:
            raise NotFound(f"no outbox message {row_id}")
        record = audit.AuditRecord(
            who=who, action=action, target=f"outbox:{row_id}", ok=row.state in allowed,
            control_id=row.control_id, detail={"state_before": row.state},
        )  # fmt: skip
        if not record.ok:
            verb = action.value.lower()
            refused = f"outbox message {row_id} is {row.state}: {verb} does not apply"
            audit.add(session, _failed(record, refused), now)
            session.commit()
            raise Conflict(refused)
        audit.add(session, record, now)
        done = (
            ledger.retry(session, row_id, now=now)
            if action is audit.Action.RETRY
            else ledger.discard(session, row_id)
        )
        if not done:  # pragma: no cover - the row is locked and its state was checked
            raise Conflict(f"outbox message {row_id} changed meanwhile; reload")
        session.refresh(row)
        return outbox_summary(row)


def _failed(record: audit.AuditRecord, error: str) -> audit.AuditRecord:
    return audit.AuditRecord(
        who=record.who, action=record.action, target=record.target, ok=False,
        control_id=record.control_id, error=error, detail=record.detail,
    )  # fmt: skip


def _conditions(wanted: OutboxFilter) -> list[ColumnElement[bool]]:
    terms: list[ColumnElement[bool]] = []
    if wanted.states:
        terms.append(OutboxRow.state.in_(wanted.states))
    if wanted.destination:
        terms.append(OutboxRow.destination == wanted.destination)
    if wanted.control_id:
        terms.append(text_match(OutboxRow.control_id, wanted.control_id))
    if wanted.order_id is not None:
        terms.append(OutboxRow.order_key == f"order:{wanted.order_id}")
    return terms
