from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker.cli import main, read_message
from broker.config import Config
from broker.logs import HANDLER_NAME, configure_logging

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "mwl-broker.example.toml"
TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MWL_BROKER_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
    root.setLevel(level)


# --- check-config ----------------------------------------------------------------------------


def test_check_config_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 0

    out = capsys.readouterr().out
    assert "config: defaults (no file)" in out
    assert "database: sqlite:///mwl-broker.db" in out
    assert "hl7: listening on 127.0.0.1:2575" in out
    assert "dicom: listening on 127.0.0.1:11112 as AE MWLBROKER" in out
    assert "http: listening on 127.0.0.1:8080" in out


def test_check_config_with_the_example_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(EXAMPLE)]) == 0

    out = capsys.readouterr().out
    assert f"config: {EXAMPLE}" in out
    assert "outbound ris: 127.0.0.1:2576 ORM^O01 v2.3.1 events IP,CM,DC" in out


def test_check_config_masks_the_database_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MWL_BROKER_DATABASE_URL", "postgresql+psycopg://mwl:s3cret@db:5432/mwl")

    assert main(["check-config"]) == 0

    out = capsys.readouterr().out
    assert "database: postgresql+psycopg://mwl:***@db:5432/mwl" in out
    assert "s3cret" not in out


def test_config_error_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[hl7]\nport = "2575"\n', encoding="utf-8")

    assert main(["check-config", "--config", str(path)]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mwl-broker: config error: hl7.port: expected an integer")


def test_environment_error_exits_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MWL_BROKER_DICOM_PORT", "eleven")

    assert main(["check-config"]) == 2

    assert "mwl-broker: config error: MWL_BROKER_DICOM_PORT: " in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.toml"

    assert main(["migrate", "--config", str(missing)]) == 2

    assert f"config error: {missing}: configuration file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["send"], ["check-config", "--log-format", "xml"]]
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: mwl-broker" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out


def test_runs_as_a_module() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MWL_BROKER_")}
    environ["PYTHONPATH"] = str(ROOT)
    good = subprocess.run(
        [sys.executable, "-m", "broker.cli", "check-config", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )
    environ["MWL_BROKER_HL7_PORT"] = "99999"
    bad = subprocess.run(
        [sys.executable, "-m", "broker.cli", "check-config"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )

    assert (good.returncode, bad.returncode) == (0, 2), good.stderr + bad.stderr
    assert "outbound ris" in good.stdout
    assert "config error: MWL_BROKER_HL7_PORT:" in bad.stderr


# --- serve and migrate -----------------------------------------------------------------------


def test_serve_runs_the_app_with_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []

    def serve(config: Config) -> int:
        seen.append(config)
        return 3

    app = types.ModuleType("broker.app")
    app.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "broker.app", app)
    monkeypatch.setenv("MWL_BROKER_HL7_PORT", "0")

    assert main(["serve", "--config", str(EXAMPLE)]) == 3
    assert [(c.source, c.hl7.port) for c in seen] == [(EXAMPLE, 0)]


def test_migrate_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "mwl.db"
    monkeypatch.setenv("MWL_BROKER_DATABASE_URL", f"sqlite:///{database}")

    assert main(["migrate", "--log-level", "warning"]) == 0
    assert database.stat().st_size > 0


def test_migrate_failure_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MWL_BROKER_DATABASE_URL", f"sqlite:///{tmp_path}/absent/mwl.db")

    assert main(["migrate", "--log-level", "warning"]) == 1
    assert "mwl-broker: migrate failed: " in capsys.readouterr().err


# --- logging ---------------------------------------------------------------------------------


def test_json_log_lines() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)

    logging.getLogger("broker.test").info("order %s stored", "MSG1", extra={"control_id": "MSG1"})

    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["level"] == "INFO"
    assert entry["logger"] == "broker.test"
    assert entry["message"] == "order MSG1 stored"
    assert entry["control_id"] == "MSG1"
    assert entry["time"].endswith("+00:00")


def test_text_log_lines_and_level() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "text", stream=stream)

    logging.getLogger("broker.test").info("hidden")
    logging.getLogger("broker.test").warning("shown")

    assert "hidden" not in stream.getvalue()
    assert "WARNING broker.test: shown" in stream.getvalue()


def test_configuring_twice_keeps_one_handler() -> None:
    configure_logging("INFO", "text", stream=io.StringIO())
    configure_logging("INFO", "json", stream=io.StringIO())

    ours = [h for h in logging.getLogger().handlers if h.get_name() == HANDLER_NAME]
    assert len(ours) == 1


# --- send ------------------------------------------------------------------------------------

VT, FS_CR = b"\x0b", b"\x1c\r"


@dataclass
class AckServer:
    """A loopback MLLP receiver: AA, or AE with an ERR segment when MSH-10 ends in BAD."""

    listener: socket.socket
    received: list[bytes] = field(default_factory=list)
    connections: int = 0
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # listener closed: test over
            self.connections += 1
            thread = threading.Thread(target=self.answer, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def answer(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            conn.settimeout(TIMEOUT)
            while chunk := conn.recv(4096):
                buffer += chunk
                while FS_CR in buffer:
                    block, buffer = buffer.split(FS_CR, 1)
                    message = block.removeprefix(VT)
                    self.received.append(message)
                    conn.sendall(VT + ack_for(message) + FS_CR)


def ack_for(message: bytes) -> bytes:
    control_id = message.split(b"\r")[0].split(b"|")[9]
    header = b"MSH|^~\\&|MWLBROKER||RIS|HOSP|20240101120000||ACK^O01|A" + control_id
    header += b"|P|2.3.1\r"
    if control_id.endswith(b"BAD"):
        return header + b"MSA|AE|" + control_id + b"|Missing PID-3\rERR|PID^1^3^^101\r"
    return header + b"MSA|AA|" + control_id + b"|Message accepted\r"


@pytest.fixture
def ack_server() -> Iterator[AckServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    server = AckServer(listener)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    for worker in [thread, *server.threads]:
        worker.join(TIMEOUT)


def order(tmp_path: Path, control_id: str, separator: str = "\n") -> Path:
    segments = [
        f"MSH|^~\\&|RIS|HOSP|MWLBROKER||20240101120000||ORM^O01|{control_id}|P|2.3.1",
        "PID|1||12345^^^HOSP",
        "ORC|NW|P1",
    ]
    path = tmp_path / f"{control_id}.hl7"
    path.write_bytes((separator.join(segments) + separator).encode())
    return path


def send_argv(port: int, *files: Path) -> list[str]:
    return ["send", *map(str, files), "--host", "127.0.0.1", "--port", str(port), "--timeout", "5"]


def test_send_prints_each_ack_and_fails_on_ae(
    tmp_path: Path, ack_server: AckServer, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = order(tmp_path, "MSG1"), order(tmp_path, "MSG2BAD", "\r\n")

    assert main(send_argv(ack_server.port, good, bad)) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{good}: AA MSG1 Message accepted"
    assert lines[1] == f"{bad}: AE MSG2BAD Missing PID-3"
    assert lines[2].startswith("  ERR ")
    assert ack_server.connections == 1
    assert [m.count(b"\r") for m in ack_server.received] == [3, 3]
    assert all(b"\n" not in m for m in ack_server.received)


def test_send_exits_0_when_all_are_accepted(
    tmp_path: Path, ack_server: AckServer, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [order(tmp_path, f"MSG{i}") for i in range(3)]

    assert main(send_argv(ack_server.port, *files)) == 0

    assert len(capsys.readouterr().out.splitlines()) == 3
    assert ack_server.connections == 1


def test_send_goes_on_after_an_unreadable_file(
    tmp_path: Path, ack_server: AckServer, capsys: pytest.CaptureFixture[str]
) -> None:
    missing, good = tmp_path / "missing.hl7", order(tmp_path, "MSG1")

    assert main(send_argv(ack_server.port, missing, good)) == 1

    captured = capsys.readouterr()
    assert f"{missing}: failed: " in captured.err
    assert captured.out == f"{good}: AA MSG1 Message accepted\n"


def test_send_connection_refused_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as placeholder:  # a port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    files = [order(tmp_path, "MSG1"), order(tmp_path, "MSG2")]

    assert main(send_argv(port, *files)) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert [line.split(": failed: ")[0] for line in captured.err.splitlines()] == [
        str(f) for f in files
    ]


def test_send_config_error_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MWL_BROKER_HL7_MAX_FRAME_SIZE", "1")

    assert main(send_argv(1, order(tmp_path, "MSG1"))) == 2

    assert "config error: MWL_BROKER_HL7_MAX_FRAME_SIZE" in capsys.readouterr().err


@pytest.mark.parametrize("raw", [b"MSH|a\nPID|b\n", b"MSH|a\r\nPID|b\r\n", b"MSH|a\rPID|b"])
def test_read_message_separates_segments_with_cr(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "m.hl7"
    path.write_bytes(raw)
    assert read_message(path) == b"MSH|a\rPID|b\r"


def test_read_message_rejects_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.hl7"
    path.write_bytes(b"\r\n\n")
    with pytest.raises(ValueError, match="no message"):
        read_message(path)
