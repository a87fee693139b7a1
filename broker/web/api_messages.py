"""JSON API: MPPS, the message journal (with replay), the outbox (with retry and discard) and
the mapping preview."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from broker.store.errors import store_errors
from broker.store.schema import JournalRow
from broker.web import outbox_read
from broker.web.deps import DEFAULT_LIMIT, Limit, Offset, Reader, Svc, Writer
from broker.web.errors import Invalid, NotFound
from broker.web.journal_read import (
    JournalDetail,
    JournalFilter,
    JournalSummary,
    journal_detail,
    list_entries,
    outbound_detail,
)
from broker.web.mpps_read import MppsDetail, MppsFilter, MppsSummary, list_mpps, mpps_detail
from broker.web.outbox_read import DestinationHealth, OutboxFilter, OutboxSummary, list_outbox
from broker.web.pages import Page, dicom_date
from broker.web.preview import PreviewResult
from broker.web.replay import ReplayResult, replay

router = APIRouter(prefix="/api")
OutboxState = Literal["pending", "dead", "sent", "discarded"]
Direction = Literal["in", "out", "ops"]


@router.get("/mpps", response_model=Page[MppsSummary], tags=["mpps"], summary="List MPPS")
def get_mpps_list(
    *,
    services: Svc,
    _: Reader,
    status: Annotated[str | None, Query(description="IN PROGRESS, COMPLETED, DISCONTINUED")] = None,
    station_ae: Annotated[str | None, Query(description="Performed station or calling AE")] = None,
    modality: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    unscheduled: bool | None = None,
    order_id: int | None = None,
    offset: Offset = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[MppsSummary]:
    wanted = MppsFilter(
        status=status or None, station_ae=station_ae or None, modality=modality or None,
        date_from=dicom_date(date_from, "date_from"), date_to=dicom_date(date_to, "date_to"),
        unscheduled=unscheduled, order_id=order_id,
    )  # fmt: skip
    with store_errors(), services.read() as session:
        return list_mpps(session, wanted, offset=offset, limit=limit)


@router.get("/mpps/{mpps_id}", response_model=MppsDetail, tags=["mpps"], summary="One MPPS")
def get_mpps(mpps_id: int, services: Svc, _: Reader) -> MppsDetail:
    """Status, timings, referenced steps, the unscheduled flag and the dataset (DICOM JSON)."""
    with store_errors(), services.read() as session:
        found = mpps_detail(session, mpps_id)
    if found is None:
        raise NotFound(f"no MPPS {mpps_id}")
    return found


@router.get(
    "/journal", response_model=Page[JournalSummary], tags=["journal"], summary="Search the journal"
)
def get_journal(
    *,
    services: Svc,
    _: Reader,
    direction: Annotated[Direction, Query(description="ops: the console's writes")] = "in",
    control_id: Annotated[str | None, Query(description="MSH-10; * and ?")] = None,
    message_type: Annotated[str | None, Query(description="ORM or ORM^O01")] = None,
    ack_code: str | None = None,
    patient_id: str | None = None,
    accession: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: Offset = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[JournalSummary]:
    """Newest first. Outbound messages are the outbox's rows (ids are outbox ids)."""
    wanted = JournalFilter(
        direction=direction, control_id=control_id or None, message_type=message_type or None,
        ack_code=ack_code or None, patient_id=patient_id or None, accession=accession or None,
        since=aware(since), until=aware(until),
    )  # fmt: skip
    with store_errors(), services.read() as session:
        return list_entries(session, wanted, offset=offset, limit=limit)


@router.get(
    "/journal/{entry_id}", response_model=JournalDetail, tags=["journal"], summary="One entry"
)
def get_journal_entry(entry_id: int, services: Svc, _: Reader) -> JournalDetail:
    """An inbound or ops row with the message and the ACK, decoded."""
    with store_errors(), services.read() as session:
        found = journal_detail(session, entry_id)
    if found is None:
        raise NotFound(f"no journal entry {entry_id}")
    return found


@router.get(
    "/journal/{entry_id}/raw",
    tags=["journal"],
    summary="The message bytes as received",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_journal_raw(entry_id: int, services: Svc, _: Reader) -> Response:
    with store_errors(), services.read() as session:
        row = session.get(JournalRow, entry_id)
        raw = row.raw if row is not None else None
    if raw is None:
        raise NotFound(f"no journal entry {entry_id}")
    return Response(raw, media_type="application/octet-stream")


class ReplayRequest(BaseModel):
    new_control_id: bool = Field(
        False,
        description="False: as received (an accepted message gets its original ACK and changes "
        "nothing). True: under a fresh MSH-10, so it is applied again.",
    )


@router.post(
    "/journal/{entry_id}/replay", response_model=ReplayResult, tags=["journal"], summary="Replay"
)
def post_replay(
    entry_id: int, services: Svc, who: Writer, body: ReplayRequest | None = None
) -> ReplayResult:
    """An inbound message through the intake again, as if just received."""
    fresh = body.new_control_id if body is not None else False
    return replay(
        services.store, services.processor, services.config.mapping, entry_id,
        new_control_id=fresh, who=who.name, now=services.now(),
    )  # fmt: skip


@router.get(
    "/outbox", response_model=Page[OutboxSummary], tags=["outbox"], summary="List the outbox"
)
def get_outbox(
    *,
    services: Svc,
    _: Reader,
    state: Annotated[list[OutboxState] | None, Query(description="Default: pending, dead")] = None,
    destination: str | None = None,
    control_id: str | None = None,
    order_id: int | None = None,
    offset: Offset = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[OutboxSummary]:
    wanted = OutboxFilter(
        states=tuple(state) if state else outbox_read.OPEN_STATES,
        destination=destination or None, control_id=control_id or None, order_id=order_id,
    )  # fmt: skip
    with store_errors(), services.read() as session:
        return list_outbox(session, wanted, offset=offset, limit=limit)


@router.get(
    "/outbox/health",
    response_model=list[DestinationHealth],
    tags=["outbox"],
    summary="Depth per destination",
)
def get_outbox_health(services: Svc, _: Reader) -> list[DestinationHealth]:
    with store_errors(), services.read() as session:
        return outbox_read.health(session, services.now())


@router.get(
    "/outbox/{row_id}", response_model=JournalDetail, tags=["outbox"], summary="One message"
)
def get_outbox_message(row_id: int, services: Svc, _: Reader) -> JournalDetail:
    """The message (as sent, or its event before the first attempt) and the receiver's ACK."""
    with store_errors(), services.read() as session:
        found = outbound_detail(session, row_id)
    if found is None:
        raise NotFound(f"no outbox message {row_id}")
    return found


@router.post(
    "/outbox/{row_id}/retry", response_model=OutboxSummary, tags=["outbox"], summary="Retry"
)
def post_retry(row_id: int, services: Svc, who: Writer) -> OutboxSummary:
    """Dead or discarded → pending (attempts from 0, due now); pending → due now."""
    return outbox_read.retry(services.store, row_id, who=who.name, now=services.now())


@router.post(
    "/outbox/{row_id}/discard", response_model=OutboxSummary, tags=["outbox"], summary="Discard"
)
def post_discard(row_id: int, services: Svc, who: Writer) -> OutboxSummary:
    """Pending or dead → discarded: never sent; the order's later messages may go."""
    return outbox_read.discard(services.store, row_id, who=who.name, now=services.now())


class PreviewRequest(BaseModel):
    message: str = Field(description="The HL7 message, segments separated by CR (or LF)")
    encoding: str = Field("utf-8", description="How to turn the text into the message's bytes")


@router.post("/preview", response_model=PreviewResult, tags=["preview"], summary="Mapping preview")
def post_preview(request: PreviewRequest, services: Svc, _: Reader) -> PreviewResult:
    """The worklist items the message would create (DICOM JSON), the ACK that would be sent,
    and which calling AE titles' default C-FIND queries would return them. Stores nothing."""
    return services.previewer.preview(encode_message(request), services.now())


def aware(moment: datetime | None) -> datetime | None:
    """A time without a zone is the broker's local time."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.astimezone()


def encode_message(request: PreviewRequest) -> bytes:
    text = request.message.replace("\r\n", "\r").replace("\n", "\r").strip()
    try:
        return text.encode(request.encoding)
    except (LookupError, UnicodeEncodeError) as error:
        raise Invalid(f"the message cannot be encoded as {request.encoding!r}: {error}") from None
