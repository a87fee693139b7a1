"""Helpers for the web tests: an ASGI client, and rows put in place as the other sides would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.orm import Session

from broker.config import Config, DatabaseConfig, HttpConfig
from broker.store import Store, migrate
from broker.store.schema import MppsStepLink, OutboxRow, PerformedStepRow
from broker.web import WebContext, create_app
from mwl.inbound import AckIdentity, InboundProcessor, prepare
from mwl.intake import Intake
from mwl.policy import MappingPolicy, WorklistPolicy

TOKEN = "alice:s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 11, 26, 12, 0).astimezone()
"""The tests' "now": the day tests/orders.py schedules its orders on."""


class Client:
    """A synchronous client of an ASGI application (httpx's ASGI transport, no network)."""

    def __init__(self, app: FastAPI, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = headers or {}
        self.cookies = httpx.Cookies()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers=self.headers,
                cookies=self.cookies,
            ) as client:  # fmt: skip
                response = await client.request(method, url, **kwargs)
                self.cookies = httpx.Cookies(client.cookies)
                return response

        return asyncio.run(call())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)


def web_config(database: DatabaseConfig, *, token: str = TOKEN, **kwargs: Any) -> Config:
    return Config(database=database, http=HttpConfig(port=0, token=token), **kwargs)


def app_for(store: Store, *, token: str = TOKEN, worklist: WorklistPolicy | None = None) -> FastAPI:
    database = DatabaseConfig(url=str(store.engine.url.render_as_string(hide_password=False)))
    config = web_config(database, token=token, worklist=worklist or WorklistPolicy())
    return create_app(WebContext(config=config, store=store, clock=lambda: NOW))


def receive(store: Store, *messages: bytes, peer: str = "10.0.0.1:4000") -> list[bytes]:
    """Messages through the intake as the MLLP listener hands them over; their ACKs."""
    policy = MappingPolicy()
    processor = InboundProcessor(store.unit_of_work, Intake(policy), AckIdentity(), lambda: NOW)
    return [processor.process(prepare(raw, policy), raw, peer) for raw in messages]


def add_outbox(store: Store, *, state: str, order_id: int | None = 1, **values: Any) -> int:
    """An outbox row as the MPPS SCP and the sender leave it."""
    created = values.pop("created_at", NOW.astimezone(UTC) - timedelta(minutes=5))
    row = OutboxRow(
        destination=values.pop("destination", "ris"), kind="hl7",
        order_key=f"order:{order_id}" if order_id else "mpps:1.2.3", operation="CM",
        event=json.dumps({"status": "COMPLETED"}), control_id=values.pop("control_id", "OUT1"),
        state=state, attempts=values.pop("attempts", 3), next_attempt_at=created,
        last_error=values.pop("last_error", "AE: unknown order"), created_at=created, **values,
    )  # fmt: skip
    with Session(store.engine) as session:
        session.add(row)
        session.commit()
        return row.id


def add_mpps(
    store: Store, step_ids: Iterable[int], *, status: str = "COMPLETED", uid: str = "1.2.3.9"
) -> int:
    """An MPPS instance as the MPPS SCP stores it."""
    row = PerformedStepRow(
        sop_instance_uid=uid, status=status, calling_ae="CT1", performed_station_ae="CT1",
        modality="CT", pps_id="PPS1", start_datetime="20261126103500",
        end_datetime="20261126110000" if status != "IN PROGRESS" else "",
        unscheduled=not list(step_ids), attributes={"00400252": {"vr": "CS", "Value": [status]}},
    )  # fmt: skip
    with Session(store.engine) as session:
        session.add(row)
        session.flush()
        session.add_all(MppsStepLink(mpps_id=row.id, step_id=step) for step in step_ids)
        session.commit()
        return row.id


def sqlite_store(path: Path) -> Store:
    """A migrated SQLite store in ``path`` (for tests where the database does not matter)."""
    database = DatabaseConfig(url=f"sqlite:///{path / 'web.sqlite'}")
    migrate(database)
    return Store.open(database)
