"""SQLAlchemy implementation of :class:`mwl.ports.Journal`: the inbound message journal.

The journal is also the idempotency record (a sender resending a message after a lost ACK
keeps its MSH-10 Message Control ID): a unique partial index over (MSH-3, MSH-4, MSH-10)
``WHERE ack_code = 'AA'`` lets a message be accepted once, across every broker process
sharing the database. A second AA row fails at
commit and leaves as :class:`mwl.ports.DuplicateMessage` (:mod:`broker.store.errors`).
"""

from __future__ import annotations

from sqlalchemy import literal_column, select
from sqlalchemy.orm import Session

from broker.store.errors import translated
from broker.store.schema import JournalRow
from mwl.ports import JournalEntry

# A literal, not a bound parameter: only then can SQLite and PostgreSQL's generic plans
# prove the query implies the partial index's predicate and use that index.
_ACCEPTED = JournalRow.ack_code == literal_column("'AA'")


class SqlJournal:
    """Inbound messages with the ACK each got, in the ``message_journal`` table."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @translated
    def find_accepted(self, sender: tuple[str, str], control_id: str) -> bytes | None:
        application, facility = sender
        return self._session.scalar(
            select(JournalRow.ack)
            .where(
                JournalRow.sending_application == application,
                JournalRow.sending_facility == facility,
                JournalRow.control_id == control_id,
                _ACCEPTED,
            )
            .limit(1)
        )

    @translated
    def record(self, entry: JournalEntry) -> None:
        if entry.received_at.tzinfo is None:
            raise ValueError("JournalEntry.received_at must be timezone-aware")
        self._session.add(_entry_to_row(entry))


def _entry_to_row(entry: JournalEntry) -> JournalRow:
    return JournalRow(
        received_at=entry.received_at,
        direction="in",
        peer=entry.peer,
        sending_application=entry.sending_application,
        sending_facility=entry.sending_facility,
        control_id=entry.control_id,
        message_type=entry.message_type,
        trigger_event=entry.trigger_event,
        version=entry.version,
        ack_code=entry.ack_code,
        ack=entry.ack,
        error=entry.error,
        raw=entry.raw,
        patient_id=entry.patient_id,
        accession=entry.accession,
    )
