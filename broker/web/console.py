"""Console pages: dashboard, worklist with its filters and the manual entry form, one step,
an order's timeline, and logging in (the token in an HttpOnly cookie).

Pages that show patient data need read access and those that write need write access
(:mod:`broker.web.security`); a page without the login it needs redirects to ``/login``.
Forms post, then redirect back with a notice (POST → redirect → GET); a refused entry is shown
again with the ACK's problems next to the form.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from broker.store.errors import store_errors
from broker.web.api_worklist import worklist_filter
from broker.web.console_pages import done, form_model, page, safe_next
from broker.web.context import services as services_of
from broker.web.dashboard import dashboard
from broker.web.deps import DEFAULT_LIMIT, Limit, Offset, Reader, Svc
from broker.web.errors import Invalid, NotFound
from broker.web.health import readiness
from broker.web.manual import load_entry
from broker.web.manual_message import EntryChanges, EntryFields
from broker.web.security import COOKIE
from broker.web.timeline import order_timeline
from broker.web.worklist_read import list_steps, step_detail
from mwl.model import SPSStatus

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard_page(request: Request, services: Svc, _: Reader) -> Response:
    ready = readiness(services)
    with store_errors(), services.read() as session:
        board = dashboard(session, services.now(), ready)
    return page(request, "dashboard.html", board=board)


@router.get("/worklist")
def worklist_page(
    *,
    request: Request,
    services: Svc,
    _: Reader,
    date_from: str | None = None,
    date_to: str | None = None,
    station_ae: str | None = None,
    modality: str | None = None,
    status: Annotated[list[str] | None, Query()] = None,
    patient_id: str | None = None,
    patient_name: str | None = None,
    accession: str | None = None,
    order_id: int | None = None,
    offset: Offset = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> Response:
    statuses = [s for s in status or () if s]
    wanted = worklist_filter(
        date_from=date_from, date_to=date_to, station_ae=station_ae, modality=modality,
        status=statuses, patient_id=patient_id, patient_name=patient_name, accession=accession,
        order_id=order_id,
    )  # fmt: skip
    filters = {
        "date_from": date_from, "date_to": date_to, "station_ae": station_ae,
        "modality": modality, "status": statuses, "patient_id": patient_id,
        "patient_name": patient_name, "accession": accession, "order_id": order_id,
    }  # fmt: skip
    with store_errors(), services.read() as session:
        found = list_steps(session, wanted, offset=offset, limit=limit)
    return page(
        request, "worklist.html", page_of=found, filters=filters,
        statuses=[s.value for s in SPSStatus], entry={}, problems=(),
    )  # fmt: skip


@router.post("/worklist/new")
async def create_entry(request: Request, services: Svc) -> Response:
    who = services.gate.check_write(request)
    form = dict(await request.form())
    try:
        entry = form_model(EntryFields, form)
        result = await run_in_threadpool(
            services.manual.create, entry, who=who.name, now=services.now()
        )
    except Invalid as refused:
        return _worklist_with_problems(request, form, refused)
    first = result.step_ids[0] if result.step_ids else None
    target = f"/worklist/{first}" if first is not None else "/worklist"
    return done(target, f"Created (ACK {result.ack_code}, control ID {result.control_id})")


def _worklist_with_problems(request: Request, form: dict[str, Any], refused: Invalid) -> Response:
    empty = {"status": [], "offset": 0}
    return page(
        request, "worklist.html", status_code=422, page_of=None, filters=empty,
        statuses=[s.value for s in SPSStatus], entry=form, problems=refused.problems,
        refused=refused.message,
    )  # fmt: skip


@router.get("/worklist/{step_id}")
def step_page(request: Request, step_id: int, services: Svc, _: Reader) -> Response:
    return _step(request, services, step_id)


def _step(
    request: Request,
    services: Svc,
    step_id: int,
    *,
    entry: dict[str, Any] | None = None,
    refused: Invalid | None = None,
) -> Response:
    with store_errors(), services.read() as session:
        detail = step_detail(session, step_id)
        stored = load_entry(session, step_id)
        if detail is None or stored is None:
            raise NotFound(f"no scheduled step {step_id}")
        timeline = order_timeline(session, detail.order.order_id, services.cfind)
    values = entry if entry is not None else stored.fields.model_dump()
    values["station_aes"] = _titles(values.get("station_aes", ""))
    return page(
        request, "step.html", status_code=422 if refused else 200, detail=detail,
        timeline=timeline, entry=values, problems=refused.problems if refused else (),
        refused=refused.message if refused else "",
    )  # fmt: skip


@router.post("/worklist/{step_id}/update")
async def update_entry(request: Request, step_id: int, services: Svc) -> Response:
    who = services.gate.check_write(request)
    form = dict(await request.form())
    try:
        changes = form_model(EntryChanges, form)
        result = await run_in_threadpool(
            services.manual.update, step_id, changes, who=who.name, now=services.now()
        )
    except Invalid as refused:
        return await run_in_threadpool(
            _step, request, services, step_id, entry=form, refused=refused
        )
    return done(f"/worklist/{step_id}", f"Updated (ACK {result.ack_code}, {result.control_id})")


@router.post("/worklist/{step_id}/cancel")
async def cancel_entry(request: Request, step_id: int, services: Svc) -> Response:
    who = services.gate.check_write(request)
    try:
        result = await run_in_threadpool(
            services.manual.cancel, step_id, who=who.name, now=services.now()
        )
    except Invalid as refused:
        return await run_in_threadpool(_step, request, services, step_id, refused=refused)
    return done(f"/worklist/{step_id}", f"Order canceled (ACK {result.ack_code})")


@router.get("/orders/{order_id}/timeline")
def timeline_page(request: Request, order_id: int, services: Svc, _: Reader) -> Response:
    with store_errors(), services.read() as session:
        timeline = order_timeline(session, order_id, services.cfind)
    if timeline is None:
        raise NotFound(f"no order {order_id}")
    return page(request, "timeline.html", timeline=timeline)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    return page(request, "login.html", next=safe_next(next), failed=False)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    target = safe_next(str(form.get("next", "/")))
    gate = services_of(request).gate
    if not gate.matches(str(form.get("token", ""))):
        return page(request, "login.html", status_code=401, next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE, str(form["token"]), httponly=True, samesite="strict", path="/",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _titles(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else str(value or "")
