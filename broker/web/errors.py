"""The web layer's one exception tree (drawn in :mod:`broker.web`) and its one translator.

Routes raise :class:`WebError` subclasses; :func:`install` turns them into a JSON answer for
``/api/…`` and into a page (or a redirect to the login form) for the console. A
:class:`mwl.ports.StoreFailure` from any read or write becomes 503: the database is down or
locked, and the operator should try again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from mwl.ports import StoreFailure

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a write was refused: an HL7 ERR row (code, location) or a form field."""

    message: str
    code: str = ""
    location: str = ""


class WebError(Exception):
    """An HTTP status with a message an operator can act on."""

    status = 500

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems


class NotFound(WebError):
    status = 404


class Unauthorized(WebError):
    status = 401


class ReadOnly(WebError):
    status = 403


class Conflict(WebError):
    status = 409


class Invalid(WebError):
    status = 422


class Unavailable(WebError):
    status = 503


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_body(error: WebError) -> dict[str, object]:
    return {
        "detail": error.message,
        "problems": [
            {"message": p.message, "code": p.code, "location": p.location} for p in error.problems
        ],
    }


def install(app: FastAPI) -> None:
    """Register the translator of :class:`WebError` and :class:`StoreFailure`."""

    async def on_web_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, WebError)
        if isinstance(error, Unauthorized) and not is_api(request):
            query = f"?{request.url.query}" if request.url.query else ""
            target = quote(request.url.path + query)
            return RedirectResponse(f"/login?next={target}", status_code=303)
        if not is_api(request):
            renderer = request.app.state.render_error
            response: Response = renderer(request, error)
            return response
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
        return JSONResponse(error_body(error), status_code=error.status, headers=headers)

    async def on_store_failure(request: Request, error: Exception) -> Response:
        log.warning("store unavailable for %s %s: %s", request.method, request.url.path, error)
        unavailable = Unavailable("the database is unavailable; try again shortly")
        return await on_web_error(request, unavailable)

    app.add_exception_handler(WebError, on_web_error)
    app.add_exception_handler(StoreFailure, on_store_failure)
