"""serve refuses to start, with a logged reason and exit code 1, instead of a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from broker.app import serve
from broker.config import Config, DatabaseConfig, DicomConfig, HL7Config, HttpConfig


def config_for(database: DatabaseConfig, *, hl7_port: int = 0) -> Config:
    return Config(
        database=database,
        hl7=HL7Config(port=hl7_port, parse_workers=-1),
        dicom=DicomConfig(port=0),
        http=HttpConfig(port=0),
    )


def test_a_taken_hl7_port_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        database = DatabaseConfig(url=f"sqlite:///{tmp_path / 'broker.db'}")
        assert serve(config_for(database, hl7_port=port)) == 1
    assert any("cannot start" in r.getMessage() for r in caplog.records)


@pytest.mark.postgres
def test_an_unmigrated_postgresql_database_is_refused(
    postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(postgres_database, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    assert serve(config_for(DatabaseConfig(url=postgres_database))) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("mwl-broker migrate" in m and "no schema" in m for m in messages)
