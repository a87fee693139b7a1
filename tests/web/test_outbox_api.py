"""The outbox API: pending and dead-lettered messages, retry and discard (each journaled with
who), and the health per destination."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from broker.store import Store
from broker.store.schema import OutboxRow
from tests.web.support import NOW, Client, add_outbox


def state_of(store: Store, row_id: int) -> tuple[str, int]:
    with Session(store.engine) as session:
        row = session.get_one(OutboxRow, row_id)
        return row.state, row.attempts


def test_the_outbox_lists_pending_and_dead_messages_by_default(store: Store, api: Client) -> None:
    pending = add_outbox(store, state="pending", control_id="P1")
    dead = add_outbox(store, state="dead", control_id="D1", destination="pacs")
    add_outbox(store, state="sent", control_id="S1")
    listed = api.get("/api/outbox").json()
    assert [(m["id"], m["state"]) for m in listed["items"]] == [
        (pending, "pending"),
        (dead, "dead"),
    ]
    assert listed["items"][0]["order_id"] == 1
    everything = api.get("/api/outbox", params={"state": ["sent", "dead"]}).json()
    assert [m["control_id"] for m in everything["items"]] == ["D1", "S1"]
    assert api.get("/api/outbox", params={"destination": "pacs"}).json()["total"] == 1
    assert api.get("/api/outbox", params={"state": "lost"}).status_code == 422


def test_health_per_destination(store: Store, api: Client) -> None:
    add_outbox(store, state="pending", created_at=NOW - timedelta(hours=1))
    add_outbox(store, state="dead")
    (ris,) = api.get("/api/outbox/health").json()
    assert (ris["destination"], ris["pending"], ris["dead"]) == ("ris", 1, 1)
    assert ris["oldest_pending_seconds"] == 3600.0


def test_retry_brings_a_dead_letter_back_and_journals_who(store: Store, api: Client) -> None:
    dead = add_outbox(store, state="dead", control_id="D1")
    retried = api.post(f"/api/outbox/{dead}/retry")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["state"], retried.json()["attempts"]) == ("pending", 0)
    assert state_of(store, dead) == ("pending", 0)
    ops = api.get("/api/journal", params={"direction": "ops"}).json()["items"]
    assert [(e["peer"], e["message_type"], e["control_id"], e["ack_code"]) for e in ops] == [
        ("alice", "CONSOLE^RETRY", "D1", "OK")
    ]
    detail = api.get(f"/api/journal/{ops[0]['id']}").json()
    assert '"state_before": "dead"' in detail["message"]


def test_discard_gives_a_message_up(store: Store, api: Client) -> None:
    pending = add_outbox(store, state="pending")
    assert api.post(f"/api/outbox/{pending}/discard").json()["state"] == "discarded"
    assert state_of(store, pending)[0] == "discarded"
    again = api.post(f"/api/outbox/{pending}/discard")
    assert again.status_code == 409
    assert "discarded" in again.json()["detail"]
    assert api.post(f"/api/outbox/{pending}/retry").json()["state"] == "pending"


def test_a_sent_message_is_neither_retried_nor_discarded(store: Store, api: Client) -> None:
    sent = add_outbox(store, state="sent")
    assert api.post(f"/api/outbox/{sent}/retry").status_code == 409
    assert api.post(f"/api/outbox/{sent}/discard").status_code == 409
    assert state_of(store, sent)[0] == "sent"
    ops = api.get("/api/journal", params={"direction": "ops"}).json()["items"]
    assert [e["ack_code"] for e in ops] == ["ER", "ER"]  # refused attempts are journaled too
    assert api.post("/api/outbox/999/retry").status_code == 404


def test_one_outbox_message_shows_what_was_sent_and_the_ack(store: Store, api: Client) -> None:
    row = add_outbox(
        store, state="sent", payload=b"MSH|^~\\&|MWLBROKER||RIS||x||ORM^O01|C1|P|2.3.1\rPID|||1",
        ack=b"MSH|^~\\&|RIS\rMSA|AA|C1",
    )  # fmt: skip
    found = api.get(f"/api/outbox/{row}").json()
    assert found["entry"]["message_type"] == "ORM^O01"
    assert found["message"].startswith("MSH|")
    assert found["ack"].endswith("MSA|AA|C1")
    assert found["order_id"] == 1
