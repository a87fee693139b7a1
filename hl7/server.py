"""Asyncio MLLP listener: frames in, handler, framed ACKs out (standards.md §2.5).

The listener knows nothing of orders: a :class:`MessageHandler` turns each payload into an
ACK payload. Connections are persistent and carry many messages; the messages of one
connection are handled strictly in order (handle, write the ACK, drain, then the next),
while connections run concurrently. Nothing a peer does (garbage, oversize blocks, resets,
vanishing mid-frame) stops the listener or touches other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Protocol

from hl7.mllp import Discarded, Event, Frame, FrameDecoder, Oversize, frame

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 16
_MIN_BACKLOG = 128


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """The remote end of one MLLP connection."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class MessageHandler(Protocol):
    """What the listener calls for each block (the port to the message layer)."""

    async def handle(self, payload: bytes, peer: PeerInfo) -> bytes:
        """Return the ACK payload (unframed) for one message; must not raise."""
        ...

    async def oversize(self, head: bytes, size: int, peer: PeerInfo) -> bytes | None:
        """Return an ACK for a skipped oversize block (from its first bytes), or None."""
        ...


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Listener configuration; every value is checked at construction, naming its key.

    Attributes
    ----------
    host, port
        Where to listen; port 0 lets the OS pick (see :attr:`MLLPServer.port`).
    max_frame_size
        Largest message accepted; longer blocks go to :meth:`MessageHandler.oversize`.
    idle_timeout
        Seconds without a byte from the peer (and no message in flight) before the
        connection is closed; a partial block does not keep a connection open.
    max_connections
        Connections over this number are accepted and closed at once, with a warning.
    """

    host: str = "127.0.0.1"
    port: int = 2575
    max_frame_size: int = 1 << 20
    idle_timeout: float = 300.0
    max_connections: int = 200

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        for key in ("max_frame_size", "idle_timeout", "max_connections"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")


@dataclass(eq=False)
class _Connection:
    peer: PeerInfo
    writer: asyncio.StreamWriter
    busy: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class MLLPServer:
    """MLLP listener serving one :class:`MessageHandler`.

    Parameters
    ----------
    handler
        Called for every complete or oversize block.
    settings
        Address, limits and timeouts.
    """

    def __init__(self, handler: MessageHandler, settings: ServerSettings) -> None:
        self._handler = handler
        self._settings = settings
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self._closed = asyncio.Event()

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when the settings say 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("MLLPServer is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Number of open connections."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("MLLPServer already started")
        self._server = await asyncio.start_server(
            self._accept,
            self._settings.host,
            self._settings.port,
            backlog=max(_MIN_BACKLOG, self._settings.max_connections),
        )
        logger.info("MLLP listening on %s:%d", self._settings.host, self.port)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, finish messages in flight, then close every connection.

        A message whose handler is running gets its ACK written before its connection
        closes; idle connections close at once. Connections still busy after ``grace``
        seconds are cancelled.
        """
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        tasks = [c.task for c in self._connections if c.task is not None]
        for conn in self._connections:
            if not conn.busy and conn.task is not None:
                conn.task.cancel()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        logger.info("MLLP listener stopped")
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until :meth:`stop` has finished."""
        await self._closed.wait()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_of(writer)
        if self._stopping:
            logger.debug("MLLP connection from %s refused: stopping", peer)
            writer.close()
            return
        if len(self._connections) >= self._settings.max_connections:
            logger.warning(
                "MLLP connection from %s refused: max_connections=%d reached",
                peer,
                self._settings.max_connections,
            )
            writer.close()
            return
        _set_nodelay(writer)
        conn = _Connection(peer, writer)
        self._connections.add(conn)
        conn.task = asyncio.create_task(self._run(conn, reader), name=f"mllp {peer}")
        logger.debug("MLLP connection from %s", peer)

    async def _run(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        try:
            await self._serve(conn, reader)
        except Exception:
            # Only the handler can raise here (socket errors are caught where they happen);
            # the traceback is logged, the payload is not.
            logger.exception("MLLP handler failed on a message from %s; closing it", conn.peer)
        finally:
            self._connections.discard(conn)
            conn.writer.close()
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()
            logger.debug("MLLP connection from %s closed", conn.peer)

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(self._settings.max_frame_size)
        while not self._stopping:
            data = await self._read(conn, reader)
            if not data:
                return
            conn.busy = True
            for event in decoder.feed(data):
                if self._stopping or not await self._dispatch(conn, event):
                    return
            conn.busy = False

    async def _read(self, conn: _Connection, reader: asyncio.StreamReader) -> bytes:
        """Next bytes from the peer; empty on EOF, reset or idle timeout."""
        try:
            async with asyncio.timeout(self._settings.idle_timeout):
                return await reader.read(_READ_SIZE)
        except TimeoutError:
            logger.debug("MLLP connection from %s idle; closing it", conn.peer)
        except OSError as exc:
            logger.debug("MLLP connection from %s lost: %s", conn.peer, exc)
        return b""

    async def _dispatch(self, conn: _Connection, event: Event) -> bool:
        """Answer one event; False when the connection must close (handler errors propagate)."""
        match event:
            case Frame(payload):
                return await self._write(conn, await self._handler.handle(payload, conn.peer))
            case Oversize(head, size):
                logger.warning(
                    "MLLP oversize block from %s: %d bytes (max_frame_size=%d) skipped",
                    conn.peer,
                    size,
                    self._settings.max_frame_size,
                )
                ack = await self._handler.oversize(head, size, conn.peer)
                return ack is None or await self._write(conn, ack)
            case Discarded(data):
                logger.warning("MLLP %d stray bytes from %s discarded", len(data), conn.peer)
        return True

    async def _write(self, conn: _Connection, ack: bytes) -> bool:
        try:
            conn.writer.write(frame(ack))
            await conn.writer.drain()
        except OSError as exc:
            logger.debug("MLLP ACK to %s not delivered: %s", conn.peer, exc)
            return False
        return True


def _peer_of(writer: asyncio.StreamWriter) -> PeerInfo:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return PeerInfo(host=str(address[0]), port=int(address[1]))
    return PeerInfo(host=str(address), port=0)


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Small request/response exchanges stall ~40 ms under Nagle (pitfalls.md, pynetdicom)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
