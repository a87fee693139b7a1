"""The outbox table as a queue: messages written in the transaction of the change that caused
them (the outbox pattern, ARCHITECTURE.md), delivered later by the sender.

:class:`SqlOutbox` is the writing side, :class:`mpps.ports.Outbox`: one ``pending`` row per
:class:`mpps.ports.OutboxEntry`, due at once, its ``event`` as JSON text, inserted by a Core
statement. Rows of one ``(destination, order_key)`` are delivered in ``id`` order.
"""

from __future__ import annotations

import json
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from broker.store.errors import translated
from broker.store.schema import OutboxRow, utcnow
from mpps.ports import OutboxEntry

PENDING = "pending"


class SqlOutbox:
    """Queues messages in the ``outbox`` table within the session's transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @translated
    def add(self, entry: OutboxEntry) -> int:
        self._session.flush()
        row_id: int = (
            self._session.connection().execute(_INSERT, entry_to_columns(entry)).scalar_one()
        )
        return row_id


def entry_to_columns(entry: OutboxEntry) -> dict[str, Any]:
    """The columns of a new ``pending`` row, due now, for ``entry``."""
    now = utcnow()
    return {
        "destination": entry.destination,
        "kind": entry.kind,
        "order_key": entry.order_key,
        "operation": entry.operation,
        "control_id": entry.control_id,
        "event": json.dumps(entry.event, ensure_ascii=False, separators=(",", ":")),
        "payload": entry.payload,
        "state": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": "",
        "created_at": now,
    }


_INSERT = insert(cast(Table, OutboxRow.__table__)).returning(OutboxRow.__table__.c.id)
"""One row, written with the unit's other Core statements (no ORM flush per message)."""
