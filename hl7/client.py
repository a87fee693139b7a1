"""MLLP senders: one framed message out, the next whole block back (standards.md §2.5).

:class:`MLLPClient` (blocking sockets, for operator tools and worker threads) and
:class:`AsyncMLLPClient` (asyncio) share one behaviour:

- one persistent connection, opened lazily on the first :meth:`send` and reopened after it
  was lost; ``TCP_NODELAY`` is set (Nagle adds ~40 ms per exchange, pitfalls.md);
- the reply is read with :class:`hl7.mllp.FrameDecoder`, so an ACK split over many reads or
  followed by other bytes is handled;
- failures raise the :class:`hl7.errors.TransportError` tree and drop the connection, so a
  late ACK can never be taken for the answer to the next message. The caller decides about
  resending (MLLP delivery is at-least-once).

Neither client retries by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Self

from hl7.errors import (
    AckTimeout,
    ConnectFailed,
    ConnectionClosed,
    ConnectTimeout,
    OversizeAck,
)
from hl7.mllp import Discarded, Event, Frame, FrameDecoder, Oversize, frame

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 16


class MLLPClient:
    """Blocking MLLP sender over one persistent TCP connection.

    Parameters
    ----------
    host, port
        The MLLP receiver.
    connect_timeout
        Seconds allowed to open the connection (:class:`~hl7.errors.ConnectTimeout`).
    ack_timeout
        Seconds allowed from sending a message to its complete ACK
        (:class:`~hl7.errors.AckTimeout`).
    max_frame_size
        Largest ACK payload accepted (:class:`~hl7.errors.OversizeAck` beyond it).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 10.0,
        ack_timeout: float = 30.0,
        max_frame_size: int = 1 << 20,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self._decoder = FrameDecoder(max_frame_size)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, payload: bytes) -> bytes:
        """Send one message and return the payload of the next block received (its ACK)."""
        with self._lock:
            sock = self._connection()
            try:
                return self._exchange(sock, payload)
            except BaseException:
                self._drop()
                raise

    def close(self) -> None:
        """Close the connection (a later :meth:`send` opens a new one)."""
        with self._lock:
            self._drop()

    def _connection(self) -> socket.socket:
        if self._sock is not None and _peer_gone(self._sock):
            logger.debug("MLLP connection to %s:%d closed by the peer; reopening", *self._addr)
            self._drop()
        if self._sock is None:
            self._sock = self._connect()
        return self._sock

    @property
    def _addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection(self._addr, timeout=self.connect_timeout)
        except TimeoutError as exc:
            raise ConnectTimeout(f"connect to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder.reset()
        logger.debug("MLLP connected to %s:%d", *self._addr)
        return sock

    def _exchange(self, sock: socket.socket, payload: bytes) -> bytes:
        deadline = time.monotonic() + self.ack_timeout
        try:
            sock.settimeout(self.ack_timeout)
            sock.sendall(frame(payload))
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 1e-3))
                data = sock.recv(_READ_SIZE)
                if not data:
                    raise ConnectionClosed(f"{self.host}:{self.port} closed before the ACK")
                ack = _reply(self._decoder.feed(data), self._decoder)
                if ack is not None:
                    return ack
        except TimeoutError as exc:
            raise AckTimeout(f"no ACK from {self.host}:{self.port} in {self.ack_timeout}s") from exc
        except OSError as exc:
            raise ConnectionClosed(f"connection to {self.host}:{self.port} lost: {exc}") from exc

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._decoder.reset()


class AsyncMLLPClient:
    """Asyncio MLLP sender over one persistent TCP connection; same contract as
    :class:`MLLPClient`. Concurrent :meth:`send` calls are serialised.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 10.0,
        ack_timeout: float = 30.0,
        max_frame_size: int = 1 << 20,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self._decoder = FrameDecoder(max_frame_size)
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, payload: bytes) -> bytes:
        """Send one message and return the payload of the next block received (its ACK)."""
        async with self._lock:
            reader, writer = await self._connection()
            try:
                async with asyncio.timeout(self.ack_timeout):
                    return await self._exchange(reader, writer, payload)
            except TimeoutError as exc:
                self._drop()
                raise AckTimeout(
                    f"no ACK from {self.host}:{self.port} in {self.ack_timeout}s"
                ) from exc
            except BaseException:
                self._drop()
                raise

    async def close(self) -> None:
        """Close the connection (a later :meth:`send` opens a new one)."""
        async with self._lock:
            writer = self._drop()
            if writer is not None:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._stream is not None and (self._stream[0].at_eof() or self._stream[1].is_closing()):
            logger.debug("MLLP connection to %s:%d closed by the peer; reopening", *self._addr)
            self._drop()
        if self._stream is None:
            self._stream = await self._connect()
        return self._stream

    @property
    def _addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as exc:
            raise ConnectTimeout(f"connect to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: {exc}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder.reset()
        logger.debug("MLLP connected to %s:%d", *self._addr)
        return reader, writer

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
    ) -> bytes:
        try:
            writer.write(frame(payload))
            await writer.drain()
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    raise ConnectionClosed(f"{self.host}:{self.port} closed before the ACK")
                ack = _reply(self._decoder.feed(data), self._decoder)
                if ack is not None:
                    return ack
        except OSError as exc:
            raise ConnectionClosed(f"connection to {self.host}:{self.port} lost: {exc}") from exc

    def _drop(self) -> asyncio.StreamWriter | None:
        """Close the transport now; return its writer so :meth:`close` can await it."""
        if self._stream is None:
            return None
        writer = self._stream[1]
        self._stream = None
        self._decoder.reset()
        writer.close()
        return writer


def _reply(events: list[Event], decoder: FrameDecoder) -> bytes | None:
    """The ACK among freshly decoded events, or None to keep reading.

    Stray bytes are logged and skipped. Anything after the ACK (another block, a partial
    block) cannot belong to this exchange: it is dropped and the decoder reset.
    """
    for index, event in enumerate(events):
        match event:
            case Discarded(data):
                logger.warning("MLLP %d stray bytes before the ACK discarded", len(data))
            case Oversize(_, size):
                raise OversizeAck(f"ACK block of {size} bytes exceeds max_frame_size")
            case Frame(payload):
                _drop_trailing(events[index + 1 :], decoder)
                return payload
    return None


def _drop_trailing(events: list[Event], decoder: FrameDecoder) -> None:
    if events or decoder.pending:
        logger.warning("MLLP unexpected data after the ACK dropped (%d events)", len(events))
        decoder.reset()


def _peer_gone(sock: socket.socket) -> bool:
    """True when an idle connection was closed by the peer or holds unsolicited bytes.

    Checked before reusing a connection, so that a receiver's idle timeout does not turn
    the next send into a :class:`~hl7.errors.ConnectionClosed`.
    """
    try:
        sock.setblocking(False)
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True
