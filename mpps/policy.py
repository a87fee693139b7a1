"""Site choices for MPPS handling (``[mpps]``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class MppsPolicy:
    """How performed steps move scheduled steps and what is reported (standards.md §4.4, §4.5)."""

    reschedule_on_incorrect_entry: bool = True
    """A DISCONTINUED MPPS with reason (110514, DCM) "Incorrect worklist entry selected" puts
    its steps back to SCHEDULED (the modality picked the wrong patient; the procedure was not
    done) and tells the RIS so with ORC-5 SC where IP went out, not DC (``mpps.scp``)."""
