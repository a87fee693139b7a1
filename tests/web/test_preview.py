"""Mapping preview: the items a message would create (DICOM JSON), the ACK that would be sent,
which calling AE titles' default C-FIND queries return them — and nothing stored."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.store import Store
from broker.store.schema import Base
from mwl.policy import CallerRule, WorklistPolicy
from tests.orders import adt, order
from tests.web.support import AUTH, Client, app_for, receive

CT = order(orc="NW|P1^RIS|F1^RIS||SC||^^^202611261030" + "|" * 11 + "CT1~CT2")
CALLERS = WorklistPolicy(
    callers=(
        CallerRule(ae_title="CT1", own_station_only=True),
        CallerRule(ae_title="MR1", modality="MR"),
        CallerRule(ae_title="CTWIDE", hours_around_now=2),
    )
)


def rows(store: Store) -> dict[str, int]:
    with Session(store.engine) as session:
        return {
            table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def preview(client: Client, message: bytes) -> dict[str, object]:
    response = client.post("/api/preview", json={"message": message.decode()})
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def test_a_new_order_previews_its_item_ack_and_stations_and_stores_nothing(store: Store) -> None:
    client = Client(app_for(store, worklist=CALLERS), headers=AUTH)
    before = rows(store)
    result = preview(client, CT)
    assert rows(store) == before
    assert (result["message_type"], result["control_id"], result["ack_code"]) == (
        "ORM^O01", "MSG1", "AA",
    )  # fmt: skip
    assert "MSA|AA|MSG1" in str(result["ack"])
    assert result["effects"] == ["NW: create a new order, steps → SCHEDULED"]
    (item,) = result["items"]  # type: ignore[misc]
    assert (item["step_id"], item["sps_id"], item["station_aes"]) == (None, "SPS1", ["CT1", "CT2"])
    assert item["item"]["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    stations = {s["ae_title"]: s for s in item["stations"]}
    assert list(stations) == ["CT1", "CT2", "MR1", "CTWIDE"]
    assert stations["CT1"]["empty_query"]["returned"]  # own_station_only: its own AE
    assert stations["CT2"]["empty_query"]["returned"]  # no rule: a universal query
    assert stations["CT2"]["own_station_query"]["returned"]
    mr = stations["MR1"]
    assert not mr["empty_query"]["returned"]
    assert mr["empty_query"]["why_not"] == ["modality CT is not MR"]
    assert mr["own_station_query"]["why_not"] == [
        "Scheduled Station AE MR1 is not among CT1, CT2", "modality CT is not MR",
    ]  # fmt: skip
    wide = stations["CTWIDE"]["empty_query"]  # now ± 2 h around 12:00; the step is at 10:30
    assert wide["returned"]


def test_an_update_previews_the_merged_item_of_the_stored_order(store: Store, api: Client) -> None:
    receive(store, CT)
    step_id = api.get("/api/worklist").json()["items"][0]["step_id"]
    update = order(orc="XO|P1^RIS|F1^RIS||SC||^^^202611261500" + "|" * 11 + "CT3", control_id="U1")
    result = preview(api, update)
    (item,) = result["items"]  # type: ignore[misc]
    assert (item["step_id"], item["start"], item["station_aes"]) == (
        step_id, "2026-11-26T15:00:00", ["CT3"],
    )  # fmt: skip
    assert result["effects"] == ["XO: update order #1"]
    assert api.get("/api/worklist").json()["items"][0]["start"] == "2026-11-26T10:30:00"


def test_a_cancel_previews_canceled_steps_hidden_from_default_queries(
    store: Store, api: Client
) -> None:
    receive(store, CT)
    result = preview(api, order(orc="CA|P1^RIS|F1^RIS||CA", control_id="C1"))
    (item,) = result["items"]  # type: ignore[misc]
    assert item["status"] == "CANCELED"
    assert not item["stations"][0]["empty_query"]["returned"]
    assert "hidden" in item["stations"][0]["empty_query"]["why_not"][0]


def test_a_refused_message_previews_its_ack(api: Client) -> None:
    unknown = preview(api, order(orc="XO|P5^RIS|F5^RIS||SC||^^^202611261030", control_id="X5"))
    assert unknown["ack_code"] == "AE"
    assert unknown["items"] == []
    assert "204" in str(unknown["ack"])
    unsupported = preview(api, order(version="2.9"))
    assert unsupported["ack_code"] == "AR"
    assert unsupported["problems"][0]["location"] == "MSH-12"  # type: ignore[index]
    assert api.get("/api/journal").json()["total"] == 0


def test_a_control_id_accepted_before_is_reported(store: Store, api: Client) -> None:
    receive(store, CT)
    assert preview(api, CT)["already_accepted"] is True


def test_an_adt_previews_no_items(api: Client) -> None:
    result = preview(api, adt("A08", "PID|||12345^^^HOSP||Doe^Jane"))
    assert (result["ack_code"], result["items"]) == ("AA", [])
    assert result["effects"] == ["PatientUpdate: patient 12345^^^HOSP"]


def test_a_message_that_cannot_be_encoded_is_refused(api: Client) -> None:
    response = api.post("/api/preview", json={"message": "MSH|é", "encoding": "ascii"})
    assert response.status_code == 422
