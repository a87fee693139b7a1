"""What a Modality Worklist C-FIND asks for, as plain values (PS3.4 K.2.2.2, C.2.2.2).

:mod:`mwl.query` turns a request identifier into a :class:`WorklistQuery`; a
:class:`WorklistFinder` (``broker.store``) answers it from indexed columns; :mod:`mwl.answer`
builds each response identifier with only the requested keys. Nothing here touches pydicom,
pynetdicom or SQL.

Conventions the finder relies on:

- PN keys (:attr:`MatchKey.is_person_name`) carry values already folded with
  :func:`mwl.pn.fold_person_name` (case- and accent-insensitive PN matching, PS3.4
  C.2.2.2.1.1); the finder compares them with the ``*_folded`` columns.
- :attr:`MatchKind.WILDCARD` values keep DICOM's ``*`` and ``?``; the finder translates them
  (escaping SQL ``LIKE`` metacharacters ``%``, ``_`` and the escape character).
- Universal matching (zero-length value, or a wildcard of only ``*``) produces no
  :class:`Match` at all: it matches every entity, including zero-length stored values.
- A stored zero-length value never matches a non-universal key (PS3.4 K.2.2.1.1.1).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from mwl.model import WorklistItem


class MatchKey(enum.StrEnum):
    """The matching keys the SCP supports (PS3.4 Table K.6-1 required keys, plus the optional
    keys the issue names). The value is the DICOM keyword."""

    STATION_AE = "ScheduledStationAETitle"
    """>(0040,0001), multi-valued when stored: any stored value may match (K.2.2.3)."""
    MODALITY = "Modality"
    PERFORMING_PHYSICIAN = "ScheduledPerformingPhysicianName"
    SPS_ID = "ScheduledProcedureStepID"
    SPS_STATUS = "ScheduledProcedureStepStatus"
    STATION_NAME = "ScheduledStationName"
    SPS_LOCATION = "ScheduledProcedureStepLocation"
    PATIENT_NAME = "PatientName"
    PATIENT_ID = "PatientID"
    ISSUER_OF_PATIENT_ID = "IssuerOfPatientID"
    ACCESSION = "AccessionNumber"
    REQUESTED_PROCEDURE_ID = "RequestedProcedureID"
    REQUESTED_PROCEDURE_DESCRIPTION = "RequestedProcedureDescription"
    STUDY_UID = "StudyInstanceUID"
    ADMISSION_ID = "AdmissionID"
    REFERRING_PHYSICIAN = "ReferringPhysicianName"

    @property
    def is_person_name(self) -> bool:
        return self in _PERSON_NAMES

    @property
    def in_sps_item(self) -> bool:
        """True for keys of the (0040,0100) SPS Sequence item."""
        return self in _SPS_ITEM_KEYS


_PERSON_NAMES = frozenset(
    {MatchKey.PATIENT_NAME, MatchKey.PERFORMING_PHYSICIAN, MatchKey.REFERRING_PHYSICIAN}
)
_SPS_ITEM_KEYS = frozenset(
    {MatchKey.STATION_AE, MatchKey.MODALITY, MatchKey.PERFORMING_PHYSICIAN, MatchKey.SPS_ID,
     MatchKey.SPS_STATUS, MatchKey.STATION_NAME, MatchKey.SPS_LOCATION}
)  # fmt: skip


class MatchKind(enum.StrEnum):
    """PS3.4 C.2.2.2 matching types (Universal has no Match; Range is :class:`TimeRange`)."""

    SINGLE = "single"
    """Exact value; case-sensitive except PN (folded). Several values: any of them (a
    multi-valued request key, or a caller's default station AE titles)."""
    WILDCARD = "wildcard"
    """``*`` any sequence (also empty), ``?`` one character; several values: any of them."""
    UID_LIST = "uid-list"
    """Any of several UIDs (values separated by ``\\`` in the request)."""


@dataclass(frozen=True, slots=True)
class Match:
    """One matching key of the request."""

    key: MatchKey
    kind: MatchKind
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TimeRange:
    """An inclusive range of sortable timestamps; None is an open end.

    For :attr:`WorklistQuery.start` the values are ``YYYYMMDDHHMMSS`` (SPS Start Date and Time
    combined into one period, PS3.4 Table K.6-1 remark / C.2.2.2.5.4); for
    :attr:`WorklistQuery.time_of_day` (a time without a date) they are ``HHMMSS``.
    """

    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorklistQuery:
    """Everything the finder needs: the conditions (all must hold) and the answer size."""

    matches: tuple[Match, ...] = ()
    start: TimeRange | None = None
    time_of_day: TimeRange | None = None
    include_final: bool = False
    """Also COMPLETED / DISCONTINUED / CANCELED steps (hidden by default, configurable; an
    explicit SPS Status match overrides it)."""
    limit: int | None = None
    """Stop after this many items (the site's maximum answer size); None: no limit."""


class WorklistFinder(Protocol):
    """Answers a query from storage, in a stable order (by step), lazily."""

    def find(self, query: WorklistQuery) -> Iterator[WorklistItem]: ...
