"""The worklist API: listing with filters and pages, one step, and manual entries through the
HL7 intake (create, update, cancel), validated and journaled like RIS orders."""

from __future__ import annotations

from typing import Any

from broker.store import Store
from tests.e2e.test_worklist import SCHEDULE
from tests.web.support import NOW, Client, add_mpps, receive

TODAY = NOW.date()


def schedule(store: Store) -> None:
    """Five orders (tests/e2e): today and tomorrow, CT and MR, one or two station AEs."""
    receive(store, *(scheduled.message(TODAY) for scheduled in SCHEDULE))


def listed(api: Client, **params: Any) -> list[str]:
    response = api.get("/api/worklist", params=params)
    assert response.status_code == 200, response.text
    return [item["patient_id"] for item in response.json()["items"]]


def test_the_worklist_filters_by_every_key(store: Store, api: Client) -> None:
    schedule(store)
    today = TODAY.isoformat()
    assert listed(api) == ["E2E-PAT1", "E2E-PAT2", "E2E-PAT4", "E2E-PAT5", "E2E-PAT3"]
    assert listed(api, date_from=today, date_to=today) == [
        "E2E-PAT1", "E2E-PAT2", "E2E-PAT4", "E2E-PAT5",
    ]  # fmt: skip
    assert listed(api, station_ae="E2E_MR2") == ["E2E-PAT2"]
    assert listed(api, station_ae="E2E_MR*") == ["E2E-PAT2"]
    assert listed(api, modality="mr") == ["E2E-PAT2"]
    assert listed(api, patient_id="E2E-PAT3") == ["E2E-PAT3"]
    assert listed(api, patient_name="roe") == ["E2E-PAT2"]  # any case, part of the name
    assert listed(api, accession="E2EACC5") == ["E2E-PAT5"]
    assert listed(api, status="SCHEDULED", modality="CT", date_to=today) == [
        "E2E-PAT1", "E2E-PAT4", "E2E-PAT5",
    ]  # fmt: skip
    assert listed(api, status="COMPLETED") == []


def test_the_worklist_pages(store: Store, api: Client) -> None:
    schedule(store)
    first = api.get("/api/worklist", params={"limit": 2}).json()
    second = api.get("/api/worklist", params={"limit": 2, "offset": 2}).json()
    assert (first["total"], first["offset"], first["limit"]) == (5, 0, 2)
    assert [i["patient_id"] for i in first["items"] + second["items"]] == [
        "E2E-PAT1", "E2E-PAT2", "E2E-PAT4", "E2E-PAT5",
    ]  # fmt: skip
    assert api.get("/api/worklist", params={"limit": 501}).status_code == 422


def test_a_bad_date_filter_names_the_parameter(api: Client) -> None:
    response = api.get("/api/worklist", params={"date_from": "26/11/2026"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("date_from:")


def test_one_step_has_its_order_item_and_history(store: Store, api: Client) -> None:
    schedule(store)
    step_id = api.get("/api/worklist", params={"patient_id": "E2E-PAT2"}).json()["items"][0]
    add_mpps(store, [step_id["step_id"]])
    found = api.get(f"/api/worklist/{step_id['step_id']}").json()
    assert found["step"]["station_aes"] == ["E2E_MR1", "E2E_MR2"]
    assert found["order"]["accession"] == "E2EACC2"
    assert found["item"]["00100020"] == {"vr": "LO", "Value": ["E2E-PAT2"]}
    sps = found["item"]["00400100"]["Value"][0]
    assert sps["00400020"]["Value"] == ["SCHEDULED"]
    kinds = [event["kind"] for event in found["history"]]
    assert kinds[:2] == ["message", "scheduled"]
    assert "mpps" in kinds
    assert api.get("/api/worklist/999").status_code == 404


ENTRY = {
    "patient_id": "MAN-1",
    "issuer": "HOSP",
    "patient_name": "Müller^Hans",
    "birth_date": "1970-01-02",
    "sex": "M",
    "start": "2026-11-26T14:30",
    "modality": "CT",
    "station_aes": ["CT1", "CT2"],
    "procedure_code": "CTHEAD",
    "procedure_description": "CT head",
    "performing_physician": "Gómez^Ana",
    "accession": "MACC1",
}


def test_a_manual_entry_is_an_order_through_the_intake(api: Client) -> None:
    created = api.post("/api/worklist", json=ENTRY)
    assert created.status_code == 201, created.text
    result = created.json()
    assert result["ack_code"] == "AA"
    assert result["control_id"].startswith("MWLC")
    (step,) = api.get("/api/worklist", params={"patient_id": "MAN-1"}).json()["items"]
    assert step["step_id"] == result["step_ids"][0]
    assert (step["patient_name"], step["birth_date"], step["sex"]) == (
        "Müller^Hans",
        "19700102",
        "M",
    )
    assert step["start"] == "2026-11-26T14:30:00"
    assert step["station_aes"] == ["CT1", "CT2"]
    assert step["accession"] == "MACC1"
    assert step["requested_procedure"] == "CT head"
    detail = api.get(f"/api/worklist/{step['step_id']}").json()
    assert detail["order"]["placer"].endswith("^MWLCONSOLE")
    assert detail["order"]["hl7_charset"] == "UNICODE UTF-8"
    sps = detail["item"]["00400100"]["Value"][0]
    assert sps["00400006"]["Value"] == [{"Alphabetic": "Gómez^Ana"}]
    journal = api.get("/api/journal", params={"control_id": result["control_id"]}).json()
    assert [(e["message_type"], e["ack_code"]) for e in journal["items"]] == [("ORM^O01", "AA")]


def test_identifiers_left_empty_are_generated_by_the_mapping_policy(api: Client) -> None:
    entry = {"patient_id": "MAN-2", "start": "2026-11-26T15:00", "modality": "MR"}
    assert api.post("/api/worklist", json=entry).status_code == 201
    (step,) = api.get("/api/worklist", params={"patient_id": "MAN-2"}).json()["items"]
    assert step["sps_id"] and step["requested_procedure_id"]
    assert step["study_uid"].startswith("2.25.")
    assert step["station_aes"] == ["ANY"]  # the site default, as for a RIS order


def test_a_refused_entry_names_the_form_fields(api: Client) -> None:
    refused = api.post(
        "/api/worklist", json={**ENTRY, "modality": "", "station_aes": ["A_VERY_LONG_STATION_AE"]}
    )
    assert refused.status_code == 422
    body = refused.json()
    assert body["detail"] == "the entry was refused (AE)"
    assert {problem["location"] for problem in body["problems"]} <= {"modality", "station_aes"}
    assert body["problems"][0]["code"] in {"101", "102"}
    assert api.get("/api/worklist").json()["total"] == 0
    refusals = api.get("/api/journal", params={"ack_code": "AE"}).json()["items"]
    assert len(refusals) == 1  # journaled as the intake journals every refusal
    ops = api.get("/api/journal", params={"direction": "ops"}).json()["items"]
    assert [(e["ack_code"], e["error"] != "") for e in ops] == [("ER", True)]


def test_impossible_dates_are_refused_before_the_intake(api: Client) -> None:
    refused = api.post("/api/worklist", json={**ENTRY, "start": "2026-02-30T10:00"})
    assert refused.status_code == 422
    assert refused.json()["problems"][0]["location"] == "start"
    missing = api.post("/api/worklist", json={"patient_id": "X"})
    assert missing.status_code == 422  # start is required


def test_an_update_changes_only_the_given_fields(api: Client) -> None:
    step_id = api.post("/api/worklist", json=ENTRY).json()["step_ids"][0]
    changed = api.patch(
        f"/api/worklist/{step_id}", json={"modality": "MR", "start": "2026-11-27T08:00"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["step_ids"] == [step_id]
    step = api.get(f"/api/worklist/{step_id}").json()["step"]
    assert (step["modality"], step["start"]) == ("MR", "2026-11-27T08:00:00")
    assert step["station_aes"] == ["CT1", "CT2"]
    assert step["patient_name"] == "Müller^Hans"
    assert step["accession"] == "MACC1"
    assert step["requested_procedure"] == "CT head"
    assert step["status"] == "SCHEDULED"


def test_an_update_of_a_ris_order_keeps_its_character_set(store: Store, api: Client) -> None:
    schedule(store)
    step = api.get("/api/worklist", params={"patient_id": "E2E-PAT1"}).json()["items"][0]
    before = api.get(f"/api/worklist/{step['step_id']}").json()["order"]
    assert api.patch(f"/api/worklist/{step['step_id']}", json={"station_aes": ["CT9"]}).is_success
    after = api.get(f"/api/worklist/{step['step_id']}").json()
    assert after["step"]["station_aes"] == ["CT9"]
    assert after["order"]["hl7_charset"] == before["hl7_charset"]
    assert after["order"]["sending_application"] == "RIS"


def test_cancel_cancels_the_order_like_an_hl7_ca(api: Client) -> None:
    step_id = api.post("/api/worklist", json=ENTRY).json()["step_ids"][0]
    canceled = api.post(f"/api/worklist/{step_id}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert api.get(f"/api/worklist/{step_id}").json()["step"]["status"] == "CANCELED"
    ops = api.get("/api/journal", params={"direction": "ops"}).json()["items"]
    assert [e["message_type"] for e in ops] == ["CONSOLE^CANCEL", "CONSOLE^CREATE"]
    assert api.post("/api/worklist/999/cancel").status_code == 404


def test_an_order_timeline_tells_its_story(store: Store, api: Client) -> None:
    schedule(store)
    step = api.get("/api/worklist", params={"patient_id": "E2E-PAT1"}).json()["items"][0]
    add_mpps(store, [step["step_id"]], status="COMPLETED")
    timeline = api.get(f"/api/orders/{step['order_id']}/timeline").json()
    titles = [event["title"] for event in timeline["events"]]
    assert titles[0] == "ORM^O01 received, answered AA"
    assert any(title.startswith("step E2ESPS1 scheduled for") for title in titles)
    assert "MPPS started by CT1" in titles
    assert "MPPS COMPLETED" in titles
    assert timeline["cfind_log"] is False  # no DICOM listener in this application
    assert api.get("/api/orders/999/timeline").status_code == 404


def test_the_timeline_of_an_order_without_accession_finds_its_messages(api: Client) -> None:
    entry = {"patient_id": "NOACC", "start": "2026-11-26T15:00", "modality": "MR"}
    order_id = api.post("/api/worklist", json=entry).json()["order_id"]
    titles = [e["title"] for e in api.get(f"/api/orders/{order_id}/timeline").json()["events"]]
    assert titles[:2] == ["ORM^O01 received, answered AA", "alice: create (OK)"]
