"""What every console page shares: rendering with the caller's login state, redirects with a
notice, and form values → the entry model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError

from broker.web.context import services
from broker.web.errors import Invalid, Problem, WebError

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def templates() -> Jinja2Templates:
    """The console's templates, with the filters they use."""
    found = Jinja2Templates(directory=str(TEMPLATES))
    found.env.filters["when"] = when
    found.env.filters["start"] = lambda iso: str(iso or "").replace("T", " ")
    found.env.filters["pretty"] = lambda value: json.dumps(value, indent=1, ensure_ascii=False)
    found.env.globals["query"] = query
    return found


def when(value: datetime | None) -> str:
    """A stored (UTC) time in the broker's local time zone."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def query(base: str, values: Mapping[str, Any], **changes: Any) -> str:
    """``base`` with the given query values, ``changes`` applied (None drops a key)."""
    merged = {**values, **changes}
    pairs = [
        (key, item)
        for key, value in merged.items()
        if value not in (None, "")
        for item in (value if isinstance(value, list | tuple) else [value])
    ]
    return f"{base}?{urlencode(pairs)}" if pairs else base


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    found = services(request)
    principal = found.gate.identify_quietly(request)
    values = {
        "principal": principal,
        "read_only": not found.gate.configured,
        "writable": found.gate.configured and principal.authenticated,
        "notice": request.query_params.get("done", ""),
        **context,
    }
    return found.templates.TemplateResponse(request, name, values, status_code=status_code)


def render_error(request: Request, error: WebError) -> Response:
    return page(request, "error.html", status_code=error.status, error=error)


def done(path: str, notice: str) -> RedirectResponse:
    """Back to ``path`` after a write, with a notice (POST → redirect → GET)."""
    separator = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{separator}{urlencode({'done': notice})}", status_code=303)


def safe_next(target: str | None) -> str:
    """A local path to go to after logging in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def form_model(model: type[BaseModel], form: Mapping[str, Any]) -> Any:
    """A model from form values (``station_aes``: comma- or space-separated; an emptied
    field is ``''`` and clears); the validation errors as :class:`Invalid`, each naming its
    field."""
    values: dict[str, Any] = {key: str(value).strip() for key, value in form.items()}
    if "station_aes" in values:
        values["station_aes"] = values["station_aes"].replace(",", " ").split()
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = tuple(
            Problem(f"{_field(e['loc'])}: {e['msg']}", location=_field(e["loc"]))
            for e in error.errors()
        )
        raise Invalid("the form has errors", problems) from None


def _field(location: tuple[Any, ...]) -> str:
    return str(location[0]) if location else ""
