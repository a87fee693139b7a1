"""``/health``, ``/metrics`` (public: nothing about patients) and the dashboard's JSON."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker.store.errors import store_errors
from broker.web.dashboard import Dashboard, dashboard
from broker.web.deps import Reader, Svc
from broker.web.health import Readiness, readiness

router = APIRouter()


@router.get("/health", tags=["operations"], summary="Liveness and readiness")
def get_health(services: Svc) -> JSONResponse:
    """200 when ready (database reachable, MLLP and DICOM listening), else 503; either way
    the process is alive."""
    ready = readiness(services)
    body = {"alive": True, **ready.model_dump()}
    return JSONResponse(body, status_code=200 if ready.ready else 503)


@router.get("/health/live", tags=["operations"], summary="Liveness")
def get_live() -> dict[str, bool]:
    """200 while the process serves HTTP."""
    return {"alive": True}


@router.get(
    "/health/ready",
    tags=["operations"],
    summary="Readiness",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
)
def get_ready(services: Svc) -> JSONResponse:
    ready = readiness(services)
    return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503)


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def get_metrics(services: Svc) -> Response:
    return Response(generate_latest(services.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/api/dashboard", tags=["operations"], summary="The dashboard", response_model=Dashboard
)
def get_dashboard(services: Svc, _: Reader) -> Dashboard:
    """Today's steps by modality and status, outbox health, last refusals and dead letters."""
    ready = readiness(services)
    with store_errors(), services.read() as session:
        return dashboard(session, services.now(), ready)
