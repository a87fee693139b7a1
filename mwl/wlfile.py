"""DCMTK worklist files (``.wl``) → the patient and order records the intake stores.

A ``.wl`` file (DCMTK ``wlmscpfs``, Orthanc's worklist plugin; standards.md §6
``samples/dcmtk-wlist``) holds one worklist item: the merged dataset of PS3.4 K.6.1.2.1 with
patient, visit, imaging service request and requested procedure attributes at the top level
and the steps as items of (0040,0100) Scheduled Procedure Step Sequence (standards.md §1.4
"Grouping rules"). :func:`dataset_to_order` splits it back by level, as the HL7 mapper does
(standards.md §1.2, the modules of PS3.4 Table K.6-1):

- **patient** — Patient Relationship, Identification and Demographic modules: group 0010
  (name, identifiers, birth date, sex …), Referenced Patient Sequence (0008,1120),
  Confidentiality Constraint (0040,3001). One patient row serves all the patient's orders, so
  of two files that disagree on these, the one imported last wins;
- **order** — the Patient Medical module and the per-study patient data (Medical Alerts,
  Allergies, Pregnancy Status, Smoking Status, Additional Patient History, Last Menstrual
  Date, Patient's Age, Size, Weight, Occupation, Special Needs (0038,0050), Patient State
  (0038,0500)): they describe the patient at the time of this request — the HL7 mapper puts
  Medical Alerts and Patient State (OBR-13, OBR-12) at this level too — so two files of one
  patient keep their own values; the Visit modules (the other group 0038 attributes,
  Institution (0008,0080-0082), Referring Physician (0008,0090-0096), Referenced Visit
  Sequence (0008,1125)); the Imaging Service Request (Accession Number and its issuer,
  Requesting Physician and Service, Placer/Filler Order Numbers and their identifier
  sequences, group 0040,2xxx), Institutional Department Name, Timezone Offset From UTC;
- **procedure** — every other top-level attribute: the Requested Procedure module (Study
  Instance UID, Requested Procedure ID, description and codes, priority, comments …);
- **step** — one :class:`~mwl.model.StepRecord` per (0040,0100) item, the item's attributes
  as they are.

Values travel as DICOM JSON (pydicom ``to_json_dict``); text is decoded with the file's
Specific Character Set, which is then dropped: the store keeps Unicode and the SCP chooses the
answer's character set (standards.md §3.3, §5). Private elements and group lengths are dropped.

Type 1 return keys (standards.md §0 item 3, §3.1): Patient's Name, Patient ID, and in every
step Scheduled Station AE Title, SPS Start Date, SPS Start Time and Modality must be valued,
else the file is refused (DCMTK ``wlmscpfs --enable-file-reject``, its default, ignores such
files too). A missing Study Instance UID, Requested Procedure ID or SPS ID follows the site's
:class:`~mwl.policy.MappingPolicy` (``missing_*``): refused, or generated **deterministically
from the item's identity** — Patient ID and issuer, Accession Number, Placer and Filler Order
Numbers, the given Requested Procedure ID — never from scheduling data, so a file edited to a
new date or station keeps the keys it got (standards.md §1.1 ZDS note "reject-vs-generate"):

- Requested Procedure ID ← Accession Number, else Placer, else Filler Order Number;
- SPS ID ← the Requested Procedure ID for the first item, ``<RP ID>-<n>`` for the n-th;
- Study Instance UID ← :func:`mwl.identifiers.derived_uid` of that identity.

An item with none of Accession Number, Placer/Filler Order Number or Requested Procedure ID
has no stable identity and is refused instead.

Errors: every problem with a file is a :class:`WorklistFileError` (``path``, ``reason``).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from mwl.dicomjson import MAX_BYTES, element_of
from mwl.identifiers import derived_uid
from mwl.model import (
    DicomJson,
    OrderControl,
    OrderNumber,
    OrderRecord,
    PatientKey,
    PatientRecord,
    ProcedureRecord,
    SPSStatus,
    StepRecord,
)
from mwl.policy import MappingPolicy, MissingKeyPolicy

SPS_SEQUENCE = "00400100"
SPS_STATUS = "00400020"
SPECIFIC_CHARACTER_SET = "00080005"

_PATIENT_TAGS = frozenset({0x00081120, 0x00403001})
_PER_ORDER_PATIENT_TAGS = frozenset(
    {0x00101010, 0x00101020, 0x00101030, 0x00102000, 0x00102110, 0x00102180, 0x001021A0,
     0x001021B0, 0x001021C0, 0x001021D0, 0x00102203}
)  # fmt: skip
_ORDER_TAGS = frozenset(
    {0x00080050, 0x00080051, 0x00080080, 0x00080081, 0x00080082, 0x00080090, 0x00080092,
     0x00080094, 0x00080096, 0x00080201, 0x00081040, 0x00081125, 0x00321031, 0x00321032,
     0x00321033, 0x00321034, 0x00400026, 0x00400027}
)  # fmt: skip
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_STATUS_ALIASES = {"CANCELLED": SPSStatus.CANCELED}
_REQUIRED_STEP_KEYS = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
)
_LENGTH_CHECKED = (
    "PatientID", "IssuerOfPatientID", "AccessionNumber", "RequestedProcedureID",
    "ScheduledProcedureStepID", "ScheduledStationAETitle", "Modality",
    "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
)  # fmt: skip
_GENERATOR = "mwl-broker.wlfile"


class WorklistFileError(Exception):
    """A worklist file that cannot be imported: where, and why (one sentence a person can act
    on)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_worklist_file(
    path: Path, policy: MappingPolicy | None = None
) -> tuple[PatientRecord, OrderRecord]:
    """Read one ``.wl`` (or any DICOM) file and convert it with :func:`dataset_to_order`.

    Files without the DICM preamble (a bare dataset, as some tools write) are read too; a
    file that is no DICOM at all, or that pydicom cannot decode, is a
    :class:`WorklistFileError`.
    """
    dataset = _read_dataset(path)
    try:
        return dataset_to_order(dataset, policy=policy, path=str(path))
    except WorklistFileError:
        raise
    except Exception as error:  # pydicom decodes lazily: any decoding failure lands here
        raise WorklistFileError(path, f"cannot decode the dataset: {error}") from error


def _read_dataset(path: Path) -> Dataset:
    """The file's dataset; pydicom's warnings about odd encodings are not errors here (the
    conversion checks what it needs), so they are recorded and dropped."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        return _read_leniently(path)


def _read_leniently(path: Path) -> Dataset:
    try:
        return dcmread(path)
    except InvalidDicomError:
        pass
    except Exception as error:  # OSError, truncated files, bad values in the meta header …
        raise WorklistFileError(path, f"not a readable DICOM file: {error}") from error
    try:
        dataset = dcmread(path, force=True)
    except Exception as error:
        raise WorklistFileError(path, f"not a DICOM file: {error}") from error
    if not _looks_like_worklist(dataset):
        raise WorklistFileError(path, "not a DICOM file (no DICM preamble, no worklist item)")
    return dataset


def _looks_like_worklist(dataset: Dataset) -> bool:
    try:
        return "PatientID" in dataset or "ScheduledProcedureStepSequence" in dataset
    except Exception:  # a forced read of random bytes yields nonsense elements
        return False


def dataset_to_order(
    ds: Dataset, *, policy: MappingPolicy | None = None, path: str | None = None
) -> tuple[PatientRecord, OrderRecord]:
    """One worklist item (a ``.wl`` dataset) → the patient and the order the intake stores.

    The order has control NW, one requested procedure (Study Instance UID, Requested
    Procedure ID) and one step per SPS Sequence item; its ``order_status`` is the first
    item's (0040,0020) SPS Status (default SCHEDULED), each step's own status is
    :func:`step_status`. See the module documentation for the levels and identifiers.
    """
    where = path or str(getattr(ds, "filename", "") or "<dataset>")
    policy = policy or MappingPolicy()
    _check_character_set(ds, where)
    data = _json(ds, where)
    _check_required(ds, where)
    patient = _patient(ds, data)
    placer, filler = _order_number(ds, "Placer"), _order_number(ds, "Filler")
    identity = _identity(ds, placer, filler)
    procedure = _procedure(ds, data, identity, policy, where)
    status = step_status(procedure.steps[0]).value
    order = OrderRecord(
        control=OrderControl.NEW,
        order_status=status,
        placer=placer,
        filler=filler,
        accession=_text(ds, "AccessionNumber"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        admission_id=_text(ds, "AdmissionID"),
        attributes=_level(data, "order"),
        procedures=(procedure,),
    )
    return patient, order


def step_status(step: StepRecord) -> SPSStatus:
    """A step's (0040,0020) SPS Status from its attributes; SCHEDULED when absent or empty."""
    element = step.attributes.get(SPS_STATUS) or {}
    values = element.get("Value") or [""]
    text = str(values[0]).strip().upper()
    return _STATUS_ALIASES.get(text) or SPSStatus(text or SPSStatus.SCHEDULED)


# --- reading values --------------------------------------------------------------------------


def _values(ds: Dataset, keyword: str) -> list[str]:
    """The values of a string attribute, stripped, empty ones left out."""
    if keyword not in ds:
        return []
    value = ds[keyword].value
    items: Iterable[Any] = value if isinstance(value, MultiValue | list) else [value]
    texts = ("" if item is None else str(item).strip() for item in items)
    return [text for text in texts if text]


def _text(ds: Dataset, keyword: str) -> str:
    """An attribute as one DICOM string (several values joined by ``\\``), "" when empty."""
    return "\\".join(_values(ds, keyword))


def _check_character_set(ds: Dataset, where: str) -> None:
    """Every declared (0008,0005) term must have a codec (standards.md §5; ISO_IR 203 has
    none in pydicom)."""
    for term in _values(ds, "SpecificCharacterSet"):
        if term not in python_encoding:
            raise WorklistFileError(
                where,
                f"Specific Character Set {term!r} is not supported; convert the file to "
                "ISO_IR 192 (UTF-8)",
            )


def _json(ds: Dataset, where: str) -> DicomJson:
    """The dataset as DICOM JSON; a value that does not decode in the declared character set
    refuses the file rather than storing replacement characters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data: DicomJson = ds.to_json_dict()
    for warning in caught:
        message = str(warning.message)
        if "decode" in message.lower():
            raise WorklistFileError(where, f"text does not match its character set: {message}")
    return data


def _check_required(ds: Dataset, where: str) -> None:
    """Patient's Name, Patient ID and the step keys modalities select by (Type 1 return keys,
    standards.md §0 item 3) are valued; identifiers fit their VR (PS3.5 Table 6.2-1)."""
    items = _items(ds)
    if not items:
        raise WorklistFileError(where, "(0040,0100) Scheduled Procedure Step Sequence is empty")
    for keyword in ("PatientName", "PatientID"):
        if not _text(ds, keyword):
            raise WorklistFileError(where, f"{_label(keyword)} is missing or empty (Type 1)")
    for number, item in enumerate(items, 1):
        for keyword in _REQUIRED_STEP_KEYS:
            if not _text(item, keyword):
                raise WorklistFileError(
                    where, f"SPS item {number}: {_label(keyword)} is missing or empty (Type 1)"
                )
    for dataset in (ds, *items):
        _check_lengths(dataset, where)


def _check_lengths(ds: Dataset, where: str) -> None:
    for keyword in _LENGTH_CHECKED:
        _, vr = element_of(keyword)
        too_long = [v for v in _values(ds, keyword) if len(v.encode()) > MAX_BYTES[vr]]
        if too_long:
            raise WorklistFileError(
                where,
                f"{_label(keyword)} {too_long[0]!r} is longer than {MAX_BYTES[vr]} "
                f"characters ({vr})",
            )


def _label(keyword: str) -> str:
    tag, _ = element_of(keyword)
    return f"({tag[:4]},{tag[4:]}) {keyword}"


def _items(ds: Dataset) -> list[Dataset]:
    sequence = ds.get("ScheduledProcedureStepSequence")
    return list(sequence) if sequence else []


# --- levels ----------------------------------------------------------------------------------


def _level_of(tag: int) -> str:
    """Which record a top-level attribute belongs to (see the module documentation)."""
    group = tag >> 16
    if (group == 0x0010 and tag not in _PER_ORDER_PATIENT_TAGS) or tag in _PATIENT_TAGS:
        return "patient"
    if tag in _PER_ORDER_PATIENT_TAGS:
        return "order"
    if group == 0x0038 or tag in _ORDER_TAGS or (tag >> 12) == 0x00402:
        return "order"
    return "procedure"


def _kept(tag: int) -> bool:
    """Private elements (odd groups), group lengths and the character set are not stored;
    the SPS Sequence becomes the steps."""
    private = (tag >> 16) % 2 == 1
    group_length = tag & 0xFFFF == 0
    return not (private or group_length or tag in (0x00080005, 0x00400100))


def _level(data: DicomJson, level: str) -> DicomJson:
    return {
        key: value
        for key, value in data.items()
        if _kept(int(key, 16)) and _level_of(int(key, 16)) == level
    }


def _public(item: DicomJson) -> DicomJson:
    return {key: value for key, value in item.items() if _kept(int(key, 16))}


def _patient(ds: Dataset, data: DicomJson) -> PatientRecord:
    key = PatientKey(_text(ds, "PatientID"), _text(ds, "IssuerOfPatientID"))
    return PatientRecord(key=key, name=_text(ds, "PatientName"), attributes=_level(data, "patient"))


def _order_number(ds: Dataset, who: str) -> OrderNumber | None:
    """(0040,2016) Placer / (0040,2017) Filler Order Number with the Local Namespace Entity ID
    of its identifier sequence (0040,0026) / (0040,0027) (standards.md §1.2 ORC-2 / ORC-3)."""
    number = _text(ds, f"{who}OrderNumberImagingServiceRequest")
    if not number:
        return None
    issuers = ds.get(f"Order{who}IdentifierSequence") or []
    namespace = _text(issuers[0], "LocalNamespaceEntityID") if issuers else ""
    return OrderNumber(number, namespace)


# --- procedure, steps and identifiers --------------------------------------------------------


def _identity(ds: Dataset, placer: OrderNumber | None, filler: OrderNumber | None) -> list[str]:
    """What identifies the item across edits: never its scheduling data."""
    numbers = [f"{n.number}^{n.namespace}" if n else "" for n in (placer, filler)]
    return [
        _text(ds, "PatientID"),
        _text(ds, "IssuerOfPatientID"),
        _text(ds, "AccessionNumber"),
        *numbers,
        _text(ds, "RequestedProcedureID"),
    ]


def _procedure(
    ds: Dataset, data: DicomJson, identity: list[str], policy: MappingPolicy, where: str
) -> ProcedureRecord:
    attributes = _level(data, "procedure")
    rp_id = _text(ds, "RequestedProcedureID") or _generated_rp_id(identity, policy, where)
    study_uid, generated = _study_uid(ds, identity, policy, where)
    attributes.update(
        _generated_elements(ds, RequestedProcedureID=rp_id, StudyInstanceUID=study_uid)
    )
    items = data.get(SPS_SEQUENCE, {}).get("Value") or []
    steps = tuple(
        _step(item, _public(json_item), rp_id=rp_id, number=number, policy=policy, where=where)
        for number, (item, json_item) in enumerate(zip(_items(ds), items, strict=True), 1)
    )
    _check_unique_steps(steps, where)
    return ProcedureRecord(
        study_uid=study_uid,
        requested_procedure_id=rp_id,
        description=_text(ds, "RequestedProcedureDescription"),
        attributes=attributes,
        steps=steps,
        study_uid_generated=generated,
    )


def _study_uid(
    ds: Dataset, identity: list[str], policy: MappingPolicy, where: str
) -> tuple[str, bool]:
    """(0020,000D) Study Instance UID, given (a valid UID) or generated; (uid, generated)."""
    given = _text(ds, "StudyInstanceUID")
    if given:
        if len(given) > MAX_BYTES["UI"] or not _UID.match(given):
            raise WorklistFileError(where, f"Study Instance UID {given!r} is not a valid UID")
        return given, False
    _require_identity("(0020,000D) Study Instance UID", policy.missing_study_uid, identity, where)
    return derived_uid([_GENERATOR, "study", *identity], policy.uid_root), True


def _generated_rp_id(identity: list[str], policy: MappingPolicy, where: str) -> str:
    what = "(0040,1001) Requested Procedure ID"
    _require_identity(what, policy.missing_requested_procedure_id, identity, where)
    base = next(value for value in identity[2:5] if value).split("^")[0]
    return _fitted(base, [_GENERATOR, "rp", *identity])


def _require_identity(what: str, rule: MissingKeyPolicy, identity: list[str], where: str) -> None:
    if rule is MissingKeyPolicy.REJECT:
        raise WorklistFileError(where, f"{what} is missing and the site policy is to reject")
    if not any(identity[2:]):
        raise WorklistFileError(
            where,
            f"{what} is missing and cannot be generated: the item has no Accession Number, "
            "Placer/Filler Order Number or Requested Procedure ID",
        )


def _fitted(candidate: str, entropy: list[str]) -> str:
    """``candidate`` when it fits SH (16 characters), else 16 hex digits of a hash."""
    if len(candidate.encode()) <= MAX_BYTES["SH"]:
        return candidate
    return hashlib.sha256("\x1f".join(entropy).encode()).hexdigest()[:16].upper()


def _generated_elements(ds: Dataset, **values: str) -> DicomJson:
    """DICOM JSON elements for the identifiers the file did not carry."""
    elements: DicomJson = {}
    for keyword, value in values.items():
        if not _text(ds, keyword):
            tag, vr = element_of(keyword)
            elements[tag] = {"vr": vr, "Value": [value]}
    return elements


def _step(
    item: Dataset,
    attributes: DicomJson,
    *,
    rp_id: str,
    number: int,
    policy: MappingPolicy,
    where: str,
) -> StepRecord:
    """One (0040,0100) item → a step (standards.md §1.2, the ``>`` rows)."""
    sps_id = _text(item, "ScheduledProcedureStepID")
    if not sps_id:
        if policy.missing_sps_id is MissingKeyPolicy.REJECT:
            raise WorklistFileError(
                where, f"SPS item {number}: (0040,0009) SPS ID is missing and the site policy "
                "is to reject"
            )  # fmt: skip
        sps_id = _fitted(rp_id if number == 1 else f"{rp_id}-{number}", [rp_id, str(number)])
        attributes = {**attributes, **_generated_elements(item, ScheduledProcedureStepID=sps_id)}
    step = StepRecord(
        sps_id=sps_id,
        station_aes=tuple(_values(item, "ScheduledStationAETitle")),
        start_date=_text(item, "ScheduledProcedureStepStartDate"),
        start_time=_text(item, "ScheduledProcedureStepStartTime"),
        modality=_text(item, "Modality"),
        performing_physician=_text(item, "ScheduledPerformingPhysicianName"),
        station_name=_text(item, "ScheduledStationName"),
        location=_text(item, "ScheduledProcedureStepLocation"),
        description=_text(item, "ScheduledProcedureStepDescription"),
        attributes=dict(sorted(attributes.items())),
    )
    _check_status(step, number, where)
    return step


def _check_status(step: StepRecord, number: int, where: str) -> None:
    try:
        step_status(step)
    except ValueError:
        value = step.attributes[SPS_STATUS]["Value"][0]
        known = ", ".join(s.value for s in SPSStatus)
        raise WorklistFileError(
            where, f"SPS item {number}: SPS Status {value!r} is none of {known}"
        ) from None


def _check_unique_steps(steps: tuple[StepRecord, ...], where: str) -> None:
    seen: set[str] = set()
    for step in steps:
        if step.sps_id in seen:
            raise WorklistFileError(where, f"two SPS items have the SPS ID {step.sps_id!r}")
        seen.add(step.sps_id)
