"""The journal API: search, the raw view, outbound messages, and replay (as received: the
intake's idempotency holds; with a new control ID: applied again)."""

from __future__ import annotations

from broker.store import Store
from hl7.ack import read_ack
from tests.orders import order
from tests.web.support import Client, add_outbox, receive

OBR9 = "OBR|1|P9^RIS|F9^RIS|CTHEAD^CT Head^L" + "|" * 14 + "ACC9|RP9|SPS9||||CT"
UPDATE = order(orc="XO|P9^RIS|F9^RIS||SC||^^^202611261130", control_id="XO9", obr=OBR9)
NEW = order(orc="NW|P9^RIS|F9^RIS||SC||^^^202611261030", control_id="NW9", obr=OBR9)


def test_the_journal_is_searchable(store: Store, api: Client) -> None:
    receive(store, order(control_id="A1"), order(control_id="B2", version="9.9"), UPDATE)
    assert [e["control_id"] for e in api.get("/api/journal").json()["items"]] == ["XO9", "B2", "A1"]

    def found(**params: str) -> list[str]:
        return [e["control_id"] for e in api.get("/api/journal", params=params).json()["items"]]

    assert found(control_id="A*") == ["A1"]
    assert found(ack_code="AR") == ["B2"]  # unsupported version
    assert found(ack_code="ae") == ["XO9"]  # an update of an unknown order
    assert found(message_type="ORM^O01", patient_id="12345", ack_code="AA") == ["A1"]
    assert found(accession="ACC1") == ["A1"]
    assert found(message_type="ADT") == []
    assert found(since="2999-01-01T00:00") == []
    assert found(until="2999-01-01T00:00:00+01:00") == ["XO9", "B2", "A1"]


def test_an_entry_shows_the_message_and_its_ack_and_the_raw_bytes(
    store: Store, api: Client
) -> None:
    utf8 = order(pid="PID|||77^^^HOSP||Grün^Anna||19800101|F")
    raw = utf8.replace("Grün".encode(), "Grün".encode("latin-1"))
    receive(store, raw)
    entry_id = api.get("/api/journal").json()["items"][0]["id"]
    detail = api.get(f"/api/journal/{entry_id}").json()
    assert "PID|||77^^^HOSP||Grün^Anna" in detail["message"]  # Latin-1 without MSH-18, decoded
    assert detail["ack"].split("\r")[1].startswith("MSA|AA|MSG1")
    assert api.get(f"/api/journal/{entry_id}/raw").content == raw
    assert api.get("/api/journal/999").status_code == 404


def test_outbound_messages_are_the_outbox_rows(store: Store, api: Client) -> None:
    receive(store, order())
    add_outbox(store, state="sent", control_id="S1", ack=b"MSH|^~\\&|RIS\rMSA|AA|S1")
    add_outbox(store, state="dead", control_id="D1", order_id=42)
    out = api.get("/api/journal", params={"direction": "out"}).json()["items"]
    assert [(e["control_id"], e["state"], e["ack_code"]) for e in out] == [
        ("D1", "dead", ""), ("S1", "sent", "AA"),
    ]  # fmt: skip
    by_patient = api.get("/api/journal", params={"direction": "out", "patient_id": "12345"})
    assert [e["control_id"] for e in by_patient.json()["items"]] == ["S1"]  # order 1's patient


def test_a_refused_message_replayed_once_its_order_exists_is_accepted(
    store: Store, api: Client
) -> None:
    receive(store, UPDATE, NEW)  # the update came before its order
    refused = api.get("/api/journal", params={"control_id": "XO9"}).json()["items"][0]
    assert refused["ack_code"] == "AE"
    replayed = api.post(f"/api/journal/{refused['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    result = replayed.json()
    assert (result["ack_code"], result["already_accepted"], result["control_id"]) == (
        "AA", False, "XO9",
    )  # fmt: skip
    step = api.get("/api/worklist").json()["items"][0]
    assert step["start"] == "2026-11-26T11:30:00"  # the update applied
    rows = api.get("/api/journal", params={"control_id": "XO9"}).json()["items"]
    assert [(e["ack_code"], e["peer"]) for e in rows] == [
        ("AA", f"console:alice replay of #{refused['id']}"), ("AE", "10.0.0.1:4000"),
    ]  # fmt: skip
    # the RIS resending XO9 now gets the replay's ACK
    (resent,) = receive(store, UPDATE)
    assert read_ack(resent).code == "AA"


def test_replaying_an_accepted_message_as_received_changes_nothing(
    store: Store, api: Client
) -> None:
    (ack,) = receive(store, NEW)
    entry_id = api.get("/api/journal").json()["items"][0]["id"]
    result = api.post(f"/api/journal/{entry_id}/replay", json={"new_control_id": False}).json()
    assert result["already_accepted"] is True
    assert result["ack"] == ack.decode()
    assert api.get("/api/journal").json()["total"] == 1
    ops = api.get("/api/journal", params={"direction": "ops"}).json()["items"]
    assert [(e["message_type"], e["control_id"]) for e in ops] == [("CONSOLE^REPLAY", "NW9")]


def test_replaying_with_a_new_control_id_applies_the_message_again(
    store: Store, api: Client
) -> None:
    receive(store, NEW)
    entry_id = api.get("/api/journal").json()["items"][0]["id"]
    step_id = api.get("/api/worklist").json()["items"][0]["step_id"]
    api.patch(f"/api/worklist/{step_id}", json={"modality": "MR"})
    result = api.post(f"/api/journal/{entry_id}/replay", json={"new_control_id": True}).json()
    assert result["ack_code"] == "AA"
    assert result["control_id"].startswith("RPLY") and len(result["control_id"]) == 20
    assert api.get(f"/api/worklist/{step_id}").json()["step"]["modality"] == "CT"  # restored
    replayed = api.get("/api/journal", params={"control_id": result["control_id"]}).json()
    assert (
        f"|ORM^O01|{result['control_id']}|P|"
        in api.get(f"/api/journal/{replayed['items'][0]['id']}").json()["message"]
    )


def test_only_inbound_messages_replay(api: Client) -> None:
    api.post(
        "/api/worklist", json={"patient_id": "P", "start": "2026-11-26T10:00", "modality": "CT"}
    )
    ops_id = api.get("/api/journal", params={"direction": "ops"}).json()["items"][0]["id"]
    assert api.post(f"/api/journal/{ops_id}/replay").status_code == 404
    assert api.post("/api/journal/999/replay").status_code == 404
