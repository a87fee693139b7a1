"""Performed step → HL7 status message for the RIS (standards.md §2.3).

One message per order and state change, segments joined by CR, encoded in the order's MSH-18
character set; hl7apy decides its layout, an ER7 writer writes it (Building, below). The shape
is chosen with :class:`MessageType`:

============  ============================================  =====================================
type          segments                                      standards.md §2.3
============  ============================================  =====================================
ORM^O01       MSH PID ORC OBR ZDS                           A: IHE RAD-3 status update (default,
                                                            v2.3.1)
OMG^O19       MSH PID PV1 ORC TQ1 OBR OBX                   B: OBX-3 113014^DICOM Study^DCM, O
OMI^O23       MSH PID PV1 ORC TQ1 OBR IPC                   C: IPC-1 Acc, IPC-3 Study UID, IPC-5
ORU^R01       MSH PID PV1 ORC OBR OBX                       D
============  ============================================  =====================================

Field mapping (standards.md §1.2 read backwards, §2.3 for the status):

- MSH-3/4 ``application``/``facility``, MSH-5/6 the order's MSH-3/4, MSH-7 ``now``, MSH-9
  ``ORM^O01`` before v2.4 and ``ORM^O01^ORM_O01`` from v2.4 (pitfalls.md), MSH-10 control ID,
  MSH-11 ``P``, MSH-12 ``version``, MSH-18 the order's MSH-18.
- PID-3 ``patient_id^^^issuer`` (CX.1, CX.4); PID-5 DICOM PN → XPN: Family^Given^Middle^**Suffix**
  ^**Prefix**, the inverse of standards.md §1.3 (the alphabetic group only).
- PV1-2 ``U`` (patient class unknown: PV1-2 is required once PV1 is sent).
- ORC-1 ``SC``; ORC-2 / ORC-3 placer / filler order number (EI ``number^namespace``); ORC-5
  from :data:`ORDER_STATUS`: IN PROGRESS → IP, COMPLETED → CM, DISCONTINUED → DC; SC
  (:data:`RESCHEDULED`) for a step put back to SCHEDULED after its IP went out.
- TQ1-7 and OBR-7 PPS Start Date+Time (0040,0244)+(0040,0245); OBR-8 PPS End Date+Time.
- OBR-2/3 as ORC-2/3; OBR-4 the first item of Procedure Code Sequence (0008,1032) as CE
  ``value^meaning^scheme`` when the modality sent one; OBR-18 Accession Number; OBR-19 Requested
  Procedure ID; OBR-20 SPS ID; **OBR-21 Performed Station AE Title** (0040,0241); OBR-24
  Modality (0008,0060). OBR-20 (Filler Field 1) keeps the SPS ID it has in the IHE v2.3.1
  order (standards.md §0, §1.2), so the AE goes to the other filler field, OBR-21 (Filler
  Field 2); dcm4chee's PSU stylesheet sends no performed AE at all.
- ORU^R01 only: OBR-25 / OBX-11 from :data:`RESULT_STATUS` (HL7 Tables 0123 / 0085): I (in
  progress), R (stored, not verified: the images exist, the report does not), X (discontinued).
- ZDS-1 ``study_uid^100^Application^DICOM`` (standards.md §1.1); OBX ``1|ST|113014^DICOM
  Study^DCM||study_uid`` with OBX-11 ``O`` for OMG^O19; IPC-1 Accession, IPC-2 RP ID, IPC-3
  Study UID, IPC-4 SPS ID, IPC-5 Modality.

Identifiers come from :class:`OrderContext` (the matched worklist item); the item of
(0040,0270) that matches it (same RP ID, Accession or Study UID, else the first) fills the
ones the context lacks. ``ris_application``/``ris_facility`` are copied as the order carried
them (ER7 text, like :func:`hl7.ack.build_ack` copies MSH-3/4 back); every other value is
plain text and is escaped here.

Escaping: every component is escaped with :func:`hl7.escape.escape`. hl7apy, handed a string,
reads ``^`` and ``&`` as separators and leaves a backslash that looks like part of an escape
sequence alone (the text ``A\\F\\B`` would go out unchanged and read back as ``A|B``).
Control characters (line breaks, MLLP framing bytes) become spaces first: no field sent here is
multi-line text, and hl7apy re-escapes the ``\\.br\\`` and ``\\Xhh\\`` written for them.

A 110514 "Incorrect worklist entry selected" discontinuation is reported as DC like any other,
unless the caller passes ``order_status``: when the step goes back to SCHEDULED
(:func:`mpps.state.step_status_for`) the service sends ORC-5 SC, so that a RIS that got IP
does not keep the order in process (:mod:`mpps.scp`). ORU^R01, a results message, reports no
rescheduling.

Characters the order's character set cannot encode become ``?`` (as in the ACK); MSH-18 stays
the order's value, which the RIS declared it reads.

Building: the segment builders give each field as ER7 text, and the message is what hl7apy
writes for them with ``Message(structure, version=…, validation_level=TOLERANT)``, one
assignment per field and ``to_er7()`` (``_hl7apy_message``, the reference), without building
that per message. Mostly it is a plain join: segment name, fields joined by ``|`` with unset
ones empty and trailing unset ones dropped, ``MSH|^~\\&`` (``^~\\&#`` from v2.7). But hl7apy
also

- drops a blank (whitespace-only) component or sub-component of a composite type and the empty
  ones it leaves at the end (``Doe^ ^John`` → ``Doe^^John``; a blank issuer leaves PID-3
  ``P1``), but keeps a blank primitive value (OBR-18 ``" "``) and the separators up to a field
  it writes empty (a blank patient ID: ``PID|||``);
- escapes the delimiters in each leaf value: ``|``, ``~``, from v2.7 ``#`` (as ``\\L\\``), and
  a backslash that is not part of an escape sequence it knows. The builders' escaped values come
  out unchanged; MSH-5/6, copied as the order carried them, may not (``RIS~2`` →
  ``RIS\\R\\2``, ``\\X41\\`` → ``\\E\\X41\\E\\``).

What it keeps of a field depends on the field and on the *layout* of the text only (where the
separators, values and blank values are): :func:`hl7.writer.segment_er7` has hl7apy write each
layout once per field and version, which gives a template, and fills it with the values.

What hl7apy still guarantees, once per message type and version (:func:`check_layout`, cached,
behind :func:`supports`): the version is one it has, the structure exists in it, every segment
of :data:`SEGMENTS` can be added and every field a builder sets exists; and two representative
messages (every value set, with every delimiter in it; every optional value empty) come out of
hl7apy and of the writer equal, else a ValueError names the first field that differs. It
refuses OMG^O19 before v2.5 (no TQ1), ORM^O01 from v2.7 (withdrawn) and every type in v2.8,
where hl7apy writes OBR-18 in OBR-16. The tests compare the writer with the reference byte for
byte over generated messages of each type and version.

Cost (``time.process_time`` over 300 builds of a COMPLETED step, several runs, shared 2-core
machine, Python 3.11, hl7apy 1.3.5): built through hl7apy, 14–21 ms of CPU per ORM^O01 v2.3.1
and 21–28 ms per OMI^O23 v2.5.1 message, as each field assignment parses its value (about what
parsing the message costs, pitfalls.md); written directly, 0.2–0.5 ms, typically 50 times less.
Each process pays 40–120 ms once per message type and version for the check and the first
templates.
"""

from __future__ import annotations

import enum
import functools
import itertools
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

from hl7.charset import python_codec
from hl7.codec import Header
from hl7.escape import escape
from hl7.fields import library_version
from hl7.writer import Fields, assign, segment_er7
from mpps.attributes import items, text
from mpps.model import PerformedStep, PPSStatus, StepReference
from mwl.dicomjson import code_item, element_of
from mwl.model import OrderNumber

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "2.3.1"


class MessageType(enum.StrEnum):
    """MSH-9.1^MSH-9.2 of the status message (standards.md §2.3 options A–D)."""

    ORM_O01 = "ORM^O01"
    OMG_O19 = "OMG^O19"
    OMI_O23 = "OMI^O23"
    ORU_R01 = "ORU^R01"

    @property
    def structure(self) -> str:
        """MSH-9.3 and the hl7apy message name, e.g. ``ORM_O01``."""
        return self.value.replace("^", "_")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderContext:
    """What the broker knows of the order a performed step belongs to.

    Attributes
    ----------
    placer, filler
        ORC-2 / ORC-3 of the order (EI number and namespace).
    accession, requested_procedure_id, study_uid
        (0008,0050), (0040,1001), (0020,000D) of the worklist item (OBR-18, OBR-19, ZDS-1).
    patient_id, patient_issuer, patient_name
        PID-3.1, PID-3.4 and the DICOM PN of (0010,0010).
    ris_application, ris_facility
        MSH-3 / MSH-4 of the original order as it carried them: our MSH-5 / MSH-6.
    hl7_charset
        MSH-18 of the original order, ``""`` for ASCII: our MSH-18 and byte encoding.
    """

    placer: OrderNumber | None = None
    filler: OrderNumber | None = None
    accession: str = ""
    requested_procedure_id: str = ""
    study_uid: str = ""
    patient_id: str = ""
    patient_issuer: str = ""
    patient_name: str = ""
    ris_application: str = ""
    ris_facility: str = ""
    hl7_charset: str = ""


ORDER_STATUS: Mapping[PPSStatus, str] = MappingProxyType(
    {PPSStatus.IN_PROGRESS: "IP", PPSStatus.COMPLETED: "CM", PPSStatus.DISCONTINUED: "DC"}
)
"""ORC-5 Order Status (HL7 Table 0038) per PPS status (standards.md §2.3)."""

RESCHEDULED = "SC"
"""ORC-5 "in process, scheduled" (HL7 Table 0038): the step is to be performed again, after a
(110514, DCM) "Incorrect worklist entry selected" discontinuation (standards.md §4.5)."""

RESULT_STATUS: Mapping[PPSStatus, str] = MappingProxyType(
    {PPSStatus.IN_PROGRESS: "I", PPSStatus.COMPLETED: "R", PPSStatus.DISCONTINUED: "X"}
)
"""ORU^R01 OBR-25 (HL7 Table 0123) and OBX-11 (Table 0085) per PPS status."""

SEGMENTS: Mapping[MessageType, tuple[str, ...]] = MappingProxyType(
    {
        MessageType.ORM_O01: ("PID", "ORC", "OBR", "ZDS"),
        MessageType.OMG_O19: ("PID", "PV1", "ORC", "TQ1", "OBR", "OBX"),
        MessageType.OMI_O23: ("PID", "PV1", "ORC", "TQ1", "OBR", "IPC"),
        MessageType.ORU_R01: ("PID", "PV1", "ORC", "OBR", "OBX"),
    }
)

FIRST_VERSION: Mapping[MessageType, tuple[int, ...]] = MappingProxyType(
    {
        MessageType.ORM_O01: (2, 3),
        MessageType.OMG_O19: (2, 4),
        MessageType.OMI_O23: (2, 5),
        MessageType.ORU_R01: (2, 3),
    }
)
"""The first HL7 version with the message structure (and MSH-18, from v2.3)."""

STUDY_CODE = "113014^DICOM Study^DCM"
ZDS_SUFFIX = "100^Application^DICOM"
_V24 = (2, 4)
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Facts:
    """Everything one status message is built from (the arguments of :func:`status_message`).

    ``step`` is the (0040,0270) item matching the order, which fills what the context lacks.
    """

    performed: PerformedStep
    order: OrderContext
    step: StepReference
    message_type: MessageType
    version: str
    control_id: str
    now: datetime
    application: str
    facility: str
    order_status: str
    """ORC-5."""


def supports(message_type: MessageType, version: str) -> bool:
    """Whether :func:`status_message` can build ``message_type`` in HL7 ``version``.

    True when :func:`check_layout` finds nothing to object to (its verdict is cached).
    """
    return _layout_problem(message_type, version) is None


def check_layout(message_type: MessageType, version: str) -> None:
    """hl7apy's verdict on ``message_type`` in ``version``, checked once per pair.

    The version must be one hl7apy has (``2.5.0`` counts as ``2.5``) and not older than
    :data:`FIRST_VERSION`; hl7apy must have the message structure in it and accept every
    segment of :data:`SEGMENTS` and every field a builder can set. Two representative
    messages (every value set, with delimiters to escape; every optional value empty) are built
    both through hl7apy and by the ER7 writer and must come out equal.

    Raises
    ------
    ValueError
        Naming what hl7apy lacks, or the first field the two builds write differently.
    """
    problem = _layout_problem(message_type, version)
    if problem is not None:
        raise ValueError(f"{message_type} cannot be built in HL7 version {version!r}: {problem}")


def status_message(
    performed: PerformedStep,
    order: OrderContext,
    *,
    message_type: MessageType = MessageType.ORM_O01,
    version: str = DEFAULT_VERSION,
    control_id: str,
    now: datetime,
    application: str = "MWLBROKER",
    facility: str = "",
    order_status: str = "",
) -> bytes:
    """The HL7 status message for ``performed`` (standards.md §2.3; mapping in the module doc).

    Parameters
    ----------
    performed
        The step after N-CREATE or N-SET.
    order
        The order it belongs to (see :class:`OrderContext`).
    message_type, version
        Structure and MSH-12; ORM^O01 v2.3.1 by default (IHE RAD-3, option A).
    control_id, now
        MSH-10 and MSH-7.
    application, facility
        Our MSH-3 / MSH-4.
    order_status
        ORC-5 when it is not the PPS status's (:data:`ORDER_STATUS`): :data:`RESCHEDULED` for a
        step put back to SCHEDULED after its IP went out.

    Returns
    -------
    bytes
        Segments joined by CR, no trailing CR, no MLLP framing, in the codec of MSH-18.

    Raises
    ------
    ValueError
        ``message_type`` cannot be built in ``version`` (see :func:`check_layout`): a
        configuration error, to be caught when the configuration is validated.
    """
    check_layout(message_type, version)
    facts = _facts(
        performed,
        order,
        message_type=message_type,
        version=version,
        control_id=control_id,
        now=now,
        application=application,
        facility=facility,
        order_status=order_status,
    )
    er7 = _er7(facts)
    logger.debug("%s status %s for %s", message_type, performed.status, performed.sop_instance_uid)
    return er7.encode(python_codec(order.hl7_charset), errors="replace")


def _facts(
    performed: PerformedStep,
    order: OrderContext,
    *,
    message_type: MessageType,
    version: str,
    control_id: str,
    now: datetime,
    application: str,
    facility: str,
    order_status: str = "",
) -> _Facts:
    """The arguments of :func:`status_message` with the matching (0040,0270) item."""
    return _Facts(
        performed=performed,
        order=order,
        step=_matching_step(performed, order),
        message_type=message_type,
        version=version,
        control_id=control_id,
        now=now,
        application=application,
        facility=facility,
        order_status=order_status or ORDER_STATUS[performed.status],
    )


def _matching_step(performed: PerformedStep, order: OrderContext) -> StepReference:
    """The (0040,0270) item of this order: same RP ID, Accession or Study UID, else the first."""

    def score(step: StepReference) -> tuple[bool, bool, bool]:
        return (
            bool(step.requested_procedure_id)
            and step.requested_procedure_id == order.requested_procedure_id,
            bool(step.accession) and step.accession == order.accession,
            bool(step.study_uid) and step.study_uid == order.study_uid,
        )

    return max(performed.references, key=score, default=StepReference(study_uid=""))


# --- segments -------------------------------------------------------------------------------


def _msh(facts: _Facts) -> Fields:
    message_type = facts.message_type.value.split("^")
    if Header(version=facts.version).version_tuple >= _V24:
        message_type.append(facts.message_type.structure)
    return {
        3: _escaped(facts.application),
        4: _escaped(facts.facility),
        5: facts.order.ris_application,
        6: facts.order.ris_facility,
        7: facts.now.strftime("%Y%m%d%H%M%S"),
        9: "^".join(message_type),
        10: _escaped(facts.control_id),
        11: "P",
        12: _escaped(facts.version),
        18: _escaped(facts.order.hl7_charset),
    }


def _pid(facts: _Facts) -> Fields:
    order = facts.order
    return {3: _components(order.patient_id, "", "", order.patient_issuer), 5: _xpn(order)}


def _pv1(facts: _Facts) -> Fields:
    return {2: "U"}


def _orc(facts: _Facts) -> Fields:
    return {
        1: "SC",
        2: _ei(_placer(facts)),
        3: _ei(_filler(facts)),
        5: facts.order_status,
    }


def _tq1(facts: _Facts) -> Fields:
    return {7: _ts(facts.performed.start_date, facts.performed.start_time)}


def _obr(facts: _Facts) -> Fields:
    performed = facts.performed
    fields = {
        2: _ei(_placer(facts)),
        3: _ei(_filler(facts)),
        4: _procedure_code(performed),
        7: _ts(performed.start_date, performed.start_time),
        8: _ts(performed.end_date, performed.end_time),
        18: _escaped(facts.order.accession or facts.step.accession),
        19: _escaped(_requested_procedure_id(facts)),
        20: _escaped(facts.step.sps_id),
        21: _escaped(performed.performed_station_ae),
        24: _escaped(performed.modality),
    }
    if facts.message_type is MessageType.ORU_R01:
        fields[25] = RESULT_STATUS[performed.status]
    return fields


def _obx(facts: _Facts) -> Fields:
    oru = facts.message_type is MessageType.ORU_R01
    return {
        1: "1",
        2: "ST",
        3: STUDY_CODE,
        5: _escaped(_study_uid(facts)),
        11: RESULT_STATUS[facts.performed.status] if oru else "O",
    }


def _ipc(facts: _Facts) -> Fields:
    return {
        1: _escaped(facts.order.accession or facts.step.accession),
        2: _escaped(_requested_procedure_id(facts)),
        3: _escaped(_study_uid(facts)),
        4: _escaped(facts.step.sps_id),
        5: _escaped(facts.performed.modality),
    }


def _zds(facts: _Facts) -> Fields:
    study_uid = _study_uid(facts)
    return {1: f"{_escaped(study_uid)}^{ZDS_SUFFIX}" if study_uid else ""}


_BUILDERS: Mapping[str, Callable[[_Facts], Fields]] = MappingProxyType(
    {
        "PID": _pid,
        "PV1": _pv1,
        "ORC": _orc,
        "TQ1": _tq1,
        "OBR": _obr,
        "OBX": _obx,
        "IPC": _ipc,
        "ZDS": _zds,
    }
)


def _segments(facts: _Facts) -> Iterator[tuple[str, Fields]]:
    """MSH and the segments of the message type, each with its fields, in order."""
    yield "MSH", _msh(facts)
    for name in SEGMENTS[facts.message_type]:
        yield name, _BUILDERS[name](facts)


# --- values ---------------------------------------------------------------------------------


def _placer(facts: _Facts) -> OrderNumber | None:
    number = facts.step.placer_number
    return facts.order.placer or (OrderNumber(number) if number else None)


def _filler(facts: _Facts) -> OrderNumber | None:
    number = facts.step.filler_number
    return facts.order.filler or (OrderNumber(number) if number else None)


def _requested_procedure_id(facts: _Facts) -> str:
    return facts.order.requested_procedure_id or facts.step.requested_procedure_id


def _study_uid(facts: _Facts) -> str:
    return facts.order.study_uid or facts.step.study_uid


def _ei(number: OrderNumber | None) -> str:
    """EI ``number^namespace`` (ORC-2/3, OBR-2/3)."""
    return _components(number.number, number.namespace) if number else ""


def _xpn(order: OrderContext) -> str:
    """DICOM PN → XPN: Family^Given^Middle^Suffix^Prefix (inverse of standards.md §1.3)."""
    alphabetic = order.patient_name.split("=")[0]
    family, given, middle, prefix, suffix = [*alphabetic.split("^"), "", "", "", ""][:5]
    return _components(family, given, middle, suffix, prefix)


def _ts(date: str, time: str) -> str:
    """DICOM DA + TM → HL7 TS/DTM: at most 4 fractional digits (v2.3.1 TS, v2.5 DTM)."""
    if not date:
        return ""
    whole, _, fraction = time.partition(".")
    return date + whole + (f".{fraction[:4]}" if fraction and len(whole) == 6 else "")


def _procedure_code(performed: PerformedStep) -> str:
    """OBR-4 CE from the first item of (0008,1032) Procedure Code Sequence, if any."""
    found = items(performed.dataset, "ProcedureCodeSequence")
    if not found or not text(found[0], "CodeValue"):
        return ""
    keywords = ("CodeValue", "CodeMeaning", "CodingSchemeDesignator")
    return _components(*(text(found[0], keyword) for keyword in keywords))


def _components(*values: str) -> str:
    """Escaped components joined by ``^``, trailing empty ones dropped."""
    return "^".join(_escaped(value) for value in values).rstrip("^")


def _escaped(value: str) -> str:
    """One escaped leaf value; control characters become spaces (module docstring)."""
    return escape(_CONTROL.sub(" ", value))


# --- ER7 ------------------------------------------------------------------------------------


def _er7(facts: _Facts) -> str:
    """The message as hl7apy writes it (module docstring), segments joined by CR."""
    library = library_version(facts.version)
    assert library is not None, "checked by check_layout"
    return "\r".join(segment_er7(name, fields, library) for name, fields in _segments(facts))


# --- hl7apy ---------------------------------------------------------------------------------


def _hl7apy_message(facts: _Facts) -> str:
    """The message built field by field with hl7apy: the reference the writer must match."""
    message = Message(
        facts.message_type.structure,
        version=library_version(facts.version),
        validation_level=VALIDATION_LEVEL.TOLERANT,
    )
    for name, fields in _segments(facts):
        segment = message.msh if name == "MSH" else message.add_segment(name)
        assign(segment, name, fields)
    er7: str = message.to_er7()
    return er7


# --- layout check ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _layout_problem(message_type: MessageType, version: str) -> str | None:
    """What stops ``message_type`` in ``version`` (see :func:`check_layout`), None if nothing."""
    number = Header(version=version).version_tuple
    if not number or library_version(version) is None:
        return "hl7apy has no such version"
    if number < FIRST_VERSION[message_type]:
        return f"the structure is defined from v{'.'.join(map(str, FIRST_VERSION[message_type]))}"
    return _hl7apy_problem(message_type, version)


def _hl7apy_problem(message_type: MessageType, version: str) -> str | None:
    """Where hl7apy cannot build the representative messages, or writes them differently."""
    for facts in _representatives(message_type, version):
        try:
            expected, written = _hl7apy_message(facts), _er7(facts)
        except Exception as exc:  # hl7apy raises many types for what its structures lack
            return f"hl7apy: {type(exc).__name__}: {exc}"
        if written != expected:
            return _difference(expected, written)
    return None


def _difference(expected: str, written: str) -> str:
    """The first field (or segment) in which the writer's ER7 differs from hl7apy's."""
    pairs = itertools.zip_longest(expected.split("\r"), written.split("\r"), fillvalue="")
    for hl7apy_segment, segment in pairs:
        fields = itertools.zip_longest(hl7apy_segment.split("|"), segment.split("|"))
        for position, (theirs, ours) in enumerate(fields):
            if theirs != ours:
                name = (hl7apy_segment or segment)[:3]
                where = f"{name}-{position + (name == 'MSH')}" if position else "segment"
                return f"{where}: hl7apy writes {theirs!r}, the writer {ours!r}"
    return "the two builds differ"


_SAMPLE = "A^B&C|D~E\\F é"
"""A representative value: every delimiter, a backslash and a non-ASCII letter."""


def _representatives(message_type: MessageType, version: str) -> tuple[_Facts, ...]:
    """Two messages for :func:`check_layout`: every value set, and every optional one empty."""
    return tuple(
        _facts(
            _sample_step(value),
            _sample_order(value),
            message_type=message_type,
            version=version,
            control_id=value,
            now=datetime(2024, 1, 2, 10, 30, 5),
            application=value,
            facility=value,
        )
        for value in (_SAMPLE, "")
    )


def _sample_step(value: str) -> PerformedStep:
    """A completed step with ``value`` in every text (times only when ``value`` is set)."""
    codes = [code_item(value, value, value)] if value else []
    return PerformedStep(
        sop_instance_uid="1.2.3",
        status=PPSStatus.COMPLETED,
        dataset={element_of("ProcedureCodeSequence")[0]: {"vr": "SQ", "Value": codes}},
        references=(StepReference(study_uid=value, sps_id=value, placer_number=value),),
        pps_id=value,
        performed_station_ae=value,
        modality=value,
        start_date="20240102" if value else "",
        start_time="103000.123456",
        end_date="20240102" if value else "",
        end_time="104500",
    )


def _sample_order(value: str) -> OrderContext:
    """An order with ``value`` in every text (MSH-5 an HD with its components, as sent)."""
    return OrderContext(
        placer=OrderNumber(value, value),
        filler=OrderNumber(value, value),
        accession=value,
        requested_procedure_id=value,
        study_uid=value,
        patient_id=value,
        patient_issuer=value,
        patient_name="^".join(value.replace("^", "") for _ in range(5)),
        ris_application="RIS^1.2.3^ISO" if value else "",
        ris_facility=value,
        hl7_charset="UNICODE UTF-8" if value else "",
    )
