"""The C-FIND log: who asked the worklist what, when, how fast — and so which calling AE's
query returned an order's steps.

Nothing is stored for a C-FIND (it only reads), so the console keeps what it needs in memory,
per process, bounded: the last :data:`REQUESTS` requests, each with the calling AE title, the
request identifier as received (encoded bytes), the final status and the seconds it took. The
same observations feed ``mwl_cfind_requests_total{status}`` and ``mwl_cfind_duration_seconds``
in the application's own registry.

It listens to pynetdicom's notification events, bound to the running association server with
pynetdicom's public ``AssociationServer.bind``: ``EVT_DIMSE_RECV`` (a C-FIND-RQ arrived: the
clock starts, the identifier bytes are kept) and ``EVT_DIMSE_SENT`` (a final C-FIND-RSP: the
clock stops). The C-FIND handler (``broker.dicom``) is untouched; its Pending responses may
bypass pynetdicom's DIMSE layer, so they are not observed. Instead, "which query returned this
step" is decided when a timeline asks: the remembered identifier is parsed by the real parser
(:func:`mwl.query.identifier_to_request`, caller defaults applied as of the request's time)
and matched against the step in memory (:mod:`broker.web.matching`). That tells whether the
step matched the query as it is stored now (a step changed since may have answered
differently then), and ignores the answer-size limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from pynetdicom import evt
from pynetdicom.dimse_messages import C_FIND_RQ, C_FIND_RSP
from pynetdicom.dsutils import decode

from broker.web.matching import ItemKeys, matches
from mwl.matching import WorklistQuery
from mwl.policy import WorklistPolicy
from mwl.query import identifier_to_request

log = logging.getLogger(__name__)

REQUESTS = 1000
_OPEN_LIMIT = 1000
_PENDING = frozenset({0xFF00, 0xFF01})
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def status_class(status: int) -> str:
    """The ``status`` label of a final C-FIND status (PS3.4 Table K.4-1)."""
    match status:
        case 0x0000:
            return "success"
        case 0xFE00:
            return "cancel"
    return "failure"


@dataclass(slots=True)
class Request:
    """One C-FIND request: its identifier as received and how it ended."""

    at: datetime
    calling_ae: str
    identifier: bytes
    implicit_vr: bool
    little_endian: bool
    started: float
    status: int | None = None
    seconds: float = 0.0
    _query: WorklistQuery | None = None
    _unreadable: bool = False

    def query(self, policy: WorklistPolicy) -> WorklistQuery | None:
        """The parsed query (parsed once; None when it cannot be read back)."""
        if self._query is None and not self._unreadable:
            try:
                dataset = decode(BytesIO(self.identifier), self.implicit_vr, self.little_endian)
                parsed = identifier_to_request(
                    dataset, policy=policy, calling_ae=self.calling_ae, now=self.at
                )
                self._query, self.identifier = parsed.query, b""
            except Exception:  # a request the SCP refused is refused here too
                log.debug("C-FIND identifier not readable back", exc_info=True)
                self._unreadable = True
        return self._query


class CFindLog:
    """Observes C-FIND exchanges; thread-safe (pynetdicom runs a thread per association)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        policy: WorklistPolicy,
        *,
        clock: Callable[[], datetime],
        remembered: int = REQUESTS,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[tuple[int, int], Request] = {}
        self._done: deque[Request] = deque(maxlen=remembered)
        self.attached = False
        self._requests = Counter(
            "mwl_cfind_requests", "Modality Worklist C-FIND requests answered, by final status",
            ["status"], registry=registry,
        )  # fmt: skip
        self._duration = Histogram(
            "mwl_cfind_duration_seconds", "Time from a C-FIND request to its final response",
            buckets=_BUCKETS, registry=registry,
        )  # fmt: skip

    def attach(self, server: Any) -> None:
        """Bind to a running pynetdicom ``AssociationServer`` (its public ``bind``)."""
        server.bind(evt.EVT_DIMSE_RECV, self.on_received)
        server.bind(evt.EVT_DIMSE_SENT, self.on_sent)
        self.attached = True

    def on_received(self, event: Any) -> None:
        """``EVT_DIMSE_RECV``: a C-FIND-RQ starts the clock; its identifier is kept."""
        message = event.message
        if not isinstance(message, C_FIND_RQ):
            return
        key = (id(event.assoc), int(message.command_set.MessageID))
        implicit, little = _encoding(event.assoc, message.context_id)
        data = message.data_set.getvalue() if message.data_set is not None else b""
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        request = Request(self._clock(), calling_ae, data, implicit, little, time.perf_counter())
        with self._lock:
            if len(self._open) >= _OPEN_LIMIT:  # requests of aborted associations
                self._open.pop(next(iter(self._open)))
            self._open[key] = request

    def on_sent(self, event: Any) -> None:
        """``EVT_DIMSE_SENT``: a final C-FIND-RSP ends its request."""
        message = event.message
        if not isinstance(message, C_FIND_RSP):
            return
        status = int(message.command_set.Status)
        if status in _PENDING:
            return
        key = (id(event.assoc), int(message.command_set.MessageIDBeingRespondedTo))
        with self._lock:
            request = self._open.pop(key, None)
            if request is None:
                return
            request.status, request.seconds = status, time.perf_counter() - request.started
            self._done.append(request)
        self._requests.labels(status=status_class(status)).inc()
        self._duration.observe(request.seconds)

    def requests(self) -> list[Request]:
        """The remembered requests, newest first."""
        with self._lock:
            return list(reversed(self._done))

    def returned(self, steps: Mapping[str, ItemKeys]) -> list[tuple[datetime, str, str]]:
        """``(when, calling AE, step)`` for each remembered successful request whose query the
        step (named by the mapping's key) matches as it is stored now; oldest first."""
        found = []
        for request in reversed(self.requests()):
            query = request.query(self._policy) if request.status == 0x0000 else None
            if query is None:
                continue
            found += [
                (request.at, request.calling_ae, name)
                for name, keys in steps.items()
                if matches(keys, query)
            ]
        return found


def _encoding(assoc: Any, context_id: int | None) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the presentation context the request came on."""
    for context in assoc.accepted_contexts:
        if context.context_id == context_id:
            syntax = context.transfer_syntax[0]
            return bool(syntax.is_implicit_VR), bool(syntax.is_little_endian)
    return True, True


def association_server(dicom: object) -> Any:
    """The running pynetdicom ``AssociationServer`` of a :class:`broker.dicom.DicomServer`,
    or None when it is not running.

    ``DicomServer`` keeps its server private; until it offers a public accessor
    (``association_server``, preferred here when present), the private attribute is read.
    tests/web/test_broker.py fails if that stops working.
    """
    if dicom is None:
        return None
    return getattr(dicom, "association_server", None) or getattr(dicom, "_server", None)
