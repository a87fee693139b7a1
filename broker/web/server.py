"""The HTTP listener: uvicorn inside the broker's own asyncio loop.

:class:`WebServer` binds ``[http] host/port`` itself (port 0: the OS chooses), then runs uvicorn's
``serve`` as a task of the running loop. When the address cannot be bound (the port is taken)
the broker logs an ERROR and runs on without the console: HL7 and DICOM, the broker's job, are
not held hostage by it (uvicorn alone would exit the process); ``/health`` is then
unreachable, which is what a monitor notices. Signals stay the broker's: uvicorn's
``capture_signals`` is switched off, so SIGTERM stops the whole broker through
:func:`broker.app.run`, which stops this server first. Request handlers that touch the
database are plain functions, run by Starlette in its thread pool, so a slow query never
holds up the MLLP listener sharing the loop. No access log: URLs carry patient IDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from broker.config import HttpConfig

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0
_START_POLL_SECONDS = 0.01


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling (the broker owns SIGTERM and SIGINT)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """Start and stop the console and API on ``[http] host/port``."""

    def __init__(self, config: HttpConfig, app: FastAPI) -> None:
        self._config = config
        self._app = app
        self._socket: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when configured as 0)."""
        if self._socket is None:
            raise RuntimeError("the HTTP listener is not started")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind, start serving, and return once uvicorn accepts connections."""
        host, port = self._config.host, self._config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._socket = socket.create_server((host, port), family=family)
        except OSError as error:
            log.error("HTTP console NOT started on %s:%d: %s", host, port, error.strerror)
            return
        settings = uvicorn.Config(
            self._app, log_config=None, access_log=False, lifespan="off", server_header=False,
            timeout_graceful_shutdown=int(STOP_GRACE_SECONDS), ws="none",
        )  # fmt: skip
        self._server = _EmbeddedServer(settings)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the HTTP listener stopped while starting")
            await asyncio.sleep(_START_POLL_SECONDS)
        log.info("HTTP console on http://%s:%d", host, self.port)

    async def stop(self) -> None:
        """Stop accepting, let requests in progress finish (a few seconds at most)."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(self._task, STOP_GRACE_SECONDS * 2)
            except TimeoutError:
                log.warning("HTTP listener did not stop in time")
        if self._socket is not None:
            self._socket.close()
        self._socket, self._server, self._task = None, None, None
