"""bulk_load_steps: counts, determinism, distribution, and items the finder reads back."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.config import DatabaseConfig
from broker.store import Store, migrate
from broker.store.bulk import bulk_load_steps
from broker.store.schema import (
    Order,
    Patient,
    RequestedProcedure,
    ScheduledStep,
    StepStationAE,
)
from mwl.matching import Match, MatchKey, MatchKind, TimeRange, WorklistQuery
from mwl.model import SPSStatus, WorklistItem
from mwl.pn import fold_person_name
from tests.broker.store.samples import SENDER, order, patient

START = datetime(2024, 5, 1, 12, tzinfo=UTC)
STATIONS = ("CT1", "CT2", "MR1", "US1")
MODALITIES = ("CT", "MR", "US")


def load(store: Store, count: int = 120, **options: object) -> None:
    arguments: dict[str, object] = {
        "start": START,
        "days": 6,
        "stations": STATIONS,
        "modalities": MODALITIES,
        "batch": 50,
    }
    bulk_load_steps(store, count, **{**arguments, **options})  # type: ignore[arg-type]


def all_items(store: Store) -> list[WorklistItem]:
    return list(store.finder().find(WorklistQuery(include_final=True)))


def table_counts(store: Store) -> list[int]:
    tables = (Patient, Order, RequestedProcedure, ScheduledStep, StepStationAE)
    with store.read_session() as session:
        return [session.scalar(select(func.count()).select_from(t)) or 0 for t in tables]


def one(store: Store, key: MatchKey, value: str) -> WorklistItem:
    (item,) = store.finder().find(WorklistQuery(matches=(Match(key, MatchKind.SINGLE, (value,)),)))
    return item


def test_every_step_has_its_own_patient_order_procedure_and_station(store: Store) -> None:
    load(store, 120)
    assert table_counts(store) == [120] * 5
    load(store, 30, seed=1)
    assert table_counts(store) == [150] * 5


def test_the_same_seed_gives_the_same_items(store: Store, tmp_path: Path) -> None:
    reference = DatabaseConfig(url=f"sqlite:///{tmp_path / 'reference.sqlite'}")
    migrate(reference)
    with Store.open(reference) as other:
        load(other, 75, batch=7)
        expected = all_items(other)
    load(store, 75)
    assert all_items(store) == expected
    load(store, 75, seed=2)
    second = {item.study_uid for item in all_items(store) if item.step_id > 75}
    assert len(second) == 75
    assert second.isdisjoint(item.study_uid for item in expected)


def test_steps_spread_evenly_over_days_within_working_hours(store: Store) -> None:
    load(store, 120)
    items = all_items(store)
    sps = [item.dataset["00400100"]["Value"][0] for item in items]
    days = Counter(step["00400002"]["Value"][0] for step in sps)
    assert days == {f"202405{day:02d}": 20 for day in range(1, 7)}
    assert all("070000" <= step["00400003"]["Value"][0] <= "185500" for step in sps)
    assert {step["00400001"]["Value"][0] for step in sps} <= set(STATIONS)
    assert {step["00080060"]["Value"][0] for step in sps} <= set(MODALITIES)
    assert {item.status for item in items} == {SPSStatus.SCHEDULED}


def test_identifiers_match_one_item(store: Store) -> None:
    load(store, 60)
    item = one(store, MatchKey.ACCESSION, "A0-0000042")
    assert one(store, MatchKey.PATIENT_ID, "P0-0000042") == item
    assert one(store, MatchKey.SPS_ID, "SPS0-0000042") == item
    assert one(store, MatchKey.REQUESTED_PROCEDURE_ID, "RP0-0000042") == item
    assert one(store, MatchKey.STUDY_UID, item.study_uid) == item
    assert one(store, MatchKey.ADMISSION_ID, "V0-0000042") == item


def test_items_carry_the_attributes_the_intake_stores(store: Store) -> None:
    load(store, 10)
    item = one(store, MatchKey.PATIENT_ID, "P0-0000003")
    assert item == store.worklist_items(patient_id="P0-0000003")[0]  # the ORM's reading
    top = {"00080050", "00100010", "00100020", "00100021", "00100030", "00100040", "0020000D"}
    assert top | {"00321060", "00401001", "00400100"} <= set(item.dataset)
    (sps,) = item.dataset["00400100"]["Value"]
    assert {"00080060", "00400001", "00400002", "00400003", "00400009", "00400020"} <= set(sps)
    name = fold_person_name(item.dataset["00100010"]["Value"][0]["Alphabetic"])
    by_name = Match(MatchKey.PATIENT_NAME, MatchKind.SINGLE, (name,))
    assert item in store.finder().find(WorklistQuery(matches=(by_name,)))


def test_station_and_day_counts_follow_the_documented_formula(store: Store) -> None:
    load(store, 1200, days=3, stations=[f"ST{n}" for n in range(10)], modalities=["CT", "MR"])
    finder = store.finder()
    day = TimeRange("20240502000000", "20240502235959")
    per_station = [
        len(list(finder.find(WorklistQuery(matches=(ae,), start=day))))
        for ae in (Match(MatchKey.STATION_AE, MatchKind.SINGLE, (f"ST{n}",)) for n in range(10))
    ]
    assert sum(per_station) == 400  # N / D a day
    assert min(per_station) >= 20 and max(per_station) <= 60  # N / (D * S) = 40 on average


def test_the_intake_keeps_working_after_a_bulk_load(store: Store) -> None:
    load(store, 20)
    with store.unit_of_work() as uow:
        row = uow.worklist.upsert_patient(patient())
        uow.worklist.add_order(row, order(), SPSStatus.SCHEDULED, sender=SENDER)
        uow.commit()
    assert table_counts(store) == [21] * 5


@pytest.mark.parametrize(
    "options",
    [{"count": -1}, {"days": 0}, {"batch": 0}, {"stations": ()}, {"modalities": []}],
)
def test_invalid_arguments(store: Store, options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        load(store, **options)  # type: ignore[arg-type]
