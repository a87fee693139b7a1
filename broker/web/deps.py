"""FastAPI dependencies: the application's services and the caller's access level."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from broker.web.context import Services, services
from broker.web.pages import DEFAULT_LIMIT, MAX_LIMIT
from broker.web.security import Principal


def reader(request: Request) -> Principal:
    """Patient data: the token when one is configured (:mod:`broker.web.security`)."""
    return services(request).gate.check_read(request)


def writer(request: Request) -> Principal:
    """Writes: a configured token, presented."""
    return services(request).gate.check_write(request)


Svc = Annotated[Services, Depends(services)]
Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]
Offset = Annotated[int, Query(ge=0, description="Rows to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page")]

__all__ = ["DEFAULT_LIMIT", "Limit", "Offset", "Reader", "Svc", "Writer"]
