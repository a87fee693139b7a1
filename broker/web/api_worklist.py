"""JSON API: the worklist (list, one step, manual create / update / cancel) and order
timelines. Reads need the token when one is configured; writes always need it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from broker.store.errors import store_errors
from broker.web.deps import DEFAULT_LIMIT, Limit, Offset, Reader, Svc, Writer
from broker.web.errors import NotFound
from broker.web.manual import EntryResult
from broker.web.manual_message import EntryChanges, EntryFields
from broker.web.pages import Page, dicom_date
from broker.web.timeline import Timeline, TimelineEvent, order_timeline
from broker.web.worklist_read import StepDetail, StepSummary, WorklistFilter, list_steps
from broker.web.worklist_read import step_detail as read_step

router = APIRouter(prefix="/api", tags=["worklist"])


class StepView(StepDetail):
    """One step with its order, the order's steps, the worklist item and its history."""

    history: list[TimelineEvent]


def worklist_filter(
    *,
    date_from: str | None,
    date_to: str | None,
    station_ae: str | None,
    modality: str | None,
    status: list[str] | None,
    patient_id: str | None,
    patient_name: str | None,
    accession: str | None,
    order_id: int | None = None,
) -> WorklistFilter:
    return WorklistFilter(
        date_from=dicom_date(date_from, "date_from"),
        date_to=dicom_date(date_to, "date_to"),
        station_ae=station_ae or None,
        modality=modality or None,
        statuses=tuple(s.upper() for s in status or () if s),
        patient_id=patient_id or None,
        patient_name=patient_name or None,
        accession=accession or None,
        order_id=order_id,
    )


@router.get("/worklist", response_model=Page[StepSummary], summary="List scheduled steps")
def list_worklist(
    *,
    services: Svc,
    _: Reader,
    date_from: Annotated[str | None, Query(description="SPS start on or after, YYYY-MM-DD")] = None,
    date_to: Annotated[str | None, Query(description="SPS start on or before, YYYY-MM-DD")] = None,
    station_ae: Annotated[str | None, Query(description="Scheduled Station AE; * and ?")] = None,
    modality: str | None = None,
    status: Annotated[list[str] | None, Query(description="SPS status; repeat for several")] = None,
    patient_id: Annotated[str | None, Query(description="Patient ID; * and ?")] = None,
    patient_name: Annotated[str | None, Query(description="Part of the name, any case")] = None,
    accession: Annotated[str | None, Query(description="Accession number; * and ?")] = None,
    order_id: int | None = None,
    offset: Offset = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[StepSummary]:
    """Scheduled procedure steps by SPS start; every given filter must match."""
    wanted = worklist_filter(
        date_from=date_from, date_to=date_to, station_ae=station_ae, modality=modality,
        status=status, patient_id=patient_id, patient_name=patient_name, accession=accession,
        order_id=order_id,
    )  # fmt: skip
    with store_errors(), services.read() as session:
        return list_steps(session, wanted, offset=offset, limit=limit)


@router.get("/worklist/{step_id}", response_model=StepView, summary="One scheduled step")
def get_step(step_id: int, services: Svc, _: Reader) -> StepView:
    """The step, its order and the order's other steps, the merged worklist item (DICOM JSON)
    and the order's history (journal, C-FIND, MPPS, status messages)."""
    with store_errors(), services.read() as session:
        detail = read_step(session, step_id)
        if detail is None:
            raise NotFound(f"no scheduled step {step_id}")
        timeline = order_timeline(session, detail.order.order_id, services.cfind)
    events = timeline.events if timeline else []
    history = [event for event in events if event.step_id in (None, step_id)]
    return StepView(**detail.model_dump(), history=history)


@router.post(
    "/worklist", response_model=EntryResult, status_code=201, summary="Create an entry by hand"
)
def create_entry(entry: EntryFields, services: Svc, who: Writer) -> EntryResult:
    """A new order with one step, as an ORM^O01 NW through the HL7 intake (validated and
    journaled like a RIS order); 422 with the ACK's ERR rows when it is refused."""
    return services.manual.create(entry, who=who.name, now=services.now())


@router.patch("/worklist/{step_id}", response_model=EntryResult, summary="Change an entry")
def update_entry(step_id: int, changes: EntryChanges, services: Svc, who: Writer) -> EntryResult:
    """The given fields replace the stored ones (ORM^O01 XO through the intake)."""
    return services.manual.update(step_id, changes, who=who.name, now=services.now())


@router.post(
    "/worklist/{step_id}/cancel", response_model=EntryResult, summary="Cancel the step's order"
)
def cancel_entry(step_id: int, services: Svc, who: Writer) -> EntryResult:
    """ORM^O01 CA through the intake: every open step of the order becomes CANCELED."""
    return services.manual.cancel(step_id, who=who.name, now=services.now())


@router.get("/orders/{order_id}/timeline", response_model=Timeline, summary="One order's timeline")
def get_timeline(order_id: int, services: Svc, _: Reader) -> Timeline:
    """Order received → steps scheduled → queried by which AE → MPPS → status delivered."""
    with store_errors(), services.read() as session:
        timeline = order_timeline(session, order_id, services.cfind)
    if timeline is None:
        raise NotFound(f"no order {order_id}")
    return timeline
