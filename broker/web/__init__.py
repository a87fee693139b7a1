"""broker.web: the operator console and HTTP API, ``/metrics`` and ``/health``.

Served by the broker's own process (:class:`WebServer`: uvicorn inside the broker's asyncio
loop on ``[http] host/port``) and reading through the same tables and repositories as the HL7
and DICOM sides. :func:`create_app` builds one FastAPI application from a :class:`WebContext`
(the store, the configuration and the broker's live listeners); nothing is global, so tests
build as many as they like.

Layout::

    app.py            create_app(context): routers, error translation, static files
    context.py        WebContext (what the broker hands over) and Services (derived per app)
    security.py       TokenGate: bearer token / login cookie → Principal; read and write access
    deps.py           FastAPI dependencies (services, reader, writer, paging)
    errors.py         the exception tree below and its one translator to HTTP
    server.py         WebServer: uvicorn in the broker's asyncio loop
    api_worklist.py, api_messages.py, api_ops.py     JSON routes (/api/…, /health, /metrics)
    console.py, console_messages.py, console_pages.py, templates/, static/
                      server-rendered pages (Jinja2, plain CSS, no build step)
    worklist_read.py, journal_read.py, mpps_read.py, outbox_read.py, dashboard.py,
    timeline.py, pages.py
                      read queries (and outbox retry / discard)
    manual.py, manual_message.py
                      hand-made worklist entries: an HL7 ORM^O01 through the intake
    replay.py         an inbound journal message through the intake again
    preview.py        an HL7 message → the items it would create, stored nowhere
    stations.py, matching.py
                      which calling AE titles' default C-FIND queries return an item
    cfind.py          the C-FIND log: recent requests, and the C-FIND metrics
    audit.py          who did what: ``ops`` rows in the message journal
    metrics.py        /metrics: a registry per application, fed from the tables at scrape time
    health.py         liveness and readiness

Errors (:mod:`broker.web.errors`)::

    WebError          an HTTP status and a message an operator can act on
    ├── NotFound      404
    ├── Unauthorized  401: no token, or a wrong one (WWW-Authenticate: Bearer)
    ├── ReadOnly      403: no [http] token configured, so nothing may be written
    ├── Conflict      409: the write does not apply to the row's current state
    ├── Invalid       422: the entry or message was refused, with the ACK's ERR details
    └── Unavailable   503: the database is unavailable (a StoreFailure)
"""

from __future__ import annotations

from broker.web.app import create_app
from broker.web.context import WebContext
from broker.web.server import WebServer

__all__ = ["WebContext", "WebServer", "create_app"]
