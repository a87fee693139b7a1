"""MLLP senders against raw loopback test servers (standards.md §2.5)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest

from hl7.client import AsyncMLLPClient, MLLPClient
from hl7.errors import (
    AckTimeout,
    ConnectFailed,
    ConnectionClosed,
    ConnectTimeout,
    OversizeAck,
    TransportError,
)
from hl7.mllp import Frame, FrameDecoder, frame

TIMEOUT = 3.0
MSG = b"MSH|^~\\&|SND|FAC|RCV|FAC|20240101||ORM^O01|CTRL1|P|2.3.1\rPID|1||123\r"
ACK = b"MSH|^~\\&|RCV|FAC|SND|FAC|20240101||ACK|A1|P|2.3.1\rMSA|AA|CTRL1\r"

Script = Callable[[socket.socket], None]


def read_frame(conn: socket.socket, decoder: FrameDecoder) -> bytes:
    """Blocking read of the next whole block on a test-server connection."""
    while True:
        data = conn.recv(65536)
        assert data, "client closed before sending a block"
        for event in decoder.feed(data):
            if isinstance(event, Frame):
                return event.payload


def nodelay(conn: socket.socket) -> socket.socket:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


@contextlib.contextmanager
def raw_server(*scripts: Script) -> Iterator[int]:
    """Listen on 127.0.0.1:0; run one script per accepted connection, in order, in a thread.

    Yields the port; on exit joins the thread and re-raises what a script raised.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            for script in scripts:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    script(nodelay(conn))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert not thread.is_alive(), "test server did not finish"
    if errors:
        raise errors[0]


def answer(*replies: bytes) -> Script:
    """A script that answers each block it receives with the next reply (sent as is)."""

    def script(conn: socket.socket) -> None:
        decoder = FrameDecoder()
        for reply in replies:
            read_frame(conn, decoder)
            conn.sendall(reply)

    return script


def answer_in_pieces(conn: socket.socket) -> None:
    read_frame(conn, FrameDecoder())
    framed = frame(ACK)
    for piece in (framed[:1], framed[1:20], framed[20:-1], framed[-1:]):
        conn.sendall(piece)  # TCP_NODELAY: separate segments, usually separate recv()s


def expect_close_after(reply: bytes) -> Script:
    """A script that reads one block, sends ``reply`` and expects the client to hang up."""

    def script(conn: socket.socket) -> None:
        read_frame(conn, FrameDecoder())
        conn.sendall(reply)
        assert conn.recv(1) == b""

    return script


@contextlib.contextmanager
def refused() -> Iterator[int]:
    """A port bound on loopback with no listener: connecting there is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# ----------------------------------------------------------------------------- sync client


def test_ack_split_across_several_sends() -> None:
    with raw_server(answer_in_pieces) as port, MLLPClient("127.0.0.1", port) as client:
        assert client.send(MSG) == ACK


def test_ack_followed_by_other_bytes(caplog: pytest.LogCaptureFixture) -> None:
    with (
        raw_server(answer(frame(ACK) + b"\n" + frame(b"EXTRA"))) as port,
        MLLPClient("127.0.0.1", port) as client,
    ):
        assert client.send(MSG) == ACK
    assert any("after the ACK" in r.getMessage() for r in caplog.records)


def test_ack_timeout_raises_and_drops_the_connection() -> None:
    with (
        raw_server(expect_close_after(b"")) as port,
        MLLPClient("127.0.0.1", port, ack_timeout=0.2) as client,
        pytest.raises(AckTimeout),
    ):
        client.send(MSG)


def test_connection_refused_raises() -> None:
    with refused() as port, MLLPClient("127.0.0.1", port) as client:
        with pytest.raises(ConnectFailed) as info:
            client.send(MSG)
        assert not isinstance(info.value, ConnectTimeout)
        assert isinstance(info.value, TransportError)


def test_peer_closing_before_the_ack_raises() -> None:
    def close_at_once(conn: socket.socket) -> None:
        read_frame(conn, FrameDecoder())

    with (
        raw_server(close_at_once) as port,
        MLLPClient("127.0.0.1", port) as client,
        pytest.raises(ConnectionClosed),
    ):
        client.send(MSG)


def test_one_connection_for_several_messages() -> None:
    replies = [frame(ACK.replace(b"CTRL1", f"C{i}".encode())) for i in range(3)]
    with raw_server(answer(*replies)) as port, MLLPClient("127.0.0.1", port) as client:
        for i in range(3):
            assert client.send(MSG).endswith(f"MSA|AA|C{i}\r".encode())


def test_reconnects_after_the_peer_closed_an_idle_connection() -> None:
    first_closed = threading.Event()

    def answer_then_close(conn: socket.socket) -> None:
        answer(frame(ACK))(conn)
        conn.shutdown(socket.SHUT_RDWR)
        first_closed.set()

    with (
        raw_server(answer_then_close, answer(frame(ACK))) as port,
        MLLPClient("127.0.0.1", port) as client,
    ):
        assert client.send(MSG) == ACK
        assert first_closed.wait(TIMEOUT)
        assert client.send(MSG) == ACK


def test_oversize_ack_raises() -> None:
    big = frame(b"MSA|AA|" + b"x" * 5000)
    with (
        raw_server(expect_close_after(big)) as port,
        MLLPClient("127.0.0.1", port, max_frame_size=1000) as client,
        pytest.raises(OversizeAck),
    ):
        client.send(MSG)


# ---------------------------------------------------------------------------- async client


def run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(10):
            await coro

    asyncio.run(bounded())


AsyncScript = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def async_raw_server(script: AsyncScript) -> AsyncIterator[tuple[int, list[int]]]:
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await script(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


async def async_read_frame(reader: asyncio.StreamReader, decoder: FrameDecoder) -> bytes | None:
    while True:
        data = await reader.read(65536)
        if not data:
            return None
        for event in decoder.feed(data):
            if isinstance(event, Frame):
                return event.payload


async def answer_every_block(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    decoder = FrameDecoder()
    count = 0
    while await async_read_frame(reader, decoder) is not None:
        count += 1
        framed = frame(ACK.replace(b"CTRL1", f"C{count}".encode()))
        for piece in (framed[:1], framed[1:20], framed[20:-1], framed[-1:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)  # one loop turn: the client reads each piece on its own


def test_async_ack_split_and_one_connection_reused() -> None:
    async def scenario() -> None:
        async with async_raw_server(answer_every_block) as (port, accepted):
            async with AsyncMLLPClient("127.0.0.1", port) as client:
                for i in range(1, 4):
                    ack = await client.send(MSG)
                    assert ack.endswith(f"MSA|AA|C{i}\r".encode())
            assert accepted == [1]

    run(scenario())


def test_async_ack_timeout_raises() -> None:
    async def scenario() -> None:
        async def never_answer(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
            decoder = FrameDecoder()
            assert await async_read_frame(reader, decoder) == MSG
            assert await async_read_frame(reader, decoder) is None  # client closed

        async with async_raw_server(never_answer) as (port, _):
            client = AsyncMLLPClient("127.0.0.1", port, ack_timeout=0.2)
            with pytest.raises(AckTimeout):
                await client.send(MSG)
            await client.close()

    run(scenario())


def test_async_connection_refused_raises() -> None:
    async def scenario() -> None:
        with refused() as port:
            async with AsyncMLLPClient("127.0.0.1", port) as client:
                with pytest.raises(ConnectFailed):
                    await client.send(MSG)

    run(scenario())


def test_async_peer_closing_before_the_ack_raises() -> None:
    async def scenario() -> None:
        async def close_at_once(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
            assert await async_read_frame(reader, FrameDecoder()) == MSG

        async with (
            async_raw_server(close_at_once) as (port, _),
            AsyncMLLPClient("127.0.0.1", port) as client,
        ):
            with pytest.raises(ConnectionClosed):
                await client.send(MSG)

    run(scenario())
