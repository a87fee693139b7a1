"""Security (issue 5): patient data and writes need the token; without one configured the
console is read-only; every write is journaled with who."""

from __future__ import annotations

import pytest

from broker.store import Store
from tests.orders import order
from tests.web.support import AUTH, TOKEN, Client, app_for, receive

ENTRY = {"patient_id": "P7", "start": "2026-11-26T09:00", "modality": "CT"}


@pytest.fixture
def store(local_store: Store) -> Store:
    """Security does not depend on the database: SQLite only."""
    return local_store


@pytest.mark.parametrize("path", ["/health/live", "/metrics", "/docs", "/openapi.json", "/login"])
def test_public_routes_need_no_token(anonymous: Client, path: str) -> None:
    assert anonymous.get(path).status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/worklist", "/api/journal", "/api/outbox", "/api/mpps", "/api/dashboard"]
)
def test_patient_data_needs_the_token(anonymous: Client, path: str) -> None:
    response = anonymous.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "[http] token" in response.json()["detail"]


def test_a_wrong_token_is_refused(store: Store) -> None:
    client = Client(app_for(store), headers={"Authorization": "Bearer wrong"})
    assert client.get("/api/worklist").status_code == 401


def test_console_pages_send_a_visitor_without_login_to_the_login_form(anonymous: Client) -> None:
    response = anonymous.get("/worklist?modality=CT")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/worklist%3Fmodality%3DCT"


def test_without_a_configured_token_reads_work_and_writes_are_refused(store: Store) -> None:
    client = Client(app_for(store, token=""))
    receive(store, order())
    assert client.get("/api/worklist").json()["total"] == 1
    assert client.get("/").status_code == 200
    refused = client.post("/api/worklist", json=ENTRY)
    assert refused.status_code == 403
    assert "read-only" in refused.json()["detail"]
    assert "MWL_BROKER_HTTP_TOKEN" in refused.json()["detail"]
    assert client.post("/api/outbox/1/retry").status_code == 403
    assert client.post("/api/journal/1/replay").status_code == 403
    assert client.get("/api/worklist").json()["total"] == 1  # nothing was written


def test_a_token_presented_to_a_read_only_broker_writes_nothing(store: Store) -> None:
    client = Client(app_for(store, token=""), headers=AUTH)
    assert client.post("/api/worklist", json=ENTRY).status_code == 403


def test_login_sets_an_http_only_same_site_cookie_that_opens_the_console(store: Store) -> None:
    client = Client(app_for(store))
    failed = client.post("/login", data={"token": "nope", "next": "/worklist"})
    assert failed.status_code == 401
    response = client.post("/login", data={"token": TOKEN, "next": "/worklist"})
    assert response.status_code == 303
    assert response.headers["location"] == "/worklist"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert client.get("/worklist").status_code == 200
    assert client.get("/api/worklist").status_code == 200


def test_login_never_sends_the_browser_to_another_site(store: Store) -> None:
    client = Client(app_for(store))
    response = client.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
    assert response.headers["location"] == "/"


def test_a_cookie_write_from_another_site_is_refused(store: Store) -> None:
    client = Client(app_for(store))
    client.post("/login", data={"token": TOKEN})
    foreign = client.post("/api/worklist", json=ENTRY, headers={"Sec-Fetch-Site": "cross-site"})
    assert foreign.status_code == 403
    other_origin = client.post("/api/worklist", json=ENTRY, headers={"Origin": "http://evil"})
    assert other_origin.status_code == 403
    own = client.post("/api/worklist", json=ENTRY, headers={"Origin": "http://testserver"})
    assert own.status_code == 201


def test_logout_forgets_the_token(store: Store) -> None:
    client = Client(app_for(store))
    client.post("/login", data={"token": TOKEN})
    client.post("/logout")
    assert client.get("/api/worklist").status_code == 401


def test_writes_are_journaled_with_the_token_name(api: Client) -> None:
    created = api.post("/api/worklist", json=ENTRY)
    assert created.status_code == 201
    ops = api.get("/api/journal", params={"direction": "ops"}).json()["items"]
    assert [(e["peer"], e["message_type"], e["ack_code"]) for e in ops] == [
        ("alice", "CONSOLE^CREATE", "OK")
    ]
    inbound = api.get("/api/journal").json()["items"]
    assert [e["peer"] for e in inbound] == ["console:alice"]


def test_a_token_without_a_name_is_the_operator(store: Store) -> None:
    client = Client(app_for(store, token="plain"), headers={"Authorization": "Bearer plain"})
    assert client.post("/api/worklist", json=ENTRY).status_code == 201
    ops = client.get("/api/journal", params={"direction": "ops"}).json()["items"]
    assert ops[0]["peer"] == "operator"
