"""Replay: an inbound journal message through the intake again, as if it had just arrived.

Two modes, chosen explicitly by the operator:

- **as received** (default): the bytes as journaled, MSH-10 unchanged. The intake's
  idempotency holds: a message that was accepted (AA) gets its original ACK back and changes
  nothing (``already_accepted``); a message that was refused (AE/AR — a mapping rule since
  fixed, an update that came before its order, the store down) is processed now, and an
  accepted replay is what the RIS's own resend would then find.
- **with a new control ID** (``new_control_id``): MSH-10 is replaced by a fresh ID, so even
  an accepted message is applied again — e.g. to restore an order that was changed by hand.

Either way the replay is journaled as a new inbound row whose ``peer`` is ``console:<name>
replay of #<id>``, plus an ``ops`` row (:mod:`broker.web.audit`). Only inbound rows replay.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from broker.store import Store
from broker.store.journal import SqlJournal
from broker.store.schema import JournalRow
from broker.web import audit
from broker.web.errors import Conflict, NotFound
from broker.web.journal_read import message_text, msa_code
from hl7.codec import read_header
from mwl.inbound import InboundProcessor, prepare
from mwl.policy import MappingPolicy

_MSH_CONTROL_ID = 9
"""Index of MSH-10 among the fields of the MSH line split at the field separator."""


class ReplayResult(BaseModel):
    journal_id: int
    control_id: str
    """The MSH-10 the message was processed under."""
    new_control_id: bool
    already_accepted: bool
    """True: the message was accepted before; the original ACK came back, nothing changed."""
    ack_code: str
    ack: str


def replay(
    store: Store,
    processor: InboundProcessor,
    policy: MappingPolicy,
    journal_id: int,
    *,
    new_control_id: bool,
    who: str,
    now: datetime,
) -> ReplayResult:
    with store.read_session() as session:
        row = session.get(JournalRow, journal_id)
        if row is None or row.direction != "in":
            raise NotFound(f"no inbound journal message {journal_id}")
        raw, sender = row.raw, (row.sending_application, row.sending_facility)
        accepted = SqlJournal(session).find_accepted(sender, row.control_id) is not None
    control_id = fresh_control_id() if new_control_id else row.control_id
    if new_control_id:
        raw = with_control_id(raw, control_id)
    prepared = prepare(raw, policy)
    ack = processor.process(prepared, raw, f"console:{who} replay of #{journal_id}")
    result = ReplayResult(
        journal_id=journal_id, control_id=control_id, new_control_id=new_control_id,
        already_accepted=accepted and not new_control_id, ack_code=msa_code(ack),
        ack=message_text(ack),
    )  # fmt: skip
    audit.record(store, _audit(result, who, row), now)
    return result


def fresh_control_id() -> str:
    return "RPLY" + uuid.uuid4().hex[:16].upper()


def with_control_id(raw: bytes, control_id: str) -> bytes:
    """``raw`` with MSH-10 replaced; :class:`Conflict` when it has no readable MSH."""
    header = read_header(raw)
    start = raw.find(b"MSH")
    if header is None or start < 0:
        raise Conflict("the message has no readable MSH segment: it cannot get a new control ID")
    end = _line_end(raw, start)
    separator = raw[start + 3 : start + 4]
    fields = raw[start:end].split(separator)
    fields += [b""] * (_MSH_CONTROL_ID + 1 - len(fields))
    fields[_MSH_CONTROL_ID] = control_id.encode("ascii")
    return raw[:start] + separator.join(fields) + raw[end:]


def _line_end(raw: bytes, start: int) -> int:
    ends = [index for index in (raw.find(b"\r", start), raw.find(b"\n", start)) if index >= 0]
    return min(ends) if ends else len(raw)


def _audit(result: ReplayResult, who: str, row: JournalRow) -> audit.AuditRecord:
    ok = result.ack_code == "AA"
    return audit.AuditRecord(
        who=who, action=audit.Action.REPLAY, target=f"journal:{result.journal_id}", ok=ok,
        control_id=result.control_id, error="" if ok else f"answered {result.ack_code}",
        patient_id=row.patient_id, accession=row.accession,
        detail=result.model_dump(exclude={"ack"}),
    )  # fmt: skip
