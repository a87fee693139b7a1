"""The whole intake over real sockets: MLLP listener → parse → map → commit → ACK.

In-process brokers on 127.0.0.1 port 0 with a real SQLite file (one of them with the parse
worker processes), and the real ``mwl-broker serve`` / ``mwl-broker send`` commands as
subprocesses, stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from broker.app import Broker
from broker.config import Config, DatabaseConfig, DicomConfig, HL7Config, HttpConfig
from broker.store import Store
from hl7.ack import read_ack
from hl7.client import AsyncMLLPClient
from hl7.mllp import frame
from tests.orders import order

DATA = Path(__file__).parent.parent / "data" / "hl7"
TIMEOUT = 20.0
ZDS = "ZDS|1.2.3.4.5^100^Application^DICOM"


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), TIMEOUT * 3))


def config_for(tmp_path: Path, *, parse_workers: int = -1, **hl7: Any) -> Config:
    return Config(
        database=DatabaseConfig(url=f"sqlite:///{tmp_path / 'broker.db'}"),
        hl7=HL7Config(port=0, parse_workers=parse_workers, **hl7),
        dicom=DicomConfig(port=0),
        http=HttpConfig(port=0),
    )


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Broker]:
    broker = Broker(config)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


def stored_steps(config: Config) -> list[tuple[str, str]]:
    with Store.open(config.database) as store:
        return [(item.patient_key.patient_id, item.sps_id) for item in store.worklist_items()]


def test_samples_over_one_connection_are_all_answered(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    samples = sorted(DATA.glob("*.hl7"))

    async def scenario() -> None:
        async with (
            running(config) as broker,
            AsyncMLLPClient("127.0.0.1", broker.hl7_port) as client,
        ):
            for path in samples:
                reply = read_ack(await client.send(path.read_bytes()))
                assert reply.code in {"AA", "AE"}, path.name
                assert reply.control_id, path.name

    run(scenario)
    patients = {patient for patient, _ in stored_steps(config)}
    # every order sample that is a new order lands (03 is refused: its AE title is too long;
    # 11 is a status update of an order the broker never had)
    assert patients >= {"583295", "4711471151", "PID_1", "1234567", "5343197", "3951-1"}


def test_parse_workers_hundred_messages_one_connection_in_order(tmp_path: Path) -> None:
    config = config_for(tmp_path, parse_workers=2)

    async def scenario() -> None:
        async with (
            running(config) as broker,
            AsyncMLLPClient("127.0.0.1", broker.hl7_port) as client,
        ):
            for n in range(100):
                raw = order(
                    orc=f"NW|P{n}^RIS|F{n}^RIS||SC||^^^202611261030",
                    obr=f"OBR|1|P{n}^RIS|F{n}^RIS|CT^CT^L||||||||||||||A{n}|R{n}|S{n}||||CT",
                    control_id=f"C{n}",
                )
                reply = read_ack(await client.send(raw))
                assert (reply.code, reply.control_id) == ("AA", f"C{n}")

    run(scenario)
    assert len(stored_steps(config)) == 100


def test_twenty_connections_at_once(tmp_path: Path) -> None:
    config = config_for(tmp_path)

    async def one_sender(port: int, sender: int) -> list[str]:
        codes = []
        async with AsyncMLLPClient("127.0.0.1", port) as client:
            for n in range(5):
                key = f"{sender}-{n}"
                raw = order(
                    orc=f"NW|P{key}^RIS|F{key}^RIS||SC||^^^202611261030",
                    obr=f"OBR|1|P{key}^RIS|F{key}^RIS|CT^CT^L{'|' * 14}A{key}|R{key}|S{key}||||CT",
                    control_id=f"C{key}",
                    pid=f"PID|||PAT{sender}^^^HOSP||Doe^Sender{sender}",
                )
                codes.append(read_ack(await client.send(raw)).code)
        return codes

    async def scenario() -> None:
        async with running(config) as broker:
            results = await asyncio.gather(*(one_sender(broker.hl7_port, s) for s in range(20)))
            assert all(code == "AA" for codes in results for code in codes)

    run(scenario)
    assert len(stored_steps(config)) == 100


def test_garbage_oversize_and_vanishing_peers_do_not_stop_the_listener(tmp_path: Path) -> None:
    config = config_for(tmp_path, max_frame_size=4096)

    async def scenario() -> None:
        async with running(config) as broker:
            port = broker.hl7_port
            # a peer that vanishes mid-frame
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x0bMSH|^~\\&|RIS|HOSP|MWL|RAD|||ORM^O01|X|P|2.3.1\rPID|")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            # garbage, then an oversize frame, then a good frame on one connection
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            big = order(control_id="BIG", extra=("NTE|||" + "x" * 8000,))
            writer.write(b"garbage\r\n" + frame(big) + frame(order(zds=ZDS)))
            await writer.drain()
            too_big = read_ack(await _read_frame(reader))
            assert (too_big.code, too_big.control_id) == ("AR", "BIG")
            assert "exceeds" in too_big.text
            good = read_ack(await _read_frame(reader))
            assert (good.code, good.control_id) == ("AA", "MSG1")
            writer.close()
            await writer.wait_closed()

    run(scenario)
    assert stored_steps(config) == [("12345", "SPS1")]


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    data = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), TIMEOUT)
    return data[data.index(b"\x0b") + 1 : -2]


def test_malformed_message_gets_an_ae_with_err_not_a_dropped_connection(tmp_path: Path) -> None:
    config = config_for(tmp_path)

    async def scenario() -> None:
        async with (
            running(config) as broker,
            AsyncMLLPClient("127.0.0.1", broker.hl7_port) as client,
        ):
            reply = read_ack(await client.send(b"this is not HL7 at all"))
            assert reply.code == "AE"
            assert reply.errors
            after = read_ack(await client.send(order(zds=ZDS)))
            assert after.code == "AA"

    run(scenario)


# --- the real commands ------------------------------------------------------------------------


def _serve(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    config = tmp_path / "broker.toml"
    database = tmp_path / "serve.db"
    config.write_text(
        f'[database]\nurl = "sqlite:///{database}"\n[hl7]\nport = 0\nparse_workers = 1\n'
        "[dicom]\nport = 0\n[http]\nport = 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MWL_BROKER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"HL7 MLLP listener on [\d.]+:(\d+)", line)
        if found:
            return process, int(found.group(1))
    process.kill()
    raise AssertionError(f"serve never listened; exit code {process.wait()}")


def test_serve_send_and_sigterm(tmp_path: Path) -> None:
    process, port = _serve(tmp_path)
    try:
        good = DATA / "01_dcm4che_ORM_O01_v231_MESA_ZDS.hl7"
        sent = subprocess.run(
            [sys.executable, "-m", "broker.cli", "send", str(good), "--host", "127.0.0.1",
             "--port", str(port)],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert f"{good}: AA 103106" in sent.stdout
        bad = tmp_path / "bad.hl7"
        bad.write_bytes(order(orc="XO|P9^RIS|F9^RIS||SC||^^^202611261030"))
        refused = subprocess.run(
            [sys.executable, "-m", "broker.cli", "send", str(good), str(bad), "--host",
             "127.0.0.1", "--port", str(port)],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert refused.returncode == 1
        assert f"{good}: AA 103106" in refused.stdout  # the same message again: original ACK
        assert f"{bad}: AE MSG1" in refused.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0
        if process.stderr:
            process.stderr.close()


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_serve_stops_on_sigint_too(tmp_path: Path, sig: signal.Signals) -> None:
    process, _ = _serve(tmp_path)
    process.send_signal(sig)
    assert process.wait(timeout=TIMEOUT) == 0
    if process.stderr:
        process.stderr.close()
