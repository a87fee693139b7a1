"""MPPS N-CREATE and N-SET rules: every check of PS3.4 F.7.2 and the status it answers.

standards.md §4.1 (Table F.7.2-1), §4.2 (state machine), §4.3 (status codes), §4.4 (scheduled
step references), §4.5 (discontinuation reasons). The functions take the pydicom datasets the
DIMSE adapter receives and return frozen :class:`mpps.model.PerformedStep` values; a request
that breaks a rule raises :class:`MppsError`, the one exception of the MPPS rules::

    MppsError   -- status (0000,0900), Error Comment (0000,0902), Error ID (0000,0903),
                   Attribute Identifier List (0000,1005) of the N-CREATE / N-SET response

The adapter is the one translator from :class:`MppsError` to a DIMSE response. Checks run in a
fixed order and the first failing one answers:

- N-CREATE: 0117 a SOP Instance UID that breaks the UID rules → decoding → 0120 a Type 1
  attribute is absent → 0121 it has no value → 0106
  (0040,0252) is not ``IN PROGRESS`` → 0106 a malformed PPS date or time (DA/TM).
- N-SET: 0110 + Error ID A710 when the stored step is no longer IN PROGRESS → decoding → 0106
  an attribute that is "Not allowed" in N-SET → 0121 / 0106 an empty / unknown (0040,0252) →
  0106 a malformed PPS date or time → merge → for COMPLETED or DISCONTINUED the final-state
  rules on the merged step: 0120 absent, then 0121 without value.

Choices (PS3.4 leaves them to the SCP or real modalities force them):

- **Type 2 attributes** absent from N-CREATE are accepted and stored as absent: real modalities
  omit them (Study ID, Performed Station Name, the Type 2 items of (0040,0270)…).
- **Not allowed in N-SET** → 0106 Invalid Attribute Value, listing the tags. PS3.7 classes 0106
  as a failure, so the modality learns that nothing was stored (dcm4che answers 0105 No Such
  Attribute for the same case; both are failures).
- **N-SET of an attribute N-CREATE did not create** (PS3.4 F.7.2-1 note 5, 0105) is accepted:
  modalities send (0040,0281) or the PPS end date at N-SET without creating them first.
- **Nested attributes** in the Attribute Identifier List: the list has no path notation, so a
  missing >Study Instance UID is listed as (0040,0270) followed by (0020,000D).
- **Final state**: PPS End Date and End Time valued for COMPLETED and DISCONTINUED; Performed
  Series Sequence with at least one item for COMPLETED. DISCONTINUED may come with an empty or
  absent series sequence although Table F.7.2-1 note 2 asks for a series in both cases: a
  modality that stops before acquiring anything must be able to discontinue, or the step stays
  IN PROGRESS for ever. Items that are present need Series Instance UID and Protocol Name.
- **Dates and times**: only the four PPS dates/times are checked (the values the broker
  reports); DA is ``YYYYMMDD`` and a real date, TM ``HH[MM[SS[.F{1,6}]]]``.
- **Character sets** (PS3.4 F.7.2.2.1/.3): every text value is decoded with the dataset's own
  Specific Character Set and kept as Unicode, so N-CREATE and N-SET sets combine by
  construction; the stored dataset declares ``ISO_IR 192`` when a value is not ASCII and no
  (0008,0005) otherwise. A term pydicom cannot decode (e.g. ISO_IR 203) → 0106 (0008,0005).
- **Undecodable attribute lists** (pydicom fails while converting values) → 0110 Processing
  failure without Error ID. pydicom's own value validation (its global reading validation
  mode, WARN by default) is left alone: it warns about odd values, the checks here answer; with
  RAISE, what it refuses ends up here.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from pydicom import Dataset
from pydicom.charset import python_encoding

from mpps.attributes import (
    FINAL_ITEM_TYPE_1,
    FINAL_TYPE_1,
    N_CREATE_ITEM_TYPE_1,
    N_CREATE_TYPE_1,
    REASONS,
    STATUS,
    STEPS,
    codes,
    gaps,
    items,
    malformed_dates_and_times,
    not_allowed_in_set,
    tag,
    tag_list,
    text,
)
from mpps.model import PerformedStep, PPSStatus, StepReference
from mwl.dicomjson import element_of
from mwl.model import DicomJson, SPSStatus

logger = logging.getLogger(__name__)


class MppsStatus(enum.IntEnum):
    """DIMSE status codes of N-CREATE / N-SET responses (standards.md §4.3, PS3.7 Annex C)."""

    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    """For the adapter: N-CREATE with an MPPS SOP Instance UID already stored."""
    NO_SUCH_SOP_INSTANCE = 0x0112
    """For the adapter: N-SET for an MPPS SOP Instance UID that is not stored."""
    INVALID_OBJECT_INSTANCE = 0x0117
    """N-CREATE whose Affected SOP Instance UID breaks the UID rules (PS3.5 9.1)."""
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121


UID_MAX = 64
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
"""PS3.5 9.1: dotted numbers without leading zeros, at most 64 characters."""

NO_LONGER_UPDATABLE = 0xA710
"""Error ID (0000,0903) of an N-SET after COMPLETED/DISCONTINUED (PS3.4 F.7.2.2.4)."""
NO_LONGER_UPDATABLE_COMMENT = "Performed Procedure Step Object may no longer be updated"

COMMENT_MAX = 64
"""Error Comment (0000,0902) is LO: 64 characters of the default repertoire."""


class MppsError(Exception):
    """A refused N-CREATE / N-SET, with everything the DIMSE response carries.

    Attributes
    ----------
    status
        The DIMSE status (0000,0900), one of :class:`MppsStatus`.
    comment
        Error Comment (0000,0902): what was wrong, ASCII, at most 64 characters.
    error_id
        Error ID (0000,0903), only for 0110 A710 (standards.md §4.2).
    attributes
        Attribute Identifier List (0000,1005): the tags at fault, as ints (``0x00400252``).
    """

    def __init__(
        self,
        status: int,
        comment: str,
        *,
        error_id: int | None = None,
        attributes: Iterable[int] = (),
    ) -> None:
        self.status: int = status
        self.comment: str = _comment(comment)
        self.error_id: int | None = error_id
        self.attributes: tuple[int, ...] = tuple(dict.fromkeys(attributes))
        super().__init__(f"{status:04X}H {self.comment}")


def _comment(value: str) -> str:
    ascii_text = value.encode("ascii", "replace").decode("ascii")
    if len(ascii_text) <= COMMENT_MAX:
        return ascii_text
    return ascii_text[: COMMENT_MAX - 3] + "..."


CHARSET_KEY = "00080005"
UNICODE = "ISO_IR 192"

SPS_STATUS: Mapping[PPSStatus, SPSStatus] = MappingProxyType(
    {
        PPSStatus.IN_PROGRESS: SPSStatus.STARTED,
        PPSStatus.COMPLETED: SPSStatus.COMPLETED,
        PPSStatus.DISCONTINUED: SPSStatus.DISCONTINUED,
    }
)
"""PPS status → SPS status of the referenced worklist items (standards.md §2.2, §4.5)."""

INCORRECT_WORKLIST_ENTRY = ("110514", "DCM")
"""(Code Value, Coding Scheme Designator) "Incorrect worklist entry selected" (§4.5)."""

_STATUSES = frozenset(PPSStatus)


# --- operations -----------------------------------------------------------------------------


def create(sop_instance_uid: str, dataset: Dataset) -> PerformedStep:
    """Apply an N-CREATE: the new step, IN PROGRESS (PS3.4 F.7.2.1; standards.md §4.1–4.3).

    Parameters
    ----------
    sop_instance_uid
        Affected SOP Instance UID of the request (the SCU chooses it, PS3.4 F.7.2.1.2).
    dataset
        The N-CREATE attribute list, as decoded from the request.

    Raises
    ------
    MppsError
        0117 for a SOP Instance UID that breaks the UID rules (longer than 64 characters,
        not dotted numbers), 0120 / 0121 for an absent / empty Type 1 attribute, 0106 for a
        status other than IN PROGRESS or a malformed PPS date/time, 0110 when the list cannot
        be decoded.
    """
    if len(sop_instance_uid) > UID_MAX or not _UID.fullmatch(sop_instance_uid):
        comment = "Affected SOP Instance UID is not a valid UID (PS3.5 9.1)"
        raise MppsError(MppsStatus.INVALID_OBJECT_INSTANCE, comment)
    data = _decoded(dataset)
    _require(data, N_CREATE_TYPE_1, N_CREATE_ITEM_TYPE_1, "N-CREATE")
    status = text(data, STATUS)
    if status != PPSStatus.IN_PROGRESS:
        comment = f"N-CREATE status must be IN PROGRESS, not {status!r}"
        raise _error(MppsStatus.INVALID_ATTRIBUTE_VALUE, comment, [STATUS])
    _check_dates_and_times(data)
    return performed_from_json(sop_instance_uid, data)


def apply_set(current: PerformedStep, modification: Dataset) -> PerformedStep:
    """Apply an N-SET to the stored step: the merged step (PS3.4 F.7.2.2; standards.md §4.2).

    Top-level attributes of ``modification`` replace the stored ones, a sequence replaces the
    stored sequence whole (an N-SET carries all items, PS3.4 F.7.2.2.2), and the character sets
    combine as Unicode (module docstring).

    Raises
    ------
    MppsError
        0110 with Error ID A710 when ``current`` is COMPLETED or DISCONTINUED; 0106 for an
        attribute not allowed in N-SET, an unknown status or a malformed PPS date/time; 0121 for
        an empty status; 0120 / 0121 when a final-state attribute is absent / empty; 0110 when
        the list cannot be decoded.
    """
    if current.status.is_final:
        raise MppsError(
            MppsStatus.PROCESSING_FAILURE,
            NO_LONGER_UPDATABLE_COMMENT,
            error_id=NO_LONGER_UPDATABLE,
        )
    data = _decoded(modification)
    _check_allowed_in_set(data)
    _check_set_status(data)
    _check_dates_and_times(data)
    merged = _merge(current.dataset, data)
    status = PPSStatus(text(merged, STATUS))
    if status.is_final:
        _require(merged, FINAL_TYPE_1[status], FINAL_ITEM_TYPE_1, status.value)
    return performed_from_json(current.sop_instance_uid, merged)


def step_status_for(
    performed: PerformedStep, *, reschedule_on_incorrect_entry: bool = True
) -> SPSStatus:
    """The SPS Status (0040,0020) of the worklist items a performed step references.

    IN PROGRESS → STARTED, COMPLETED → COMPLETED, DISCONTINUED → DISCONTINUED (standards.md
    §2.2); DISCONTINUED with reason (110514, DCM) "Incorrect worklist entry selected" →
    SCHEDULED when ``reschedule_on_incorrect_entry`` (standards.md §4.5: the modality picked
    the wrong entry, so the procedure was never performed and must be offered again).
    """
    if (
        reschedule_on_incorrect_entry
        and performed.status is PPSStatus.DISCONTINUED
        and INCORRECT_WORKLIST_ENTRY in codes(performed.dataset, REASONS)
    ):
        return SPSStatus.SCHEDULED
    return SPS_STATUS[performed.status]


def moves(current: SPSStatus, new: SPSStatus) -> bool:
    """Whether an MPPS moves a scheduled step from ``current`` to ``new``: forward only.

    Several MPPS may reference one step (a procedure performed again, the append case). A step
    that another MPPS completed stays COMPLETED, and a finished step (COMPLETED, DISCONTINUED,
    CANCELED) is not started, discontinued or rescheduled again; COMPLETED may follow
    DISCONTINUED or CANCELED: the procedure was performed after all, which the RIS must hear.
    A step already in ``new`` does not move either (its order heard of it already).
    """
    if current is new:
        return False
    if new is SPSStatus.COMPLETED:
        return True
    return not current.is_final


def references(dataset: Dataset | DicomJson) -> tuple[StepReference, ...]:
    """The items of (0040,0270) Scheduled Step Attributes Sequence (standards.md §4.4).

    One :class:`StepReference` per item, in order: several in the group case, one whose
    :attr:`StepReference.is_empty` is True for an unscheduled step. The adapter correlates
    them with worklist items by SPS ID + Requested Procedure ID + Accession Number + Study
    Instance UID. ``dataset`` is a pydicom dataset or its DICOM JSON.

    Raises
    ------
    MppsError
        0106 / 0110 when a pydicom dataset cannot be decoded (see :func:`create`).
    """
    data = dataset if isinstance(dataset, dict) else _decoded(dataset)
    return tuple(_reference(item) for item in items(data, STEPS))


# --- decoding and merging -------------------------------------------------------------------


def _decoded(dataset: Dataset) -> DicomJson:
    """DICOM JSON with text decoded by the dataset's Specific Character Set, as Unicode."""
    terms = _charset_terms(dataset)
    unknown = [term for term in terms if term not in python_encoding]
    if unknown:
        comment = f"Unsupported Specific Character Set {unknown[0]!r}"
        raise _error(MppsStatus.INVALID_ATTRIBUTE_VALUE, comment, ["SpecificCharacterSet"])
    try:
        data: DicomJson = dataset.to_json_dict()
    except Exception as exc:  # pydicom raises many types while converting raw values
        logger.debug("attribute list could not be decoded", exc_info=True)
        raise undecodable(exc) from exc
    return _with_charset(data)


def undecodable(exc: Exception) -> MppsError:
    """0110 for an attribute list that is not a data set, or whose values cannot be read."""
    comment = f"Attribute list could not be decoded ({type(exc).__name__})"
    return MppsError(MppsStatus.PROCESSING_FAILURE, comment)


def _charset_terms(dataset: Dataset) -> list[str]:
    try:
        element = dataset.get(0x00080005)
        value = element.value if element is not None else ""
    except Exception as exc:  # a raw (0008,0005) pydicom cannot convert
        raise _error(
            MppsStatus.INVALID_ATTRIBUTE_VALUE,
            "Unreadable Specific Character Set",
            ["SpecificCharacterSet"],
        ) from exc
    values = [value] if isinstance(value, str | bytes) else list(value or [])
    return [str(term).strip() for term in values]


def _with_charset(data: DicomJson) -> DicomJson:
    """(0008,0005) for Unicode text: ISO_IR 192 if any value is not ASCII, else absent."""
    rest = {key: element for key, element in data.items() if key != CHARSET_KEY}
    if json.dumps(rest, ensure_ascii=False).isascii():
        return rest
    return {CHARSET_KEY: {"vr": "CS", "Value": [UNICODE]}, **rest}


def _merge(stored: DicomJson, modification: DicomJson) -> DicomJson:
    """Top-level replace; sequences are single elements, so they are replaced whole."""
    return _with_charset({**stored, **modification})


def performed_from_json(sop_instance_uid: str, data: DicomJson) -> PerformedStep:
    """A :class:`PerformedStep` from its DICOM JSON: the fields read back from the dataset
    (at N-CREATE / N-SET, and when the store loads a stored instance)."""
    return PerformedStep(
        sop_instance_uid=sop_instance_uid,
        status=PPSStatus(text(data, STATUS)),
        dataset=data,
        references=references(data),
        pps_id=text(data, "PerformedProcedureStepID"),
        performed_station_ae=text(data, "PerformedStationAETitle"),
        modality=text(data, "Modality"),
        start_date=text(data, "PerformedProcedureStepStartDate"),
        start_time=text(data, "PerformedProcedureStepStartTime"),
        end_date=text(data, "PerformedProcedureStepEndDate"),
        end_time=text(data, "PerformedProcedureStepEndTime"),
        discontinuation_reasons=tuple(code for code, _ in codes(data, REASONS)),
        charset=text(data, "SpecificCharacterSet"),
    )


def _reference(item: DicomJson) -> StepReference:
    return StepReference(
        study_uid=text(item, "StudyInstanceUID"),
        sps_id=text(item, "ScheduledProcedureStepID"),
        requested_procedure_id=text(item, "RequestedProcedureID"),
        accession=text(item, "AccessionNumber"),
        placer_number=text(item, "PlacerOrderNumberImagingServiceRequest"),
        filler_number=text(item, "FillerOrderNumberImagingServiceRequest"),
    )


# --- checks ---------------------------------------------------------------------------------


def _require(
    data: DicomJson,
    keywords: Sequence[str],
    item_keywords: Mapping[str, tuple[str, ...]],
    context: str,
) -> None:
    """0120 when a Type 1 attribute is absent, else 0121 when one has no value."""
    missing, empty = gaps(data, keywords, item_keywords)
    if missing:
        comment = f"{context}: missing {tag_list(missing)}"
        raise MppsError(MppsStatus.MISSING_ATTRIBUTE, comment, attributes=missing)
    if empty:
        comment = f"{context}: no value in {tag_list(empty)}"
        raise MppsError(MppsStatus.MISSING_ATTRIBUTE_VALUE, comment, attributes=empty)


def _check_allowed_in_set(data: DicomJson) -> None:
    refused = not_allowed_in_set(data)
    if refused:
        comment = f"Not allowed in N-SET: {tag_list(map(tag, refused))}"
        raise _error(MppsStatus.INVALID_ATTRIBUTE_VALUE, comment, refused)


def _check_set_status(data: DicomJson) -> None:
    """(0040,0252) in an N-SET is optional but, when present, one of the enumerated values."""
    if element_of(STATUS)[0] not in data:
        return
    status = text(data, STATUS)
    if not status:
        raise _error(MppsStatus.MISSING_ATTRIBUTE_VALUE, "N-SET status has no value", [STATUS])
    if status not in _STATUSES:
        comment = f"Unknown Performed Procedure Step Status {status!r}"
        raise _error(MppsStatus.INVALID_ATTRIBUTE_VALUE, comment, [STATUS])


def _check_dates_and_times(data: DicomJson) -> None:
    malformed = malformed_dates_and_times(data)
    if malformed:
        comment = f"Malformed date/time in {tag_list(map(tag, malformed))}"
        raise _error(MppsStatus.INVALID_ATTRIBUTE_VALUE, comment, malformed)


def _error(status: MppsStatus, comment: str, keywords: Iterable[str]) -> MppsError:
    return MppsError(status, comment, attributes=[tag(keyword) for keyword in keywords])
