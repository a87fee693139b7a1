"""SQL implementation of :class:`mwl.matching.WorklistFinder`: a C-FIND answered by one query.

Matching (PS3.4 C.2.2.2), each :class:`~mwl.matching.Match` a ``WHERE`` term on an indexed
column (:data:`COLUMNS`; migrations 0001 and 0002):

- Single Value: ``column = value``; several values (any may match): ``column IN (…)``.
- Wild Card: ``*`` → ``%``, ``?`` → ``_`` in ``LIKE … ESCAPE '\\'``, the value's own ``%``,
  ``_`` and ``\\`` escaped; byte-wise and case-sensitive on both databases (``"C"`` collation
  on PostgreSQL, ``case_sensitive_like`` on SQLite), so ``ABC*`` is an index range.
- List of UID: ``column IN (…)``.
- Scheduled Station AE Title is multi-valued (K.2.2.3): the step matches when any of its rows
  in ``step_station_aes`` does, and the item carries all of them.
- PN keys arrive folded (:func:`mwl.pn.fold_person_name`) and compare with ``*_folded``.
- SPS Start Date and Time: one inclusive ``YYYYMMDDHHMMSS`` period on ``start_datetime``
  (C.2.2.2.5.4); a time without a date: the ``HHMMSS`` part of it (not indexed: every day).

Zero-length stored values are ``''`` in the columns; they never match a non-universal key
(K.2.2.1.1.1): a Single Value or UID is never ``''``, a ``LIKE`` pattern with any character
besides ``%`` needs at least one character, and a range excludes ``''`` explicitly. Zero-length
or ``*``-only request values are universal and add no term.

Access path. The cost of an answer must follow the number of matches, not the size of the
store (ARCHITECTURE.md). A broker's SQLite database has no planner statistics (nothing runs
``ANALYZE``), and without them SQLite prefers walking the ``start_datetime`` index in order
over a selective index it underestimates. So the statement names the index to start from,
by a fixed ranking (:func:`driving_match`): a Single Value or UID of an identifier (Patient
ID, Accession Number, Study Instance UID, SPS ID, Requested Procedure ID, Admission ID), else
a start range with a lower bound (the schedule ahead is short; Modality and SPS Status stay
indexable beside it, their indexes continue with ``start_datetime``), else a PN key or another
wild-carded identifier, else the station AE title, else the other keys. The driving match is
an ``IN`` sub-select down the hierarchy to the steps (one index lookup per level); the others
are plain terms that SQLite may not look up by index (its documented unary ``+``) and
correlated ``EXISTS`` for station AE titles; the matches are then sorted (``ORDER BY
+start_datetime``) rather than found by reading the ``start_datetime`` index in order.
PostgreSQL keeps its statistics (autovacuum analyses the tables) and gets plain joins and
terms to plan from them: the nested sub-selects would only cost it planning time.
``tests/broker/store/test_indexes.py`` checks the plans, SQLite with and without statistics.

``include_final=False`` hides COMPLETED, DISCONTINUED and CANCELED steps unless the query
matches on SPS Status itself.

Items stream in ``(start_datetime, step id)`` order: rows come in chunks (a server-side cursor
on PostgreSQL, ``fetchmany`` on SQLite), each chunk's station AE titles in one more query. The
read runs in :meth:`Store.read_session`: on SQLite a deferred transaction that never blocks the
HL7 writer (WAL). Close the iterator, or exhaust it, to give the connection back.

A chunk holds its rows' DICOM JSON as text, decoded (one ``json.loads`` for the four levels) as
each item is yielded: decoded, a chunk is ~100,000 dicts and lists that outlive the collector's
young generation and make its full collections walk them again and again, which cost as much as
the rest of the finder together (docs/benchmarks.md, "C-FIND").
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, Text, exists, func, or_, select, type_coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from broker.store.errors import store_errors
from broker.store.items import merged_dataset, sps_item
from broker.store.schema import Order, Patient, RequestedProcedure, ScheduledStep, StepStationAE
from mwl.matching import Match, MatchKey, MatchKind, TimeRange, WorklistQuery
from mwl.model import FINAL_STATUSES, PatientKey, SPSStatus, WorklistItem

CHUNK = 500
"""Rows fetched at a time: the first items are out after one chunk, memory stays bounded."""

ESCAPE = "\\"

COLUMNS: Mapping[MatchKey, InstrumentedAttribute[str]] = {
    MatchKey.STATION_AE: StepStationAE.ae_title,
    MatchKey.MODALITY: ScheduledStep.modality,
    MatchKey.PERFORMING_PHYSICIAN: ScheduledStep.performing_physician_folded,
    MatchKey.SPS_ID: ScheduledStep.sps_id,
    MatchKey.SPS_STATUS: ScheduledStep.status,
    MatchKey.STATION_NAME: ScheduledStep.station_name,
    MatchKey.SPS_LOCATION: ScheduledStep.location,
    MatchKey.PATIENT_NAME: Patient.name_folded,
    MatchKey.PATIENT_ID: Patient.patient_id,
    MatchKey.ISSUER_OF_PATIENT_ID: Patient.issuer,
    MatchKey.ACCESSION: Order.accession,
    MatchKey.REQUESTED_PROCEDURE_ID: RequestedProcedure.requested_procedure_id,
    MatchKey.REQUESTED_PROCEDURE_DESCRIPTION: RequestedProcedure.description,
    MatchKey.STUDY_UID: RequestedProcedure.study_uid,
    MatchKey.ADMISSION_ID: Order.admission_id,
    MatchKey.REFERRING_PHYSICIAN: Order.referring_physician_folded,
}
"""The indexed column each matching key compares with (PN keys: the folded copy)."""

IDENTIFIERS = frozenset(
    {MatchKey.PATIENT_ID, MatchKey.ACCESSION, MatchKey.STUDY_UID, MatchKey.SPS_ID,
     MatchKey.REQUESTED_PROCEDURE_ID, MatchKey.ADMISSION_ID}
)  # fmt: skip
"""Keys whose exact value names one or a few steps."""

BESIDE_START = frozenset({MatchKey.MODALITY, MatchKey.SPS_STATUS})
"""Keys indexed together with ``start_datetime`` (``ix_scheduled_steps_*_start``)."""

_FINAL = sorted(status.value for status in FINAL_STATUSES)
_START: ColumnElement[str] = ScheduledStep.start_datetime.expression
_TIME_OF_DAY: ColumnElement[str] = func.substr(ScheduledStep.start_datetime, 9, 6)
"""``HHMMSS`` of ``YYYYMMDDHHMMSS``."""


class SqlWorklistFinder:
    """:class:`mwl.matching.WorklistFinder` over the store's tables.

    ``sessions`` opens a reading session (:meth:`broker.store.Store.read_session`).
    """

    def __init__(self, sessions: Callable[[], Session], *, chunk: int = CHUNK) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be positive, not {chunk}")
        self._sessions = sessions
        self._chunk = chunk

    def find(self, query: WorklistQuery) -> Generator[WorklistItem, None, None]:
        """The matching items, lazily, by (start date-time, step id); at most ``query.limit``.

        The read session stays open until the generator is exhausted or closed
        (``close()``, or garbage collection).

        Raises
        ------
        StoreFailure
            While iterating: the database failed (nothing of SQLAlchemy leaks).
        """
        return self._stream(query)

    def _stream(self, query: WorklistQuery) -> Generator[WorklistItem, None, None]:
        with store_errors(), self._sessions() as session:
            statement = worklist_statement(query, dialect=session.get_bind().dialect.name)
            result = session.execute(statement, execution_options={"yield_per": self._chunk})
            for rows in result.partitions():
                station_aes = _station_aes(session, [row.step_id for row in rows])
                for row in rows:
                    yield row_to_item(row, station_aes.get(row.step_id, ()))


def worklist_statement(query: WorklistQuery, *, dialect: str) -> Select[*tuple[Any, ...]]:
    """The one ``SELECT`` of steps ⋈ procedures ⋈ orders ⋈ patients answering ``query``;
    its access path steered on SQLite only (module doc)."""
    matches = constraining(query.matches)
    driver = driving_match(matches, query.start) if dialect == "sqlite" else None
    statement = (
        select(
            ScheduledStep.id.label("step_id"),
            ScheduledStep.status,
            ScheduledStep.sps_id,
            _text(ScheduledStep.attributes).label("step_attributes"),
            RequestedProcedure.study_uid,
            _text(RequestedProcedure.attributes).label("procedure_attributes"),
            _text(Order.attributes).label("order_attributes"),
            Patient.patient_id,
            Patient.issuer,
            _text(Patient.attributes).label("patient_attributes"),
        )
        .join(RequestedProcedure, ScheduledStep.procedure_id == RequestedProcedure.id)
        .join(Order, RequestedProcedure.order_id == Order.id)
        .join(Patient, Order.patient_id == Patient.id)
        .where(*query_conditions(query, matches, driver))
        .order_by(_START if driver is None else Unindexed(_START), ScheduledStep.id)
    )
    return statement if query.limit is None else statement.limit(query.limit)


def constraining(matches: Sequence[Match]) -> list[Match]:
    """The matches with their universal values dropped (zero-length, or only ``*``), and
    those left with no value dropped."""
    kept = [Match(m.key, m.kind, tuple(_significant(m))) for m in matches]
    return [match for match in kept if match.values]


def driving_match(matches: Sequence[Match], start: TimeRange | None) -> Match | None:
    """The match whose index the search starts from (module doc); None: the start range's,
    or no index when there is neither."""
    ranked = sorted(matches, key=_rank)  # stable: the first of equal rank
    if ranked and _rank(ranked[0]) == 0:
        return ranked[0]
    if start is not None and start.low is not None:
        return None
    return ranked[0] if ranked else None


def query_conditions(
    query: WorklistQuery, matches: Sequence[Match], driver: Match | None
) -> list[ColumnElement[bool]]:
    """The ``WHERE`` terms (all must hold); only ``driver``'s, or the start range's, indexed."""
    by_start = driver is None
    terms = [
        driving_term(match)
        if match is driver
        else match_condition(match, indexed=by_start and match.key in BESIDE_START)
        for match in matches
    ]
    start = _START if by_start else Unindexed(_START)
    periods = [*_bounds(start, query.start), *_bounds(_TIME_OF_DAY, query.time_of_day)]
    if periods:  # a zero-length stored date-time ('') never matches a range
        terms.extend([*periods, start > ""])
    if not query.include_final and not any(m.key is MatchKey.SPS_STATUS for m in matches):
        terms.append(ScheduledStep.status.not_in(_FINAL))
    return terms


def driving_term(match: Match) -> ColumnElement[bool]:
    """``match`` on its own index, then down to the steps through the foreign-key indexes
    (uncorrelated sub-selects: SQLite runs them first and looks the steps up by their ids)."""
    column = COLUMNS[match.key]
    term = _compare(column.expression, match.kind, match.values)
    level = column.class_
    if level is ScheduledStep:
        return term
    if level is StepStationAE:
        return ScheduledStep.id.in_(_ids(StepStationAE.step_id, term))
    orders = _ids(Order.id, term)
    if level is Patient:
        orders = _ids(Order.id, Order.patient_id.in_(_ids(Patient.id, term)))
    if level is not RequestedProcedure:
        term = RequestedProcedure.order_id.in_(orders)
    return ScheduledStep.procedure_id.in_(_ids(RequestedProcedure.id, term))


def match_condition(match: Match, *, indexed: bool = False) -> ColumnElement[bool]:
    """``match`` as a condition on the joined row (a correlated ``EXISTS`` for station AE
    titles); SQLite may use an index for it only when ``indexed``."""
    column = COLUMNS[match.key].expression
    if match.key is MatchKey.STATION_AE:
        return exists().where(
            StepStationAE.step_id == ScheduledStep.id, _compare(column, match.kind, match.values)
        )
    return _compare(column if indexed else Unindexed(column), match.kind, match.values)


def like_pattern(value: str) -> str:
    """A DICOM wild card value as a ``LIKE`` pattern with ``\\`` as the escape character."""
    escaped = value.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%")
    return escaped.replace("_", ESCAPE + "_").replace("*", "%").replace("?", "_")


def row_to_item(row: Row[Any], station_aes: Sequence[str]) -> WorklistItem:
    """The merged worklist item of one row of :func:`worklist_statement` (its attributes
    still DICOM JSON text)."""
    levels = (row.patient_attributes, row.order_attributes, row.procedure_attributes,
              row.step_attributes)  # fmt: skip
    patient, order, procedure, step = json.loads(f"[{','.join(levels)}]")
    return WorklistItem(
        step_id=row.step_id,
        status=SPSStatus(row.status),
        patient_key=PatientKey(row.patient_id, row.issuer),
        study_uid=row.study_uid,
        sps_id=row.sps_id,
        dataset=merged_dataset(patient, order, procedure, sps_item(step, row.status, station_aes)),
    )


def _text(column: InstrumentedAttribute[Any]) -> ColumnElement[str]:
    """A DICOM JSON column as its stored text, left to :func:`row_to_item` to decode."""
    return type_coerce(column, Text())


class Unindexed(ColumnElement[str]):
    """A column SQLite must not look up by index: ``+column``, the unary ``+`` its query
    planner documents for this (sqlite.org/optoverview.html); the column elsewhere."""

    __visit_name__ = "unindexed"
    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, column: ColumnElement[str]) -> None:
        self.column = column
        self.type = column.type


@compiles(Unindexed)
def _unindexed(element: Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(Unindexed, "sqlite")
def _unindexed_on_sqlite(element: Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)


def _ids(column: InstrumentedAttribute[int], term: ColumnElement[bool]) -> Select[int]:
    return select(column).where(term).correlate(None)


def _rank(match: Match) -> int:
    """0 drives before a start range; the rest after it, lowest first."""
    if match.key in IDENTIFIERS:
        return 0 if match.kind is not MatchKind.WILDCARD else 1
    if match.key.is_person_name:
        return 1
    return 2 if match.key is MatchKey.STATION_AE else 3


def _significant(match: Match) -> list[str]:
    """The values that constrain: zero-length and ``*``-only wild cards are universal."""
    if match.kind is MatchKind.WILDCARD:
        return [value for value in match.values if value.strip("*")]
    return [value for value in match.values if value]


def _compare(
    column: ColumnElement[str], kind: MatchKind, values: Sequence[str]
) -> ColumnElement[bool]:
    if kind is MatchKind.WILDCARD:
        return or_(*(_wildcard(column, value) for value in values))
    return column == values[0] if len(values) == 1 else column.in_(values)


def _wildcard(column: ColumnElement[str], value: str) -> ColumnElement[bool]:
    if "*" not in value and "?" not in value:
        return column == value
    return column.like(like_pattern(value), escape=ESCAPE)


def _bounds(column: ColumnElement[str], period: TimeRange | None) -> list[ColumnElement[bool]]:
    """Inclusive bounds; None (no range asked) and open ends add nothing."""
    if period is None:
        return []
    terms = [] if period.low is None else [column >= period.low]
    return terms if period.high is None else [*terms, column <= period.high]


def _station_aes(session: Session, step_ids: list[int]) -> dict[int, list[str]]:
    """Every Scheduled Station AE Title of the given steps (one query, ordered by title)."""
    titles: defaultdict[int, list[str]] = defaultdict(list)
    rows = session.execute(
        select(StepStationAE.step_id, StepStationAE.ae_title)
        .where(StepStationAE.step_id.in_(step_ids))
        .order_by(StepStationAE.step_id, StepStationAE.ae_title)
    )
    for step_id, ae_title in rows:
        titles[step_id].append(ae_title)
    return titles
