"""Outbox delivery: HL7 status messages to each RIS, MPPS copies to each DICOM peer.

One :class:`OutboundSender` per broker process, on the broker's event loop, with one
:class:`DestinationWorker` task per destination (an enabled ``[[outbound]]`` receiver or an
``[[mpps_forward]]`` peer), so a receiver that is down or slow never holds up another. A worker
runs rounds until nothing is due:

1. claim the due head-of-order rows of its destination (:func:`broker.store.outbox.claim_due`,
   at most :data:`BATCH` — one per order, so a batch holds no two messages of one order);
2. render the rows that have no payload yet (HL7 rows are rendered when queued, see
   :mod:`mpps.scp`; one queued without, by an older version or because rendering failed, is
   rendered here from its event) and save the bytes before the first send, so every retry
   sends the same message and MSH-10;
3. send them one by one over the destination's connection (one persistent
   :class:`hl7.client.AsyncMLLPClient`; one pynetdicom association per round for DICOM);
4. record the outcomes in one transaction (:func:`broker.store.outbox.record`).

Outcomes (:data:`ACK_OUTCOMES`, :func:`dicom_outcome`):

=====================================  ===================================================
AA (CA)                                sent
AE (CE)                                dead, with MSA-3 and the ERR lines as the reason
AR (CR), no/unreadable ACK, closed     retry after ``retry_initial × retry_factor^(n-1)``
connection, connect failure            (n = attempts so far), at most ``retry_max``
DICOM Success, warnings, 0111 on a     sent (0111: the peer has the instance, perhaps from an
re-sent N-CREATE                       attempt before a crash)
DICOM 0xA7xx, 0213 (out of resources)  retry
other DICOM failures (0x01xx, …)       dead
no association, no response            retry
=====================================  ===================================================

When a destination cannot be reached the rest of the round is given back unattempted, due at
the same time as the failed row, so a receiver that swallows connection attempts costs one
connect timeout per round, not one per message.

Wake-ups: :meth:`OutboundSender.wake` (thread-safe; the MPPS service calls it after each
commit through ``Broker.outbox_wake``), the ``outbox-poll`` job every ``poll_interval`` (rows
of other processes, leases that expired), and each worker's own timer for the retries it
scheduled. Logging at INFO names destination, control ID, operation and outcome, never
patient data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from pydicom import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from broker.config import Config, ForwardConfig, OutboundConfig, OutboxConfig
from broker.dicom import set_no_delay
from broker.mpps_service import MODALITY_PERFORMED_PROCEDURE_STEP as MPPS
from broker.store.outbox import Claimed, OutboxLedger, Outcome, Result
from hl7.ack import read_ack
from hl7.client import AsyncMLLPClient
from hl7.errors import ConnectFailed, HL7Error, TransportError
from mpps.report import status_message
from mpps.scp import read_status_event
from mwl.ports import StoreFailure

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH = 32
"""Rows per claim: small enough that the first of a round goes out after a few renders."""
GATHER_SECONDS = 0.05
"""How long a woken worker waits before it claims, and how long it waits after a round that
claimed less than :data:`BATCH` (it has caught up) before the next. A round costs two write
transactions (claim, outcomes; a third when it renders) whatever its size; while modalities
report many procedures a second, each commit wakes the worker, and rounds of one message each
took the write lock from the MPPS units of work and tripled the broker's CPU per procedure;
claiming again right after a round gave rounds of one or two messages and an empty claim each
time (docs/benchmarks.md, MPPS). Waiting 50 ms gathers them, well inside the second a new
message has to reach the RIS; a full round is followed at once (a backlog)."""
STOP_GRACE_SECONDS = 10.0

ACK_OUTCOMES = {
    "AA": Outcome.SENT,
    "CA": Outcome.SENT,
    "AE": Outcome.DEAD,
    "CE": Outcome.DEAD,
    "AR": Outcome.RETRY,
    "CR": Outcome.RETRY,
}
"""MSA-1 (HL7 Table 0008, original and enhanced mode) → outcome; anything else: retry."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def retry_delay(attempts: int, settings: OutboxConfig) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (1 for the first)."""
    exponent = max(attempts - 1, 0)
    try:
        delay = settings.retry_initial * settings.retry_factor**exponent
    except OverflowError:
        return settings.retry_max
    return float(min(delay, settings.retry_max))


def new_worker_id() -> str:
    """``host:pid:random``: who holds a claim (``outbox.claimed_by``, 64 characters)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """What one send ended in; ``unreachable`` when the destination could not be reached."""

    outcome: Outcome
    error: str = ""
    ack: bytes | None = None
    unreachable: bool = False


@dataclass(frozen=True, slots=True)
class RenderFailure:
    """A row that cannot be rendered (a bad event, a type the version lacks): dead."""

    reason: str


Ready = tuple[Claimed, bytes | None]
"""A row and the bytes to send (None: the channel renders nothing, DICOM)."""


class Channel(Protocol):
    """One destination's way out."""

    name: str
    attempt_timeout: float
    """The longest one :meth:`send` can take (connect and answer timeouts)."""

    async def render(self, row: Claimed) -> bytes | None:
        """The bytes to send for a row without payload; None when nothing is rendered."""

    async def send(self, row: Claimed, payload: bytes | None) -> Attempt:
        """Send one message and classify the answer; never raises for the peer's faults."""

    async def end_round(self) -> None:
        """After a round (DICOM releases its association)."""

    async def close(self) -> None:
        """At stop."""


# --- HL7 over MLLP ---------------------------------------------------------------------------


def render_status(event: dict[str, Any], control_id: str, now: datetime, origin: str) -> bytes:
    """The HL7 status message of an ``hl7`` outbox event. ``origin`` is our
    ``application^facility`` (MSH-3 / MSH-4)."""
    status = read_status_event(event)
    application, _, facility = origin.partition("^")
    return status_message(
        status.performed,
        status.order,
        message_type=status.message_type,
        version=status.version,
        control_id=control_id,
        now=now,
        application=application,
        facility=facility,
        order_status=status.order_status,
    )


def ack_outcome(ack: bytes, control_id: str) -> Attempt:
    """AA sent, AE dead (reason: MSA-3 and ERR), AR and anything unreadable retry."""
    try:
        reply = read_ack(ack)
    except (HL7Error, ValueError) as error:
        return Attempt(outcome=Outcome.RETRY, error=f"unreadable ACK: {error}", ack=ack)
    if reply.control_id != control_id:
        log.warning("ACK for %r answers control ID %r", control_id, reply.control_id)
    outcome = ACK_OUTCOMES.get(reply.code, Outcome.RETRY)
    if outcome is Outcome.SENT:
        return Attempt(outcome=outcome, ack=ack)
    reason = "; ".join(part for part in (reply.text, *reply.errors) if part)
    return Attempt(outcome=outcome, error=f"{reply.code or '?'}: {reason}".rstrip(": "), ack=ack)


class Hl7Channel:
    """An ``[[outbound]]`` RIS: one persistent MLLP connection, messages one at a time."""

    def __init__(self, config: OutboundConfig, *, origin: str) -> None:
        self.name = config.name
        self.attempt_timeout = config.connect_timeout + config.ack_timeout
        self._origin = origin
        self._client = AsyncMLLPClient(
            config.host,
            config.port,
            connect_timeout=config.connect_timeout,
            ack_timeout=config.ack_timeout,
        )

    async def render(self, row: Claimed) -> bytes | None:
        """In the event loop: a status message costs 0.2–0.5 ms (:mod:`mpps.report`)."""
        now = datetime.now().astimezone()  # MSH-7 is local time
        return render_status(row.event, row.control_id, now, self._origin)

    async def send(self, row: Claimed, payload: bytes | None) -> Attempt:
        assert payload is not None, "an HL7 row is rendered before it is sent"
        try:
            ack = await self._client.send(payload)
        except ConnectFailed as error:
            return Attempt(outcome=Outcome.RETRY, error=str(error), unreachable=True)
        except TransportError as error:
            return Attempt(outcome=Outcome.RETRY, error=str(error) or type(error).__name__)
        return ack_outcome(ack, row.control_id)

    async def end_round(self) -> None:
        """The connection stays open for the next round."""

    async def close(self) -> None:
        await self._client.close()


# --- MPPS to a DICOM peer ----------------------------------------------------------------------

_RETRY_STATUSES = frozenset({0x0213})
_DUPLICATE_INSTANCE = 0x0111


def dicom_outcome(operation: str, status: int | None) -> tuple[Outcome, str]:
    """N-CREATE / N-SET response status (PS3.7 C.4) → outcome and reason."""
    if status is None:
        return Outcome.RETRY, "no response"
    text = f"status 0x{status:04X}"
    if status == 0x0000 or status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return Outcome.SENT, ""
    if status == _DUPLICATE_INSTANCE and operation == "N-CREATE":
        return Outcome.SENT, f"{text}: the peer has the instance already"
    if status in _RETRY_STATUSES or 0xA700 <= status <= 0xA7FF:
        return Outcome.RETRY, f"{text}: out of resources"
    return Outcome.DEAD, text


class DicomChannel:
    """An ``[[mpps_forward]]`` peer: N-CREATE / N-SET as received, one association per round
    (pynetdicom blocks: every call runs in a thread)."""

    def __init__(self, config: ForwardConfig, *, calling_ae: str, timeout: float = 30.0) -> None:
        quiet_pynetdicom()
        self.name = config.name
        self.attempt_timeout = 3 * timeout  # associate + request + release
        self._config = config
        self._ae = AE(ae_title=calling_ae)
        self._ae.add_requested_context(MPPS)
        self._ae.acse_timeout = self._ae.dimse_timeout = self._ae.network_timeout = timeout
        self._ae.connection_timeout = timeout
        self._association: Association | None = None

    async def render(self, row: Claimed) -> bytes | None:
        return None

    async def send(self, row: Claimed, payload: bytes | None) -> Attempt:
        return await asyncio.to_thread(self._send, row)

    async def end_round(self) -> None:
        await asyncio.to_thread(self._release)

    async def close(self) -> None:
        await self.end_round()

    def _send(self, row: Claimed) -> Attempt:
        association = self._associate()
        if association is None:
            error = f"no association with {self._config.ae_title}@{self._config.host}"
            return Attempt(outcome=Outcome.RETRY, error=error, unreachable=True)
        try:
            dataset = Dataset.from_json(row.event["dataset"])
            uid = row.event["sop_instance_uid"]
        except (KeyError, TypeError, ValueError) as error:
            return Attempt(outcome=Outcome.DEAD, error=f"bad event: {error!r}")
        try:
            status = self._request(association, row.operation, dataset, uid)
        except Exception as error:  # pynetdicom refuses the request (no accepted context, …)
            self._release()
            return Attempt(outcome=Outcome.RETRY, error=f"{type(error).__name__}: {error}")
        if status is None:
            self._release()
        outcome, reason = dicom_outcome(row.operation, status)
        return Attempt(outcome=outcome, error=reason)

    @staticmethod
    def _request(
        association: Association, operation: str, dataset: Dataset, uid: str
    ) -> int | None:
        """The response status, None when none came (timeout, abort)."""
        if operation == "N-CREATE":
            response, _ = association.send_n_create(dataset, MPPS, uid)
        else:
            response, _ = association.send_n_set(dataset, MPPS, uid)
        return int(response.Status) if "Status" in response else None

    def _associate(self) -> Association | None:
        if self._association is not None and self._association.is_established:
            return self._association
        peer = self._config
        if not _listening(peer.host, peer.port, self._ae.connection_timeout):
            return None
        association = self._ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, no_delay_on_open)],
        )
        self._association = association if association.is_established else None
        return self._association

    def _release(self) -> None:
        association, self._association = self._association, None
        if association is not None and association.is_established:
            association.release()


def quiet_pynetdicom() -> None:
    """No patient data in pynetdicom's logs (it logs request and response identifiers by
    default), and no INFO line per message."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def no_delay_on_open(event: Event) -> None:
    """pynetdicom's ``EVT_CONN_OPEN``: ``TCP_NODELAY`` on the association's socket (pynetdicom
    has no option for it; Nagle's algorithm and the peer's delayed ACK add ~40 ms to each small
    DIMSE exchange, pitfalls.md)."""
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        set_no_delay(transport.socket)


def _listening(host: str, port: int, timeout: float | None) -> bool:
    """Whether the peer accepts connections. Asked first because pynetdicom 3.0 logs a
    refused connection at ERROR and leaves its socket unclosed."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


# --- one destination ---------------------------------------------------------------------------


class DestinationWorker:
    """Delivers the rows of one destination, round after round, until nothing is due."""

    def __init__(
        self, channel: Channel, ledger: OutboxLedger, settings: OutboxConfig, worker: str
    ) -> None:
        self.channel = channel
        self._ledger = ledger
        self._settings = settings
        self._worker = worker
        self._event = asyncio.Event()
        self._stopping = False
        self._retry_at: datetime | None = None

    def check_lease(self) -> None:
        """Warn when one attempt can outlast the lease (claims are then renewed each send)."""
        if self.channel.attempt_timeout >= self._settings.lease:
            log.warning("outbox %s: [outbox] lease %gs is not longer than connect + ACK "
                        "timeouts (%gs)", self.channel.name, self._settings.lease,
                        self.channel.attempt_timeout)  # fmt: skip

    def wake(self) -> None:
        """Look for due rows now (call on the loop's thread)."""
        self._event.set()

    def stop(self) -> None:
        self._stopping = True
        self._event.set()

    async def run(self) -> None:
        while not self._stopping:
            await self._sleep()
            try:
                while not self._stopping and (claimed := await self.round()):
                    if claimed < BATCH:  # caught up: let the next commits gather first
                        await asyncio.sleep(GATHER_SECONDS)
            except StoreFailure as failure:  # claims stay leased; the next poll tries again
                log.warning("outbox %s: store unavailable: %s", self.channel.name, failure)
            except Exception:  # a bug: log it, go on with the next wake-up
                log.exception("outbox %s: delivery round failed", self.channel.name)

    async def _sleep(self) -> None:
        timeout = None
        if self._retry_at is not None:
            timeout = max((self._retry_at - utcnow()).total_seconds(), 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        if not self._stopping:
            await asyncio.sleep(GATHER_SECONDS)  # let the commits right behind this one join
        self._event.clear()

    async def round(self) -> int:
        """One claim, render, send, record; the number of rows claimed (0: nothing due)."""
        now = utcnow()
        if self._retry_at is not None and self._retry_at <= now:
            self._retry_at = None  # this claim covers it; keep only retries still ahead
        rows = await _blocking(
            self._ledger.claim_due,
            worker=self._worker,
            now=now,
            lease=self._settings.lease,
            limit=BATCH,
            destinations=(self.channel.name,),
        )
        if not rows:
            return 0
        try:
            ready, results = await self._prepare(rows)
            results += await self._send(ready)
        finally:
            await self.channel.end_round()
        await _blocking(self._ledger.record, results, worker=self._worker, now=utcnow())
        return len(rows)

    async def _prepare(self, rows: list[Claimed]) -> tuple[list[Ready], list[Result]]:
        """Render and save what has no payload yet. A row that cannot be rendered is dead;
        one whose payload could not be saved (its claim was lost) is left alone."""
        fresh = [row for row in rows if row.payload is None]
        rendered = await asyncio.gather(*(self._render(row) for row in fresh))
        outputs = {row.id: output for row, output in zip(fresh, rendered, strict=True)}
        dead = [
            Result(id=row_id, outcome=Outcome.DEAD, error=output.reason)
            for row_id, output in outputs.items()
            if isinstance(output, RenderFailure)
        ]
        payloads = {i: output for i, output in outputs.items() if isinstance(output, bytes)}
        saved: set[int] = set()
        if payloads:
            saved = await _blocking(self._ledger.save_payloads, payloads, worker=self._worker)
        ready: list[Ready] = [(row, row.payload) for row in rows if row.payload is not None]
        ready += [(row, payloads[row.id]) for row in fresh if row.id in saved]
        ready += [(row, None) for row in fresh if outputs[row.id] is None]
        ready.sort(key=lambda item: item[0].id)
        return ready, dead

    async def _render(self, row: Claimed) -> bytes | RenderFailure | None:
        try:
            return await self.channel.render(row)
        except Exception as error:  # a bad event or an unsupported type/version: dead
            log.warning("outbox %s: %s %s cannot be rendered: %s",
                        self.channel.name, row.control_id, row.operation, error)  # fmt: skip
            return RenderFailure(f"cannot render: {type(error).__name__}: {error}")

    async def _send(self, ready: list[Ready]) -> list[Result]:
        """Send one by one; give the rest back when stopping or when the destination is
        unreachable."""
        results: list[Result] = []
        waiting = ready
        while waiting:
            if self._stopping:
                await self._give_back(waiting, None, "")
                break
            waiting = await self._keep_leases(waiting)
            if not waiting:
                break
            (row, payload), waiting = waiting[0], waiting[1:]
            attempt = await self.channel.send(row, payload)
            results.append(self._result(row, attempt))
            if attempt.unreachable:
                await self._give_back(waiting, results[-1].next_attempt_at, attempt.error)
                break
        return results

    async def _keep_leases(self, waiting: list[Ready]) -> list[Ready]:
        """Renew the claims when the lease could run out during the next attempt; the rows
        still held (another process took over an expired one)."""
        now = utcnow()
        margin = timedelta(seconds=self.channel.attempt_timeout + 1.0)
        if waiting[0][0].claimed_until - now > margin:  # one claim: one lease for all
            return waiting
        ids = [row.id for row, _ in waiting]
        lease = self._settings.lease
        held = await _blocking(self._ledger.renew, ids, worker=self._worker, now=now, lease=lease)
        until = now + timedelta(seconds=lease)
        return [
            (replace(row, claimed_until=until), data) for row, data in waiting if row.id in held
        ]

    def _result(self, row: Claimed, attempt: Attempt) -> Result:
        attempts = row.attempts + 1
        log.info("outbox %s: %s %s attempt %d: %s%s", self.channel.name, row.control_id,
                 row.operation, attempts, attempt.outcome,
                 f" ({attempt.error})" if attempt.error else "")  # fmt: skip
        if attempt.outcome is not Outcome.RETRY:
            return Result(id=row.id, outcome=attempt.outcome, error=attempt.error, ack=attempt.ack)
        due = utcnow() + timedelta(seconds=retry_delay(attempts, self._settings))
        self._retry_at = due if self._retry_at is None else min(self._retry_at, due)
        return Result(
            id=row.id, outcome=Outcome.RETRY, error=attempt.error, ack=attempt.ack,
            next_attempt_at=due,
        )  # fmt: skip

    async def _give_back(self, waiting: list[Ready], due: datetime | None, reason: str) -> None:
        if not waiting:
            return
        ids = [row.id for row, _ in waiting]
        await _blocking(
            self._ledger.release, ids, worker=self._worker, not_before=due, reason=reason
        )
        if due is not None:
            self._retry_at = due if self._retry_at is None else min(self._retry_at, due)


async def _blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A store call in a thread: the event loop never waits for the database."""
    return await asyncio.to_thread(function, *args, **kwargs)


# --- the sender --------------------------------------------------------------------------------


class OutboundSender:
    """Every destination's worker on one event loop; :meth:`wake` from any thread."""

    def __init__(
        self,
        channels: Sequence[Channel],
        ledger: OutboxLedger,
        settings: OutboxConfig,
        *,
        worker: str | None = None,
    ) -> None:
        self.worker = worker or new_worker_id()
        self._workers = [DestinationWorker(c, ledger, settings, self.worker) for c in channels]
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, config: Config, ledger: OutboxLedger) -> OutboundSender:
        """Channels for the enabled ``[[outbound]]`` receivers and the ``[[mpps_forward]]``
        peers."""
        origin = f"{config.hl7.application}^{config.hl7.facility}"
        channels: list[Channel] = [
            Hl7Channel(receiver, origin=origin) for receiver in config.outbound if receiver.enabled
        ]
        channels += [
            DicomChannel(peer, calling_ae=config.dicom.ae_title) for peer in config.mpps_forward
        ]
        return cls(channels, ledger, config.outbox)

    @property
    def destinations(self) -> list[str]:
        return [worker.channel.name for worker in self._workers]

    async def start(self) -> None:
        """Start one task per destination and look for due rows at once."""
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(w.run(), name=f"outbox-{w.channel.name}") for w in self._workers
        ]
        self._wake_all()
        log.info("outbox sender %s for %s", self.worker, ", ".join(self.destinations) or "-")
        for worker in self._workers:
            worker.check_lease()

    def wake(self) -> None:
        """Look for due rows now; safe from any thread (the MPPS service's, the scheduler's)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile: the poll after start
            loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for worker in self._workers:
            worker.wake()

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Let sends in flight finish for ``grace`` seconds, give unsent claims back; a send
        still running then is cancelled and its row stays claimed until the lease expires."""
        for worker in self._workers:
            worker.stop()
        if self._tasks:
            _done, running = await asyncio.wait(self._tasks, timeout=grace)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        for worker in self._workers:
            await worker.channel.close()
        self._tasks = []
        self._loop = None
