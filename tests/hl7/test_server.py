"""Asyncio MLLP listener on real loopback sockets (standards.md §2.5)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest

from hl7.mllp import Frame, FrameDecoder, frame
from hl7.server import MLLPServer, PeerInfo, ServerSettings

TIMEOUT = 3.0


def message(control_id: str, body: bytes = b"PID|1||123\r") -> bytes:
    header = f"MSH|^~\\&|SND|FAC|RCV|FAC|20240101||ORM^O01|{control_id}|P|2.3.1\r"
    return header.encode() + body


def control_id_of(payload: bytes) -> bytes:
    return payload.split(b"\r", 1)[0].split(b"|")[9]


def acked_id(ack: bytes) -> bytes:
    """MSA-2 of an ACK: the control ID it acknowledges."""
    return ack.split(b"\r")[1].split(b"|")[2]


def ack_for(payload: bytes, code: bytes = b"AA") -> bytes:
    return (
        b"MSH|^~\\&|RCV|FAC|SND|FAC|20240101||ACK|A|P|2.3.1\rMSA|"
        + code
        + b"|"
        + (control_id_of(payload) + b"\r")
    )


class EchoHandler:
    """Answers AA with MSA-2 = MSH-10; can block on, or fail for, chosen control IDs."""

    def __init__(self) -> None:
        self.handled: list[bytes] = []
        self.oversized: list[tuple[bytes, int]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def handle(self, payload: bytes, peer: PeerInfo) -> bytes:
        assert peer.host == "127.0.0.1"
        control_id = control_id_of(payload)
        if control_id.startswith(b"SLOW"):
            self.started.set()
            await self.release.wait()
        if control_id.startswith(b"BOOM"):
            raise RuntimeError("handler bug")
        self.handled.append(control_id)
        return ack_for(payload)

    async def oversize(self, head: bytes, size: int, peer: PeerInfo) -> bytes | None:
        self.oversized.append((head, size))
        return ack_for(head, b"AR")


class Peer:
    """A raw MLLP sender: writes arbitrary bytes, reads whole blocks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.frames: list[bytes] = []

    @classmethod
    async def connect(cls, port: int) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            while not self.frames:
                data = await self.reader.read(65536)
                assert data, "connection closed before a block arrived"
                self.frames += [e.payload for e in self.decoder.feed(data) if isinstance(e, Frame)]
        return self.frames.pop(0)

    async def exchange(self, payload: bytes) -> bytes:
        await self.write(frame(payload))
        return await self.recv()

    async def wait_eof(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            while True:
                with contextlib.suppress(ConnectionResetError):
                    if not await self.reader.read(65536):
                        return
                    continue
                return

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(
    handler: EchoHandler, **settings: Any
) -> AsyncIterator[tuple[MLLPServer, Callable[[], Awaitable[Peer]]]]:
    server = MLLPServer(handler, ServerSettings(port=0, **settings))
    await server.start()
    peers: list[Peer] = []

    async def connect() -> Peer:
        peers.append(await Peer.connect(server.port))
        return peers[-1]

    try:
        yield server, connect
    finally:
        for peer in peers:
            await peer.close()
        await server.stop(grace=1.0)


def run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(10):
            await coro

    asyncio.run(bounded())


def test_port_zero_binds_a_free_port() -> None:
    async def scenario() -> None:
        async with serving(EchoHandler()) as (server, connect):
            assert server.port > 0
            peer = await connect()
            assert acked_id(await peer.exchange(message("1"))) == b"1"

    run(scenario())


def test_message_in_three_writes() -> None:
    async def scenario() -> None:
        async with serving(EchoHandler()) as (_, connect):
            peer = await connect()
            data = frame(message("SPLIT"))
            await peer.write(data[:10])
            await peer.write(data[10:-1])
            await peer.write(data[-1:])
            assert await peer.recv() == ack_for(message("SPLIT"))

    run(scenario())


def test_hundred_messages_on_one_connection_in_order() -> None:
    async def scenario() -> None:
        handler = EchoHandler()
        async with serving(handler) as (server, connect):
            peer = await connect()
            ids = [f"M{i:03d}".encode() for i in range(100)]
            await peer.write(b"".join(frame(message(i.decode())) for i in ids))
            acks = [await peer.recv() for _ in ids]
            assert [acked_id(ack) for ack in acks] == ids
            assert handler.handled == ids
            assert server.connections == 1

    run(scenario())


def test_twenty_connections_at_once() -> None:
    async def scenario() -> None:
        async with serving(EchoHandler()) as (server, connect):
            peers = [await connect() for _ in range(20)]

            async def talk(n: int, peer: Peer) -> list[bytes]:
                return [acked_id(await peer.exchange(message(f"C{n}-{i}"))) for i in range(5)]

            results = await asyncio.gather(*(talk(n, p) for n, p in enumerate(peers)))
            for n, ids in enumerate(results):
                assert ids == [f"C{n}-{i}".encode() for i in range(5)]
            assert server.connections == 20

    run(scenario())


def test_garbage_before_a_frame_is_logged_by_count_and_the_frame_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with serving(EchoHandler()) as (_, connect):
            peer = await connect()
            await peer.write(b"SECRET-GARBAGE\r\n" + frame(message("G1")))
            assert acked_id(await peer.recv()) == b"G1"

    with caplog.at_level(logging.DEBUG, logger="hl7.server"):
        run(scenario())
    assert any("16 stray bytes" in r.getMessage() for r in caplog.records)
    assert "SECRET" not in caplog.text


def test_garbage_only_connection_then_a_normal_one() -> None:
    async def scenario() -> None:
        async with serving(EchoHandler()) as (_, connect):
            junk = await connect()
            await junk.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
            await junk.close()
            peer = await connect()
            assert acked_id(await peer.exchange(message("OK"))) == b"OK"

    run(scenario())


def test_oversize_frame_then_normal_frame_on_same_connection() -> None:
    async def scenario() -> None:
        handler = EchoHandler()
        async with serving(handler, max_frame_size=1000) as (_, connect):
            peer = await connect()
            big = message("BIG", body=b"OBX|" + b"x" * 5000 + b"\r")
            await peer.write(frame(big) + frame(message("SMALL")))
            assert await peer.recv() == ack_for(big, b"AR")
            assert acked_id(await peer.recv()) == b"SMALL"
            assert handler.oversized == [(big[:4096], len(big))]
            assert handler.handled == [b"SMALL"]

    run(scenario())


def test_peer_vanishing_mid_frame_leaves_others_served() -> None:
    async def scenario() -> None:
        async with serving(EchoHandler()) as (server, connect):
            other = await connect()
            assert acked_id(await other.exchange(message("BEFORE"))) == b"BEFORE"
            gone = await connect()
            await gone.write(frame(message("CUT"))[:20])
            gone.writer.transport.abort()  # RST, no FIN
            await gone.close()
            assert acked_id(await other.exchange(message("AFTER"))) == b"AFTER"
            fresh = await connect()
            assert acked_id(await fresh.exchange(message("NEW"))) == b"NEW"
            assert server.connections >= 2

    run(scenario())


def test_peer_vanishing_mid_handle_leaves_others_served() -> None:
    async def scenario() -> None:
        handler = EchoHandler()
        handler.release.clear()
        async with serving(handler) as (_, connect):
            gone = await connect()
            await gone.write(frame(message("SLOW1")))
            async with asyncio.timeout(TIMEOUT):
                await handler.started.wait()
            gone.writer.transport.abort()
            await gone.close()
            handler.release.set()
            peer = await connect()
            assert acked_id(await peer.exchange(message("NEXT"))) == b"NEXT"
            assert handler.handled == [b"SLOW1", b"NEXT"]

    run(scenario())


def test_idle_timeout_closes_a_silent_connection() -> None:
    async def scenario() -> None:
        async with serving(EchoHandler(), idle_timeout=0.2) as (_, connect):
            silent = await connect()
            half = await connect()
            await half.write(frame(message("HALF"))[:15])
            await silent.wait_eof()
            await half.wait_eof()
            busy = await connect()
            assert acked_id(await busy.exchange(message("ALIVE"))) == b"ALIVE"

    run(scenario())


def test_max_connections() -> None:
    async def scenario() -> None:
        async with serving(EchoHandler(), max_connections=2) as (server, connect):
            first, second = await connect(), await connect()
            assert acked_id(await first.exchange(message("1"))) == b"1"
            assert acked_id(await second.exchange(message("2"))) == b"2"
            third = await connect()
            await third.wait_eof()
            assert server.connections == 2
            assert acked_id(await first.exchange(message("3"))) == b"3"

    run(scenario())


def test_stop_lets_a_message_in_flight_finish() -> None:
    async def scenario() -> None:
        handler = EchoHandler()
        handler.release.clear()
        async with serving(handler) as (server, connect):
            idle = await connect()
            assert acked_id(await idle.exchange(message("IDLE"))) == b"IDLE"
            busy = await connect()
            await busy.write(frame(message("SLOW-STOP")))
            async with asyncio.timeout(TIMEOUT):
                await handler.started.wait()
            port = server.port
            stopping = asyncio.create_task(server.stop(grace=TIMEOUT))
            await idle.wait_eof()
            with pytest.raises(OSError):
                await Peer.connect(port)
            assert not stopping.done()
            handler.release.set()
            assert acked_id(await busy.recv()) == b"SLOW-STOP"
            await busy.wait_eof()
            async with asyncio.timeout(TIMEOUT):
                await stopping
                await server.wait_closed()
            assert server.connections == 0

    run(scenario())


def test_handler_raising_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(EchoHandler()) as (_, connect):
            good = await connect()
            bad = await connect()
            await bad.write(frame(message("BOOM", body=b"PID|1||SECRET-PATIENT\r")))
            await bad.wait_eof()
            assert acked_id(await good.exchange(message("FINE"))) == b"FINE"
            fresh = await connect()
            assert acked_id(await fresh.exchange(message("NEW"))) == b"NEW"

    run(scenario())
    assert any(r.exc_info and "handler failed" in r.getMessage() for r in caplog.records)
    assert "SECRET-PATIENT" not in caplog.text


def test_settings_name_the_bad_key() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        ServerSettings(idle_timeout=0)
    with pytest.raises(ValueError, match="max_connections"):
        ServerSettings(max_connections=0)
