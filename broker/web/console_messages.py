"""Console pages: the journal with replay, the outbox with retry and discard, MPPS, and the
mapping preview tool."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from broker.store.errors import store_errors
from broker.web import outbox_read
from broker.web.api_messages import PreviewRequest, encode_message
from broker.web.console_pages import done, page
from broker.web.deps import DEFAULT_LIMIT, Limit, Offset, Reader, Svc
from broker.web.errors import Invalid, NotFound
from broker.web.journal_read import (
    DIRECTIONS,
    JournalFilter,
    journal_detail,
    list_entries,
    outbound_detail,
)
from broker.web.mpps_read import MppsFilter, list_mpps, mpps_detail
from broker.web.outbox_read import OutboxFilter, list_outbox
from broker.web.replay import replay

router = APIRouter(include_in_schema=False)


@router.get("/journal")
def journal_page(
    *,
    request: Request,
    services: Svc,
    _: Reader,
    direction: str = "in",
    control_id: str | None = None,
    message_type: str | None = None,
    ack_code: str | None = None,
    patient_id: str | None = None,
    accession: str | None = None,
    since: str | None = None,
    until: str | None = None,
    offset: Offset = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> Response:
    filters = {
        "direction": direction if direction in DIRECTIONS else "in", "control_id": control_id,
        "message_type": message_type, "ack_code": ack_code, "patient_id": patient_id,
        "accession": accession, "since": since, "until": until,
    }  # fmt: skip
    wanted = JournalFilter(
        direction=filters["direction"] or "in", control_id=control_id or None,
        message_type=message_type or None, ack_code=ack_code or None,
        patient_id=patient_id or None, accession=accession or None,
        since=_time(since, "since"), until=_time(until, "until"),
    )  # fmt: skip
    with store_errors(), services.read() as session:
        found = list_entries(session, wanted, offset=offset, limit=limit)
    return page(request, "journal.html", page_of=found, filters=filters)


@router.get("/journal/{entry_id}")
def journal_entry_page(request: Request, entry_id: int, services: Svc, _: Reader) -> Response:
    with store_errors(), services.read() as session:
        found = journal_detail(session, entry_id)
    if found is None:
        raise NotFound(f"no journal entry {entry_id}")
    return page(request, "journal_entry.html", detail=found, outbound=False)


@router.post("/journal/{entry_id}/replay")
async def replay_entry(request: Request, entry_id: int, services: Svc) -> Response:
    who = services.gate.check_write(request)
    form = await request.form()
    fresh = form.get("mode") == "new_control_id"
    result = await run_in_threadpool(
        replay, services.store, services.processor, services.config.mapping, entry_id,
        new_control_id=fresh, who=who.name, now=services.now(),
    )  # fmt: skip
    note = " (accepted before: original ACK, nothing changed)" if result.already_accepted else ""
    notice = f"Replayed under {result.control_id}: ACK {result.ack_code}{note}"
    return done(f"/journal/{entry_id}", notice)


@router.get("/outbox")
def outbox_page(
    *,
    request: Request,
    services: Svc,
    _: Reader,
    state: Annotated[list[str] | None, Query()] = None,
    destination: str | None = None,
    control_id: str | None = None,
    order_id: int | None = None,
    offset: Offset = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> Response:
    states = [s for s in state or () if s in (*outbox_read.STATES, "all")]
    chosen = outbox_read.STATES if "all" in states else tuple(states) or outbox_read.OPEN_STATES
    wanted = OutboxFilter(
        states=chosen, destination=destination or None, control_id=control_id or None,
        order_id=order_id,
    )  # fmt: skip
    filters = {"state": list(chosen), "destination": destination, "control_id": control_id,
               "order_id": order_id}  # fmt: skip
    with store_errors(), services.read() as session:
        found = list_outbox(session, wanted, offset=offset, limit=limit)
        health = outbox_read.health(session, services.now())
    return page(
        request, "outbox.html", page_of=found, filters=filters, health=health,
        states=outbox_read.STATES,
    )  # fmt: skip


@router.get("/outbox/{row_id}")
def outbox_entry_page(request: Request, row_id: int, services: Svc, _: Reader) -> Response:
    with store_errors(), services.read() as session:
        found = outbound_detail(session, row_id)
    if found is None:
        raise NotFound(f"no outbox message {row_id}")
    return page(request, "journal_entry.html", detail=found, outbound=True)


@router.post("/outbox/{row_id}/{action}")
async def outbox_action(request: Request, row_id: int, action: str, services: Svc) -> Response:
    who = services.gate.check_write(request)
    operations = {"retry": outbox_read.retry, "discard": outbox_read.discard}
    if action not in operations:
        raise NotFound(f"no outbox action {action!r}")
    form = await request.form()
    result = await run_in_threadpool(
        operations[action], services.store, row_id, who=who.name, now=services.now()
    )
    back = str(form.get("back") or "/outbox")
    target = back if back.startswith("/") and not back.startswith("//") else "/outbox"
    verb = "queued for retry" if action == "retry" else "discarded"
    return done(target, f"Message {row_id} {verb} (now {result.state})")


@router.get("/mpps")
def mpps_page(
    *,
    request: Request,
    services: Svc,
    _: Reader,
    status: str | None = None,
    station_ae: str | None = None,
    order_id: int | None = None,
    offset: Offset = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> Response:
    wanted = MppsFilter(status=status or None, station_ae=station_ae or None, order_id=order_id)
    filters = {"status": status, "station_ae": station_ae, "order_id": order_id}
    with store_errors(), services.read() as session:
        found = list_mpps(session, wanted, offset=offset, limit=limit)
    return page(request, "mpps.html", page_of=found, filters=filters)


@router.get("/mpps/{mpps_id}")
def mpps_entry_page(request: Request, mpps_id: int, services: Svc, _: Reader) -> Response:
    with store_errors(), services.read() as session:
        found = mpps_detail(session, mpps_id)
    if found is None:
        raise NotFound(f"no MPPS {mpps_id}")
    return page(request, "mpps_entry.html", detail=found)


@router.get("/preview")
def preview_page(request: Request, _: Reader) -> Response:
    return page(request, "preview.html", message="", encoding="utf-8", result=None)


@router.post("/preview")
async def preview(request: Request, services: Svc) -> Response:
    services.gate.check_read(request)
    form = await request.form()
    text, encoding = str(form.get("message", "")), str(form.get("encoding") or "utf-8")
    try:
        raw = encode_message(PreviewRequest(message=text, encoding=encoding))
    except Invalid as refused:
        return page(
            request, "preview.html", status_code=422, message=text, encoding=encoding,
            result=None, refused=refused.message,
        )  # fmt: skip
    result = await run_in_threadpool(services.previewer.preview, raw, services.now())
    return page(request, "preview.html", message=text, encoding=encoding, result=result)


def _time(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{field}: expected a time like 2026-11-26T08:00, found {value!r}") from None
    return parsed if parsed.tzinfo else parsed.astimezone()
