"""The broker's DICOM AE: Verification, Modality Worklist C-FIND and MPPS N-CREATE / N-SET.

The Upper Layer and DIMSE are sans I/O (:mod:`broker.dicom.pdu`, :mod:`broker.dicom.dimse`,
:mod:`broker.dicom.negotiation`, with pynetdicom's PDU item classes and presentation context
negotiation); :mod:`broker.dicom.association` drives one association on a blocking socket in a
thread of its own; :mod:`broker.dicom.services` adapts each request to the domain
(:mod:`mwl.scp`, :mod:`mpps.scp`); :class:`DicomServer` listens.

pynetdicom's acceptor runs two reactor threads per association that poll every millisecond
(the DUL, and the association between requests): ~1.5 ms of waiting per request, ~6 ms of CPU
per MPPS N-CREATE + N-SET pair on a slow machine, and no N-CREATE-RSP Attribute Identifier
List. Here a request is served the moment its last PDU arrives (docs/benchmarks.md, MPPS).
"""

from broker.dicom.server import (
    MODALITY_WORKLIST_FIND,
    STOP_GRACE_SECONDS,
    TRANSFER_SYNTAXES,
    VERIFICATION,
    DicomServer,
    set_no_delay,
)
from broker.dicom.services import FindObserver

__all__ = [
    "MODALITY_WORKLIST_FIND",
    "STOP_GRACE_SECONDS",
    "TRANSFER_SYNTAXES",
    "VERIFICATION",
    "DicomServer",
    "FindObserver",
    "set_no_delay",
]
