"""The console's pages render what the API returns, and its forms write through the same
code (POST → redirect with a notice; a refused entry is shown again with its problems)."""

from __future__ import annotations

import pytest

from broker.store import Store
from tests.orders import order
from tests.web.support import TOKEN, Client, add_mpps, add_outbox, app_for, receive

FORM = {
    "patient_id": "FORM-1",
    "patient_name": "Form^Fiona",
    "start": "2026-11-26T16:45",
    "modality": "MR",
    "station_aes": "MR1, MR2",
    "procedure_description": "MR knee",
}


@pytest.fixture
def store(local_store: Store) -> Store:
    """The pages read through the API's queries (tested on both databases): SQLite here."""
    return local_store


@pytest.fixture
def console(store: Store) -> Client:
    client = Client(app_for(store))
    assert client.post("/login", data={"token": TOKEN}).status_code == 303
    return client


def test_every_page_renders(store: Store, console: Client) -> None:
    receive(store, order())
    add_mpps(store, [1])
    dead = add_outbox(store, state="dead", last_error="AE: no such order")
    pages = {
        "/": ["Today's steps", "CT", "Dead letters", "no such order"],
        "/worklist?modality=CT": ["Doe^John", "SPS1", "New entry by hand"],
        "/worklist/1": ["Step SPS1", "ACC1", "Save changes", "00100010"],
        "/orders/1/timeline": ["ORM^O01 received, answered AA", "MPPS COMPLETED", "queued"],
        "/journal": ["MSG1", "ORM^O01"],
        "/journal/1": ["Replay", "MSA|AA|MSG1"],
        "/journal?direction=out": ["OUT1", "dead"],
        f"/outbox/{dead}": ["Retry", "Discard"],
        "/outbox": ["OUT1", "Retry"],
        "/mpps": ["1.2.3.9", "COMPLETED"],
        "/mpps/1": ["00400252", "SPS1"],
        "/preview": ["Mapping preview"],
    }
    for path, texts in pages.items():
        response = console.get(path)
        assert response.status_code == 200, path
        for text in texts:
            assert text in response.text, (path, text)


def test_the_entry_form_creates_an_entry(console: Client) -> None:
    created = console.post("/worklist/new", data=FORM)
    assert created.status_code == 303
    assert created.headers["location"].startswith("/worklist/1?done=Created")
    page = console.get(created.headers["location"])
    assert "Created (ACK AA" in page.text
    assert "MR knee" in page.text
    assert "MR1, MR2" in page.text


def test_a_refused_form_is_shown_again_with_its_problems(console: Client) -> None:
    refused = console.post("/worklist/new", data={**FORM, "modality": ""})
    assert refused.status_code == 422
    assert "the entry was refused (AE)" in refused.text
    assert "Modality is missing" in refused.text
    assert 'value="Form^Fiona"' in refused.text  # what was typed stays
    bad_date = console.post("/worklist/new", data={**FORM, "start": "tomorrow"})
    assert bad_date.status_code == 422
    assert "not a valid date/time" in bad_date.text


def test_the_step_form_updates_and_cancels(console: Client) -> None:
    console.post("/worklist/new", data=FORM)
    edited = {**FORM, "modality": "CT", "station_aes": "CT7"}
    updated = console.post("/worklist/1/update", data=edited)
    assert updated.status_code == 303
    page = console.get("/worklist/1")
    assert "CT on CT7" in page.text
    canceled = console.post("/worklist/1/cancel")
    assert canceled.status_code == 303
    assert "CANCELED" in console.get("/worklist/1").text


def test_outbox_buttons_retry_and_discard(store: Store, console: Client) -> None:
    dead = add_outbox(store, state="dead")
    retried = console.post(f"/outbox/{dead}/retry", data={"back": "/outbox?state=all"})
    assert retried.status_code == 303
    assert retried.headers["location"].startswith("/outbox?state=all&done=Message")
    assert "queued for retry (now pending)" in console.get(retried.headers["location"]).text
    discarded = console.post(f"/outbox/{dead}/discard", data={"back": "//evil.example"})
    assert discarded.headers["location"].startswith("/outbox?done=")


def test_the_replay_button(store: Store, console: Client) -> None:
    receive(store, order())
    replayed = console.post("/journal/1/replay", data={"mode": "as_received"})
    assert "accepted before" in console.get(replayed.headers["location"]).text
    fresh = console.post("/journal/1/replay", data={"mode": "new_control_id"})
    assert "Replayed under RPLY" in console.get(fresh.headers["location"]).text


def test_the_preview_tool(console: Client) -> None:
    shown = console.post("/preview", data={"message": order().decode().replace("\r", "\n")})
    assert shown.status_code == 200
    assert "ACK" in shown.text and "returned" in shown.text and "SPS1" in shown.text


def test_a_read_only_console_shows_everything_and_offers_no_writes(store: Store) -> None:
    receive(store, order())
    add_outbox(store, state="dead")
    client = Client(app_for(store, token=""))
    for path in ("/", "/worklist", "/worklist/1", "/outbox", "/journal/1"):
        page = client.get(path)
        assert page.status_code == 200
        assert "read-only" in page.text
        assert '<button type="submit">Retry' not in page.text
        assert "Save changes" not in page.text
    refused = client.post("/outbox/1/retry")
    assert refused.status_code == 403
    assert "read-only" in refused.text
    assert "nothing to log in to" in client.get("/login").text


def test_missing_things_are_404_pages(console: Client) -> None:
    for path in ("/worklist/9", "/orders/9/timeline", "/journal/9", "/outbox/9", "/mpps/9"):
        response = console.get(path)
        assert response.status_code == 404, path
        assert "<h1>404</h1>" in response.text
