"""Synthetic worklist steps in bulk, for C-FIND benchmarks and plan tests (1k … 1M steps).

:func:`bulk_load_steps` writes rows as the HL7 intake would (the typed matching columns, their
folded PN copies and the DICOM JSON attributes of each level) with SQLAlchemy Core
``insert()`` executemany, one transaction per batch, bypassing the ORM. Every step has its own
patient, order and requested procedure, so each Patient ID, Accession Number, Requested
Procedure ID, Study Instance UID and SPS ID matches exactly one item.

The data depend only on ``seed`` and the arguments. Step ``i`` (0-based) is on day
``i % days`` after ``start``'s date, between 07:00 and 18:55 in 5-minute slots; its station AE
title and its modality are drawn independently and uniformly from ``stations`` and
``modalities``; every step is SCHEDULED. So, with ``N = count``, ``D = days``,
``S = len(stations)``, ``M = len(modalities)``, on average:

- one station AE + one day: ``N / (D * S)`` matches;
- one modality + a 7-day range: ``7 * N / (D * M)`` matches.

For "station AE + today ≈ 20" and "modality + 7 days ≈ 200" keep ``N / D = 200`` steps a day
with 10 stations and 7 modalities: ``days = count // 200`` (100k → 500 days, 1M → 5000 days),
and ``start = today - (days - 1) days`` so that the last day is today. Growing ``count`` with
``days`` grows the history at a constant daily volume, which is how a store grows.

IDs of new rows are reserved inside each batch's transaction (``max(id)`` under SQLite's
``BEGIN IMMEDIATE``, the tables' sequences on PostgreSQL). Loading the same seed twice into one
store violates the unique Patient IDs: use another seed. On PostgreSQL the load ends with
``ANALYZE``, as autovacuum would do soon after; SQLite is left without planner statistics,
like a broker's database (see :mod:`broker.store.finder`).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, Table, Text, bindparam, func, insert, select, text

from broker.store.attributes import start_datetime
from broker.store.database import Store
from broker.store.errors import store_errors
from broker.store.schema import metadata, utcnow
from mwl.model import DicomJson, SPSStatus
from mwl.pn import fold_person_name

FAMILY_NAMES = (
    "MÜLLER", "NGUYEN", "GARCÍA", "SCHMIDT", "ROSSI", "DUBOIS", "KOWALSKI", "JOHANSSON",
    "MARTIN", "O'BRIEN", "FISCHER", "WEBER", "NOWAK", "WAGNER", "BECKER", "HOFFMANN",
    "DUPRÉ", "SILVA", "YILMAZ", "KIM", "PETROV", "JENSEN", "SMITH", "LÓPEZ",
)  # fmt: skip
GIVEN_NAMES = (
    "ANNA", "HANS", "JOSÉ", "MARIA", "PETER", "LÉA", "JAN", "SOFIA", "LUCAS", "EMMA",
    "NOAH", "ZOË", "PAUL", "MIA", "OMAR", "INÈS", "JONAS", "ELENA", "ALI", "CHLOÉ",
)  # fmt: skip
PHYSICIANS = ("GÓMEZ^ANA^^DR", "NELL^FREDERICK^P^DR", "ESTRADA^JAIME^^DR", "WONG^LI^^DR")
LOCATIONS = ("RAD-1", "RAD-2", "ER", "OUTPATIENT")
PROCEDURES = (
    ("HEAD", "head without contrast"),
    ("CHEST", "chest with contrast"),
    ("ABD", "abdomen and pelvis"),
    ("SPINE", "lumbar spine"),
    ("KNEE", "knee left"),
)
ISSUERS = ("HOSP-A", "HOSP-B")
LEVELS = (
    ("patients", None),
    ("orders", "patient_id"),
    ("requested_procedures", "order_id"),
    ("scheduled_steps", "procedure_id"),
    ("step_station_aes", "step_id"),
)
"""The tables top-down, each with its column referring to the level above."""

ATTRIBUTES = "attributes_json"
"""Rows carry their DICOM JSON serialised at once: a batch keeps strings, not millions of
small dicts for the garbage collector to walk (the encoding is :class:`DicomJsonText`'s)."""

_folded = functools.cache(fold_person_name)  # a few hundred distinct names
_json = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
FIRST_SLOT, LAST_SLOT = 7 * 12, 19 * 12
"""5-minute slots of the day: 07:00 … 18:55."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkPlan:
    """What :func:`bulk_load_steps` generates (see the module doc)."""

    count: int
    seed: int
    start: datetime
    days: int
    stations: Sequence[str]
    modalities: Sequence[str]
    batch: int

    def __post_init__(self) -> None:
        if self.count < 0 or self.days < 1 or self.batch < 1:
            raise ValueError("count must be >= 0, days and batch >= 1")
        if not self.stations or not self.modalities:
            raise ValueError("stations and modalities must not be empty")


@dataclass(slots=True)
class Rows:
    """One batch: rows of each table, ``id`` and foreign keys still to be filled."""

    patients: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    procedures: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    station_aes: list[dict[str, Any]] = field(default_factory=list)

    def by_level(self) -> tuple[list[dict[str, Any]], ...]:
        """The rows in the order of :data:`LEVELS`."""
        return self.patients, self.orders, self.procedures, self.steps, self.station_aes


def bulk_load_steps(
    store: Store,
    count: int,
    *,
    seed: int = 0,
    start: datetime,
    days: int,
    stations: Sequence[str],
    modalities: Sequence[str],
    batch: int = 10_000,
) -> None:
    """Insert ``count`` synthetic scheduled steps (see the module doc for the distribution).

    Raises
    ------
    ValueError
        A negative ``count``, ``days`` or ``batch`` below 1, no stations or no modalities.
    StoreFailure
        The database failed; batches committed before stay.
    """
    plan = BulkPlan(
        count=count,
        seed=seed,
        start=start,
        days=days,
        stations=tuple(stations),
        modalities=tuple(modalities),
        batch=batch,
    )
    rng = random.Random(seed)
    loaded_at = utcnow()
    with store_errors():
        for first in range(0, count, batch):
            rows = Rows()
            for index in range(first, min(first + batch, count)):
                _add_step(rows, plan, rng, index, loaded_at)
            with store.engine.begin() as connection:
                _insert(connection, rows)
        if store.engine.dialect.name == "postgresql":
            with store.engine.begin() as connection:
                connection.execute(text("ANALYZE"))


@dataclass(frozen=True, slots=True)
class Draw:
    """The random choices of one step, drawn in a fixed order (the data depend on the seed)."""

    name: str
    birth_date: str
    sex: str
    physician: str
    station: str
    modality: str
    procedure: tuple[str, str]
    location: str
    time: str
    study_uid: str

    @classmethod
    def of(cls, rng: random.Random, plan: BulkPlan) -> Draw:
        birth = f"{rng.randrange(1930, 2020)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        slot = rng.randrange(FIRST_SLOT, LAST_SLOT)
        return cls(
            name=f"{rng.choice(FAMILY_NAMES)}^{rng.choice(GIVEN_NAMES)}",
            birth_date=birth,
            sex=rng.choice("MFO"),
            physician=rng.choice(PHYSICIANS),
            station=rng.choice(plan.stations),
            modality=rng.choice(plan.modalities),
            procedure=rng.choice(PROCEDURES),
            location=rng.choice(LOCATIONS),
            time=f"{slot // 12:02d}{slot % 12 * 5:02d}00",
            study_uid=f"2.25.{rng.getrandbits(127)}",
        )


def _add_step(rows: Rows, plan: BulkPlan, rng: random.Random, index: int, at: datetime) -> None:
    """Append one step's patient, order, procedure, step and station AE rows."""
    key = f"{plan.seed}-{index:07d}"
    draw = Draw.of(rng, plan)
    date = (plan.start.date() + timedelta(days=index % plan.days)).strftime("%Y%m%d")
    rows.patients.append(_patient(f"P{key}", ISSUERS[index % len(ISSUERS)], draw, at))
    rows.orders.append(_order(key, draw, at))
    rows.procedures.append(_procedure(key, draw))
    rows.steps.append(_step(key, date, draw, at))
    rows.station_aes.append({"ae_title": draw.station})


def _patient(patient_id: str, issuer: str, draw: Draw, at: datetime) -> dict[str, Any]:
    return {
        "patient_id": patient_id,
        "issuer": issuer,
        "name": draw.name,
        "name_folded": _folded(draw.name),
        "birth_date": draw.birth_date,
        "sex": draw.sex,
        ATTRIBUTES: _json(
            {
                "00100010": _pn(draw.name),
                "00100020": _element("LO", patient_id),
                "00100021": _element("LO", issuer),
                "00100030": _element("DA", draw.birth_date),
                "00100040": _element("CS", draw.sex),
            }
        ),
        "merged_into_id": None,
        "created_at": at,
        "updated_at": at,
    }


def _order(key: str, draw: Draw, at: datetime) -> dict[str, Any]:
    accession, placer, filler, admission = f"A{key}", f"PL{key}", f"FI{key}", f"V{key}"
    return {
        "placer_number": placer,
        "placer_namespace": "RIS",
        "filler_number": filler,
        "filler_namespace": "PACS",
        "accession": accession,
        "referring_physician": draw.physician,
        "referring_physician_folded": _folded(draw.physician),
        "admission_id": admission,
        "sending_application": "BULK",
        "sending_facility": "BENCH",
        ATTRIBUTES: _json(
            {
                "00080050": _element("SH", accession),
                "00080090": _pn(draw.physician),
                "00321032": _pn(draw.physician),
                "00380010": _element("LO", admission),
                "00402016": _element("LO", placer),
                "00402017": _element("LO", filler),
            }
        ),
        "created_at": at,
        "updated_at": at,
    }


def _procedure(key: str, draw: Draw) -> dict[str, Any]:
    procedure_id, (body_part, text) = f"RP{key}", draw.procedure
    description = f"{draw.modality} {text}"
    return {
        "study_uid": draw.study_uid,
        "requested_procedure_id": procedure_id,
        "description": description,
        ATTRIBUTES: _json(
            {
                "0020000D": _element("UI", draw.study_uid),
                "00321060": _element("LO", description),
                "00321064": _code_sequence(f"{draw.modality}-{body_part}", description),
                "00401001": _element("SH", procedure_id),
                "00401003": _element("SH", "ROUTINE"),
            }
        ),
    }


def _step(key: str, date: str, draw: Draw, at: datetime) -> dict[str, Any]:
    sps_id, station_name = f"SPS{key}", f"{draw.station} ROOM"[:16]
    description = f"{draw.modality} step {sps_id}"
    return {
        "sps_id": sps_id,
        "status": SPSStatus.SCHEDULED.value,
        "start_date": date,
        "start_time": draw.time,
        "start_datetime": start_datetime(date, draw.time),
        "modality": draw.modality,
        "performing_physician": draw.physician,
        "performing_physician_folded": _folded(draw.physician),
        "station_name": station_name,
        "location": draw.location,
        "description": description,
        ATTRIBUTES: _json(
            {
                "00080060": _element("CS", draw.modality),
                "00400001": _element("AE", draw.station),
                "00400002": _element("DA", date),
                "00400003": _element("TM", draw.time),
                "00400006": _pn(draw.physician),
                "00400007": _element("LO", description),
                "00400008": _code_sequence(draw.modality, description),
                "00400009": _element("SH", sps_id),
                "00400010": _element("SH", station_name),
                "00400011": _element("SH", draw.location),
            }
        ),
        "updated_at": at,
        "version": 1,
    }


def _insert(connection: Connection, rows: Rows) -> None:
    """Reserve IDs, link each level to the one above, insert each table with one executemany."""
    parents: list[int] = []
    for (name, parent_column), values in zip(LEVELS, rows.by_level(), strict=True):
        table = metadata.tables[name]
        if parent_column is not None:
            for row, parent in zip(values, parents, strict=True):
                row[parent_column] = parent
        if "id" in table.c:
            parents = _new_ids(connection, table, len(values))
            for row, row_id in zip(values, parents, strict=True):
                row["id"] = row_id
        connection.execute(_insert_statement(table), values)


def _insert_statement(table: Table) -> Insert:
    if "attributes" not in table.c:
        return insert(table)
    return insert(table).values(attributes=bindparam(ATTRIBUTES, type_=Text()))


def _new_ids(connection: Connection, table: Table, count: int) -> list[int]:
    """``count`` unused primary keys of ``table``, reserved in this transaction."""
    if connection.dialect.name == "postgresql":
        sequence = func.pg_get_serial_sequence(table.name, "id")
        reserved = select(func.nextval(sequence)).select_from(func.generate_series(1, count))
        return list(connection.scalars(reserved))
    highest = connection.scalar(select(func.max(table.c.id))) or 0
    return list(range(highest + 1, highest + 1 + count))


def _element(vr: str, value: str) -> DicomJson:
    return {"vr": vr, "Value": [value]}


def _pn(name: str) -> DicomJson:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


def _code_sequence(value: str, meaning: str) -> DicomJson:
    item = {
        "00080100": _element("SH", value[:16]),
        "00080102": _element("SH", "99BULK"),
        "00080104": _element("LO", meaning[:64]),
    }
    return {"vr": "SQ", "Value": [item]}
