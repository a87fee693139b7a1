"""The MPPS service's wiring: :func:`build_mpps_service` from the configuration.

The DIMSE side (N-CREATE / N-SET requests → :class:`mpps.scp.MppsService`) is
:mod:`broker.dicom.services`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence

from pydicom.uid import UID

from broker.config import Config, OutboundConfig
from mpps.ports import MppsUnitOfWorkFactory
from mpps.report import MessageType
from mpps.scp import MppsService, StatusDestination

log = logging.getLogger(__name__)

MODALITY_PERFORMED_PROCEDURE_STEP = UID("1.2.840.10008.3.1.2.3.3")
"""Modality Performed Procedure Step SOP Class (PS3.4 F.7.1)."""
CONTROL_ID_LENGTH = 20
"""MSH-10 is ST of at most 20 characters in HL7 v2.3.1."""

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
