"""Every C-FIND matching key is answered from an index (PS3.4 Table K.6-1 keys).

Exact values and, for the string keys, a prefix wildcard (``DOE*`` → ``LIKE 'DOE%'``); the
SPS start date-time as a range. On PostgreSQL sequential scans are switched off for the check,
so a plan without an index means no index can serve the predicate.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, text

from broker.store import Store

MATCHING_KEYS = [
    ("patients", "patient_id"),
    ("patients", "name_folded"),
    ("orders", "accession"),
    ("orders", "referring_physician_folded"),
    ("requested_procedures", "requested_procedure_id"),
    ("requested_procedures", "study_uid"),
    ("scheduled_steps", "sps_id"),
    ("scheduled_steps", "status"),
    ("scheduled_steps", "modality"),
    ("scheduled_steps", "performing_physician_folded"),
    ("scheduled_steps", "start_datetime"),
    ("step_station_aes", "ae_title"),
]

PREDICATES = {
    "equal": ("= :value", {"value": "ABC"}),
    "prefix": ("LIKE :value", {"value": "AB%"}),
    "range": ("BETWEEN :low AND :high", {"low": "20240501000000", "high": "20240501235959"}),
}


def plan(connection: Connection, statement: str, parameters: dict[str, str]) -> str:
    if connection.dialect.name == "sqlite":
        rows = connection.execute(text(f"EXPLAIN QUERY PLAN {statement}"), parameters)
        return "\n".join(str(row[-1]) for row in rows)
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    rows = connection.execute(text(f"EXPLAIN {statement}"), parameters)
    return "\n".join(str(row[0]) for row in rows)


@pytest.mark.parametrize("predicate", sorted(PREDICATES))
@pytest.mark.parametrize(("table", "column"), MATCHING_KEYS)
def test_matching_key_uses_an_index(store: Store, table: str, column: str, predicate: str) -> None:
    condition, parameters = PREDICATES[predicate]
    statement = f"SELECT * FROM {table} WHERE {column} {condition}"
    with store.engine.begin() as connection:
        explained = plan(connection, statement, parameters)
    assert "INDEX" in explained.upper(), explained
