"""SQLAlchemy implementation of :class:`mwl.ports.Journal`: the inbound message journal.

The journal is also the idempotency record (a sender resending a message after a lost ACK
keeps its MSH-10 Message Control ID): a unique partial index over (MSH-3, MSH-4, MSH-10)
``WHERE ack_code = 'AA'`` lets a message be accepted once, across every broker process
sharing the database. A second AA row fails at
commit and leaves as :class:`mwl.ports.DuplicateMessage` (:mod:`broker.store.errors`).

Both statements are Core, built once (the intake runs them for every message). A recorded row
waits in :class:`SqlJournal` until the session commits (its ``before_commit`` event) or the
unit next looks up an accepted message, as an ORM row would wait for the flush; a rollback of
the transaction or savepoint it was recorded in drops it.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, event, insert, literal_column, select
from sqlalchemy.orm import Session, SessionTransaction

from broker.store.errors import translated
from broker.store.schema import JournalRow
from mwl.ports import JournalEntry

_JOURNAL = cast(Table, JournalRow.__table__)

# A literal, not a bound parameter: only then can SQLite and PostgreSQL's generic plans
# prove the query implies the partial index's predicate and use that index.
_ACCEPTED = _JOURNAL.c.ack_code == literal_column("'AA'")

_FIND_ACCEPTED = (
    select(_JOURNAL.c.ack)
    .where(
        _JOURNAL.c.sending_application == bindparam("application"),
        _JOURNAL.c.sending_facility == bindparam("facility"),
        _JOURNAL.c.control_id == bindparam("control_id"),
        _ACCEPTED,
    )
    .limit(1)
)
_INSERT = insert(_JOURNAL)


class SqlJournal:
    """Inbound messages with the ACK each got, in the ``message_journal`` table."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._pending: list[tuple[SessionTransaction, dict[str, Any]]] = []
        self._hooked = False

    @translated
    def find_accepted(self, sender: tuple[str, str], control_id: str) -> bytes | None:
        application, facility = sender
        self._write_pending(self._session)
        ack: bytes | None = self._session.connection().scalar(
            _FIND_ACCEPTED,
            {"application": application, "facility": facility, "control_id": control_id},
        )
        return ack

    @translated
    def record(self, entry: JournalEntry) -> None:
        if entry.received_at.tzinfo is None:
            raise ValueError("JournalEntry.received_at must be timezone-aware")
        session = self._session
        if not self._hooked:
            event.listen(session, "before_commit", self._write_pending)
            event.listen(session, "after_soft_rollback", self._discard_pending)
            self._hooked = True
        # The transaction the row belongs to (begun as ``Session.add`` would begin it).
        transaction = session.get_nested_transaction() or session.get_transaction()
        self._pending.append((transaction or session.begin(), _entry_to_row(entry)))

    def _write_pending(self, session: Session) -> None:
        """Insert the recorded rows (at commit, errors are translated around the commit)."""
        pending, self._pending = self._pending, []
        if pending:
            session.connection().execute(_INSERT, [row for _, row in pending])

    def _discard_pending(self, session: Session, previous: SessionTransaction) -> None:
        """A rollback drops the rows recorded in the transaction (or savepoint) it ended,
        as it expunges the ORM rows added there."""
        self._pending = [(t, row) for t, row in self._pending if not _within(t, previous)]


def _within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None and transaction is not outer:
        transaction = transaction.parent
    return transaction is outer


def _entry_to_row(entry: JournalEntry) -> dict[str, Any]:
    return {
        "received_at": entry.received_at,
        "direction": "in",
        "peer": entry.peer,
        "sending_application": entry.sending_application,
        "sending_facility": entry.sending_facility,
        "control_id": entry.control_id,
        "message_type": entry.message_type,
        "trigger_event": entry.trigger_event,
        "version": entry.version,
        "ack_code": entry.ack_code,
        "ack": entry.ack,
        "error": entry.error,
        "raw": entry.raw,
        "patient_id": entry.patient_id,
        "accession": entry.accession,
    }
