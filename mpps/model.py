"""The MPPS domain: a Modality Performed Procedure Step as plain, frozen values.

:mod:`mpps.state` builds a :class:`PerformedStep` from an N-CREATE attribute list and merges
N-SET modification lists into it (standards.md §4.1–4.3); :mod:`mpps.report` turns one into the
HL7 status message for the RIS (standards.md §2.3). The whole MPPS travels as the DICOM JSON
model (PS3.18 F.2) decoded to Unicode, so a step is picklable and storable as it is; the fields
beside ``dataset`` repeat the values the broker correlates and reports on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mwl.model import DicomJson


class PPSStatus(enum.StrEnum):
    """(0040,0252) Performed Procedure Step Status, enumerated values (standards.md §4.2).

    IN PROGRESS: started, not complete; COMPLETED: acquisition completed successfully;
    DISCONTINUED: canceled or unsuccessfully terminated. The only transitions are
    IN PROGRESS → COMPLETED and IN PROGRESS → DISCONTINUED.
    """

    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"

    @property
    def is_final(self) -> bool:
        """True for COMPLETED and DISCONTINUED: the step may no longer be updated."""
        return self is not PPSStatus.IN_PROGRESS


@dataclass(frozen=True, slots=True, kw_only=True)
class StepReference:
    """One item of (0040,0270) Scheduled Step Attributes Sequence (standards.md §4.1, §4.4).

    ``study_uid`` is >Study Instance UID (0020,000D), ``sps_id`` >Scheduled Procedure Step ID
    (0040,0009), ``requested_procedure_id`` >Requested Procedure ID (0040,1001), ``accession``
    >Accession Number (0008,0050), ``placer_number`` / ``filler_number`` >Placer / Filler Order
    Number Imaging Service Request (0040,2016) / (0040,2017). Absent or zero-length values are
    empty strings.
    """

    study_uid: str
    sps_id: str = ""
    requested_procedure_id: str = ""
    accession: str = ""
    placer_number: str = ""
    filler_number: str = ""

    @property
    def is_empty(self) -> bool:
        """True for an unscheduled step (standards.md §4.4, PS3.4 F.7.2.1.2 note 3).

        Such an item carries at most a Study Instance UID the modality generated itself, so it
        cannot be correlated with a worklist item or an order.
        """
        keys = (
            self.sps_id,
            self.requested_procedure_id,
            self.accession,
            self.placer_number,
            self.filler_number,
        )
        return not any(keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class PerformedStep:
    """One MPPS SOP Instance as stored after N-CREATE or N-SET (standards.md §4.1, §4.2).

    Attributes
    ----------
    sop_instance_uid
        Affected / Requested SOP Instance UID of the N-CREATE / N-SET.
    status
        (0040,0252) Performed Procedure Step Status.
    dataset
        The whole MPPS as DICOM JSON (PS3.18 F.2), text decoded to Unicode; (0008,0005) is
        ``ISO_IR 192`` when a value is not ASCII, absent otherwise (see ``charset``).
    references
        One :class:`StepReference` per item of (0040,0270), in order.
    pps_id, performed_station_ae, modality
        (0040,0253) PPS ID, (0040,0241) Performed Station AE Title, (0008,0060) Modality.
    start_date, start_time, end_date, end_time
        (0040,0244)/(0040,0245) PPS Start Date/Time, (0040,0250)/(0040,0251) PPS End Date/Time
        as DICOM DA/TM text; end values are empty until an N-SET supplies them.
    discontinuation_reasons
        Code Values of the items of (0040,0281) PPS Discontinuation Reason Code Sequence
        (standards.md §4.5), e.g. ``("110514",)``.
    charset
        The Specific Character Set of ``dataset``: ``"ISO_IR 192"`` or ``""`` (default
        repertoire).
    """

    sop_instance_uid: str
    status: PPSStatus
    dataset: DicomJson
    references: tuple[StepReference, ...]
    pps_id: str
    performed_station_ae: str
    modality: str
    start_date: str
    start_time: str
    end_date: str = ""
    end_time: str = ""
    discontinuation_reasons: tuple[str, ...] = ()
    charset: str = ""
