"""Who did what through the console: one ``ops`` row in the message journal per write.

Every write (manual create / update / cancel, replay, outbox retry and discard) adds a
``message_journal`` row with ``direction = 'ops'``: ``peer`` is who (the token's name),
``trigger_event`` the action, ``control_id`` what it acted on (the control ID of the HL7
message the console built, the replayed message's, or the outbox message's), ``ack_code``
``OK`` or ``ER``, ``error`` why it failed, and ``raw`` the whole record as JSON. Order changes
and replays also leave their HL7 message in the journal as an inbound row whose ``peer`` is
``console:<name>``, committed with the change itself.

The journal table already has every column this needs, so no table was added. The ``ops``
rows never take part in the idempotency check (that looks at ``ack_code = 'AA'`` only).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from broker.store import Store
from broker.store.errors import store_errors
from broker.store.schema import JournalRow

OPS = "ops"
CONSOLE_APPLICATION = "MWLCONSOLE"
"""MSH-3 of the messages the console builds, and the sender of ``ops`` rows."""


class Action(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    CANCEL = "CANCEL"
    REPLAY = "REPLAY"
    RETRY = "RETRY"
    DISCARD = "DISCARD"


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    who: str
    action: Action
    target: str
    """What was acted on, e.g. ``outbox:12``, ``journal:7``, ``step:3``."""
    ok: bool
    control_id: str = ""
    error: str = ""
    patient_id: str = ""
    accession: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_row(self, now: datetime) -> JournalRow:
        document = {
            "who": self.who,
            "action": self.action.value,
            "target": self.target,
            "ok": self.ok,
            "error": self.error,
            "detail": self.detail,
        }
        return JournalRow(
            received_at=now,
            direction=OPS,
            peer=self.who,
            sending_application=CONSOLE_APPLICATION,
            sending_facility="",
            control_id=self.control_id,
            message_type="CONSOLE",
            trigger_event=self.action.value,
            version="",
            ack_code="OK" if self.ok else "ER",
            ack=b"",
            error=self.error,
            raw=json.dumps(document, ensure_ascii=False, indent=1, default=str).encode(),
            patient_id=self.patient_id,
            accession=self.accession,
        )


def record(store: Store, audit: AuditRecord, now: datetime) -> None:
    """Commit one ``ops`` row in a transaction of its own."""
    with store_errors(), Session(store.engine) as session:
        session.add(audit.to_row(now))
        session.commit()


def add(session: Session, audit: AuditRecord, now: datetime) -> None:
    """Add the ``ops`` row to a caller's transaction (it commits with the change)."""
    session.add(audit.to_row(now))
