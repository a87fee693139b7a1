"""The MLLP listener's message handler: parse in worker processes, commit in store threads.

hl7apy costs ~9 ms of CPU per whole message and holds the GIL (pitfalls.md), so decoding and
mapping (:func:`mwl.inbound.prepare`, pure) run in a process pool; the unit of work
(:meth:`mwl.inbound.InboundProcessor.process`) runs in a thread pool sized for the database
(one writer thread for SQLite, ``pool_size`` for PostgreSQL). Messages of one connection stay
in order because the listener awaits each ACK before it reads the next frame.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

from hl7.server import PeerInfo
from mwl.inbound import InboundProcessor, Prepared, oversize, prepare
from mwl.policy import MappingPolicy

log = logging.getLogger(__name__)


def _warm_up(policy: MappingPolicy) -> bool:
    """Import and exercise the parser once so the first real message pays no start-up cost."""
    prepare(b"MSH|^~\\&|||||||ADT^A08|warmup|P|2.5\rPID|||1\r", policy)
    return True


@dataclass
class IntakeHandler:
    """Implements :class:`hl7.server.MessageHandler` for order and ADT intake."""

    processor: InboundProcessor
    policy: MappingPolicy
    store_executor: Executor
    parse_executor: Executor | None
    max_frame_size: int

    async def handle(self, payload: bytes, peer: PeerInfo) -> bytes:
        loop = asyncio.get_running_loop()
        prepared: Prepared = await loop.run_in_executor(
            self.parse_executor or self.store_executor, prepare, payload, self.policy
        )
        return await self._process(prepared, payload, peer)

    async def oversize(self, head: bytes, size: int, peer: PeerInfo) -> bytes | None:
        log.warning("oversize frame of %d bytes from %s:%s refused", size, peer.host, peer.port)
        return await self._process(oversize(head, size, self.max_frame_size), head, peer)

    async def _process(self, prepared: Prepared, raw: bytes, peer: PeerInfo) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.store_executor, self.processor.process, prepared, raw, f"{peer.host}:{peer.port}"
        )


def start_parse_pool(workers: int, policy: MappingPolicy) -> ProcessPoolExecutor | None:
    """A warmed-up pool of ``workers`` processes (forkserver: no threads are forked)."""
    if workers <= 0:
        return None
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    for future in [pool.submit(_warm_up, policy) for _ in range(workers)]:
        future.result()
    return pool


def start_store_pool(is_sqlite: bool, pool_size: int) -> ThreadPoolExecutor:
    """SQLite takes one writer at a time: one thread avoids lock waits; PostgreSQL takes
    ``pool_size`` concurrent transactions."""
    workers = 1 if is_sqlite else max(1, pool_size)
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store")
