"""Scheduled jobs: one APScheduler ``AsyncIOScheduler`` per broker process, jobs in memory.

==================  ========================  ================================================
job                 every                     does
==================  ========================  ================================================
``outbox-poll``     ``outbox.poll_interval``  :meth:`broker.outbound.OutboundSender.wake`: rows
                                              of other processes, expired leases, due retries
``housekeeping``    ``retention.              :class:`broker.housekeeping.Housekeeping` in a
                    interval_minutes``        thread (first run :data:`HOUSEKEEPING_DELAY` s
                                              after start)
==================  ========================  ================================================

Several broker processes each run their own scheduler (a shared persistent job store would
run jobs once per process and miss jobs added later, pitfalls.md); whatever must happen once
is coordinated in the database: outbox rows by claims, housekeeping by an advisory lock.
Every job has ``coalesce=True``, ``max_instances=1`` and a ``misfire_grace_time``: a run that
is late (a busy loop, a suspended VM) happens once, and never twice at the same time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

# APScheduler 3 ships no type information.
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from broker.config import OutboxConfig, RetentionConfig
from broker.housekeeping import Housekeeping, HousekeepingReport
from mwl.ports import StoreFailure

log = logging.getLogger(__name__)

HOUSEKEEPING_DELAY = 60.0
"""Seconds from start to the first housekeeping run (start-up stays quick)."""
HOUSEKEEPING_GRACE = 600
"""A housekeeping run that missed its time by more than this waits for the next one."""
STOP_WAIT_SECONDS = 30.0


class Jobs:
    """The broker's scheduler: :meth:`start` on the broker's loop, :meth:`stop` first at stop.

    Parameters
    ----------
    poll
        Called every ``outbox.poll_interval`` (thread-safe; the sender's ``wake``), or None.
    housekeeping
        The retention rules, or None for no housekeeping job.
    """

    def __init__(
        self,
        *,
        outbox: OutboxConfig,
        retention: RetentionConfig,
        poll: Callable[[], None] | None = None,
        housekeeping: Housekeeping | None = None,
    ) -> None:
        self._outbox = outbox
        self._retention = retention
        self._poll = poll
        self._housekeeping = housekeeping
        self._scheduler: AsyncIOScheduler | None = None
        self._running: asyncio.Future[HousekeepingReport | None] | None = None

    def start(self) -> None:
        """Start the scheduler on the running event loop."""
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # INFO: two lines per run
        scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(),
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        if self._poll is not None:
            scheduler.add_job(
                self._poll,
                IntervalTrigger(seconds=self._outbox.poll_interval),
                id="outbox-poll",
                misfire_grace_time=max(1, round(self._outbox.poll_interval)),
            )
        if self._housekeeping is not None:
            scheduler.add_job(
                self.housekeeping,
                IntervalTrigger(minutes=self._retention.interval_minutes),
                id="housekeeping",
                next_run_time=datetime.now(UTC) + timedelta(seconds=HOUSEKEEPING_DELAY),
                misfire_grace_time=HOUSEKEEPING_GRACE,
            )
        scheduler.start()
        self._scheduler = scheduler

    @property
    def job_ids(self) -> list[str]:
        return [] if self._scheduler is None else [j.id for j in self._scheduler.get_jobs()]

    async def housekeeping(self) -> HousekeepingReport | None:
        """One housekeeping run in a thread; None when skipped or failed (logged)."""
        if self._housekeeping is None:
            return None
        self._running = asyncio.ensure_future(
            asyncio.to_thread(self._housekeeping.run, datetime.now(UTC))
        )
        try:
            return await asyncio.shield(self._running)
        except StoreFailure as failure:
            log.warning("housekeeping failed: %s", failure)
            return None

    async def stop(self) -> None:
        """Stop scheduling; wait for a housekeeping run in progress (its thread cannot be
        interrupted, and the store closes after this)."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        running, self._running = self._running, None
        if running is not None and not running.done():
            await asyncio.wait([running], timeout=STOP_WAIT_SECONDS)
