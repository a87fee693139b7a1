"""The application factory: one FastAPI application per :class:`WebContext`, nothing global."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from broker.web import api_messages, api_ops, api_worklist, console, console_messages, errors
from broker.web.cfind import CFindLog
from broker.web.console_pages import STATIC, render_error, templates
from broker.web.context import Services, WebContext
from broker.web.manual import Identity, ManualEntries
from broker.web.metrics import BrokerCollector, new_registry
from broker.web.preview import Previewer
from broker.web.security import TokenGate
from mwl.inbound import AckIdentity, InboundProcessor
from mwl.intake import Intake

log = logging.getLogger(__name__)

DESCRIPTION = """\
The operator API of mwl-broker: the worklist (with manual entries through the HL7 intake),
MPPS, the message journal (with replay), the outbox (with retry and discard), the mapping
preview, per-order timelines, `/health` and `/metrics`.

Reads of patient data and every write need the `[http] token` as `Authorization: Bearer
<token>` when one is configured; without one the API is read-only and writes answer 403.
Lists take `offset` and `limit` and answer `{items, total, offset, limit}`.
"""


def create_app(context: WebContext) -> FastAPI:
    """The API and console on ``context``'s store, configuration and listeners."""
    app = FastAPI(
        title="mwl-broker", version=_version(), description=DESCRIPTION, docs_url="/docs",
        redoc_url=None,
    )  # fmt: skip
    app.state.services = _services(context)
    app.state.render_error = render_error
    errors.install(app)
    for router in (api_ops, api_worklist, api_messages, console, console_messages):
        app.include_router(router.router)
    app.mount("/static", StaticFiles(directory=str(STATIC), check_dir=False), name="static")
    return app


def _services(context: WebContext) -> Services:
    config = context.config
    registry = new_registry()
    identity = AckIdentity(application=config.hl7.application, facility=config.hl7.facility)
    intake = Intake(config.mapping)
    processor = InboundProcessor(context.store.unit_of_work, intake, identity, context.clock)
    cfind = CFindLog(registry, config.worklist, clock=context.clock)
    if context.dicom is not None:
        cfind.attach(context.dicom)
    registry.register(BrokerCollector(context.store, context.mllp, context.dicom, context.clock))
    manual = ManualEntries(
        context.store, processor, config.mapping,
        Identity(application=config.hl7.application, facility=config.hl7.facility),
    )  # fmt: skip
    previewer = Previewer(context.store, intake, config.mapping, config.worklist, identity)
    return Services(
        context=context, gate=TokenGate(config.http.token), processor=processor, manual=manual,
        previewer=previewer, cfind=cfind, registry=registry, templates=templates(),
    )  # fmt: skip


def _version() -> str:
    try:
        return version("mwl-broker")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
