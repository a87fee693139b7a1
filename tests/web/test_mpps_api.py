"""The MPPS API: list and detail with status, timings, referenced steps, the unscheduled
flag and the stored dataset as DICOM JSON."""

from __future__ import annotations

from broker.store import Store
from tests.orders import order
from tests.web.support import Client, add_mpps, receive


def test_mpps_list_and_detail(store: Store, api: Client) -> None:
    receive(store, order())
    step_id = api.get("/api/worklist").json()["items"][0]["step_id"]
    done = add_mpps(store, [step_id], status="COMPLETED", uid="1.2.3.1")
    unscheduled = add_mpps(store, [], status="IN PROGRESS", uid="1.2.3.2")
    listed = api.get("/api/mpps").json()
    assert {m["id"]: (m["status"], m["unscheduled"], m["step_ids"]) for m in listed["items"]} == {
        done: ("COMPLETED", False, [step_id]),
        unscheduled: ("IN PROGRESS", True, []),
    }
    assert [
        m["id"] for m in api.get("/api/mpps", params={"unscheduled": True}).json()["items"]
    ] == [unscheduled]
    assert api.get("/api/mpps", params={"status": "completed"}).json()["total"] == 1
    assert api.get("/api/mpps", params={"order_id": 1}).json()["total"] == 1
    detail = api.get(f"/api/mpps/{done}").json()
    assert (detail["mpps"]["start"], detail["mpps"]["end"]) == (
        "2026-11-26T10:35:00", "2026-11-26T11:00:00",
    )  # fmt: skip
    assert [s["sps_id"] for s in detail["steps"]] == ["SPS1"]
    assert detail["dataset"] == {"00400252": {"vr": "CS", "Value": ["COMPLETED"]}}
    assert api.get("/api/mpps/999").status_code == 404
