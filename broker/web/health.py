"""``/health``: liveness (the process answers) and readiness (it can do its job).

Ready means: the database answers a ``SELECT 1``, the MLLP listener is listening and the DICOM
listener is listening. A listener the context does not have (a test, a partial start) is
reported as not ready, by name.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import text

from broker.store.errors import store_errors
from broker.web.context import Services
from mwl.ports import StoreFailure


class Check(BaseModel):
    name: str
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: list[Check]


def readiness(services: Services) -> Readiness:
    checks = [_database(services), _mllp(services), _dicom(services)]
    return Readiness(ready=all(check.ok for check in checks), checks=checks)


def _database(services: Services) -> Check:
    try:
        with store_errors(), services.read() as session:
            session.execute(text("SELECT 1"))
    except StoreFailure as failure:
        return Check(name="database", ok=False, detail=str(failure))
    return Check(name="database", ok=True, detail=services.store.engine.dialect.name)


def _mllp(services: Services) -> Check:
    mllp = services.context.mllp
    if mllp is None:
        return Check(name="mllp", ok=False, detail="no HL7 listener in this process")
    try:
        port = mllp.port
    except RuntimeError as error:
        return Check(name="mllp", ok=False, detail=str(error))
    return Check(name="mllp", ok=True, detail=f"listening on port {port}")


def _dicom(services: Services) -> Check:
    dicom = services.context.dicom
    if dicom is None:
        return Check(name="dicom", ok=False, detail="no DICOM listener in this process")
    try:
        port = dicom.port
    except RuntimeError as error:
        return Check(name="dicom", ok=False, detail=str(error))
    return Check(name="dicom", ok=True, detail=f"listening on port {port}")
