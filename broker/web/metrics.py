"""``/metrics`` in the Prometheus text format, from a registry of the application's own (no
global default registry: two applications in one process, as in the tests, never mix).

Most values are read from the tables at scrape time, so no other module needs a hook:

======================================  =======  ==============================================
metric                                  type     source
======================================  =======  ==============================================
mwl_hl7_messages_total{message_type,    counter  inbound journal rows; rows with an id above the
ack_code}                                        last scrape's are added (monotonic per process)
mwl_mpps_instances{status}              gauge    ``mpps_instances`` by status
mwl_outbox_messages{destination,state}  gauge    pending and dead outbox rows
mwl_outbox_oldest_pending_age_seconds   gauge    age of the oldest pending row per destination
mwl_outbox_delivery_failures{           gauge    failed attempts of the rows kept (a sent row's
destination}                                     last attempt succeeded); retention lowers it
mwl_worklist_steps_today{modality,      gauge    steps scheduled to start today (local date)
status}
mwl_hl7_connections_open                gauge    the MLLP listener's open connections
mwl_dicom_associations_open             gauge    the DICOM AE's open associations
mwl_database_up                         gauge    1 when the scrape could read the database
mwl_cfind_requests_total{status},       counter  the C-FIND log (:mod:`broker.web.cfind`): this
mwl_cfind_matches_total,                         process's C-FIND requests, matches, and their
mwl_cfind_duration_seconds              histo.   latency
======================================  =======  ==============================================

The message counter is kept per process from the journal's ids: a scrape counts the rows
added since the previous one. On PostgreSQL a row whose transaction commits after a row with a
higher id was already counted is missed (ids are handed out before commit); the counter is for
rates, the journal holds the truth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from broker.store import Store
from broker.store.errors import store_errors
from broker.store.schema import JournalRow, OutboxRow, PerformedStepRow
from broker.web.context import DicomListener, MllpListener
from broker.web.dashboard import steps_today
from broker.web.outbox_read import health
from mwl.ports import StoreFailure


class JournalTally:
    """Inbound messages by type and ACK code, counted from the journal's ids upward."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_id = 0
        self._counts: dict[tuple[str, str], int] = {}

    def update(self, session: Session) -> dict[tuple[str, str], int]:
        with self._lock:
            rows = session.execute(
                select(
                    JournalRow.message_type,
                    JournalRow.trigger_event,
                    JournalRow.ack_code,
                    func.count(),
                    func.max(JournalRow.id),
                )
                .where(JournalRow.direction == "in", JournalRow.id > self._last_id)
                .group_by(JournalRow.message_type, JournalRow.trigger_event, JournalRow.ack_code)
            ).all()
            for kind, event, ack_code, number, last in rows:
                key = (f"{kind}^{event}" if event else kind or "unreadable", ack_code)
                self._counts[key] = self._counts.get(key, 0) + int(number)
                self._last_id = max(self._last_id, int(last))
            return dict(self._counts)


class BrokerCollector(Collector):
    """Reads the tables and the listeners at every scrape."""

    def __init__(
        self,
        store: Store,
        mllp: MllpListener | None,
        dicom: DicomListener | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._mllp = mllp
        self._dicom = dicom
        self._clock = clock
        self._tally = JournalTally()

    def collect(self) -> Iterator[Metric]:
        yield from self._listeners()
        up = GaugeMetricFamily("mwl_database_up", "1 when this scrape could read the database")
        try:
            with store_errors(), self._store.read_session() as session:
                families = list(self._tables(session))
        except StoreFailure:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _tables(self, session: Session) -> Iterator[Metric]:
        now = self._clock()
        messages = CounterMetricFamily(
            "mwl_hl7_messages", "Inbound HL7 messages journaled, by type and ACK code",
            labels=["message_type", "ack_code"],
        )  # fmt: skip
        for (kind, ack_code), number in sorted(self._tally.update(session).items()):
            messages.add_metric([kind, ack_code], number)
        yield messages
        yield self._mpps(session)
        yield from self._outbox(session, now)
        steps = GaugeMetricFamily(
            "mwl_worklist_steps_today", "Steps scheduled to start today, by modality and status",
            labels=["modality", "status"],
        )  # fmt: skip
        for count in steps_today(session, now):
            steps.add_metric([count.modality, count.status], count.count)
        yield steps

    @staticmethod
    def _mpps(session: Session) -> Metric:
        family = GaugeMetricFamily(
            "mwl_mpps_instances", "MPPS instances stored, by status", labels=["status"]
        )
        rows = session.execute(
            select(PerformedStepRow.status, func.count()).group_by(PerformedStepRow.status)
        ).all()
        for status, number in sorted(rows):
            family.add_metric([status], number)
        return family

    @staticmethod
    def _outbox(session: Session, now: datetime) -> Iterator[Metric]:
        messages = GaugeMetricFamily(
            "mwl_outbox_messages", "Outbox messages waiting (pending) or dead-lettered (dead)",
            labels=["destination", "state"],
        )  # fmt: skip
        oldest = GaugeMetricFamily(
            "mwl_outbox_oldest_pending_age_seconds", "Age of the oldest pending message",
            labels=["destination"],
        )  # fmt: skip
        for depth in health(session, now):
            messages.add_metric([depth.destination, "pending"], depth.pending)
            messages.add_metric([depth.destination, "dead"], depth.dead)
            oldest.add_metric([depth.destination], depth.oldest_pending_seconds)
        failures = GaugeMetricFamily(
            "mwl_outbox_delivery_failures", "Failed delivery attempts of the messages kept",
            labels=["destination"],
        )  # fmt: skip
        failed = case((OutboxRow.state == "sent", OutboxRow.attempts - 1), else_=OutboxRow.attempts)
        rows = session.execute(
            select(OutboxRow.destination, func.sum(failed)).group_by(OutboxRow.destination)
        ).all()
        for destination, number in sorted(rows):
            failures.add_metric([destination], max(0, int(number or 0)))
        yield from (messages, oldest, failures)

    def _listeners(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "mwl_hl7_connections_open", "Open MLLP connections to the HL7 listener"
        )
        connections.add_metric([], self._mllp.connections if self._mllp is not None else 0)
        associations = GaugeMetricFamily(
            "mwl_dicom_associations_open", "Open DICOM associations of the broker's AE"
        )
        open_now = self._dicom.associations if self._dicom is not None else 0
        associations.add_metric([], open_now)
        yield from (connections, associations)


def new_registry() -> CollectorRegistry:
    """An empty registry of the application's own (no process or platform collectors: the
    broker's process metrics are the host's business)."""
    return CollectorRegistry(auto_describe=False)
