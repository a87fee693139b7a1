"""Builds the broker from its configuration, runs it, and stops it cleanly.

``serve`` runs until SIGTERM or SIGINT; then the listeners stop accepting, every message
already being handled is finished and acknowledged, open DICOM associations get a grace
period to finish, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import Executor

from broker.config import Config
from broker.dicom import DicomServer
from broker.hl7_listener import IntakeHandler, start_parse_pool, start_store_pool
from broker.housekeeping import Housekeeping
from broker.jobs import Jobs
from broker.mpps_service import build_mpps_service
from broker.outbound import OutboundSender
from broker.store import Store, migrate
from broker.store.migrate import pending_upgrade
from broker.store.outbox import OutboxLedger
from broker.web import WebContext, WebServer, create_app
from hl7.server import MLLPServer, ServerSettings
from mwl.inbound import AckIdentity, InboundProcessor
from mwl.intake import Intake
from mwl.ports import StoreFailure

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The broker cannot start (schema not migrated, a port taken, store unreachable)."""


STOP_GRACE_SECONDS = 10.0


class Broker:
    """The running broker: store, HL7 listener and the pools behind it, DICOM listener,
    outbox sender and scheduled jobs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store: Store | None = None
        self.mllp: MLLPServer | None = None
        self.dicom: DicomServer | None = None
        self.sender: OutboundSender | None = None
        self.jobs: Jobs | None = None
        self.http: WebServer | None = None
        self._executors: list[Executor] = []

    def outbox_wake(self) -> None:
        """Deliver newly committed outbox rows now; thread-safe (the MPPS ``on_commit``)."""
        if self.sender is not None:
            self.sender.wake()

    @property
    def hl7_port(self) -> int:
        assert self.mllp is not None, "the broker is not started"
        return self.mllp.port

    @property
    def dicom_port(self) -> int:
        assert self.dicom is not None, "the broker is not started"
        return self.dicom.port

    @property
    def http_port(self) -> int:
        assert self.http is not None, "the broker is not started"
        return self.http.port

    async def start(self) -> None:
        config = self.config
        if config.database.url.startswith("sqlite"):
            migrate(config.database)  # the embedded default needs no separate step
        elif (reason := pending_upgrade(config.database)) is not None:
            raise StartupError(f"{reason}: run `mwl-broker migrate` first")
        self.store = Store.open(config.database)
        store_pool = start_store_pool(config.database.url.startswith("sqlite"),
                                      config.database.pool_size)  # fmt: skip
        parse_pool = start_parse_pool(
            config.hl7.parse_process_count(os.cpu_count()), config.mapping
        )
        self._executors = [e for e in (parse_pool, store_pool) if e is not None]
        await self._start_delivery(self.store)
        processor = InboundProcessor(
            self.store.unit_of_work,
            Intake(config.mapping),
            AckIdentity(application=config.hl7.application, facility=config.hl7.facility),
        )
        handler = IntakeHandler(
            processor, config.mapping, store_pool, parse_pool, config.hl7.max_frame_size
        )
        self.mllp = MLLPServer(handler, _server_settings(config))
        await self.mllp.start()
        log.info("HL7 MLLP listener on %s:%d", config.hl7.host, self.mllp.port)
        mpps = build_mpps_service(config, self.store.mpps_unit_of_work, self.outbox_wake)
        self.dicom = DicomServer(config.dicom, self.store.finder(), config.worklist, mpps)
        self.dicom.start()
        log.info("DICOM listener on %s:%d as AE %s", config.dicom.host, self.dicom.port,
                 config.dicom.ae_title)  # fmt: skip
        web = WebContext(config=config, store=self.store, mllp=self.mllp, dicom=self.dicom)
        self.http = WebServer(config.http, create_app(web))
        await self.http.start()

    async def _start_delivery(self, store: Store) -> None:
        """The outbox sender and the scheduled jobs."""
        self.sender = OutboundSender.from_config(self.config, OutboxLedger(store.engine))
        await self.sender.start()
        housekeeping = Housekeeping(store.engine, self.config.retention)
        self.jobs = Jobs(outbox=self.config.outbox, retention=self.config.retention,
                         poll=self.sender.wake, housekeeping=housekeeping)  # fmt: skip
        self.jobs.start()

    async def _stop_delivery(self) -> None:
        """Jobs, then the sender: sends in flight finish, unsent claims go back."""
        if self.jobs is not None:
            await self.jobs.stop()
        if self.sender is not None:
            await self.sender.stop(STOP_GRACE_SECONDS)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        await self._stop_delivery()
        await asyncio.gather(self._stop_mllp(), self._stop_dicom())
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=False)
        if self.store is not None:
            self.store.close()
        log.info("stopped")

    async def _stop_mllp(self) -> None:
        if self.mllp is not None:
            await self.mllp.stop(STOP_GRACE_SECONDS)

    async def _stop_dicom(self) -> None:
        if self.dicom is not None:
            await asyncio.to_thread(self.dicom.stop, STOP_GRACE_SECONDS)


def _server_settings(config: Config) -> ServerSettings:
    hl7 = config.hl7
    return ServerSettings(
        host=hl7.host,
        port=hl7.port,
        max_frame_size=hl7.max_frame_size,
        idle_timeout=hl7.idle_timeout,
        max_connections=hl7.max_connections,
    )


async def run(config: Config, stop: asyncio.Event | None = None) -> None:
    """Start, wait for ``stop`` (set by SIGTERM/SIGINT when not given), stop."""
    stop = stop or _stop_on_signals()
    broker = Broker(config)
    try:
        await broker.start()
        await stop.wait()
    finally:
        await broker.stop()


def _stop_on_signals() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, event.set)
    return event


EXIT_CANNOT_START = 1


def serve(config: Config) -> int:
    """``mwl-broker serve``: run until SIGTERM/SIGINT; 0 after a clean stop, 1 when the broker
    cannot start (the reason is logged: a listener port taken, the database unreachable or
    not migrated)."""
    try:
        asyncio.run(run(config))
    except (StartupError, StoreFailure, OSError) as error:
        log.error("cannot start: %s", error)
        return EXIT_CANNOT_START
    return 0
