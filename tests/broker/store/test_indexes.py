"""Every C-FIND matching key is answered from an index (PS3.4 Table K.6-1 keys).

Exact values and, for the string keys, a prefix wildcard (``DOE*`` → ``LIKE 'DOE%'``); the
SPS start date-time as a range. On PostgreSQL sequential scans are switched off for the check,
so a plan without an index means no index can serve the predicate.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Select, text

from broker.store import Store
from broker.store.bulk import bulk_load_steps
from broker.store.finder import worklist_statement
from mwl.matching import Match, MatchKey, MatchKind, TimeRange, WorklistQuery
from mwl.model import SPSStatus
from tests.broker.store.test_finder import Entry, add

MATCHING_KEYS = [
    ("patients", "patient_id"),
    ("patients", "name_folded"),
    ("patients", "issuer"),
    ("orders", "accession"),
    ("orders", "referring_physician_folded"),
    ("orders", "admission_id"),
    ("requested_procedures", "requested_procedure_id"),
    ("requested_procedures", "study_uid"),
    ("requested_procedures", "description"),
    ("scheduled_steps", "sps_id"),
    ("scheduled_steps", "status"),
    ("scheduled_steps", "modality"),
    ("scheduled_steps", "performing_physician_folded"),
    ("scheduled_steps", "station_name"),
    ("scheduled_steps", "location"),
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


# --- the finder's statements on a bulk-loaded store -------------------------------------------
#
# Not a timing test: latency stays flat as the store grows when no answer reads every step, so
# each query shape must start from the index of its key (or of the start range) and reach the
# steps by index lookups: no sequential scan, no index scan without a condition. SQLite plans
# without statistics, like a broker's database; PostgreSQL from those of the bulk load's ANALYZE,
# sequential scans off as above (on a few thousand rows it may rightly prefer them).

BULK_STEPS = 3000
NEEDLE = Entry(
    sps_id="NEEDLE-SPS",
    station_aes=("NEEDLE-AE",),
    start=("20240503", "101500"),
    modality="XA",
    performing="Needle^Perf",
    station_name="NEEDLE-ROOM",
    location="NEEDLE-LOC",
    patient_name="Needle^Pat",
    patient_id="NEEDLE-PID",
    issuer="NEEDLE-ISS",
    accession="NEEDLE-ACC",
    procedure_id="NEEDLE-RP",
    procedure_description="NEEDLE description",
    study_uid="1.2.999.1",
    admission_id="NEEDLE-V",
    referring="Needle^Ref",
)
"""One step with a value no bulk-loaded step has, for every key (status: COMPLETED)."""

KEY_INDEXES: dict[MatchKey, tuple[str, ...]] = {
    MatchKey.STATION_AE: ("ix_step_station_aes_ae_title_step",),
    MatchKey.MODALITY: ("ix_scheduled_steps_modality_start",),
    MatchKey.PERFORMING_PHYSICIAN: ("ix_scheduled_steps_performing_physician_folded",),
    MatchKey.SPS_ID: ("ix_scheduled_steps_sps_id",),
    MatchKey.SPS_STATUS: ("ix_scheduled_steps_status_start",),
    MatchKey.STATION_NAME: ("ix_scheduled_steps_station_name",),
    MatchKey.SPS_LOCATION: ("ix_scheduled_steps_location",),
    MatchKey.PATIENT_NAME: ("ix_patients_name_folded",),
    MatchKey.PATIENT_ID: ("uq_patients_patient_id_issuer", "sqlite_autoindex_patients_1"),
    MatchKey.ISSUER_OF_PATIENT_ID: ("ix_patients_issuer",),
    MatchKey.ACCESSION: ("ix_orders_accession",),
    MatchKey.REQUESTED_PROCEDURE_ID: ("ix_requested_procedures_requested_procedure_id",),
    MatchKey.REQUESTED_PROCEDURE_DESCRIPTION: ("ix_requested_procedures_description",),
    MatchKey.STUDY_UID: (
        "uq_requested_procedures_study_uid",
        "sqlite_autoindex_requested_procedures_1",
    ),
    MatchKey.ADMISSION_ID: ("ix_orders_admission_id",),
    MatchKey.REFERRING_PHYSICIAN: ("ix_orders_referring_physician_folded",),
}
"""The index each key's match must start from."""

NEEDLE_VALUES: dict[MatchKey, str] = {
    MatchKey.STATION_AE: "NEEDLE-AE",
    MatchKey.MODALITY: "XA",
    MatchKey.PERFORMING_PHYSICIAN: "NEEDLE^PERF",
    MatchKey.SPS_ID: "NEEDLE-SPS",
    MatchKey.SPS_STATUS: "COMPLETED",
    MatchKey.STATION_NAME: "NEEDLE-ROOM",
    MatchKey.SPS_LOCATION: "NEEDLE-LOC",
    MatchKey.PATIENT_NAME: "NEEDLE^PAT",
    MatchKey.PATIENT_ID: "NEEDLE-PID",
    MatchKey.ISSUER_OF_PATIENT_ID: "NEEDLE-ISS",
    MatchKey.ACCESSION: "NEEDLE-ACC",
    MatchKey.REQUESTED_PROCEDURE_ID: "NEEDLE-RP",
    MatchKey.REQUESTED_PROCEDURE_DESCRIPTION: "NEEDLE description",
    MatchKey.STUDY_UID: "1.2.999.1",
    MatchKey.ADMISSION_ID: "NEEDLE-V",
    MatchKey.REFERRING_PHYSICIAN: "NEEDLE^REF",
}

TODAY = TimeRange("20240503000000", "20240503235959")
SHAPES: dict[str, tuple[WorklistQuery, tuple[str, ...]]] = {
    "station AE + today": (
        WorklistQuery(
            matches=(Match(MatchKey.STATION_AE, MatchKind.SINGLE, ("ST3",)),), start=TODAY
        ),
        ("ix_scheduled_steps_start_datetime",),
    ),
    "modality + 7 days": (
        WorklistQuery(
            matches=(Match(MatchKey.MODALITY, MatchKind.SINGLE, ("CT",)),),
            start=TimeRange("20240427000000", "20240503235959"),
        ),
        ("ix_scheduled_steps_modality_start",),
    ),
    "today": (WorklistQuery(start=TODAY), ("ix_scheduled_steps_start_datetime",)),
    "patient name* + today": (
        WorklistQuery(
            matches=(Match(MatchKey.PATIENT_NAME, MatchKind.WILDCARD, ("MUL*",)),), start=TODAY
        ),
        ("ix_scheduled_steps_start_datetime",),
    ),
    "location + from today": (
        WorklistQuery(
            matches=(Match(MatchKey.SPS_LOCATION, MatchKind.SINGLE, ("ER",)),),
            start=TimeRange(TODAY.low, None),
        ),
        ("ix_scheduled_steps_start_datetime",),
    ),
    "accession + today": (
        WorklistQuery(
            matches=(Match(MatchKey.ACCESSION, MatchKind.SINGLE, ("A0-0000042",)),), start=TODAY
        ),
        ("ix_orders_accession",),
    ),
}


def key_shapes() -> Iterator[tuple[str, WorklistQuery, tuple[str, ...]]]:
    for key, value in NEEDLE_VALUES.items():
        for kind, pattern in ((MatchKind.SINGLE, value), (MatchKind.WILDCARD, value[:-1] + "*")):
            query = WorklistQuery(matches=(Match(key, kind, (pattern,)),), include_final=True)
            yield f"{key.name} {kind.value}", query, KEY_INDEXES[key]
    for name, (query, indexes) in SHAPES.items():
        yield name, query, indexes


def explained(connection: Connection, statement: Select[Any]) -> tuple[list[str], list[str]]:
    """The statement's plan with its bound values: (full scans, indexes used)."""
    compiled = statement.compile(connection, compile_kwargs={"render_postcompile": True})
    values = compiled.construct_params()
    if connection.dialect.name == "sqlite":
        positional = tuple(values[name] for name in compiled.positiontup or ())
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled.string}", positional)
        lines = [str(row[-1]) for row in rows]
        indexes = [found for line in lines for found in re.findall(r"INDEX (\w+)", line)]
        return [line for line in lines if line.startswith("SCAN ")], indexes
    (document,) = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled.string}", values)
    nodes = list(plan_nodes(document[0][0]["Plan"]))
    scans = [f"{node['Node Type']} on {node['Relation Name']}" for node in nodes if full_scan(node)]
    return scans, [node["Index Name"] for node in nodes if "Index Name" in node]


def full_scan(node: dict[str, Any]) -> bool:
    """A sequential scan, or an index scan without a condition (it reads the whole index)."""
    if node["Node Type"] == "Seq Scan":
        return True
    return node["Node Type"] in {"Index Scan", "Index Only Scan"} and "Index Cond" not in node


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def plan_failures(store: Store) -> list[str]:
    """The shapes whose plan scans a table or misses its index, with what it does instead."""
    failures = []
    with store.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")  # see the module doc
        for name, query, indexes in key_shapes():
            for limit in (None, 100):
                statement = worklist_statement(
                    replace(query, limit=limit), dialect=connection.dialect.name
                )
                scans, used = explained(connection, statement)
                if scans or not set(indexes) & set(used):
                    failures.append(f"{name}, limit {limit}: scans {scans}, indexes {used}")
    return failures


def test_every_query_shape_starts_from_its_index(store: Store) -> None:
    bulk_load_steps(
        store,
        BULK_STEPS,
        start=datetime(2023, 7, 9, tzinfo=UTC),
        days=300,
        stations=[f"ST{n}" for n in range(10)],
        modalities=["CT", "MR", "US", "CR", "DX", "MG", "NM"],
    )
    add(store, NEEDLE, status=SPSStatus.COMPLETED)
    failures = plan_failures(store)
    assert not failures, "\n".join(failures)
    with store.engine.begin() as connection:  # SQLite with statistics too (PRAGMA optimize …)
        connection.exec_driver_sql("ANALYZE")
    failures = plan_failures(store)
    assert not failures, "\n".join(failures)
    accession = Match(MatchKey.ACCESSION, MatchKind.SINGLE, ("NEEDLE-ACC",))
    needle = store.finder().find(WorklistQuery(matches=(accession,), include_final=True))
    assert [item.sps_id for item in needle] == ["NEEDLE-SPS"]
