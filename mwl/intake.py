"""Apply a mapped command to the store: order control and patient updates.

Order control (standards.md §2.2): each accepted ORC-1/ORC-5 pair has one action below; any
other pair is refused with AE 103. Procedures are found by Study Instance UID (when the order
carried it), else by placer/filler order number. XO, CA, DC, SC, OC and OD never change the
patient's demographics (IHE RAD-13); an update or cancel of an unknown order is AE 204.
A NW for an order the broker already has (a resend with a new control ID) is an update.

Patients (standards.md §1.1 RAD-1/RAD-12): A01/A04/A05/A08/A31 create or update; A40 moves
the prior patient's orders to the surviving patient; A47 changes the identifier.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hl7.errors import ErrorCode, ErrorLocation, MessageError
from mwl.model import (
    FINAL_STATUSES,
    Command,
    OrderControl,
    OrderMessage,
    OrderRecord,
    PatientIdChange,
    PatientMerge,
    PatientUpdate,
    SPSStatus,
)
from mwl.policy import MappingPolicy
from mwl.ports import StoredOrder, UnitOfWork


class Action(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class Rule:
    """What an ORC-1/ORC-5 pair does: its action and the status its steps move to."""

    action: Action
    status: SPSStatus | None = None


_NW, _XO, _CA, _DC = (
    OrderControl.NEW,
    OrderControl.CHANGE,
    OrderControl.CANCEL,
    OrderControl.DISCONTINUE,
)
_SC, _OC, _OD = OrderControl.STATUS_CHANGED, OrderControl.CANCELED, OrderControl.DISCONTINUED
S = SPSStatus

ORDER_RULES: dict[tuple[OrderControl, str], Rule] = {
    (_NW, "SC"): Rule(Action.CREATE, S.SCHEDULED),
    (_NW, ""): Rule(Action.CREATE, S.SCHEDULED),
    (_NW, "IP"): Rule(Action.CREATE, S.STARTED),  # status per MappingPolicy.new_in_progress
    (_XO, "SC"): Rule(Action.UPDATE),
    (_XO, ""): Rule(Action.UPDATE),
    (_XO, "CM"): Rule(Action.UPDATE, S.COMPLETED),
    (_CA, "CA"): Rule(Action.STATUS, S.CANCELED),
    (_CA, ""): Rule(Action.STATUS, S.CANCELED),
    (_DC, "CA"): Rule(Action.STATUS, S.DISCONTINUED),
    (_DC, "DC"): Rule(Action.STATUS, S.DISCONTINUED),
    (_DC, ""): Rule(Action.STATUS, S.DISCONTINUED),
    (_SC, "IP"): Rule(Action.STATUS, S.STARTED),
    (_SC, "CM"): Rule(Action.STATUS, S.COMPLETED),
    (_SC, "DC"): Rule(Action.STATUS, S.DISCONTINUED),
    (_SC, "CA"): Rule(Action.STATUS, S.CANCELED),
    (_SC, "SC"): Rule(Action.STATUS),
    (_SC, ""): Rule(Action.STATUS),
    (_OC, "CA"): Rule(Action.STATUS, S.CANCELED),
    (_OC, ""): Rule(Action.STATUS, S.CANCELED),
    (_OD, "DC"): Rule(Action.STATUS, S.DISCONTINUED),
    (_OD, ""): Rule(Action.STATUS, S.DISCONTINUED),
}
"""standards.md §2.2 "Inbound ORC-1/ORC-5 → broker action" (dcm4chee defaults); an empty
ORC-5 takes the control's usual status."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the journal records about an applied message."""

    patient_id: str = ""
    accession: str = ""


class Intake:
    """Applies commands inside a caller's unit of work (the caller commits)."""

    def __init__(self, policy: MappingPolicy) -> None:
        self._policy = policy

    def apply(self, uow: UnitOfWork, command: Command, sender: tuple[str, str]) -> Outcome:
        match command:
            case OrderMessage():
                return self._orders(uow, command, sender)
            case PatientUpdate(patient=patient):
                uow.worklist.upsert_patient(patient)
                return Outcome(patient.key.patient_id)
            case PatientMerge():
                return _merge(uow, command)
            case PatientIdChange():
                return _change_id(uow, command)
        raise TypeError(command)  # pragma: no cover - every Command is matched above

    def _orders(self, uow: UnitOfWork, message: OrderMessage, sender: tuple[str, str]) -> Outcome:
        rules = [(order, self.rule_for(order)) for order in message.orders]
        creates = any(rule.action is Action.CREATE for _, rule in rules)
        patient = uow.worklist.upsert_patient(message.patient) if creates else 0
        for order, rule in rules:
            stored = find_order(uow, order)
            if rule.action is Action.CREATE and stored is None:
                status = rule.status or SPSStatus.SCHEDULED
                uow.worklist.add_order(patient, order, status, sender=sender)
                continue
            if stored is None:
                raise _unknown_order(order)
            self._change(uow, stored, order, rule)
        first = message.orders[0]
        return Outcome(message.patient.key.patient_id, first.accession)

    def rule_for(self, order: OrderRecord) -> Rule:
        rule = ORDER_RULES.get((order.control, order.order_status))
        if rule is None:
            raise MessageError.single(
                ErrorCode.TABLE_VALUE_NOT_FOUND,
                f"ORC-1/ORC-5 pair {order.control.value}/{order.order_status or '(empty)'} is "
                "not supported (see the order control table in the documentation)",
                ErrorLocation("ORC", order.orc_sequence, 5),
            )
        if (order.control, order.order_status) == (_NW, "IP"):
            return Rule(Action.CREATE, SPSStatus(self._policy.new_in_progress.value))
        return rule

    @staticmethod
    def _change(uow: UnitOfWork, stored: StoredOrder, order: OrderRecord, rule: Rule) -> None:
        if rule.action in (Action.CREATE, Action.UPDATE):
            uow.worklist.update_order(stored, order, SPSStatus.SCHEDULED)
            stored = find_order(uow, order) or stored
        if rule.status is not None and rule.action is not Action.CREATE:
            open_steps = [s.id for s in stored.steps if s.status not in FINAL_STATUSES]
            uow.worklist.set_step_status(open_steps, rule.status)


def find_order(uow: UnitOfWork, order: OrderRecord) -> StoredOrder | None:
    """The stored order: by a Study Instance UID the order carried, else by order number."""
    carried = [p.study_uid for p in order.procedures if not p.study_uid_generated]
    return uow.worklist.find_order_for(carried, order.placer, order.filler)


def _unknown_order(order: OrderRecord) -> MessageError:
    numbers = [f"{n.number}" for n in (order.placer, order.filler) if n]
    uids = [p.study_uid for p in order.procedures if not p.study_uid_generated]
    known_by = ", ".join([*numbers, *uids]) or "(no identifier)"
    return MessageError.single(
        ErrorCode.UNKNOWN_KEY,
        f"ORC-1 {order.control.value} refers to an order the broker does not have ({known_by})",
        ErrorLocation("ORC", order.orc_sequence, 2),
    )


def _merge(uow: UnitOfWork, command: PatientMerge) -> Outcome:
    """A40: orders of MRG-1's patient move to PID-3's patient (created when unknown)."""
    worklist = uow.worklist
    prior = worklist.find_patient(command.prior)
    surviving = worklist.find_patient(command.surviving.key)
    if prior is not None and surviving is None:
        worklist.change_patient_key(prior, command.surviving.key)
    surviving = worklist.upsert_patient(command.surviving)
    if prior is not None and prior != surviving:
        worklist.move_orders(prior, surviving)
        worklist.mark_merged(prior, surviving)
    return Outcome(command.surviving.key.patient_id)


def _change_id(uow: UnitOfWork, command: PatientIdChange) -> Outcome:
    """A47: the patient known as MRG-1 is known as PID-3 from now on."""
    worklist = uow.worklist
    prior = worklist.find_patient(command.prior)
    taken = worklist.find_patient(command.patient.key)
    if prior is not None and taken is not None and taken != prior:
        raise MessageError.single(
            ErrorCode.DUPLICATE_KEY,
            f"PID-3 {command.patient.key} belongs to another patient already: "
            "merge the two with ADT^A40 instead",
            ErrorLocation("PID", 1, 3),
        )
    if prior is not None:
        worklist.change_patient_key(prior, command.patient.key)
    worklist.upsert_patient(command.patient)
    return Outcome(command.patient.key.patient_id)
