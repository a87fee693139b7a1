"""What the web application is built from, and the services derived from it per application.

:class:`WebContext` is what the broker hands over (``broker.app``): the configuration, the
store, and the live listeners (for readiness, connection counts and the C-FIND log); tests give
``None`` for listeners they do not run. :class:`Services` is built once by
:func:`broker.web.app.create_app` and kept in ``app.state``; routes reach it through
:func:`services`, never through module globals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fastapi import Request
from fastapi.templating import Jinja2Templates
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session

from broker.config import Config
from broker.store import Store
from broker.web.cfind import CFindLog
from broker.web.manual import ManualEntries
from broker.web.preview import Previewer
from broker.web.security import TokenGate
from mwl.inbound import InboundProcessor


class MllpListener(Protocol):
    """What the console reads of the HL7 listener (:class:`hl7.server.MLLPServer`)."""

    @property
    def port(self) -> int: ...

    @property
    def connections(self) -> int: ...


class DicomListener(Protocol):
    """What the console reads of the DICOM listener (:class:`broker.dicom.DicomServer`)."""

    @property
    def port(self) -> int: ...

    @property
    def associations(self) -> int: ...

    def observe_finds(self, observer: Any) -> None: ...


def local_now() -> datetime:
    """Now, aware, in the host's time zone (SPS start times are local wall-clock times)."""
    return datetime.now().astimezone()


@dataclass(frozen=True, kw_only=True)
class WebContext:
    """The broker's parts the web application reads and writes through."""

    config: Config
    store: Store
    mllp: MllpListener | None = None
    dicom: DicomListener | None = None
    clock: Callable[[], datetime] = field(default=local_now)


@dataclass(frozen=True, kw_only=True)
class Services:
    """One application's derived services."""

    context: WebContext
    gate: TokenGate
    processor: InboundProcessor
    manual: ManualEntries
    previewer: Previewer
    cfind: CFindLog
    registry: CollectorRegistry
    templates: Jinja2Templates

    @property
    def config(self) -> Config:
        return self.context.config

    @property
    def store(self) -> Store:
        return self.context.store

    def now(self) -> datetime:
        return self.context.clock()

    def read(self) -> Session:
        """A read session (use it as a context manager)."""
        return self.context.store.read_session()


def services(request: Request) -> Services:
    """The :class:`Services` of the application serving ``request``."""
    found = request.app.state.services
    assert isinstance(found, Services)
    return found
