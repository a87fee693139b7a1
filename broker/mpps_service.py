"""The MPPS SOP Class on the broker's AE: pynetdicom's N-CREATE / N-SET events → :mod:`mpps.scp`.

A thin adapter like the C-FIND one in :mod:`broker.dicom`: two plain handlers bound to
``EVT_N_CREATE`` and ``EVT_N_SET`` with the :class:`mpps.scp.MppsService` as the binding's
extra argument (:func:`mpps_handlers`). They read the request (SOP Instance UID, attribute or
modification list, calling AE title), call the service, and hand its ``(status, dataset)`` to
pynetdicom, which sends it as the N-CREATE-RSP / N-SET-RSP (PS3.7 10.1.3, 10.1.5):

- a failure's status dataset stands for the status, so its Error Comment (0000,0902), Error
  ID (0000,0903) and, for N-SET, Attribute Identifier List (0000,1005) reach the response.
  pynetdicom 3.0's N-CREATE-RSP has no (0000,1005), so an N-CREATE failure carries the
  comment (which names the tags) and the Error ID only;
- an N-CREATE without Affected SOP Instance UID gets one generated here (PS3.4 F.7.2.1.2 lets
  the SCP choose it), sent back as the response's Affected SOP Instance UID;
- a list pynetdicom cannot decode, or any unexpected error, answers 0110 Processing failure.

:func:`build_mpps_service` wires the service from the configuration.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import cast

from pydicom import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom import evt
from pynetdicom.dimse_primitives import N_CREATE, N_SET
from pynetdicom.events import Event, EventHandlerType

from broker.config import Config, OutboundConfig
from mpps.ports import MppsUnitOfWorkFactory
from mpps.report import MessageType
from mpps.scp import MppsService, StatusDestination, error_dataset
from mpps.state import MppsError, MppsStatus

log = logging.getLogger(__name__)

MODALITY_PERFORMED_PROCEDURE_STEP = UID("1.2.840.10008.3.1.2.3.3")
"""Modality Performed Procedure Step SOP Class (PS3.4 F.7.1)."""
CONTROL_ID_LENGTH = 20
"""MSH-10 is ST of at most 20 characters in HL7 v2.3.1."""

PynetdicomResponse = tuple[int | Dataset, Dataset | None]


def mpps_handlers(service: MppsService) -> list[EventHandlerType]:
    """The event bindings of the MPPS SOP Class for :meth:`pynetdicom.AE.start_server`."""
    return [
        (evt.EVT_N_CREATE, handle_n_create, [service]),
        (evt.EVT_N_SET, handle_n_set, [service]),
    ]


def handle_n_create(event: Event, service: MppsService) -> PynetdicomResponse:
    """``EVT_N_CREATE``: :meth:`mpps.scp.MppsService.n_create` (PS3.4 F.7.2.1)."""
    calling_ae = event.assoc.requestor.ae_title.strip()
    requested = cast(N_CREATE, event.request).AffectedSOPInstanceUID
    sop_instance_uid = str(requested) if requested else generate_uid()
    try:
        status, dataset = service.n_create(sop_instance_uid, event.attribute_list, calling_ae)
    except Exception:  # pynetdicom decodes on access; the service raises nothing else
        log.exception("N-CREATE %s from %s failed", sop_instance_uid, calling_ae)
        return _processing_failure()
    if status:
        if dataset is not None and "AttributeIdentifierList" in dataset:
            del dataset.AttributeIdentifierList  # not part of pynetdicom's N-CREATE-RSP
        return _failure(status, dataset)
    if requested:
        return status, None
    created = Dataset()
    created.AffectedSOPInstanceUID = sop_instance_uid  # pynetdicom moves it to the command
    return status, created


def handle_n_set(event: Event, service: MppsService) -> PynetdicomResponse:
    """``EVT_N_SET``: :meth:`mpps.scp.MppsService.n_set` (PS3.4 F.7.2.2)."""
    calling_ae = event.assoc.requestor.ae_title.strip()
    sop_instance_uid = str(cast(N_SET, event.request).RequestedSOPInstanceUID or "")
    try:
        status, dataset = service.n_set(sop_instance_uid, event.modification_list, calling_ae)
    except Exception:
        log.exception("N-SET %s from %s failed", sop_instance_uid, calling_ae)
        return _processing_failure()
    return _failure(status, dataset) if status else (status, None)


def _failure(status: int, dataset: Dataset | None) -> PynetdicomResponse:
    """The status dataset stands for the status, so its related fields reach the response."""
    return (dataset if dataset is not None else status), None


def _processing_failure() -> PynetdicomResponse:
    error = MppsError(MppsStatus.PROCESSING_FAILURE, "internal error; see the SCP log")
    return error_dataset(error), None


# --- wiring ---------------------------------------------------------------------------------


def build_mpps_service(
    config: Config,
    uow_factory: MppsUnitOfWorkFactory,
    on_commit: Callable[[], None] | None = None,
) -> MppsService:
    """The MPPS service for ``config``: enabled ``[[outbound]]`` receivers, ``[[mpps_forward]]``
    peers, the ``[mpps]`` policy."""
    return MppsService(
        uow_factory,
        config.mpps,
        destinations=status_destinations(config.outbound),
        forwards=[forward.name for forward in config.mpps_forward],
        new_control_id=new_control_id,
        on_commit=on_commit,
        sender=(config.hl7.application, config.hl7.facility),
    )


def status_destinations(outbound: Sequence[OutboundConfig]) -> list[StatusDestination]:
    """One :class:`StatusDestination` per enabled ``[[outbound]]`` receiver."""
    return [
        StatusDestination(
            name=receiver.name,
            message_type=MessageType(receiver.message_type),
            version=receiver.version,
            events=tuple(receiver.events),
        )
        for receiver in outbound
        if receiver.enabled
    ]


def new_control_id() -> str:
    """A fresh MSH-10 Message Control ID: 20 random hex digits, unique across processes."""
    return uuid.uuid4().hex[:CONTROL_ID_LENGTH].upper()
