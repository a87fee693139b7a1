"""A C-FIND query matched against one worklist item in memory, by the finder's rules.

:mod:`broker.store.finder` answers a :class:`mwl.matching.WorklistQuery` in SQL; the preview
(which C-FIND queries would return an item not stored yet) and the C-FIND log (which remembered
query returned an order's steps) need the same decision for one item they hold. The rules, as
the finder applies them to the same typed columns:

- Single Value: equal to any of the values; Wild Card: ``*`` any run, ``?`` one character;
  List of UID: any of the UIDs. PN keys compare the folded forms (:func:`mwl.pn.fold_person_name`;
  the query parser folds the requested value). A zero-length stored value never matches.
- Scheduled Station AE Title is multi-valued: any stored title may match (K.2.2.3).
- SPS start: one inclusive ``YYYYMMDDHHMMSS`` period, or a time-of-day range; a step without
  a start never matches a range.
- COMPLETED, DISCONTINUED and CANCELED steps only when the query includes final statuses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from broker.store.schema import Order, Patient, RequestedProcedure, ScheduledStep
from mwl.matching import Match, MatchKey, MatchKind, TimeRange, WorklistQuery
from mwl.model import FINAL_STATUSES

_FINAL = frozenset(status.value for status in FINAL_STATUSES)


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemKeys:
    """The matching columns of one item, as the store keeps them (PN keys folded)."""

    values: Mapping[MatchKey, tuple[str, ...]]
    start_datetime: str
    """``YYYYMMDDHHMMSS`` or ``''``."""
    status: str


def item_keys(
    step: ScheduledStep,
    procedure: RequestedProcedure,
    order: Order,
    patient: Patient,
    station_aes: Sequence[str],
) -> ItemKeys:
    """The keys of a stored (or flushed, not committed) step, column by column as the finder
    reads them (:data:`broker.store.finder.COLUMNS`)."""
    values = {
        MatchKey.STATION_AE: tuple(station_aes),
        MatchKey.MODALITY: (step.modality,),
        MatchKey.PERFORMING_PHYSICIAN: (step.performing_physician_folded,),
        MatchKey.SPS_ID: (step.sps_id,),
        MatchKey.SPS_STATUS: (step.status,),
        MatchKey.STATION_NAME: (step.station_name,),
        MatchKey.SPS_LOCATION: (step.location,),
        MatchKey.PATIENT_NAME: (patient.name_folded,),
        MatchKey.PATIENT_ID: (patient.patient_id,),
        MatchKey.ISSUER_OF_PATIENT_ID: (patient.issuer,),
        MatchKey.ACCESSION: (order.accession,),
        MatchKey.REQUESTED_PROCEDURE_ID: (procedure.requested_procedure_id,),
        MatchKey.REQUESTED_PROCEDURE_DESCRIPTION: (procedure.description,),
        MatchKey.STUDY_UID: (procedure.study_uid,),
        MatchKey.ADMISSION_ID: (order.admission_id,),
        MatchKey.REFERRING_PHYSICIAN: (order.referring_physician_folded,),
    }
    return ItemKeys(values=values, start_datetime=step.start_datetime, status=step.status)


def mismatches(keys: ItemKeys, query: WorklistQuery) -> list[str]:
    """Why the item does not match ``query``; empty when it does."""
    reasons = [reason for match in query.matches if (reason := _mismatch(keys, match))]
    start = keys.start_datetime
    if query.start is not None and not _within(start, query.start):
        reasons.append(f"SPS start {_shown(start)} is outside {_period(query.start)}")
    if query.time_of_day is not None and not _within(start[8:14], query.time_of_day):
        reasons.append(
            f"SPS start time {_shown(start[8:14])} is outside {_period(query.time_of_day)}"
        )
    if not query.include_final and keys.status in _FINAL:
        reasons.append(f"status {keys.status} is hidden ([worklist] include_final = false)")
    return reasons


def matches(keys: ItemKeys, query: WorklistQuery) -> bool:
    return not mismatches(keys, query)


def _mismatch(keys: ItemKeys, match: Match) -> str:
    stored = [value for value in keys.values.get(match.key, ()) if value]
    if any(_equal(match, value) for value in stored):
        return ""
    wanted = "\\".join(match.values)
    if match.key is MatchKey.STATION_AE:
        return f"Scheduled Station AE {wanted} is not among {', '.join(stored) or '(none)'}"
    found = ", ".join(stored) or "(empty)"
    return f"{_label(match.key)} {found} is not {wanted.replace(chr(92), '/')}"


def _equal(match: Match, stored: str) -> bool:
    if match.kind is MatchKind.WILDCARD:
        return any(_wildcard(value).fullmatch(stored) for value in match.values)
    return stored in match.values


@lru_cache(maxsize=256)
def _wildcard(value: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value)
    return re.compile("".join(parts), re.DOTALL)


def _within(value: str, period: TimeRange) -> bool:
    if not value:
        return False
    low_ok = period.low is None or value >= period.low
    return low_ok and (period.high is None or value <= period.high)


def _period(period: TimeRange) -> str:
    return f"{period.low or '…'}–{period.high or '…'}"


def _shown(value: str) -> str:
    return value or "(none)"


def _label(key: MatchKey) -> str:
    return "modality" if key is MatchKey.MODALITY else key.value
