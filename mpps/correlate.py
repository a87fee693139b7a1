"""Which scheduled steps and orders a performed step belongs to (standards.md §4.4).

Every item of (0040,0270) Scheduled Step Attributes Sequence is looked up on its own with
:meth:`mpps.ports.MppsStore.match_steps` (the store's rules: Study Instance UID, else Requested
Procedure ID / Accession Number / order numbers, narrowed by SPS ID). The group case — several
items, several requested procedures — links every step any item names; an MPPS no item
correlates is *unscheduled* (PS3.4 F.7.2.1.2 note 3): stored and forwarded, never refused, and
never reported to the RIS, which could not tell which order it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable

from mpps.model import StepReference
from mpps.ports import LinkedStep, MppsStore


def linked_steps(store: MppsStore, references: Iterable[StepReference]) -> tuple[LinkedStep, ...]:
    """The steps the items refer to, each once, in the order the items name them."""
    found: dict[int, LinkedStep] = {}
    for reference in references:
        for step in store.match_steps(reference):
            found.setdefault(step.step_id, step)
    return tuple(found.values())


def one_step_per_order(steps: Iterable[LinkedStep]) -> tuple[LinkedStep, ...]:
    """The first linked step of each order: one status message goes out per order."""
    orders: dict[int, LinkedStep] = {}
    for step in steps:
        orders.setdefault(step.order_id, step)
    return tuple(orders.values())
