"""One ORC group → one :class:`OrderRecord` (standards.md §1.2 order, procedure and step rows).

Each function maps one level and names the HL7 field behind every DICOM attribute. Missing
Type 1 identifiers follow the site's :class:`MappingPolicy` (generate deterministically from the
order's identity, or reject); see :mod:`mwl.identifiers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from hl7.codec import Message, Segment
from hl7.errors import ErrorCode, ErrorLocation, MessageError
from mwl import convert, identifiers
from mwl.dicomjson import NULL, DatasetBuilder, code_item, fits, issuer_item
from mwl.groups import ObrBlock, OrcGroup
from mwl.mapping_steps import StepSource, step_from_source
from mwl.model import (
    DicomJson,
    OrderControl,
    OrderNumber,
    OrderRecord,
    ProcedureRecord,
    StepRecord,
)
from mwl.policy import MappingPolicy


@dataclass(frozen=True)
class Context:
    """What every part of an order message's mapping may look at."""

    message: Message
    policy: MappingPolicy
    patient_segments: Sequence[Segment]
    sending_facility: str

    def patient_segment(self, name: str) -> Segment | None:
        return next((seg for seg in self.patient_segments if seg.name == name), None)


def _location(segment: Segment, number: int, component: int = 0) -> ErrorLocation:
    return ErrorLocation(segment.name, segment.sequence, number, 0, component)


def order_control(orc: Segment) -> tuple[OrderControl, str]:
    """ORC-1 (HL7 Table 0119) and ORC-5 (Table 0038); an ORC-1 the broker does not act on is
    AE 103 (standards.md §2.1, §2.2)."""
    code = orc.value(1).strip().upper()
    try:
        control = OrderControl(code)
    except ValueError:
        raise MessageError.single(
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            f"ORC-1 order control {code or '(empty)'} is not supported "
            f"(accepted: {', '.join(c.value for c in OrderControl)})",
            _location(orc, 1),
        ) from None
    return control, orc.value(5).strip().upper()


def order_number(segment: Segment, number: int) -> OrderNumber | None:
    """EI → order number and namespace (ORC-2/ORC-3, OBR-2/OBR-3)."""
    value = segment.value(number)
    if not value or value == NULL:
        return None
    if not fits(value, "LO"):
        raise MessageError.single(
            ErrorCode.DATA_TYPE,
            f"{segment.name}-{number} order number is longer than 64 characters",
            _location(segment, number),
        )
    return OrderNumber(value, segment.value(number, 2))


def order_from_group(group: OrcGroup, context: Context) -> OrderRecord:
    """One ORC group → an :class:`OrderRecord` with its procedures and steps."""
    control, status = order_control(group.orc)
    if not group.blocks:
        raise MessageError.single(
            ErrorCode.SEGMENT_SEQUENCE,
            "ORC has no OBR segment: the order yields no scheduled procedure step",
            ErrorLocation("OBR", 1),
        )
    first_obr = group.blocks[0].obr
    placer = order_number(group.orc, 2) or order_number(first_obr, 2)
    filler = order_number(group.orc, 3) or order_number(first_obr, 3)
    accession = _accession(group.blocks[0], context.policy)
    identity = identifiers.OrderIdentity(context.sending_facility, placer, filler, accession)
    procedures = _procedures(group, context, identity, full=control not in STATUS_ONLY)
    admission = _admission_id(context)
    return OrderRecord(
        control=control,
        order_status=status,
        placer=placer,
        filler=filler,
        accession=accession,
        referring_physician=_referring(context),
        admission_id=admission,
        attributes=_order_attributes(group, context, placer, filler, accession),
        procedures=tuple(procedures),
        orc_sequence=group.orc.sequence,
        hl7_charset=context.message.header.charset,
    )


def _accession(block: ObrBlock, policy: MappingPolicy) -> str:
    """Accession Number: IPC-1.1 (v2.5.1 OMI) else OBR-18 (standards.md §1.2)."""
    ipc = block.first("IPC")
    segment, number = (ipc, 1) if ipc is not None else (block.obr, 18)
    value = segment.value(number)
    if not value or value == NULL:
        return value
    return identifiers.short_identifier(value, segment, number, "Accession Number", policy)


def _referring(context: Context) -> str:
    pv1 = context.patient_segment("PV1")
    return convert.xcn_to_pn(pv1.field(8).components()) if pv1 else ""


def _admission_id(context: Context) -> str:
    """Admission ID: PV1-19.1, else PID-18.1 (standards.md §1.2, HCS Note3)."""
    pv1, pid = context.patient_segment("PV1"), context.patient_segment("PID")
    if pv1 is not None and pv1.value(19):
        return pv1.value(19)
    return pid.value(18) if pid is not None else ""


def _order_attributes(
    group: OrcGroup,
    context: Context,
    placer: OrderNumber | None,
    filler: OrderNumber | None,
    accession: str,
) -> DicomJson:
    """Imaging Service Request and visit attributes (standards.md §1.2)."""
    attrs = DatasetBuilder()
    block = group.blocks[0]
    if accession:
        attrs.put("AccessionNumber", accession)
    else:
        attrs.put_empty("AccessionNumber")
    ipc = block.first("IPC")
    if ipc is not None:
        issuer = issuer_item(ipc.value(1, 2), ipc.value(1, 3), ipc.value(1, 4))
        attrs.put_sequence("IssuerOfAccessionNumberSequence", [issuer])
    _put_order_number(attrs, placer, group, 2, "Placer")
    _put_order_number(attrs, filler, group, 3, "Filler")
    attrs.put("RequestingPhysician", convert.xcn_to_pn(block.obr.field(16).components()))
    attrs.put("PatientState", block.obr.value(12))
    attrs.put("MedicalAlerts", block.obr.value(13))
    attrs.put("PatientTransportArrangements", block.obr.value(30))
    attrs.put("ConfidentialityCode", group.orc.value(28, 2))
    attrs.put("InstitutionName", group.orc.value(17, 2))
    attrs.put_sequence(
        "InstitutionCodeSequence",
        [code_item(group.orc.value(17), group.orc.value(17, 3), group.orc.value(17, 2))],
    )
    attrs.put("InstitutionalDepartmentName", group.orc.value(13, 9))
    _visit_attributes(attrs, context)
    _put_timezone(attrs, group, context)
    return attrs.build()


def _put_order_number(
    attrs: DatasetBuilder, number: OrderNumber | None, group: OrcGroup, field_no: int, who: str
) -> None:
    """ORC-2 / ORC-3 → Placer / Filler Order Number and its issuer sequence (§1.2)."""
    if number is None:
        return
    attrs.put(f"{who}OrderNumberImagingServiceRequest", number.number)
    source = group.orc if group.orc.value(field_no) else group.blocks[0].obr
    issuer = issuer_item(number.namespace, source.value(field_no, 3), source.value(field_no, 4))
    attrs.put_sequence(f"Order{who}IdentifierSequence", [issuer])


def _visit_attributes(attrs: DatasetBuilder, context: Context) -> None:
    """PV1 (and PID-18) → visit attributes (standards.md §1.2)."""
    pv1 = context.patient_segment("PV1")
    attrs.put("AdmissionID", _admission_id(context))
    if pv1 is None:
        return
    attrs.put("ReferringPhysicianName", _referring(context) or NULL)
    if pv1.value(19, 4):
        issuer = issuer_item(pv1.value(19, 4, 1), pv1.value(19, 4, 2), pv1.value(19, 4, 3))
        attrs.put_sequence("IssuerOfAdmissionIDSequence", [issuer])
    attrs.put("RouteOfAdmissions", pv1.value(2) or "U")
    location = " ".join(c for c in pv1.field(3).components() if c and c != NULL)
    attrs.put("CurrentPatientLocation", location)
    pregnancy = convert.pregnancy_status(pv1.value(15))
    if pregnancy is not None:
        attrs.put_number("PregnancyStatus", pregnancy)


def _put_timezone(attrs: DatasetBuilder, group: OrcGroup, context: Context) -> None:
    """(0008,0201) Timezone Offset From UTC from the first start TS that carries one."""
    for block in group.blocks:
        start = start_timestamp(group, block, context)
        parsed = convert.ts_to_datetime(start[0]) if start else None
        if parsed and parsed.offset:
            attrs.put("TimezoneOffsetFromUTC", parsed.offset)
            return


def start_timestamp(
    group: OrcGroup, block: ObrBlock, context: Context
) -> tuple[str, Segment, int, int] | None:
    """SPS start TS and where it came from: TQ1-7, else ORC-7.4, else OBR-27.4, else OBR-7,
    else OBR-6, else ORC-15 (order effective), else ORC-9 (transaction time) (standards.md §1.2
    SPS Start Date/Time; some senders fill only OBR-7, sample 01 only ORC-9/ORC-15). A step
    without any of these is refused: SPS Start Date/Time are Type 1."""
    tq1 = group.first("TQ1") or block.first("TQ1")
    candidates: list[tuple[Segment | None, int, int]] = [
        (tq1, 7, 1), (group.orc, 7, 4), (block.obr, 27, 4), (block.obr, 7, 1), (block.obr, 6, 1),
        (group.orc, 15, 1), (group.orc, 9, 1),
    ]  # fmt: skip
    for segment, number, component in candidates:
        if segment is not None and segment.value(number, component) not in ("", NULL):
            return segment.value(number, component), segment, number, component
    return None


def _priority(group: OrcGroup, block: ObrBlock) -> str:
    """Requested Procedure Priority ← TQ1-9 (v2.5) or ORC-7.6 (v2.3.x) (standards.md §1.2)."""
    tq1 = group.first("TQ1") or block.first("TQ1")
    raw = tq1.value(9) if tq1 is not None else group.orc.value(7, 6)
    return convert.priority(raw)


@dataclass
class _Procedure:
    study_uid: str
    generated: bool
    rp_id: str
    description: str
    attributes: DicomJson
    steps: list[StepSource] = field(default_factory=list)


STATUS_ONLY = frozenset(
    {OrderControl.CANCEL, OrderControl.DISCONTINUE, OrderControl.STATUS_CHANGED,
     OrderControl.CANCELED, OrderControl.DISCONTINUED}
)  # fmt: skip
"""Controls that only change a known order's status: they need the order's keys, not a
complete schedule (a cancel without a start time is a valid cancel)."""


def _procedures(
    group: OrcGroup, context: Context, identity: identifiers.OrderIdentity, *, full: bool
) -> list[ProcedureRecord]:
    """Requested procedures of a group, keyed by Study Instance UID (standards.md §1.4);
    with their steps only when ``full`` (NW, XO)."""
    found: dict[str, _Procedure] = {}
    for block_no, block in enumerate(group.blocks, start=1):
        for source in _block_sources(group, block, context, block_no, full=full):
            uid, generated = identifiers.study_uid(source, identity, context.policy)
            rp_id = identifiers.requested_procedure_id(source, identity, context.policy)
            proc = found.get(uid)
            if proc is None:
                description, attrs = _procedure_attributes(group, block, uid, rp_id)
                proc = found[uid] = _Procedure(uid, generated, rp_id, description, attrs)
            proc.steps.append(source)
    return [_procedure_record(proc, identity, context, full) for proc in found.values()]


def _procedure_record(
    proc: _Procedure, identity: identifiers.OrderIdentity, context: Context, full: bool
) -> ProcedureRecord:
    sources = proc.steps if full else []
    steps = [step_from_source(s, proc.rp_id, identity, context.policy) for s in sources]
    return ProcedureRecord(
        study_uid=proc.study_uid,
        requested_procedure_id=proc.rp_id,
        description=proc.description,
        attributes=proc.attributes,
        steps=merge_steps(steps),
        study_uid_generated=proc.generated,
    )


def merge_steps(steps: Sequence[StepRecord]) -> tuple[StepRecord, ...]:
    """Steps with one SPS ID are one step; the later ones add their Scheduled Protocol Code
    Sequence items (consecutive OBRs with the same OBR-20, standards.md §1.4)."""
    merged: dict[str, StepRecord] = {}
    for step in steps:
        known = merged.get(step.sps_id)
        merged[step.sps_id] = step if known is None else _add_protocols(known, step)
    return tuple(merged.values())


def _add_protocols(first: StepRecord, second: StepRecord) -> StepRecord:
    tag = "00400008"
    items = [*_items(first.attributes, tag), *_items(second.attributes, tag)]
    if not items:
        return first
    return replace(first, attributes={**first.attributes, tag: {"vr": "SQ", "Value": items}})


def _items(data: DicomJson, tag: str) -> list[DicomJson]:
    return list(data.get(tag, {}).get("Value", []))


def _block_sources(
    group: OrcGroup, block: ObrBlock, context: Context, block_no: int, *, full: bool
) -> list[StepSource]:
    """One step source per IPC (OMI^O23), else one per OBR (ORM^O01, OMG^O19)."""
    start = start_timestamp(group, block, context)
    if start is None and full:
        where = "TQ1-7" if group.first("TQ1") or block.first("TQ1") else "ORC-7.4"
        segment = "TQ1" if where == "TQ1-7" else "ORC"
        raise MessageError.single(
            ErrorCode.REQUIRED_FIELD_MISSING,
            f"{where} scheduled start date/time is missing (also looked at OBR-27.4, OBR-7, "
            "OBR-6, ORC-15, ORC-9): SPS Start Date and Time are Type 1",
            ErrorLocation(segment, 1, 7, 0, 0 if segment == "TQ1" else 4),
        )
    ipcs = block.all("IPC")
    zds = block.first("ZDS")
    base = StepSource(
        group=group, block=block, block_no=block_no, start=start,
        sending_facility=context.sending_facility, zds=zds,
    )  # fmt: skip
    if not ipcs:
        return [base]
    return [replace(base, ipc=ipc, ipc_no=n) for n, ipc in enumerate(ipcs, start=1)]


def _procedure_attributes(
    group: OrcGroup, block: ObrBlock, uid: str, rp_id: str
) -> tuple[str, DicomJson]:
    """Requested Procedure attributes (standards.md §1.2): description and code from OBR-44
    (falling back to OBR-4, which most feeds fill instead), reason OBR-31, comments NTE,
    priority, Study Instance UID and Requested Procedure ID."""
    obr = block.obr
    code_field = 44 if obr.value(44) else 4
    description = obr.value(code_field, 2) or obr.value(code_field, 1)
    attrs = DatasetBuilder()
    attrs.put("StudyInstanceUID", uid)
    attrs.put("RequestedProcedureID", rp_id)
    attrs.put("RequestedProcedureDescription", description)
    attrs.put_sequence(
        "RequestedProcedureCodeSequence",
        [code_item(obr.value(code_field, 1), obr.value(code_field, 3), description)],
    )
    reason = obr.value(31, 2) or obr.value(31, 1)
    attrs.put("ReasonForTheRequestedProcedure", reason)
    if obr.value(31, 3):
        reason_code = code_item(obr.value(31, 1), obr.value(31, 3), obr.value(31, 2))
        attrs.put_sequence("ReasonForRequestedProcedureCodeSequence", [reason_code])
    comments = [seg.value(3) for seg in block.all("NTE") if seg.value(3) not in ("", NULL)]
    attrs.put("RequestedProcedureComments", "\r\n".join(comments))
    priority = _priority(group, block)
    if priority:
        attrs.put("RequestedProcedurePriority", priority)
    else:
        attrs.put_empty("RequestedProcedurePriority")
    return description, attrs.build()


def merge_orders(orders: list[OrderRecord]) -> list[OrderRecord]:
    """ORC groups with the same placer and filler numbers are one order with several
    procedures; procedures with one Study Instance UID are one procedure (standards.md §1.4)."""
    merged: dict[tuple[OrderNumber | None, OrderNumber | None], OrderRecord] = {}
    alone: list[OrderRecord] = []
    for order in orders:
        key = (order.placer, order.filler)
        if key == (None, None):
            alone.append(order)
        elif key in merged:
            known = merged[key]
            merged[key] = replace(
                known, procedures=merge_procedures(known.procedures + order.procedures)
            )
        else:
            merged[key] = order
    return [*merged.values(), *alone]


def merge_procedures(procedures: Sequence[ProcedureRecord]) -> tuple[ProcedureRecord, ...]:
    merged: dict[str, ProcedureRecord] = {}
    for proc in procedures:
        known = merged.get(proc.study_uid)
        merged[proc.study_uid] = (
            proc if known is None else replace(known, steps=merge_steps(known.steps + proc.steps))
        )
    return tuple(merged.values())
