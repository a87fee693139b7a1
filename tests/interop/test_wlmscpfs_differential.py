"""Differential test: the broker's Modality Worklist SCP against DCMTK's ``wlmscpfs``.

The same worklist — DCMTK's ten sample items and ~200 generated ones
(:mod:`tests.interop.worklist_items`) — is written as ``.wl`` files into a ``wlmscpfs`` data
folder (``<dir>/OFFIS/*.wl`` + ``lockfile``) **and** imported into the broker with
``broker.importer`` (SQLite store). Both SCPs are asked the same C-FIND queries with DCMTK's
``findscu -W`` (``TCP_NODELAY=1``): ``wlmscpfs`` runs in its own loopback-only network
namespace (``unshare -n``, reached with ``nsenter``), the broker — the real
:class:`broker.app.Broker`, DICOM port 0 — on 127.0.0.1. The **match sets**, by (Study
Instance UID, SPS ID), are compared.

Every difference is intentional, named, and asserted here (and listed in
``docs/conformance-mwl.md``):

- ``final-steps-hidden`` (every query): the broker does not answer COMPLETED / DISCONTINUED
  steps; ``wlmscpfs`` serves whatever files it has.
- ``incomplete-files`` (every query): ``wlmscpfs --enable-file-reject`` (its default) ignores
  files without a Requested Procedure Description (or Code Sequence) and files with more than
  one SPS item; the broker imports them (one step per SPS item).
- ``person-name-folding``: PN matching is case- and accent-insensitive in the broker
  (PS3.4 C.2.2.2.1.1 allows it), byte-exact in ``wlmscpfs``.
- ``wildcard-on-single-value-key``: ``*`` / ``?`` on Patient ID, Scheduled Station AE Title and
  Modality (Single Value keys in Table K.6-1) are wild cards in the broker, literal in
  ``wlmscpfs`` (which then matches nothing).
- ``date-range-with-single-time``, ``open-date-range-with-time-range``,
  ``date-range-with-open-end-time``: the broker always combines SPS Start Date and Time into one
  period (Table K.6-1 remark); ``wlmscpfs`` 3.6.7 does so only when both are closed ranges (or
  both open the same way) — otherwise it matches date and time separately, and a time range
  open at its end makes the period end at 00:00 of the last day.
- ``time-fraction``: the broker compares start times to the second (a stored ``143030.5``
  matches ``143030``); ``wlmscpfs`` compares the fraction too.

Multi-valued Scheduled Station AE Titles match on any value in both (no difference).

DCMTK missing, or ``unshare`` not permitted: the module is skipped with the reason — except
with ``CI=true``, where it fails.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from pydicom.dataset import Dataset

from broker.app import Broker
from broker.config import Config, DatabaseConfig, DicomConfig, HL7Config, HttpConfig
from broker.importer import Outcome, import_worklist
from broker.store import Store, migrate
from tests.interop.dcmtk import (
    TIMEOUT,
    Wlmscpfs,
    findscu,
    in_ci,
    require_tools,
    write_worklist_file,
)
from tests.interop.worklist_items import (
    AE,
    DATE,
    FINAL,
    TIME,
    Key,
    Query,
    Row,
    dcmtk_samples,
    generated_items,
    queries,
    rows,
)

CALLED_AE = "OFFIS"
BROKER_AE = "MWLBROKER"
ITEMS = [*dcmtk_samples(), *generated_items()]
ROWS = rows(ITEMS)
QUERIES = queries(ITEMS)
FINAL_KEYS = frozenset(row.key for row in ROWS if row.item.status in FINAL)
INCOMPLETE_KEYS = frozenset(row.key for row in ROWS if row.item.incomplete_for_dcmtk)


@dataclass(frozen=True)
class Answer:
    """The match sets of one query, and how each SCP sent Patient's Name: (Specific Character
    Set, the name decoded) from the broker, (Specific Character Set, raw bytes) from wlmscpfs."""

    broker: frozenset[Key]
    dcmtk: frozenset[Key]
    broker_names: frozenset[tuple[str, str]] = frozenset()
    dcmtk_names: frozenset[tuple[str, bytes]] = frozenset()


# --- the two SCPs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Answer]:
    """Both SCPs loaded with ITEMS, every query asked of both."""
    require_tools("wlmscpfs", "findscu")
    _require_namespaces()
    root = tmp_path_factory.mktemp("differential")
    database = root / "wlistdb"
    for item in ITEMS:
        write_worklist_file(item.dataset, database / CALLED_AE / f"{item.name}.wl")
    (database / CALLED_AE / "lockfile").touch()
    config = _broker_config(root)
    _import(config, database)
    with _running_broker(config) as broker, _running_wlmscpfs(database) as server:
        return _ask_all(root, broker.dicom_port, server)


def _require_namespaces() -> None:
    missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
    if missing:
        _skip_or_fail(f"network namespace tools missing: {', '.join(missing)}")


def _skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def _broker_config(root: Path) -> Config:
    return Config(
        database=DatabaseConfig(url=f"sqlite:///{root / 'broker.db'}"),
        hl7=HL7Config(port=0, parse_workers=-1),
        dicom=DicomConfig(ae_title=BROKER_AE, host="127.0.0.1", port=0),
        http=HttpConfig(port=0),
    )


def _import(config: Config, database: Path) -> None:
    migrate(config.database)
    with Store.open(config.database) as store:
        report = import_worklist(store, [database], config.mapping)
    assert report.counts[Outcome.LOADED] == len(ITEMS), report.summary_lines()


@contextmanager
def _running_broker(config: Config) -> Iterator[Broker]:
    """The real broker on its own event loop thread; stopped at exit."""
    started = threading.Event()
    state: dict[str, object] = {}

    async def serve() -> None:
        broker, stop = Broker(config), asyncio.Event()
        state["loop"], state["stop"] = asyncio.get_running_loop(), stop
        try:
            await broker.start()
            state["broker"] = broker
        finally:
            started.set()
        try:
            await stop.wait()
        finally:
            await broker.stop()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert started.wait(TIMEOUT), "the broker did not start"
    broker = state.get("broker")
    assert isinstance(broker, Broker), "the broker failed to start"
    try:
        yield broker
    finally:
        loop, stop = state["loop"], state["stop"]
        assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(TIMEOUT)


@contextmanager
def _running_wlmscpfs(database: Path) -> Iterator[Wlmscpfs]:
    server = Wlmscpfs(database)
    try:
        server.start()
    except (RuntimeError, OSError) as error:
        _skip_or_fail(f"wlmscpfs cannot run in its own network namespace: {error}")
    try:
        yield server
    finally:
        server.stop()


def _ask_all(root: Path, broker_port: int, server: Wlmscpfs) -> dict[str, Answer]:
    def ask(number: int, query: Query) -> Answer:
        request = write_worklist_file(query.dataset(), root / "queries" / f"{number}.dcm")
        out = root / "responses" / str(number)
        broker = findscu(request, broker_port, BROKER_AE, out / "broker")
        dcmtk = findscu(request, server.port, CALLED_AE, out / "dcmtk", server.findscu_prefix())
        return Answer(
            _keys(broker),
            _keys(dcmtk),
            frozenset((_charset(r), str(r.PatientName)) for r in broker),
            frozenset((_charset(r), _raw(r, 0x00100010)) for r in dcmtk),
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {q.name: pool.submit(ask, n, q) for n, q in enumerate(QUERIES)}
        return {name: future.result(TIMEOUT * 4) for name, future in futures.items()}


def _keys(responses: list[Dataset]) -> frozenset[Key]:
    keys = set()
    for response in responses:
        steps = response.get("ScheduledProcedureStepSequence") or [Dataset()]
        study_uid = str(response.get("StudyInstanceUID", ""))
        keys.add((study_uid, str(steps[0].get("ScheduledProcedureStepID", ""))))
    return frozenset(keys)


def _charset(response: Dataset) -> str:
    return _raw(response, 0x00080005).decode("ascii")


def _raw(response: Dataset, tag: int) -> bytes:
    """An element's value bytes as received, not decoded (wlmscpfs does not declare the
    character set of what it sends), without the padding to even length."""
    if tag not in response:
        return b""
    value = response.get_item(tag).value
    raw = value if isinstance(value, bytes) else str(value).encode()
    return raw.rstrip(b" \x00")


# --- every query -----------------------------------------------------------------------------


@pytest.mark.parametrize("query", QUERIES, ids=[q.name for q in QUERIES])
def test_match_sets(answers: dict[str, Answer], query: Query) -> None:
    """Equal match sets, except for the named differences; each is asserted as expected."""
    answer = answers[query.name]
    assert not answer.broker & FINAL_KEYS, "final-steps-hidden: the broker answered a final step"
    assert not answer.dcmtk & INCOMPLETE_KEYS, "incomplete-files: wlmscpfs served one"
    broker, dcmtk = answer.broker - INCOMPLETE_KEYS, answer.dcmtk - FINAL_KEYS
    if not query.difference:
        assert broker == dcmtk
        return
    expected_broker, expected_dcmtk = DIFFERENCES[query.difference](query)
    assert expected_broker != expected_dcmtk, f"{query.difference} does not show here"
    assert (broker, dcmtk) == (expected_broker, expected_dcmtk)


def test_final_steps_are_served_by_wlmscpfs_only(answers: dict[str, Answer]) -> None:
    universal = answers["universal"]

    assert FINAL_KEYS
    assert universal.dcmtk - universal.broker == FINAL_KEYS


def test_incomplete_files_are_served_by_the_broker_only(answers: dict[str, Answer]) -> None:
    universal = answers["universal"]

    assert len(INCOMPLETE_KEYS) == 3  # one file without description, one with two steps
    assert universal.broker - universal.dcmtk == INCOMPLETE_KEYS


def test_multi_valued_station_ae_matches_any_value_in_both(answers: dict[str, Answer]) -> None:
    wklist1 = ("1.2.276.0.7230010.3.2.101", "SPD3445")  # AE AA32\AA33

    aa33 = answers["station AA33"]
    assert (aa33.broker, aa33.dcmtk) == ({wklist1}, {wklist1})
    later_values = {r.key for r in ROWS if "MR1" in r.values(AE)[1:]} - FINAL_KEYS - INCOMPLETE_KEYS
    assert later_values  # MR1 as second or third value
    assert later_values <= answers["station MR1"].broker & answers["station MR1"].dcmtk


def test_text_is_sent_in_a_declared_character_set(answers: dict[str, Answer]) -> None:
    """The broker decodes the ISO_IR 100 files and answers in ISO_IR 192 (its default), with
    (0008,0005); wlmscpfs (default ``--return-no-char-set``) sends the files' Latin-1 bytes
    and no (0008,0005), so a receiver must guess."""
    answer = answers["name exact"]

    assert answer.broker_names == {("ISO_IR 192", "Müller^Jürgen")}
    assert answer.dcmtk_names == {("", "Müller^Jürgen".encode("latin-1"))}


def test_every_query_was_answered_by_both(answers: dict[str, Answer]) -> None:
    """Guards against a comparison of two empty sets: most queries match something."""
    empty = [name for name, answer in answers.items() if not answer.broker and not answer.dcmtk]

    assert sorted(empty) == ["date + time single", "station NOSUCH", "station ct1"]


# --- oracles of the differences --------------------------------------------------------------

Expected = tuple[frozenset[Key], frozenset[Key]]
"""(the broker's match set, wlmscpfs' match set), both without final and incomplete items."""


def _selected(predicate: Callable[[Row], bool]) -> frozenset[Key]:
    return frozenset(row.key for row in ROWS if predicate(row)) - FINAL_KEYS - INCOMPLETE_KEYS


def _wildcard(pattern: str) -> re.Pattern[str]:
    """DICOM wild cards (PS3.4 C.2.2.2.4): ``*`` any sequence, ``?`` one character."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL)


def _fold(text: str) -> str:
    """Case and accents away: NFKD without combining marks, case-folded, upper case."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def person_name_folding(query: Query) -> Expected:
    [(keyword, pattern)] = query.keys.items()
    exact, folded = _wildcard(pattern), _wildcard(_fold(pattern))
    return (
        _selected(lambda r: any(folded.fullmatch(_fold(v)) for v in r.values(keyword))),
        _selected(lambda r: any(exact.fullmatch(v) for v in r.values(keyword))),
    )


def wildcard_on_single_value_key(query: Query) -> Expected:
    [(keyword, pattern)] = query.keys.items()
    matcher = _wildcard(pattern)
    return _selected(lambda r: any(matcher.fullmatch(v) for v in r.values(keyword))), frozenset()


Bound = TypeVar("Bound", str, float)


def _seconds(tm: str) -> float:
    """TM by meaning: ``HH[MM[SS[.F]]]`` → seconds since midnight."""
    whole, _, fraction = tm.partition(".")
    digits = whole.ljust(6, "0")
    return (
        int(digits[:2]) * 3600
        + int(digits[2:4]) * 60
        + int(digits[4:6])
        + float(f"0.{fraction or 0}")
    )


def _bounds(value: str, parse: Callable[[str], Bound]) -> tuple[Bound | None, Bound | None]:
    """A single value (both bounds) or a range ``a-b``, ``-b``, ``a-`` (None: open)."""
    if "-" not in value:
        return parse(value), parse(value)
    low, _, high = value.partition("-")
    return (parse(low) if low else None), (parse(high) if high else None)


def _start(row: Row) -> tuple[str, float]:
    return row.values(DATE)[0], _seconds(row.values(TIME)[0])


def _period(query: Query, *, day_end: float = 86399, cut: bool = True) -> Callable[[Row], bool]:
    """One period from (low date, low time or 00:00) to (high date, high time or ``day_end``);
    ``cut``: compare start times to the second."""
    date_low, date_high = _bounds(query.keys[DATE], str)
    time_low, time_high = _bounds(query.keys[TIME], _seconds)
    low = None if date_low is None else (date_low, 0.0 if time_low is None else time_low)
    high = None if date_high is None else (date_high, day_end if time_high is None else time_high)

    def matches(row: Row) -> bool:
        date, seconds = _start(row)
        start = (date, float(int(seconds)) if cut else seconds)
        return (low is None or start >= low) and (high is None or start <= high)

    return matches


def _separately(query: Query) -> Callable[[Row], bool]:
    """Date within the date range and, independently, time of day within the time range."""
    date_low, date_high = _bounds(query.keys[DATE], str)
    time_low, time_high = _bounds(query.keys[TIME], _seconds)

    def matches(row: Row) -> bool:
        date, seconds = _start(row)
        in_days = (date_low is None or date >= date_low) and (
            date_high is None or date <= date_high
        )
        in_hours = (time_low is None or seconds >= time_low) and (
            time_high is None or seconds <= time_high
        )
        return in_days and in_hours

    return matches


def date_range_with_single_time(query: Query) -> Expected:
    return _selected(_period(query)), _selected(_separately(query))


def open_date_range_with_time_range(query: Query) -> Expected:
    return _selected(_period(query)), _selected(_separately(query))


def date_range_with_open_end_time(query: Query) -> Expected:
    return _selected(_period(query)), _selected(_period(query, day_end=0, cut=False))


def time_fraction(query: Query) -> Expected:
    wanted = _seconds(query.keys[TIME])
    return (
        _selected(lambda r: int(_start(r)[1]) == wanted),
        _selected(lambda r: _start(r)[1] == wanted),
    )


DIFFERENCES: dict[str, Callable[[Query], Expected]] = {
    "person-name-folding": person_name_folding,
    "wildcard-on-single-value-key": wildcard_on_single_value_key,
    "date-range-with-single-time": date_range_with_single_time,
    "open-date-range-with-time-range": open_date_range_with_time_range,
    "date-range-with-open-end-time": date_range_with_open_end_time,
    "time-fraction": time_fraction,
}


def test_every_difference_is_exercised() -> None:
    assert {q.difference for q in QUERIES} - {""} == set(DIFFERENCES)


def test_items_are_the_dcmtk_samples_and_generated_ones() -> None:
    names = [item.name for item in ITEMS]
    assert names[:10] == [f"wklist{n}" for n in range(1, 11)]
    assert len(names) == len(set(names)) == 212
