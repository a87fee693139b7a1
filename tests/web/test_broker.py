"""The console inside a real broker: uvicorn in the broker's loop on [http] port 0, readiness
of the real listeners, the C-FIND log fed by a real association, a port already taken."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.app import Broker
from broker.config import Config, DatabaseConfig, DicomConfig, HL7Config, HttpConfig
from hl7.ack import read_ack
from hl7.client import MLLPClient
from tests.e2e.test_worklist import c_find, query, running, sps_item
from tests.orders import order
from tests.web.support import AUTH, TOKEN

TIMEOUT = 20.0


def broker_config(tmp_path: Path, http_port: int = 0) -> Config:
    return Config(
        database=DatabaseConfig(url=f"sqlite:///{tmp_path / 'broker.db'}"),
        hl7=HL7Config(port=0, parse_workers=-1),
        dicom=DicomConfig(port=0),
        http=HttpConfig(port=http_port, token=TOKEN),
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running(broker_config(tmp_path)) as started:
        yield started


def http(broker: Broker) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{broker.http_port}", timeout=TIMEOUT)


def test_a_started_broker_serves_the_console_and_is_ready(broker: Broker) -> None:
    with http(broker) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert {check["name"]: check["ok"] for check in health.json()["checks"]} == {
            "database": True, "mllp": True, "dicom": True,
        }  # fmt: skip
        assert "Server" not in health.headers  # no server banner
        assert client.get("/api/worklist").status_code == 401


def test_c_find_answers_reach_the_metrics_and_the_timeline(broker: Broker) -> None:
    with MLLPClient("127.0.0.1", broker.hl7_port, ack_timeout=TIMEOUT) as mllp:
        assert read_ack(mllp.send(order())).code == "AA"
        with http(broker) as client:
            connections = client.get("/metrics").text
            assert "mwl_hl7_connections_open 1.0" in connections
    found = c_find(broker.dicom_port, query(sps_item(Modality="CT")), calling="CT_SCANNER")
    assert len(found) == 1
    assert c_find(broker.dicom_port, query(sps_item(Modality="MR")), calling="MR_SCANNER") == []
    with http(broker) as client:
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        requests = {s.labels.get("status"): s.value for s in families["mwl_cfind_requests"].samples
                    if s.name == "mwl_cfind_requests_total"}  # fmt: skip
        assert requests == {"success": 2.0}
        durations = {s.name: s.value for s in families["mwl_cfind_duration_seconds"].samples}
        assert durations["mwl_cfind_duration_seconds_count"] == 2.0
        timeline = client.get("/api/orders/1/timeline", headers=AUTH).json()
    assert timeline["cfind_log"] is True
    queried = [e for e in timeline["events"] if e["kind"] == "queried"]
    assert [e["title"] for e in queried] == ["SPS1 returned to CT_SCANNER's C-FIND"]
    assert queried[0]["detail"].startswith("1 time(s)")


def test_a_taken_http_port_leaves_the_broker_running_without_console(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR), running(broker_config(tmp_path, port)) as broker:
            with MLLPClient("127.0.0.1", broker.hl7_port, ack_timeout=TIMEOUT) as mllp:
                assert read_ack(mllp.send(order())).code == "AA"
            with pytest.raises(RuntimeError):
                _ = broker.http_port
    assert f"HTTP console NOT started on 127.0.0.1:{port}" in caplog.text
