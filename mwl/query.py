"""A Modality Worklist C-FIND request identifier → :class:`ParsedRequest` (PS3.4 K.2.2, C.2.2.2).

The keys of :class:`mwl.matching.MatchKey` are matched (standards.md §3.2, one row per rule):

- **Single Value** and **Wild Card** (``*``, ``?``) on AE/CS/LO/PN/SH keys. Wild cards are
  accepted on every such key, also where Table K.6-1 asks only for Single Value (Station AE,
  Modality, Patient ID): a superset the conformance statement states. ``%`` and ``_`` stay
  literal; the finder escapes them. A value of only ``*`` is **Universal** (no :class:`Match`).
- **Universal**: a zero-length value (or one of spaces only) requests the attribute back.
- **List of UID** on Study Instance UID: ``\\``-separated UIDs, any may match.
- **PN**: case- and accent-insensitive (:func:`mwl.pn.fold_person_name`); trailing ``^``/``=``
  delimiters are insignificant (PS3.5 6.2.1), so ``DOE^`` matches like ``DOE``.
- **Range** on SPS Start Date (DA) and Time (TM), by meaning (``1000`` = ``100000``), to the
  second: fractions are cut, as the store cuts stored start times. Date and time **combine into
  one period** (Table K.6-1 remark): ``20060705-20060707`` + ``1000-1800`` = July 5 10:00 →
  July 7 18:00; a date alone spans whole days (``000000``–``235959``); a time alone matches the
  time of day (:attr:`WorklistQuery.time_of_day`); a TM range may not cross midnight.
- **Sequence** on (0040,0100) SPS Sequence: exactly one item; an empty item is universal.
- **Multiple values** of a non-UID key (``CT\\MR``): any value may match. The 2020 PS3.4 text
  defines a VM above 1 only for List of UID; later editions added Multiple Value Matching
  (standards.md §3.2 "Empty Value Matching, Multiple Value Matching", [U]). Answering any-of
  serves such SCUs instead of failing them. A :class:`Match` of kind SINGLE or WILDCARD with
  several values therefore means any-of; WILDCARD when at least one value has a wild card.
- ``""`` (Empty Value Matching, post-2020) is not supported: it is matched literally.

Other attributes are return keys only; given a non-universal value they are listed in
:attr:`ParsedRequest.unsupported` and the SCP answers Pending FF01 (K.2.2.1.1.2). Specific
Character Set and Timezone Offset From UTC are never matched (K.2.2.2); no timezone query
adjustment is negotiated, so the offset is ignored. Private attributes are neither matched nor
returned (their existence is not supported, C.2.2.1.3).

The request's (0008,0005) decodes its text: pydicom applies it when a value is first read.

Per-caller defaults (``[[worklist.callers]]``, :class:`mwl.policy.CallerRule`) fill keys the
request leaves universal: station AE (the caller's own, or a list: SINGLE any-of), modality,
and a start window of now ± hours. ``now`` is the SCP's clock; an aware value is converted to
the host's local time, because stored start times are local wall-clock times (standards.md
§1.3 TS → DA/TM).

Errors (:class:`QueryError`, status for the C-FIND response, standards.md §3.4)::

    A900  Identifier does not match SOP Class: a sequence key with more than one item, or a
          matching key (or a sequence) with the wrong VR.
    C100  Invalid date/time: not DA/TM, an impossible date (20061301), several values, a range
          ending before it starts, a time range crossing midnight.
    C101  Invalid UID in Study Instance UID (or in its list).
    C102  A value pydicom cannot decode (e.g. bytes invalid in the declared character set).

pynetdicom uses C001, C002, C310–C312 for its own failures; these codes avoid them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pydicom import Dataset
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag

from mwl.dicomjson import element_of
from mwl.matching import Match, MatchKey, MatchKind, TimeRange, WorklistQuery
from mwl.pn import fold_person_name
from mwl.policy import AnswerCharset, CallerRule, WorklistPolicy

NOT_SOP_CLASS = 0xA900
INVALID_DATE_TIME = 0xC100
INVALID_UID = 0xC101
UNDECODABLE = 0xC102

_SPS_SEQUENCE = 0x00400100
_START_DATE = 0x00400002
_START_TIME = 0x00400003
_NEVER_MATCHED = frozenset({0x00080005, 0x00080201})  # Specific Character Set, Timezone
_KEYS = {int(element_of(key.value)[0], 16): key for key in MatchKey}
_TRAILING_ONLY = frozenset({"ST", "LT", "UT", "UC", "UR"})  # leading spaces significant
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DA = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")  # YYYY.MM.DD: ACR-NEMA form, tolerated
_TM = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.\d{1,6})?)?)?")
_COMMENT_MAX = 64


class QueryError(Exception):
    """A request the SCP cannot process: the C-FIND Failure status, the Error Comment
    (0000,0902) (LO, at most 64 ASCII characters) and the Offending Element (0000,0901) tags."""

    def __init__(self, status: int, comment: str, offending: Iterable[int] = ()) -> None:
        self.status = status
        self.comment = _ascii(comment)[:_COMMENT_MAX]
        self.offending = tuple(offending)
        super().__init__(f"{status:04X} {self.comment}")


@dataclass(frozen=True, slots=True)
class ReturnKey:
    """One requested attribute: its tag, the VR for a zero-length answer, and for a sequence
    the requested item keys (None: every stored attribute of every item)."""

    tag: int
    vr: str
    item: ReturnKeys | None = None
    json_tag: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "json_tag", f"{self.tag:08X}")


@dataclass(frozen=True, slots=True)
class ReturnKeys:
    """The attributes one level of the answer carries (PS3.4 K.2.2.1.2: every matching key is
    also a return key; only requested attributes are returned), in tag order."""

    keys: tuple[ReturnKey, ...] = ()

    @property
    def tags(self) -> tuple[int, ...]:
        return tuple(key.tag for key in self.keys)

    def get(self, tag: int) -> ReturnKey | None:
        return next((key for key in self.keys if key.tag == tag), None)

    @property
    def sps_item(self) -> ReturnKeys | None:
        """The requested SPS item keys; None when the SPS Sequence asks for everything or is
        not requested (see :meth:`get`)."""
        sps = self.get(_SPS_SEQUENCE)
        return sps.item if sps else None


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the C-FIND SCP needs to answer one request."""

    query: WorklistQuery
    return_keys: ReturnKeys
    unsupported: tuple[int, ...]
    """Optional keys given a non-universal value that are not matched: answer FF01."""
    charset: AnswerCharset


@dataclass(slots=True)
class _Parsed:
    """What the walk over the identifier collects (local to one call)."""

    matches: list[Match] = field(default_factory=list)
    unsupported: list[int] = field(default_factory=list)
    start_date: DataElement | None = None
    start_time: DataElement | None = None


def identifier_to_request(
    identifier: Dataset, *, policy: WorklistPolicy, calling_ae: str, now: datetime
) -> ParsedRequest:
    """Parse a Modality Worklist C-FIND identifier (PS3.4 K.2.2, standards.md §3.1–§3.2).

    ``limit`` is ``policy.max_matches + 1``, so the SCP sees whether more than the maximum
    match (and refuses or truncates, :class:`mwl.policy.OverLimit`); None when the maximum
    is 0 (no limit). Raises :class:`QueryError` only.
    """
    parsed = _Parsed()
    return_keys = _top_level(identifier, parsed)
    rule = policy.rule_for(calling_ae)
    matches = [*parsed.matches, *_caller_matches(parsed.matches, rule, calling_ae)]
    start, time_of_day = _start_period(parsed.start_date, parsed.start_time)
    if start is None and time_of_day is None and rule and rule.hours_around_now:
        start = _window(now, rule.hours_around_now)
    explicit_status = any(match.key is MatchKey.SPS_STATUS for match in matches)
    query = WorklistQuery(
        matches=tuple(matches),
        start=start,
        time_of_day=time_of_day,
        include_final=explicit_status or policy.include_final,
        limit=policy.max_matches + 1 if policy.max_matches > 0 else None,
    )
    charset = (rule.charset if rule else None) or policy.charset
    unsupported = tuple(dict.fromkeys(parsed.unsupported))
    return ParsedRequest(query, return_keys, unsupported, charset)


def _top_level(identifier: Dataset, parsed: _Parsed) -> ReturnKeys:
    """Top-level keys: patient, visit, order and procedure attributes, and the SPS Sequence."""
    keys: list[ReturnKey] = []
    for elem in _elements(identifier):
        if elem.tag == _SPS_SEQUENCE:
            _check_vr(elem)
            keys.append(ReturnKey(elem.tag, "SQ", _sps_item(elem, parsed)))
            continue
        key = _KEYS.get(elem.tag)
        if key is not None and not key.in_sps_item:
            _add_match(parsed, _match(key, elem))
            keys.append(ReturnKey(elem.tag, elem.VR))
        else:
            keys.extend(_return_only(elem, parsed))
    return ReturnKeys(tuple(keys))


def _sps_item(sequence: DataElement, parsed: _Parsed) -> ReturnKeys | None:
    """Sequence Matching on (0040,0100): one item; zero-length or an empty item is universal
    and asks for the whole stored item (C.2.2.2.6, K.2.2.1.2)."""
    item = _single_item(sequence)
    if item is None or len(item) == 0:
        return None
    keys: list[ReturnKey] = []
    for elem in _elements(item):
        key = _KEYS.get(elem.tag)
        if elem.tag == _START_DATE:
            _check_vr(elem)
            parsed.start_date = elem
        elif elem.tag == _START_TIME:
            _check_vr(elem)
            parsed.start_time = elem
        elif key is not None and key.in_sps_item:
            _add_match(parsed, _match(key, elem))
        else:
            keys.extend(_return_only(elem, parsed))
            continue
        keys.append(ReturnKey(elem.tag, elem.VR))
    return ReturnKeys(tuple(keys))


def _return_only(elem: DataElement, parsed: _Parsed) -> list[ReturnKey]:
    """An attribute the SCP returns but does not match on; a value makes it unsupported."""
    if elem.tag.is_private or elem.tag.element == 0 or elem.tag in _NEVER_MATCHED:
        if elem.tag.is_private and _has_value(elem):
            parsed.unsupported.append(elem.tag)
        return []
    _check_sequence_vr(elem)
    if elem.VR != "SQ":
        if _has_value(elem):
            parsed.unsupported.append(elem.tag)
        return [ReturnKey(elem.tag, elem.VR)]
    item = _single_item(elem)
    if item is None or len(item) == 0:
        return [ReturnKey(elem.tag, "SQ")]
    sub_keys = [key for sub in _elements(item) for key in _return_only(sub, parsed)]
    return [ReturnKey(elem.tag, "SQ", ReturnKeys(tuple(sub_keys)))]


def _single_item(sequence: DataElement) -> Dataset | None:
    """The one item of a sequence key, or None when it has none (C.2.2.2.6, K.2.2.1.2)."""
    items = sequence.value or []
    if len(items) > 1:
        comment = f"{_name(sequence.tag)} has {len(items)} items; 1 allowed"
        raise QueryError(NOT_SOP_CLASS, comment, [sequence.tag])
    return items[0] if items else None


def _add_match(parsed: _Parsed, match: Match | None) -> None:
    if match is not None:
        parsed.matches.append(match)


def _match(key: MatchKey, elem: DataElement) -> Match | None:
    """Single Value, Wild Card, List of UID or Universal matching of one key (C.2.2.2.1–4)."""
    _check_vr(elem)
    values = _texts(elem)
    if elem.VR == "UI":
        return _uid_match(key, elem.tag, values)
    if key.is_person_name:
        values = [fold_person_name(_trim_person_name(value)) for value in values]
    values = list(dict.fromkeys(value for value in values if value))
    if not values or any(set(value) == {"*"} for value in values):
        return None
    wildcard = any("*" in value or "?" in value for value in values)
    return Match(key, MatchKind.WILDCARD if wildcard else MatchKind.SINGLE, tuple(values))


def _uid_match(key: MatchKey, tag: int, values: list[str]) -> Match | None:
    """List of UID matching (C.2.2.2.2): one UID is Single Value, several any-of."""
    for uid in values:
        if len(uid) > 64 or not _UID.fullmatch(uid):
            raise QueryError(INVALID_UID, f"Invalid UID '{uid[:24]}' in {_name(tag)}", [tag])
    uids = tuple(dict.fromkeys(values))
    if not uids:
        return None
    return Match(key, MatchKind.UID_LIST if len(uids) > 1 else MatchKind.SINGLE, uids)


def _trim_person_name(value: str) -> str:
    """Trailing component and group delimiters are insignificant (PS3.5 6.2.1)."""
    groups = [group.rstrip("^ ") for group in value.split("=")]
    return "=".join(groups).rstrip("=")


def _caller_matches(matches: list[Match], rule: CallerRule | None, calling_ae: str) -> list[Match]:
    """Defaults of the calling AE for keys the request left universal (CallerRule)."""
    if rule is None:
        return []
    given = {match.key for match in matches}
    defaults: list[Match] = []
    if MatchKey.STATION_AE not in given:
        stations = (calling_ae.strip(),) if rule.own_station_only else rule.station_ae
        if stations:
            defaults.append(Match(MatchKey.STATION_AE, MatchKind.SINGLE, stations))
    if MatchKey.MODALITY not in given and rule.modality:
        defaults.append(Match(MatchKey.MODALITY, MatchKind.SINGLE, (rule.modality,)))
    return defaults


def _window(now: datetime, hours: int) -> TimeRange:
    """now ± hours as ``YYYYMMDDHHMMSS`` local wall-clock bounds."""
    local = now.astimezone() if now.tzinfo is not None else now
    delta = timedelta(hours=hours)
    return TimeRange(_stamp(local - delta), _stamp(local + delta))


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


# --- SPS Start Date / Time: one combined period (Table K.6-1 remark, C.2.2.2.5) -----------


def _start_period(
    date_elem: DataElement | None, time_elem: DataElement | None
) -> tuple[TimeRange | None, TimeRange | None]:
    """``(start, time_of_day)``: a date (with or without a time) gives one ``YYYYMMDDHHMMSS``
    period; a time alone gives an ``HHMMSS`` time-of-day range; neither gives ``(None, None)``."""
    dates = _bounds(date_elem, _date) if date_elem is not None else None
    times = _bounds(time_elem, _time) if time_elem is not None else None
    if dates is None:
        if times is not None:
            _check_order(times, (_START_TIME,), "SPS Start Time range crosses midnight")
        return None, times
    low_time, high_time = (times.low, times.high) if times else (None, None)
    period = TimeRange(
        None if dates.low is None else dates.low + (low_time or "000000"),
        None if dates.high is None else dates.high + (high_time or "235959"),
    )
    offending = (_START_DATE, _START_TIME) if times else (_START_DATE,)
    _check_order(period, offending, "SPS Start range ends before it starts")
    return period, None


def _bounds(elem: DataElement, parse: Callable[[str, int], str]) -> TimeRange | None:
    """A single value (both bounds equal) or a range ``a-b``, ``-b``, ``a-``; None: universal."""
    values = _texts(elem)
    if not values:
        return None
    if len(values) > 1:
        raise QueryError(INVALID_DATE_TIME, f"{_name(elem.tag)} has several values", [elem.tag])
    text = values[0]
    if "-" not in text:
        single = parse(text, elem.tag)
        return TimeRange(single, single)
    low, _, high = text.partition("-")
    if not low.strip() and not high.strip():
        return None
    return TimeRange(
        parse(low.strip(), elem.tag) if low.strip() else None,
        parse(high.strip(), elem.tag) if high.strip() else None,
    )


def _date(text: str, tag: int) -> str:
    """DA ``YYYYMMDD`` (PS3.5 Table 6.2-1), a real calendar date."""
    found = _DA.fullmatch(text)
    if found is None:
        raise _invalid(text, tag)
    try:
        return date(int(found[1]), int(found[2]), int(found[3])).strftime("%Y%m%d")
    except ValueError:
        raise _invalid(text, tag) from None


def _time(text: str, tag: int) -> str:
    """TM ``HH[MM[SS[.F…]]]`` (ACR-NEMA colons tolerated) → ``HHMMSS`` by meaning: missing
    parts are zero, the fraction is cut (C.2.2.2.1.3 note: "2230" matches "223000")."""
    found = _TM.fullmatch(text)
    if found is None:
        raise _invalid(text, tag)
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    if hours > 23 or minutes > 59 or seconds > 60:  # 60: a leap second (PS3.5 TM)
        raise _invalid(text, tag)
    return f"{hours:02d}{minutes:02d}{min(seconds, 59):02d}"


def _invalid(text: str, tag: int) -> QueryError:
    return QueryError(INVALID_DATE_TIME, f"Invalid {_name(tag)} '{text[:20]}'", [tag])


def _check_order(span: TimeRange, offending: tuple[int, ...], comment: str) -> None:
    """A range must not end before it starts; a TM range may not cross midnight (C.2.2.2.5)."""
    if span.low is not None and span.high is not None and span.low > span.high:
        raise QueryError(INVALID_DATE_TIME, comment, offending)


# --- pydicom access: decoding and checks at one place --------------------------------------


def _elements(dataset: Dataset) -> list[DataElement]:
    """The elements of one level, values decoded with the request's Specific Character Set
    (pydicom converts a raw element on first access using (0008,0005))."""
    elements: list[DataElement] = []
    for tag in list(dataset.keys()):
        try:
            elements.append(_element_at(dataset, tag))
        except Exception:  # any pydicom conversion failure: one translation point
            raise QueryError(UNDECODABLE, f"Cannot decode {_name(tag)}", [tag]) from None
    return elements


def _element_at(dataset: Dataset, tag: BaseTag) -> DataElement:
    """A raw UI value is read here, not by pydicom, whose UID check warns (and the SCP answers
    C101 itself); UI is ASCII (PS3.5 Table 6.2-1), so no character set is involved."""
    raw = dataset.get_item(tag)
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        vr = raw.VR or (dictionary_VR(tag) if dictionary_has_tag(tag) else "UN")
        if vr == "UI":
            uids = raw.value.decode("ascii", "replace").strip("\x00 ").split("\\")
            value = uids[0] if len(uids) == 1 else uids
            return DataElement(tag, "UI", value, already_converted=True)
    return dataset[tag]


def _texts(elem: DataElement) -> list[str]:
    """The non-empty values of a text element, without insignificant spaces (PS3.5 6.2)."""
    value = elem.value
    if value is None or isinstance(value, bytes):
        return []
    items = value if isinstance(value, tuple) or hasattr(value, "append") else [value]
    trim = str.rstrip if elem.VR in _TRAILING_ONLY else str.strip
    texts = (trim(str(item)).strip("\x00") for item in items if item is not None)
    return [text for text in texts if text]


def _has_value(elem: DataElement) -> bool:
    if isinstance(elem.value, bytes):
        return bool(elem.value)
    return bool(_texts(elem)) if elem.VR != "SQ" else False


def _check_vr(elem: DataElement) -> None:
    """A matching key must carry its dictionary VR (else: not this SOP Class's identifier)."""
    wanted = str(dictionary_VR(elem.tag))
    if wanted != elem.VR:
        comment = f"{_name(elem.tag)} has VR {elem.VR}; {wanted} expected"
        raise QueryError(NOT_SOP_CLASS, comment, [elem.tag])


def _check_sequence_vr(elem: DataElement) -> None:
    """A sequence key must be SQ and a non-sequence attribute must not be."""
    try:
        expected = str(dictionary_VR(elem.tag))
    except KeyError:
        return
    if (elem.VR == "SQ") != (expected == "SQ"):
        _check_vr(elem)


def _name(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    return _SHORT.get(keyword, keyword) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


_SHORT = {
    "ScheduledProcedureStepStartDate": "SPS Start Date",
    "ScheduledProcedureStepStartTime": "SPS Start Time",
    "ScheduledProcedureStepSequence": "SPS Sequence",
    "StudyInstanceUID": "Study Instance UID",
}


def _ascii(text: str) -> str:
    """Error Comment is LO in the command set (default repertoire, no backslash)."""
    return "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
