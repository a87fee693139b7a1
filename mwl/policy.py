"""Site policy for turning HL7 orders into worklist items.

Everything a site may decide about the mapping lives here as frozen values, passed explicitly
(``broker.config`` builds it from ``[mapping]`` in the TOML file). Defaults follow the IHE
Scheduled Workflow rules and dcm4chee's documented behaviour (standards.md §1.2, §2.2).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class MissingKeyPolicy(enum.StrEnum):
    """What to do when an order lacks a Type 1 identifier (standards.md §1.1 ZDS note, §1.2)."""

    GENERATE = "generate"
    """Derive it deterministically from the order's identity, so a resent order keeps it."""
    REJECT = "reject"
    """Answer AE with ERR 101 naming the field."""


class LongIdentifierPolicy(enum.StrEnum):
    """What to do with an Accession Number, Requested Procedure ID or SPS ID longer than DICOM
    SH (16 characters). Real feeds send such IDs (sample 14: a 24-character OBR-20)."""

    SHORTEN = "shorten"
    """Keep the first 9 characters and add 7 hex digits of the whole value's SHA-256: readable,
    deterministic, and distinct for distinct values."""
    TRUNCATE = "truncate"
    """Keep the first 16 characters (distinct IDs may then collide)."""
    REJECT = "reject"
    """Answer AE with ERR 102 naming the field."""


class NewInProgress(enum.StrEnum):
    """SPS status for an order that arrives as NW with ORC-5 = IP (standards.md §2.2)."""

    STARTED = "STARTED"
    SCHEDULED = "SCHEDULED"


@dataclass(frozen=True, slots=True, kw_only=True)
class StationRule:
    """One rule deciding the Scheduled Station AE Title when the order does not carry it.

    Every criterion that is set must match (modality after the modality map, MSH-4 sending
    facility, procedure code OBR-4.1 / IPC-6.1 / OBR-44.1); the first matching rule wins.
    """

    station_ae: tuple[str, ...]
    modality: str | None = None
    sending_facility: str | None = None
    procedure_code: str | None = None
    station_name: str | None = None

    def matches(self, *, modality: str, sending_facility: str, procedure_code: str) -> bool:
        return (
            (self.modality is None or self.modality == modality)
            and (self.sending_facility is None or self.sending_facility == sending_facility)
            and (self.procedure_code is None or self.procedure_code == procedure_code)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingPolicy:
    """How orders become worklist items at this site."""

    missing_study_uid: MissingKeyPolicy = MissingKeyPolicy.GENERATE
    missing_requested_procedure_id: MissingKeyPolicy = MissingKeyPolicy.GENERATE
    missing_sps_id: MissingKeyPolicy = MissingKeyPolicy.GENERATE
    uid_root: str = ""
    """Prefix for generated Study Instance UIDs; empty: UUID-derived ``2.25.`` UIDs."""
    modality_map: Mapping[str, str] = field(
        default_factory=lambda: {"NMR": "MR", "MRI": "MR", "CAT": "CT"}
    )
    """Non-DICOM modality values to DICOM defined terms, e.g. ``{"NMR": "MR"}``.

    A plain mapping (not a proxy) so the policy pickles into the parse worker processes."""
    long_identifiers: LongIdentifierPolicy = LongIdentifierPolicy.SHORTEN
    procedure_modality: Mapping[str, str] = field(default_factory=dict)
    """Modality by procedure code (OBR-4.1 / IPC-6.1) for feeds that leave OBR-24 empty."""
    default_modality: str = ""
    """Modality when the order, the modality map and ``procedure_modality`` give none; empty:
    such orders are refused (Modality is a Type 1 worklist key)."""
    station_rules: tuple[StationRule, ...] = ()
    default_station_ae: tuple[str, ...] = ("ANY",)
    """Scheduled Station AE Title when neither the order nor a rule gives one (Type 1)."""
    sps_description_component: int = 5
    """OBR-4 component for the SPS Description: 5 (alternate text, IHE) or 2 (text)."""
    new_in_progress: NewInProgress = NewInProgress.STARTED
    fallback_charset: str = "latin-1"
    """Python codec for non-UTF-8 bytes in a message that declares no MSH-18."""

    def map_modality(self, value: str) -> str:
        return self.modality_map.get(value, value)

    def station_for(
        self, *, modality: str, sending_facility: str, procedure_code: str
    ) -> tuple[tuple[str, ...], str | None]:
        """Station AE titles and station name from the first matching rule, else the default."""
        for rule in self.station_rules:
            if rule.matches(
                modality=modality,
                sending_facility=sending_facility,
                procedure_code=procedure_code,
            ):
                return rule.station_ae, rule.station_name
        return self.default_station_ae, None


class AnswerCharset(enum.StrEnum):
    """Specific Character Set of C-FIND answers (standards.md §3.3: the SCP may answer in a
    different character set than the request's)."""

    UTF8 = "ISO_IR 192"
    """Unicode UTF-8: every stored name as it is."""
    LATIN1 = "ISO_IR 100"
    """Latin-1 for legacy devices; characters outside it are transliterated (é stays é, ł → l,
    others → ?)."""


class OverLimit(enum.StrEnum):
    """What the SCP does with a query that matches more than ``max_matches`` items."""

    REFUSE = "refuse"
    """Answer A700 "Refused: Out of Resources" with an Error Comment asking to narrow it."""
    TRUNCATE = "truncate"
    """Send the first ``max_matches`` items (by scheduled start), then Success."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerRule:
    """Defaults for one calling AE title (``[[worklist.callers]]``) — for modalities that send
    empty keys or need another character set."""

    ae_title: str
    own_station_only: bool = False
    """When the request's Scheduled Station AE Title is empty, match the caller's AE title."""
    station_ae: tuple[str, ...] = ()
    """When the request's Scheduled Station AE Title is empty, match these (if not own only)."""
    modality: str = ""
    """When the request's Modality is empty, match this modality."""
    hours_around_now: int = 0
    """When the request has no SPS Start Date/Time: now ± this many hours (0: no default)."""
    charset: AnswerCharset | None = None
    """Answer character set for this caller; None: the policy's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorklistPolicy:
    """How the Modality Worklist SCP answers (``[worklist]``)."""

    include_final: bool = False
    """Also answer COMPLETED / DISCONTINUED / CANCELED steps (an explicit SPS Status key in
    the request overrides this)."""
    max_matches: int = 10_000
    over_limit: OverLimit = OverLimit.REFUSE
    charset: AnswerCharset = AnswerCharset.UTF8
    """Answer character set for callers without a rule."""
    callers: tuple[CallerRule, ...] = ()

    def rule_for(self, calling_ae: str) -> CallerRule | None:
        wanted = calling_ae.strip()
        return next((rule for rule in self.callers if rule.ae_title == wanted), None)
