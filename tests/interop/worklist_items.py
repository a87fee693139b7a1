"""The worklist both SCPs serve in the differential test: DCMTK's ten sample items plus ~200
generated ones, and the C-FIND queries asked of both.

Generated items vary what matching depends on: names with Latin-1 accents and mixed case,
several patients with several procedures, SPS start dates over a week and times with and
without seconds (one with a fraction), eight stations — some items scheduled on two or three
(multi-valued AE) —, six modalities, performing physicians (some empty), empty Type 2 values
(accession, birth date, sex, station name, location), and some steps already COMPLETED or
DISCONTINUED. A few items are deliberately ones ``wlmscpfs`` rejects as incomplete (no
Requested Procedure Description, two SPS items). Everything depends only on ``SEED``.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from tests.interop.dcmtk import sample_datasets

SEED = 20261126
COUNT = 200
UID_ROOT = "1.2.826.0.1.3680043.10.543"
DAYS = ("20261123", "20261124", "20261125", "20261126", "20261127", "20261128", "20261129")
STATIONS = {"CT1": "CT", "CT2": "CT", "MR1": "MR", "MR2": "MR", "US1": "US", "CR1": "CR",
            "DX1": "DX", "NM1": "NM"}  # fmt: skip
FAMILY = ("Müller", "MÜLLER", "Muller", "müller", "Mueller", "Dupré", "DUPRE", "Núñez",
          "Lefèvre", "Smith", "SMITH", "O'Brien", "van der Berg", "Søren", "Straße", "Öztürk",
          "García", "Johansson")  # fmt: skip
GIVEN = ("Jürgen", "Anaïs", "José", "Zoë", "Hans", "JANE", "Åsa", "François", "Ana", "Peter")
PHYSICIANS = ("HOUSE^GREGORY", "Müller^Anna", "weiß^peter", "CURIE^MARIE", "Curie^Marie", "")
DESCRIPTIONS = ("CT HEAD", "MR KNEE", "US ABDOMEN", "CHEST PA", "BONE SCAN", "HAND")
FINAL = {"COMPLETED", "DISCONTINUED"}

Key = tuple[str, str]
"""(Study Instance UID, SPS ID): one worklist item, as both SCPs answer it."""


@dataclass(frozen=True)
class Item:
    """One worklist file and what the comparison needs to know about it."""

    name: str
    dataset: Dataset
    keys: tuple[Key, ...]
    status: str = "SCHEDULED"
    incomplete_for_dcmtk: bool = False
    """``wlmscpfs --enable-file-reject`` (its default) ignores the file."""


def dcmtk_samples() -> list[Item]:
    items = []
    for stem, dataset in sample_datasets().items():
        step = dataset.ScheduledProcedureStepSequence[0]
        key = (str(dataset.StudyInstanceUID), str(step.ScheduledProcedureStepID))
        items.append(Item(stem, dataset, (key,)))
    return items


def generated_items(count: int = COUNT, seed: int = SEED) -> list[Item]:
    rng = random.Random(seed)
    patients = [_patient(rng, n) for n in range(count // 3)]
    items = [_item(rng, n, rng.choice(patients)) for n in range(count)]
    return [*items, _without_description(rng, count, patients[0]), _two_steps(rng, patients[1])]


@dataclass(frozen=True)
class _Patient:
    patient_id: str
    name: str
    birth_date: str
    sex: str


def _patient(rng: random.Random, n: int) -> _Patient:
    name = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
    if rng.random() < 0.1:
        name += "^" + rng.choice(GIVEN)  # a middle name
    birth = "" if rng.random() < 0.1 else f"19{rng.randint(30, 99)}0{rng.randint(1, 9)}15"
    return _Patient(f"P{n:04d}", name, birth, rng.choice(("F", "M", "O", "")))


def _item(rng: random.Random, n: int, patient: _Patient) -> Item:
    status = rng.choices(["SCHEDULED", "COMPLETED", "DISCONTINUED", "STARTED", ""],
                         [85, 6, 3, 3, 3])[0]  # fmt: skip
    dataset = _dataset(rng, n, patient)
    step = _step(rng, n, status)
    dataset.ScheduledProcedureStepSequence = Sequence([step])
    key = (str(dataset.StudyInstanceUID), str(step.ScheduledProcedureStepID))
    return Item(f"gen{n:03d}", dataset, (key,), status or "SCHEDULED")


def _dataset(rng: random.Random, n: int, patient: _Patient) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.AccessionNumber = "" if rng.random() < 0.1 else f"A{n:05d}"
    ds.StudyInstanceUID = f"{UID_ROOT}.{n + 1}"
    ds.RequestedProcedureID = f"RP{n:05d}"
    ds.RequestedProcedureDescription = rng.choice(DESCRIPTIONS)
    ds.ReferringPhysicianName = rng.choice(PHYSICIANS)
    ds.RequestedProcedurePriority = rng.choice(("ROUTINE", "STAT", ""))
    return ds


def _step(rng: random.Random, n: int, status: str) -> Dataset:
    station = rng.choice(list(STATIONS))
    step = Dataset()
    step.ScheduledStationAETitle = _station_titles(rng, station)
    step.ScheduledProcedureStepStartDate = rng.choice(DAYS)
    step.ScheduledProcedureStepStartTime = _time(rng, n)
    step.Modality = STATIONS[station]
    step.ScheduledPerformingPhysicianName = rng.choice(PHYSICIANS)
    step.ScheduledProcedureStepDescription = rng.choice(DESCRIPTIONS)
    step.ScheduledProcedureStepID = f"SPS{n:05d}"
    step.ScheduledStationName = "" if rng.random() < 0.2 else f"ROOM-{station}"
    step.ScheduledProcedureStepLocation = "" if rng.random() < 0.3 else "BUILDING A"
    if status:
        step.ScheduledProcedureStepStatus = status
    return step


def _station_titles(rng: random.Random, station: str) -> str | list[str]:
    """One AE title mostly; 15 % are scheduled on two or three stations of the modality or
    any other (multi-valued Scheduled Station AE Title, PS3.4 K.2.2.3)."""
    if rng.random() >= 0.15:
        return station
    others = [s for s in STATIONS if s != station]
    return [station, *rng.sample(others, rng.choice((1, 2)))]


def _time(rng: random.Random, n: int) -> str:
    """HHMMSS mostly; HHMM for some; one with a fraction of a second (item 7)."""
    hour, minute = rng.randint(7, 17), rng.choice((0, 15, 30, 45))
    if n == 7:
        return f"{hour:02d}{minute:02d}30.5"
    if rng.random() < 0.2:
        return f"{hour:02d}{minute:02d}"
    return f"{hour:02d}{minute:02d}{rng.choice((0, 0, 0, 30)):02d}"


def _without_description(rng: random.Random, n: int, patient: _Patient) -> Item:
    """No Requested Procedure Description nor Code Sequence: wlmscpfs rejects the file."""
    item = _item(rng, n, patient)
    del item.dataset.RequestedProcedureDescription
    return Item("gen-nodesc", item.dataset, item.keys, item.status, incomplete_for_dcmtk=True)


def _two_steps(rng: random.Random, patient: _Patient) -> Item:
    """Two SPS items in one file: wlmscpfs wants exactly one; the broker stores two steps."""
    first = _item(rng, COUNT + 1, patient)
    second = _step(rng, COUNT + 2, "SCHEDULED")
    first.dataset.ScheduledProcedureStepSequence.append(second)
    keys = (*first.keys, (str(first.dataset.StudyInstanceUID), f"SPS{COUNT + 2:05d}"))
    return Item("gen-twosteps", first.dataset, keys, "SCHEDULED", incomplete_for_dcmtk=True)


# --- rows and queries ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One scheduled step of one item: what a C-FIND response stands for."""

    key: Key
    item: Item
    step: Dataset

    def values(self, keyword: str) -> list[str]:
        """The values of a matching key: from the SPS item or the top level."""
        source = self.step if keyword in SPS_KEYS else self.item.dataset
        value = source.get(keyword, "")
        values = list(value) if isinstance(value, MultiValue | list) else [value]
        return [str(v) for v in values if str(v)]


def rows(items: list[Item]) -> list[Row]:
    return [
        Row(key, item, step)
        for item in items
        for key, step in zip(item.keys, item.dataset.ScheduledProcedureStepSequence, strict=True)
    ]


SPS_KEYS = frozenset(
    {"ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
     "ScheduledProcedureStepStartTime", "Modality", "ScheduledPerformingPhysicianName"}
)  # fmt: skip
DATE, TIME = "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"
AE, PHYSICIAN = "ScheduledStationAETitle", "ScheduledPerformingPhysicianName"


@dataclass(frozen=True)
class Query:
    """One C-FIND request: matching key values by keyword (others stay universal), and the
    name of the intentional difference it shows, if any (see the differential test)."""

    name: str
    keys: dict[str, str] = field(default_factory=dict)
    difference: str = ""

    def dataset(self) -> Dataset:
        """The request identifier: every compared key as a return key, the given values set;
        ISO_IR 100 declared when a value is not ASCII (the files' character set)."""
        ds = Dataset()
        if any(not value.isascii() for value in self.keys.values()):
            ds.SpecificCharacterSet = "ISO_IR 100"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pydicom: "C*" is no valid CS value
            for keyword in ("PatientName", "PatientID", "AccessionNumber",
                            "RequestedProcedureID", "StudyInstanceUID"):  # fmt: skip
                setattr(ds, keyword, self.keys.get(keyword, ""))
            step = Dataset()
            for keyword in (*sorted(SPS_KEYS), "ScheduledProcedureStepID"):
                setattr(step, keyword, self.keys.get(keyword, ""))
        ds.ScheduledProcedureStepSequence = Sequence([step])
        return ds


def queries(items: list[Item]) -> list[Query]:
    """Each required matching key alone and combined, the optional ones IHE asks for, the
    universal query; values chosen to hit single- and multi-valued AE titles, day boundaries,
    times with and without seconds, wild cards, case and accents."""
    return [
        Query("universal"),
        *_station_queries(),
        *_date_time_queries(items),
        *_modality_queries(),
        *_person_name_queries(),
        *_identifier_queries(),
        *_combined_queries(),
    ]


def _station_queries() -> list[Query]:
    titles = [*STATIONS, "AA32", "AA33", "NN77", "TT67", "NOSUCH", "ct1"]
    return [
        *(Query(f"station {t}", {AE: t}) for t in titles),
        Query("station wildcard", {AE: "CT*"}, "wildcard-on-single-value-key"),
    ]


def _date_time_queries(items: list[Item]) -> list[Query]:
    fraction = next(
        str(step.ScheduledProcedureStepStartTime).split(".")[0]
        for item in items
        for step in item.dataset.ScheduledProcedureStepSequence
        if "." in str(step.ScheduledProcedureStepStartTime)
    )
    return [
        *(Query(f"date {day}", {DATE: day}) for day in DAYS),
        Query("date range", {DATE: "20261124-20261126"}),
        Query("date open end", {DATE: "20261127-"}),
        Query("date open start", {DATE: "-20261124"}),
        Query("date sample", {DATE: "19951001-19961231"}),
        Query("time range", {TIME: "0800-1000"}),
        Query("time range seconds", {TIME: "093000-094500"}),
        Query("time open start", {TIME: "-0900"}),
        Query("time open end", {TIME: "1700-"}),
        Query("time single", {TIME: "093000"}),
        Query("time single vs fraction", {TIME: fraction}, "time-fraction"),
        Query("date + time single", {DATE: "20261125", TIME: "1000"}),
        Query("date + time range", {DATE: "20261125", TIME: "1000-1400"}),
        Query("date + time open end", {DATE: "20261126", TIME: "1400-"}),
        Query("date range + time range", {DATE: "20261124-20261126", TIME: "1000-1200"}),
        Query("date range + time open start", {DATE: "20261124-20261126", TIME: "-1000"}),
        Query("date open + time open", {DATE: "20261127-", TIME: "1200-"}),
        Query("date open + time range", {DATE: "20261127-", TIME: "1200-1300"},
              "open-date-range-with-time-range"),
        Query("date open start + time range", {DATE: "-20261124", TIME: "1200-1300"},
              "open-date-range-with-time-range"),
        Query("date range + time single", {DATE: "20261124-20261126", TIME: "1000"},
              "date-range-with-single-time"),
        Query("date range + time open end", {DATE: "20261124-20261126", TIME: "1200-"},
              "date-range-with-open-end-time"),
    ]  # fmt: skip


def _modality_queries() -> list[Query]:
    return [
        *(Query(f"modality {m}", {"Modality": m}) for m in ("CT", "MR", "US", "CR", "NM")),
        Query("modality wildcard", {"Modality": "C*"}, "wildcard-on-single-value-key"),
    ]


def _person_name_queries() -> list[Query]:
    name, folding = "PatientName", "person-name-folding"
    return [
        Query("name exact", {name: "Müller^Jürgen"}),
        Query("name given", {name: "*^José"}),
        Query("name sample", {name: "VIVALDI*"}),
        Query("name apostrophe", {name: "O'Brien*"}),
        Query("name spaces", {name: "van der Berg*"}),
        Query("name wildcard", {name: "Müller*"}, folding),
        Query("name upper", {name: "MÜLLER*"}, folding),
        Query("name lower no accent", {name: "muller*"}, folding),
        Query("name question mark", {name: "M?ller*"}, folding),
        Query("name inner upper", {name: "*ANS*"}, folding),
        Query("name accent", {name: "Dupré*"}, folding),
        Query("name no accent", {name: "DUPRE*"}, folding),
        Query("name sample lower", {name: "vivaldi^antonio"}, folding),
        Query("physician exact", {PHYSICIAN: "HOUSE^GREGORY"}),
        Query("physician sample", {PHYSICIAN: "JOHNSON"}),
        Query("physician wildcard", {PHYSICIAN: "CURIE*"}, folding),
        Query("physician lower", {PHYSICIAN: "curie*"}, folding),
        Query("physician sharp s", {PHYSICIAN: "WEISS*"}, folding),
    ]


def _identifier_queries() -> list[Query]:
    return [
        Query("patient id", {"PatientID": "P0007"}),
        Query("patient id sample", {"PatientID": "AV35674"}),
        Query("patient id star", {"PatientID": "*"}),
        Query("patient id wildcard", {"PatientID": "P001*"}, "wildcard-on-single-value-key"),
        Query("patient id question mark", {"PatientID": "P000?"}, "wildcard-on-single-value-key"),
        Query("accession", {"AccessionNumber": "A00042"}),
        Query("accession wildcard", {"AccessionNumber": "A0001*"}),
        Query("accession question mark", {"AccessionNumber": "A0001?"}),
        Query("accession sample", {"AccessionNumber": "00005"}),
        Query("rp id", {"RequestedProcedureID": "RP00017"}),
        Query("rp id wildcard", {"RequestedProcedureID": "RP0012?"}),
        Query("rp id sample", {"RequestedProcedureID": "RP472"}),
    ]


def _combined_queries() -> list[Query]:
    return [
        Query("station + date", {AE: "CT1", DATE: "20261125"}),
        Query("station + date range", {AE: "MR2", DATE: "20261124-20261128"}),
        Query("modality + date range", {"Modality": "CT", DATE: "20261123-20261125"}),
        Query("modality + physician", {"Modality": "MR", PHYSICIAN: "C*"}),
        Query("name + modality", {"PatientName": "S*", "Modality": "US"}),
        Query("id + date range", {"PatientID": "P0007", DATE: "20261124-"}),
        Query("accession + station", {"AccessionNumber": "A001*", AE: "CR1"}),
        Query("every required key", {AE: "CT2", DATE: "20261123-20261129",
              TIME: "0700-1800", "Modality": "CT", PHYSICIAN: "*", "PatientName": "*",
              "PatientID": ""}),
        Query("sample station + date", {AE: "AB45", DATE: "19951206"}),
    ]  # fmt: skip
