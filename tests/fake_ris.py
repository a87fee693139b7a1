"""A scripted fake RIS: an MLLP receiver on 127.0.0.1 that records every message it gets.

It runs an asyncio server on a thread of its own, so tests can drive it from any thread or
event loop. A *responder* decides the answer to each message:

- ``"AA"``, ``"AE"``, ``"AR"``: an ACK with that MSA-1 (AE with MSA-3 and an ERR segment);
- ``"silent"``: no answer (the sender's ACK timeout runs out);
- ``"close"``: the connection is closed without an answer.

:meth:`FakeRIS.down` stops listening and drops the open connections, :meth:`FakeRIS.up`
listens again on the same port. Waiting is on a condition with a timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from broker.mpps_service import new_control_id
from broker.store import Store
from hl7.codec import decode
from hl7.mllp import Frame, FrameDecoder, frame
from mpps.model import PPSStatus
from mpps.ports import OutboxEntry
from mpps.report import ORDER_STATUS, OrderContext
from mpps.scp import StatusDestination, status_event
from mwl.model import OrderNumber
from tests.mpps.datasets import completed, discontinued, in_progress

ACTIONS = frozenset({"AA", "AE", "AR", "silent", "close"})
AE_TEXT = "Unknown accession"


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the RIS got it."""

    control_id: str
    """MSH-10."""
    order_status: str
    """ORC-5 (IP, CM, DC)."""
    placer: str
    """ORC-2.1, the placer order number."""
    message_type: str
    attempt: int
    """1 the first time this control ID arrived, 2 the second, …"""
    raw: bytes
    received_at: float
    """``time.monotonic()`` when the whole message had arrived."""


Responder = Callable[[Received], str]


def always(action: str) -> Responder:
    return lambda _received: action


def first_then(first: str, then: str = "AA", times: int = 1) -> Responder:
    """``first`` to the first ``times`` arrivals of each control ID, ``then`` afterwards."""
    return lambda received: first if received.attempt <= times else then


def ack(received: Received, code: str) -> bytes:
    """An original-mode ACK (v2.3.1 shape) to ``received``."""
    msa = f"MSA|{code}|{received.control_id}"
    msh = "MSH|^~\\&|RIS|HOSP|MWLBROKER||20250101120000||ACK^O01"
    segments = [f"{msh}|A{received.control_id}|P|2.3.1"]
    if code == "AE":
        segments += [f"{msa}|{AE_TEXT}", "ERR|OBR^1^18^204&Unknown key identifier&HL70357"]
    else:
        segments.append(msa)
    return "\r".join(segments).encode()


# --- what the broker queues for the RIS --------------------------------------------------------

_PERFORMED = {
    PPSStatus.IN_PROGRESS: in_progress,
    PPSStatus.COMPLETED: completed,
    PPSStatus.DISCONTINUED: discontinued,
}


def status_entry(
    order: int,
    status: PPSStatus = PPSStatus.IN_PROGRESS,
    *,
    destination: str = "RIS",
    control_id: str | None = None,
) -> OutboxEntry:
    """The ``hl7`` outbox entry the MPPS service queues for order ``PL<order>``."""
    context = OrderContext(
        placer=OrderNumber(f"PL{order}", "RIS"),
        accession=f"ACC{order}",
        patient_id=f"PAT{order}",
        patient_name="Doe^John",
        ris_application="RIS",
        ris_facility="HOSP",
    )
    return OutboxEntry(
        destination=destination,
        kind="hl7",
        order_key=f"order:{order}",
        operation=ORDER_STATUS[status],
        control_id=control_id or new_control_id(),
        event=status_event(_PERFORMED[status](), context, StatusDestination(name=destination)),
    )


def queue(store: Store, *entries: OutboxEntry) -> list[int]:
    """Commit ``entries`` to the outbox as the MPPS service does; their row ids."""
    with store.mpps_unit_of_work() as uow:
        ids = [uow.outbox.add(entry) for entry in entries]
        uow.commit()
    return ids


class FakeRIS:
    """The fake RIS; use as a context manager or call :meth:`start` / :meth:`close`."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or always("AA")
        self.port = 0
        self._received: list[Received] = []
        self._seen: Counter[str] = Counter()
        self._condition = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-ris")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> FakeRIS:
        self._thread.start()
        self.up()
        return self

    def up(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        self._call(self._listen())

    def down(self) -> None:
        """Stop listening and close every open connection: the RIS is unreachable."""
        self._call(self._shut())

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FakeRIS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _shut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if server is not None:
            await server.wait_closed()

    # --- what arrived ----------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        with self._condition:
            return list(self._received)

    def counts(self) -> Counter[str]:
        """How many times each control ID arrived."""
        with self._condition:
            return Counter(self._seen)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float) -> bool:
        """Block until ``predicate(received)`` holds; False after ``timeout`` seconds."""
        with self._condition:
            return self._condition.wait_for(lambda: predicate(self._received), timeout)

    def wait_for_count(self, count: int, timeout: float) -> bool:
        """Block until ``count`` messages (with repeats) arrived."""
        return self.wait_for(lambda received: len(received) >= count, timeout)

    def wait_for_distinct(self, count: int, timeout: float) -> bool:
        """Block until ``count`` different control IDs arrived."""
        return self.wait_for(lambda got: len({r.control_id for r in got}) >= count, timeout)

    # --- the connection --------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        decoder = FrameDecoder(1 << 20)
        try:
            while data := await reader.read(65536):
                for event in decoder.feed(data):
                    if isinstance(event, Frame) and not await self._answer(event.payload, writer):
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, payload: bytes, writer: asyncio.StreamWriter) -> bool:
        """Record and answer one message; False when the connection is to be closed."""
        received = self._record(payload)
        action = self.responder(received)
        assert action in ACTIONS, action
        if action == "close":
            return False
        if action != "silent":
            writer.write(frame(ack(received, action)))
            await writer.drain()
        return True

    def _record(self, payload: bytes) -> Received:
        message = decode(payload)
        orc = message.first("ORC")
        with self._condition:
            control_id = message.header.control_id
            self._seen[control_id] += 1
            received = Received(
                control_id=control_id,
                order_status=orc.value(5) if orc else "",
                placer=orc.value(2) if orc else "",
                message_type=message.header.message_type,
                attempt=self._seen[control_id],
                raw=payload,
                received_at=time.monotonic(),
            )
            self._received.append(received)
            self._condition.notify_all()
        return received
