"""PID (+ NTE, OBX) → patient-level worklist attributes (standards.md §1.2, patient rows)."""

from __future__ import annotations

from collections.abc import Sequence

from hl7.codec import Field, Message, Segment
from hl7.errors import ErrorCode, ErrorLocation, MessageError
from mwl import convert
from mwl.dicomjson import NULL, DatasetBuilder, fits, issuer_item
from mwl.model import DicomJson, PatientKey, PatientRecord

# PID fields (HL7 v2.3.1–2.5.1 numbering)
PID_EXTERNAL_ID, PID_IDENTIFIERS, PID_ALTERNATE_ID = 2, 3, 4
PID_NAME, PID_MOTHER_NAME, PID_BIRTH, PID_SEX = 5, 6, 7, 8


def patient_from_message(message: Message, patient_segments: Sequence[Segment]) -> PatientRecord:
    """The patient of an order message: PID, NTE after PID, and OBX weight/height anywhere."""
    pid = next((seg for seg in patient_segments if seg.name == "PID"), None)
    if pid is None:
        raise MessageError.single(
            ErrorCode.SEGMENT_SEQUENCE, "PID segment is missing", ErrorLocation("PID", 1)
        )
    comments = [seg.value(3) for seg in _after(patient_segments, pid, "NTE")]
    return patient_from_pid(pid, comments=comments, observations=message.all("OBX"))


def patient_from_pid(
    pid: Segment, *, comments: Sequence[str] = (), observations: Sequence[Segment] = ()
) -> PatientRecord:
    """PID → :class:`PatientRecord` (PatientID, Issuer, Name, Birth Date, Sex, Mother's Birth
    Name, Other Patient IDs, Patient Comments, Weight and Size from OBX)."""
    key, others = patient_identifiers(pid)
    attrs = DatasetBuilder()
    name = _patient_name(pid.field(PID_NAME))
    attrs.put("PatientName", name or NULL)
    attrs.put("PatientID", key.patient_id)
    attrs.put("IssuerOfPatientID", key.issuer)
    attrs.put_sequence("IssuerOfPatientIDQualifiersSequence", [_qualifiers(pid)])
    attrs.put_sequence("OtherPatientIDsSequence", others)
    _put_or_empty(attrs, "PatientBirthDate", convert.birth_date(pid.value(PID_BIRTH)))
    _put_or_empty(attrs, "PatientSex", convert.sex(pid.value(PID_SEX)))
    attrs.put("PatientMotherBirthName", convert.xpn_to_pn(pid.field(PID_MOTHER_NAME).components()))
    text = "\r\n".join(c for c in comments if c and c != NULL)
    attrs.put("PatientComments", text)
    _put_observations(attrs, observations)
    return PatientRecord(key=key, name=name if name != NULL else "", attributes=attrs.build())


def patient_identifiers(pid: Segment) -> tuple[PatientKey, list[DicomJson]]:
    """PID-3 first repetition → PatientID + Issuer; further repetitions → Other Patient IDs.

    Senders that leave PID-3 empty and put the identifier in PID-2 (v2.3 "external ID",
    sample 19) or PID-4 are accepted: the first valued of PID-3, PID-2, PID-4 is used.
    """
    for number in (PID_IDENTIFIERS, PID_EXTERNAL_ID, PID_ALTERNATE_ID):
        ids = pid.field(number)
        reps = [r for r in range(1, len(ids.repetitions) + 1) if ids.get(r) not in ("", NULL)]
        if reps:
            break
    else:
        raise MessageError.single(
            ErrorCode.REQUIRED_FIELD_MISSING,
            "PID-3 Patient Identifier List is empty: the worklist needs a Patient ID",
            ErrorLocation("PID", pid.sequence, PID_IDENTIFIERS),
        )
    first = reps[0]
    key = PatientKey(ids.get(first, 1), ids.get(first, 4, 1))
    _check_length(key.patient_id, pid, number)
    others = [_other_id(ids, rep) for rep in reps[1:]]
    return key, others


def _other_id(ids: Field, rep: int) -> DicomJson:
    item = DatasetBuilder()
    item.put("PatientID", ids.get(rep, 1))
    item.put("IssuerOfPatientID", ids.get(rep, 4, 1))
    item.put("TypeOfPatientID", "TEXT")
    return item.build()


def _qualifiers(pid: Segment) -> DicomJson:
    """PID-3.4.2 / .4.3 → Issuer of Patient ID Qualifiers Sequence (standards.md §1.2)."""
    universal = pid.value(PID_IDENTIFIERS, 4, 2)
    if not universal:
        return {}
    item = issuer_item("", universal, pid.value(PID_IDENTIFIERS, 4, 3))
    return {k: v for k, v in item.items() if k != "00400031"}


def _patient_name(names: Field) -> str:
    """PID-5 → PN; the legal name (XPN.7 = "L") when several are sent (samples 12, 16), else
    the first repetition (standards.md §1.3 "PID-5 repetitions")."""
    reps = range(1, len(names.repetitions) + 1)
    chosen = next((r for r in reps if names.get(r, 7).upper() == "L"), 1)
    components = list(names.components(chosen))
    if components:
        components[0] = names.get(chosen, 1, 1)  # FN: the surname sub-component (v2.5)
    return convert.xpn_to_pn(components)


def _put_or_empty(attrs: DatasetBuilder, keyword: str, value: str) -> None:
    if value:
        attrs.put(keyword, value)
    else:
        attrs.put_empty(keyword)


_OBSERVATIONS = {("BODY WEIGHT", "KG"): ("PatientWeight", 1.0),
                 ("BODY HEIGHT", "M"): ("PatientSize", 1.0),
                 ("BODY HEIGHT", "CM"): ("PatientSize", 0.01)}  # fmt: skip


def _put_observations(attrs: DatasetBuilder, observations: Sequence[Segment]) -> None:
    """OBX body weight (kg) → Patient's Weight, body height (m, cm) → Patient's Size
    (standards.md §1.2, HCS Note16; OBX-3.2 compared case-insensitively)."""
    for obx in observations:
        what = (obx.value(3, 2).upper(), obx.value(6).upper())
        if what not in _OBSERVATIONS:
            continue
        keyword, scale = _OBSERVATIONS[what]
        value = convert.decimal_string(obx.value(5))
        if value:
            attrs.put(keyword, value if scale == 1.0 else f"{float(value) * scale:.4g}")


def _after(segments: Sequence[Segment], anchor: Segment, name: str) -> list[Segment]:
    """Segments named ``name`` that follow ``anchor`` directly (NTE after PID)."""
    found: list[Segment] = []
    for seg in segments[segments.index(anchor) + 1 :]:
        if seg.name != name:
            break
        found.append(seg)
    return found


def _check_length(value: str, segment: Segment, number: int) -> None:
    if not fits(value, "LO"):
        raise MessageError.single(
            ErrorCode.DATA_TYPE,
            f"{segment.name}-{number} value is longer than 64 characters (DICOM LO)",
            ErrorLocation(segment.name, segment.sequence, number),
        )
