"""The C-FIND log: who asked the worklist what, when, how fast — and so which calling AE's
query returned an order's steps.

Nothing is stored for a C-FIND (it only reads), so the console keeps what it needs in memory,
per process, bounded: the last :data:`REQUESTS` requests, each with the calling AE title, the
request identifier as received (encoded bytes), the final status and the seconds it took. The
same observations feed ``mwl_cfind_requests_total{status}`` and ``mwl_cfind_duration_seconds``
in the application's own registry.

It observes the DICOM listener (:meth:`broker.dicom.DicomServer.observe_finds`): each C-FIND
request as it arrives (the clock starts, the identifier bytes are kept) and its final status
(the clock stops). Pending responses are not observed. Instead, "which query returned this
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
from pydicom.uid import UID
from pynetdicom.dsutils import decode

from broker.web.matching import ItemKeys, matches
from mwl.matching import WorklistQuery
from mwl.policy import WorklistPolicy
from mwl.query import identifier_to_request

log = logging.getLogger(__name__)

REQUESTS = 1000
_OPEN_LIMIT = 1000
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

    def attach(self, listener: Any) -> None:
        """Observe the C-FIND requests of a running :class:`broker.dicom.DicomServer`."""
        listener.observe_finds(self)
        self.attached = True

    def find_received(
        self, key: tuple[int, int], calling_ae: str, identifier: bytes, transfer_syntax: str
    ) -> None:
        """A C-FIND-RQ arrived: the clock starts; its identifier is kept."""
        syntax = UID(transfer_syntax)
        request = Request(self._clock(), calling_ae, identifier, bool(syntax.is_implicit_VR),
                          bool(syntax.is_little_endian), time.perf_counter())  # fmt: skip
        with self._lock:
            if len(self._open) >= _OPEN_LIMIT:  # requests of aborted associations
                self._open.pop(next(iter(self._open)))
            self._open[key] = request

    def find_answered(self, key: tuple[int, int], status: int) -> None:
        """The final C-FIND-RSP went out: its request ends."""
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
