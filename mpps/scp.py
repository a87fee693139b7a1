"""The MPPS SCP as a service: N-CREATE and N-SET in one unit of work each (standards.md §4).

:class:`MppsService` takes what the DIMSE adapter (``broker.mpps_service``) decoded — the SOP
Instance UID, the attribute or modification list, the calling AE title — and answers
``(status, dataset)``: Success with no dataset, or a failure status with its status dataset
((0000,0900) Status, (0000,0902) Error Comment, (0000,0903) Error ID when set, (0000,1005)
Attribute Identifier List when known). It touches no pynetdicom type.

One request is one :class:`mpps.ports.MppsUnitOfWork`: the performed step, the new SPS Status
of the scheduled steps it refers to, and every outbox message it causes commit together before
Success is answered (the outbox pattern, ARCHITECTURE.md); then ``on_commit`` wakes the sender.

=====  =========================================================================================
0000   Success: stored, steps moved, messages queued and committed
0106   Invalid attribute value (:mod:`mpps.state`)
0110   Processing failure: A710 after COMPLETED / DISCONTINUED, an undecodable list, or the store
       failed ("MPPS store unavailable"; nothing of the request stays)
0111   Duplicate SOP Instance: N-CREATE of a stored UID, also when two arrive at once
0112   No such SOP Instance: N-SET of an unknown UID
0117   Invalid object instance: N-CREATE of a UID that breaks the UID rules (PS3.5 9.1)
0120   Missing attribute, 0121 missing attribute value (:mod:`mpps.state`)
=====  =========================================================================================

What goes out (``kind`` of :class:`mpps.ports.OutboxEntry`):

- ``hl7``: per enabled ``[[outbound]]`` destination whose ``events`` include the new state
  (IP for N-CREATE, CM / DC for the final N-SET), one message per linked order whose step the
  request moved (:func:`mpps.state.moves`: a step another MPPS finished stays as it is, and
  its order hears nothing), ``order_key`` ``order:<id>``. None for an unscheduled MPPS and
  none for an N-SET that leaves the step IN PROGRESS. A (110514, DCM) discontinuation, when
  the policy reschedules, puts the steps back to SCHEDULED (the procedure was never performed,
  standards.md §4.5) and sends ORC-5 SC, "in process, scheduled", where IP went out, so the RIS
  does not keep the order in process (not to ORU^R01 receivers: no result to report).
  The message is rendered when queued (:func:`mpps.report.status_message`, ~0.3 ms; MSH-7 the
  time of the change) and stored as the row's payload, so the sender's round is a claim, the
  sends and their outcomes. ``event`` (:func:`status_event`) keeps what it was rendered from;
  :func:`read_status_event` gives a sender the arguments again for a row without payload.
- ``dicom``: per ``[[mpps_forward]]`` peer, every accepted N-CREATE and N-SET, ``order_key``
  ``mpps:<SOP Instance UID>``, ``event`` ``{"sop_instance_uid", "dataset"}`` with the request's
  attribute / modification list as received, in DICOM JSON (PS3.18 F.2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from pydicom import Dataset

from mpps.attributes import tag
from mpps.correlate import linked_steps, one_step_per_order
from mpps.model import PerformedStep, PPSStatus, StepReference
from mpps.policy import MppsPolicy
from mpps.ports import (
    DuplicateInstance,
    LinkedStep,
    MppsUnitOfWork,
    MppsUnitOfWorkFactory,
    OutboxEntry,
)
from mpps.report import ORDER_STATUS, RESCHEDULED, MessageType, OrderContext, status_message
from mpps.state import MppsError, MppsStatus, apply_set, create, moves, step_status_for
from mwl.model import OrderNumber, SPSStatus
from mwl.ports import StoreFailure

log = logging.getLogger(__name__)

SUCCESS = 0x0000
Response = tuple[int, Dataset | None]
"""A DIMSE status and the dataset of the response: None on success, the status dataset on
failure."""

STORE_UNAVAILABLE = "MPPS store unavailable"
DUPLICATE_COMMENT = "MPPS SOP Instance exists already"
NO_SUCH_COMMENT = "No such MPPS SOP Instance"

HL7, DICOM = "hl7", "dicom"
""":attr:`mpps.ports.OutboxEntry.kind` of a status message and of a forwarded MPPS."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusDestination:
    """One RIS that receives HL7 status messages (an enabled ``[[outbound]]`` receiver)."""

    name: str
    message_type: MessageType = MessageType.ORM_O01
    version: str = "2.3.1"
    events: tuple[str, ...] = ("IP", "CM", "DC", "SC")
    """ORC-5 values reported: IP in progress, CM completed, DC discontinued, SC scheduled again
    (after a (110514, DCM) discontinuation, when the policy reschedules)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusEvent:
    """What the sender renders one status message from (see :func:`read_status_event`)."""

    performed: PerformedStep
    order: OrderContext
    message_type: MessageType
    version: str
    order_status: str = ""
    """ORC-5 (IP, CM, DC, or :data:`mpps.report.RESCHEDULED`); empty in the events of older
    rows: the PPS status's."""


def _local_now() -> datetime:
    return datetime.now().astimezone()  # MSH-7 is local time with its offset


class MppsService:
    """N-CREATE and N-SET of the MPPS SOP Class (PS3.4 F.7.2), one unit of work each.

    Parameters
    ----------
    uow_factory
        A new :class:`mpps.ports.MppsUnitOfWork` per request.
    policy
        ``[mpps]``: whether a (110514, DCM) discontinuation reschedules.
    destinations
        The enabled RIS receivers of status messages.
    forwards
        Names of the ``[[mpps_forward]]`` peers that get a copy of every request.
    new_control_id
        A fresh MSH-10 / message reference for each queued message.
    on_commit
        Called after a commit that queued messages (wakes the sender); from the DIMSE thread.
    sender, clock
        Our MSH-3 / MSH-4 and the MSH-7 clock of the status messages, rendered when queued.
    """

    def __init__(
        self,
        uow_factory: MppsUnitOfWorkFactory,
        policy: MppsPolicy,
        *,
        destinations: Sequence[StatusDestination] = (),
        forwards: Sequence[str] = (),
        new_control_id: Callable[[], str],
        on_commit: Callable[[], None] | None = None,
        sender: tuple[str, str] = ("MWLBROKER", ""),
        clock: Callable[[], datetime] = _local_now,
    ) -> None:
        self._uow_factory = uow_factory
        self._policy = policy
        self._destinations = tuple(destinations)
        self._forwards = tuple(forwards)
        self._new_control_id = new_control_id
        self.on_commit = on_commit
        self._sender = sender
        self._clock = clock

    def n_create(self, sop_instance_uid: str, dataset: Dataset, calling_ae: str) -> Response:
        """Create the MPPS (PS3.4 F.7.2.1): IN PROGRESS, its steps STARTED, IP queued."""
        return self._answer(
            "N-CREATE",
            sop_instance_uid,
            calling_ae,
            lambda: self._create(sop_instance_uid, dataset, calling_ae),
        )

    def n_set(self, sop_instance_uid: str, modification: Dataset, calling_ae: str) -> Response:
        """Update the MPPS (PS3.4 F.7.2.2); COMPLETED / DISCONTINUED move its steps and
        queue CM / DC."""
        return self._answer(
            "N-SET", sop_instance_uid, calling_ae, lambda: self._set(sop_instance_uid, modification)
        )

    # --- the units of work ------------------------------------------------------------------

    def _create(self, sop_instance_uid: str, dataset: Dataset, calling_ae: str) -> int:
        performed = create(sop_instance_uid, dataset)
        with self._uow_factory() as uow:
            steps = linked_steps(uow.mpps, performed.references)
            step_ids = [step.step_id for step in steps]
            uow.mpps.add(performed, calling_ae=calling_ae, step_ids=step_ids)
            queued = self._record(uow, performed, steps, "N-CREATE", dataset)
            uow.commit()
        return queued

    def _set(self, sop_instance_uid: str, modification: Dataset) -> int:
        with self._uow_factory() as uow:
            stored = uow.mpps.find(sop_instance_uid)
            if stored is None:
                raise MppsError(MppsStatus.NO_SUCH_SOP_INSTANCE, NO_SUCH_COMMENT)
            performed = apply_set(stored.performed, modification)
            uow.mpps.update(stored.id, performed)
            steps = stored.steps if performed.status.is_final else ()
            queued = self._record(uow, performed, steps, "N-SET", modification)
            uow.commit()
        return queued

    def _record(
        self,
        uow: MppsUnitOfWork,
        performed: PerformedStep,
        steps: Sequence[LinkedStep],
        operation: str,
        request: Dataset,
    ) -> int:
        """Move the steps and queue the messages; the number of messages queued."""
        status = step_status_for(
            performed, reschedule_on_incorrect_entry=self._policy.reschedule_on_incorrect_entry
        )
        moved = [step for step in steps if moves(step.status, status)]
        uow.worklist.set_step_status([step.step_id for step in moved], status)
        entries = self._status_entries(performed, moved, status)
        entries += self._forward_entries(performed.sop_instance_uid, operation, request)
        for entry in entries:
            uow.outbox.add(entry)
        return len(entries)

    def _status_entries(
        self, performed: PerformedStep, steps: Sequence[LinkedStep], status: SPSStatus
    ) -> list[OutboxEntry]:
        rescheduled = status is SPSStatus.SCHEDULED  # nothing was performed (§4.5)
        order_status = RESCHEDULED if rescheduled else ORDER_STATUS[performed.status]
        return [
            self._status_entry(performed, step, destination, order_status)
            for step in one_step_per_order(steps)
            for destination in self._destinations
            if order_status in destination.events
            and not (rescheduled and destination.message_type is MessageType.ORU_R01)
        ]

    def _status_entry(
        self,
        performed: PerformedStep,
        step: LinkedStep,
        destination: StatusDestination,
        order_status: str,
    ) -> OutboxEntry:
        """The entry for ORC-5 ``order_status``, its message rendered now (MSH-7: the time of
        the change), so the sender only sends it; a message that cannot be rendered is left to
        the sender, which dead-letters it with the reason rather than refuse the modality."""
        control_id = self._new_control_id()
        application, facility = self._sender
        try:
            payload: bytes | None = status_message(
                performed,
                step.order,
                message_type=destination.message_type,
                version=destination.version,
                control_id=control_id,
                now=self._clock(),
                application=application,
                facility=facility,
                order_status=order_status,
            )
        except Exception:  # checked at configuration: a bug, not the modality's fault
            log.exception("status message for %s not rendered", performed.sop_instance_uid)
            payload = None
        return OutboxEntry(
            destination=destination.name,
            kind=HL7,
            order_key=f"order:{step.order_id}",
            operation=order_status,
            control_id=control_id,
            event=status_event(performed, step.order, destination, order_status),
            payload=payload,
        )

    def _forward_entries(
        self, sop_instance_uid: str, operation: str, request: Dataset
    ) -> list[OutboxEntry]:
        if not self._forwards:
            return []
        event = {"sop_instance_uid": sop_instance_uid, "dataset": request.to_json_dict()}
        return [
            OutboxEntry(
                destination=name,
                kind=DICOM,
                order_key=f"mpps:{sop_instance_uid}",
                operation=operation,
                control_id=self._new_control_id(),
                event=event,
            )
            for name in self._forwards
        ]

    # --- answers ----------------------------------------------------------------------------

    def _answer(
        self, operation: str, sop_instance_uid: str, calling_ae: str, run: Callable[[], int]
    ) -> Response:
        try:
            queued = run()
        except MppsError as error:
            log.info("%s %s from %s refused: %s", operation, sop_instance_uid, calling_ae, error)
            return error.status, error_dataset(error)
        except StoreFailure as failure:
            log.warning("%s %s from %s: %s", operation, sop_instance_uid, calling_ae, failure)
            refused = _store_error(failure)
            return refused.status, error_dataset(refused)
        log.info(
            "%s %s from %s: %d messages queued", operation, sop_instance_uid, calling_ae, queued
        )
        if queued:
            self._wake()
        return SUCCESS, None

    def _wake(self) -> None:
        if self.on_commit is None:
            return
        try:
            self.on_commit()
        except Exception:  # committed already: the sender's poll delivers later
            log.exception("waking the outbox sender failed")


def _store_error(failure: StoreFailure) -> MppsError:
    if isinstance(failure, DuplicateInstance):
        return MppsError(MppsStatus.DUPLICATE_SOP_INSTANCE, DUPLICATE_COMMENT)
    return MppsError(MppsStatus.PROCESSING_FAILURE, STORE_UNAVAILABLE)


def error_dataset(error: MppsError) -> Dataset:
    """The status dataset of a refused request (PS3.7 C.4: Status and its related fields)."""
    dataset = Dataset()
    dataset.Status = int(error.status)
    dataset.ErrorComment = error.comment
    if error.error_id is not None:
        dataset.ErrorID = error.error_id
    if error.attributes:
        dataset.AttributeIdentifierList = list(error.attributes)
    return dataset


# --- the status event -----------------------------------------------------------------------


def status_event(
    performed: PerformedStep,
    order: OrderContext,
    destination: StatusDestination,
    order_status: str = "",
) -> dict[str, Any]:
    """The ``event`` of an ``hl7`` outbox entry: JSON values only.

    ``{"performed": PerformedStep fields, "order": OrderContext fields (order numbers as
    {"number", "namespace"} or null), "message_type", "version"}``. Of the MPPS dataset the
    event keeps what :func:`mpps.report.status_message` reads of it
    (:data:`REPORTED_ATTRIBUTES`), not the whole of it: a completed MPPS may list thousands of
    images, and it is stored once already, in ``mpps_instances``.
    """
    values = {name: getattr(performed, name) for name in _PERFORMED_FIELDS}
    return {
        "performed": {
            **values,
            "status": performed.status.value,
            "dataset": {
                key: value for key, value in performed.dataset.items() if key in REPORTED_ATTRIBUTES
            },
            "references": [_plain(reference) for reference in performed.references],
            "discontinuation_reasons": list(performed.discontinuation_reasons),
        },
        "order": {
            **_plain(order),
            "placer": _plain(order.placer) if order.placer else None,
            "filler": _plain(order.filler) if order.filler else None,
        },
        "message_type": destination.message_type.value,
        "version": destination.version,
        "order_status": order_status,
    }


REPORTED_ATTRIBUTES = frozenset({f"{tag('ProcedureCodeSequence'):08X}"})
"""DICOM JSON keys of the MPPS dataset a status message reads (OBR-4, :mod:`mpps.report`)."""
_PERFORMED_FIELDS = tuple(item.name for item in fields(PerformedStep))


def _plain(value: Any) -> dict[str, Any]:
    """A dataclass's fields, one level deep (:func:`dataclasses.asdict` copies every value
    recursively, the dataset included)."""
    return {item.name: getattr(value, item.name) for item in fields(value)}


def read_status_event(event: Mapping[str, Any]) -> StatusEvent:
    """The inverse of :func:`status_event` (after a JSON round trip)."""
    performed: dict[str, Any] = dict(event["performed"])
    order: dict[str, Any] = dict(event["order"])
    return StatusEvent(
        performed=PerformedStep(
            **{
                **performed,
                "status": PPSStatus(performed["status"]),
                "references": tuple(StepReference(**item) for item in performed["references"]),
                "discontinuation_reasons": tuple(performed["discontinuation_reasons"]),
            }
        ),
        order=OrderContext(
            **{**order, "placer": _number(order["placer"]), "filler": _number(order["filler"])}
        ),
        message_type=MessageType(event["message_type"]),
        version=str(event["version"]),
        order_status=str(event.get("order_status", "")),
    )


def _number(value: Mapping[str, str] | None) -> OrderNumber | None:
    return OrderNumber(**value) if value else None
