"""Which calling AE titles' default C-FIND queries would return a worklist item.

For every AE title that matters — the item's Scheduled Station AE Titles and every
``[[worklist.callers]]`` rule — two typical modality queries are parsed by the real C-FIND
parser (:func:`mwl.query.identifier_to_request`, so the caller's rule fills the keys it leaves
empty, PS3.4 K.2.2 and :class:`mwl.policy.CallerRule`) and matched against the item in memory:

- **empty query**: every matching key universal (zero length) — what a modality sends when
  its operator just opens the worklist;
- **own station query**: Scheduled Station AE Title = the calling AE title, the rest
  universal — what most modalities send by default.

The matching is the finder's, in memory (:mod:`broker.web.matching`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from pydicom import Dataset

from broker.web.matching import ItemKeys, mismatches
from mwl.matching import MatchKey
from mwl.policy import WorklistPolicy
from mwl.query import QueryError, identifier_to_request


class QueryAnswer(BaseModel):
    returned: bool
    why_not: list[str]


class StationAnswer(BaseModel):
    """Whether two default queries from ``ae_title`` return the item."""

    ae_title: str
    scheduled_here: bool
    """The AE title is one of the item's Scheduled Station AE Titles."""
    caller_rule: bool
    """A ``[[worklist.callers]]`` rule exists for this calling AE title."""
    empty_query: QueryAnswer
    own_station_query: QueryAnswer


def station_answers(keys: ItemKeys, policy: WorklistPolicy, now: datetime) -> list[StationAnswer]:
    rules = [rule.ae_title for rule in policy.callers]
    scheduled = keys.values.get(MatchKey.STATION_AE, ())
    titles = list(dict.fromkeys([*scheduled, *rules]))
    return [
        StationAnswer(
            ae_title=title,
            scheduled_here=title in scheduled,
            caller_rule=title in rules,
            empty_query=_answer(keys, _identifier(""), policy, title, now),
            own_station_query=_answer(keys, _identifier(title), policy, title, now),
        )
        for title in titles
    ]


def _identifier(station_ae: str) -> Dataset:
    """A typical worklist query: patient and step keys, all universal but the station AE."""
    item = Dataset()
    item.ScheduledStationAETitle = station_ae
    item.Modality = ""
    item.ScheduledProcedureStepStartDate = ""
    item.ScheduledProcedureStepStartTime = ""
    item.ScheduledProcedureStepID = ""
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.PatientID = ""
    identifier.AccessionNumber = ""
    identifier.StudyInstanceUID = ""
    identifier.ScheduledProcedureStepSequence = [item]
    return identifier


def _answer(
    keys: ItemKeys, identifier: Dataset, policy: WorklistPolicy, calling_ae: str, now: datetime
) -> QueryAnswer:
    try:
        request = identifier_to_request(identifier, policy=policy, calling_ae=calling_ae, now=now)
    except QueryError as error:  # pragma: no cover - the identifiers above are well formed
        return QueryAnswer(returned=False, why_not=[error.comment])
    why_not = mismatches(keys, request.query)
    return QueryAnswer(returned=not why_not, why_not=why_not)
