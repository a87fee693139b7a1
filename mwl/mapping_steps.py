"""One OBR (ORM^O01, OMG^O19) or one IPC (OMI^O23) → one Scheduled Procedure Step
(standards.md §1.2, the ``>`` rows of the SPS Sequence)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hl7.codec import Segment
from hl7.errors import ErrorCode, ErrorLocation, MessageError
from mwl import convert, identifiers
from mwl.dicomjson import NULL, DatasetBuilder, code_item
from mwl.groups import ObrBlock, OrcGroup
from mwl.model import StepRecord
from mwl.policy import MappingPolicy

_CS = re.compile(r"^[A-Z0-9 _]{1,16}$")


@dataclass(frozen=True)
class StepSource:
    """The segments one step is mapped from; ``ipc`` is None for OBR-based messages."""

    group: OrcGroup
    block: ObrBlock
    block_no: int
    start: tuple[str, Segment, int, int] | None
    sending_facility: str
    zds: Segment | None = None
    ipc: Segment | None = None
    ipc_no: int = 0

    @property
    def obr(self) -> Segment:
        return self.block.obr


def _where(segment: Segment, number: int, component: int = 0) -> ErrorLocation:
    return ErrorLocation(segment.name, segment.sequence, number, 0, component)


def step_from_source(
    source: StepSource, rp_id: str, identity: identifiers.OrderIdentity, policy: MappingPolicy
) -> StepRecord:
    """Build the step and its SPS Sequence item attributes."""
    sps_id = identifiers.sps_id(source, rp_id, identity, policy)
    modality = _modality(source, policy)
    date, time = _start(source)
    procedure_code = _protocol(source)[0] or source.obr.value(4)
    station_aes, rule_station = _station(source, policy, modality, procedure_code)
    station_name = source.ipc.value(7) if source.ipc is not None else ""
    station_name = station_name or rule_station or ""
    location = source.ipc.value(8) if source.ipc is not None else ""
    physician = _performing_physician(source.obr)
    description = _description(source, policy)
    attrs = DatasetBuilder()
    attrs.put_many("ScheduledStationAETitle", station_aes)
    attrs.put("ScheduledProcedureStepStartDate", date)
    attrs.put("ScheduledProcedureStepStartTime", time)
    attrs.put("Modality", modality)
    _put_type2(attrs, "ScheduledPerformingPhysicianName", physician)
    attrs.put("ScheduledProcedureStepDescription", description)
    attrs.put_sequence("ScheduledProtocolCodeSequence", [code_item(*_protocol(source))])
    attrs.put("ScheduledProcedureStepID", sps_id)
    _put_type2(attrs, "ScheduledStationName", station_name)
    _put_type2(attrs, "ScheduledProcedureStepLocation", location)
    return StepRecord(
        sps_id=sps_id,
        station_aes=station_aes,
        start_date=date,
        start_time=time,
        modality=modality,
        performing_physician=physician if physician != NULL else "",
        station_name=station_name,
        location=location,
        description=description,
        attributes=attrs.build(),
    )


def _put_type2(attrs: DatasetBuilder, keyword: str, value: str) -> None:
    if value:
        attrs.put(keyword, value)
    else:
        attrs.put_empty(keyword)


def _modality(source: StepSource, policy: MappingPolicy) -> str:
    """Modality ← IPC-5.1 or OBR-24 through the site's modality map; else by procedure code
    (OBR-4.1 / IPC-6.1) from ``procedure_modality``; else the site default (standards.md
    §1.2; real feeds send non-DICOM values such as "NMR", sample 12, or none, sample 11)."""
    segment, number = (source.ipc, 5) if source.ipc is not None else (source.obr, 24)
    raw = segment.value(number).strip().upper()
    if raw == NULL:
        raw = ""
    code = source.ipc.value(6) if source.ipc is not None else source.obr.value(4)
    modality = policy.map_modality(raw) if raw else policy.procedure_modality.get(code, "")
    modality = modality or policy.default_modality
    if not modality:
        raise MessageError.single(
            ErrorCode.REQUIRED_FIELD_MISSING,
            f"{segment.name}-{number} Modality is missing (a Type 1 worklist key) and no site "
            "rule gives one for this procedure",
            _where(segment, number),
        )
    if not _CS.match(modality):
        raise MessageError.single(
            ErrorCode.DATA_TYPE,
            f"{segment.name}-{number} Modality {modality!r} is not a DICOM code string",
            _where(segment, number),
        )
    return modality


def _start(source: StepSource) -> tuple[str, str]:
    """SPS Start Date/Time ← TQ1-7 / ORC-7.4 / OBR-27.4 / OBR-7 / OBR-6 (standards.md §1.2)."""
    assert source.start is not None, "a full order's steps always have a start"
    value, segment, number, component = source.start
    parsed = convert.ts_to_datetime(value)
    if parsed is None:
        raise MessageError.single(
            ErrorCode.DATA_TYPE,
            f"{_where(segment, number, component)} start date/time {value!r} is not an HL7 "
            "timestamp (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ])",
            _where(segment, number, component),
        )
    return parsed.date, parsed.time


def _station(
    source: StepSource, policy: MappingPolicy, modality: str, procedure_code: str
) -> tuple[tuple[str, ...], str | None]:
    """Scheduled Station AE Title ← IPC-9 (repetitions: several AEs) or ORC-18.1, else the
    first matching site rule, else the default (standards.md §1.2, HCS Note12/13)."""
    if source.ipc is not None:
        segment, number = source.ipc, 9
    else:
        segment, number = source.group.orc, 18
    values = segment.field(number)
    given = [values.get(rep) for rep in range(1, len(values.repetitions) + 1)]
    aes = tuple(v.strip() for v in given if v.strip() and v != NULL)
    for ae in aes:
        if len(ae) > 16 or "\\" in ae:
            raise MessageError.single(
                ErrorCode.DATA_TYPE,
                f"{segment.name}-{number} Scheduled Station AE Title {ae!r} is not a DICOM AE "
                "title (at most 16 characters, no backslash)",
                _where(segment, number),
            )
    if aes:
        return aes, None
    return policy.station_for(
        modality=modality, sending_facility=source.sending_facility,
        procedure_code=procedure_code,
    )  # fmt: skip


def _performing_physician(obr: Segment) -> str:
    """Scheduled Performing Physician's Name ← OBR-34, first repetition (standards.md §1.2,
    HCS Note4). The standard puts the CNN name in component 1's sub-components
    (``ID&Family&Given&Middle&Suffix&Prefix&Degree``); IHE's own MESA test order (sample 01)
    spreads it over the components in XCN order (``7101^ESTRADA^JAIME^P^^DR``), which is read
    the same way. A lone first component is a family name; the other NDL components (point
    of care, room …) are not names (sample 10: ``^^^^SCAN`` gives no name)."""
    field = obr.field(34)
    if field.is_null:
        return NULL
    if field.is_empty or not field.repetitions[0]:
        return ""
    name = field.repetitions[0][0]
    if len(name) > 1:
        return convert.cnn_to_pn(name)
    if field.get(1, 2):
        return convert.xcn_to_pn(field.components(1))
    return convert.xpn_to_pn(name[:1])


def _description(source: StepSource, policy: MappingPolicy) -> str:
    """SPS Description ← IPC-6.2, or OBR-4.5 (alternate text; OBR-4.2 by site choice, HCS
    Note10), falling back to OBR-4.2, then OBR-4.1, when the chosen component is empty."""
    if source.ipc is not None and source.ipc.value(6, 2):
        return source.ipc.value(6, 2)
    obr = source.obr
    chosen = obr.value(4, policy.sps_description_component)
    return chosen or obr.value(4, 2) or obr.value(4, 1)


def _protocol(source: StepSource) -> tuple[str, str, str]:
    """Scheduled Protocol Code ← IPC-6.1/.3/.2, or OBR-4.4/.6/.5 (value, scheme, meaning)."""
    if source.ipc is not None:
        ipc = source.ipc
        return ipc.value(6, 1), ipc.value(6, 3), ipc.value(6, 2)
    obr = source.obr
    return obr.value(4, 4), obr.value(4, 6), obr.value(4, 5)
