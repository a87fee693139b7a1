"""What the MPPS side needs from storage, beyond the worklist ports (``broker.store`` implements).

An MPPS N-CREATE or N-SET is one :class:`MppsUnitOfWork`: the performed step, the scheduled
steps' new status and every outbox message they cause commit together or not at all
(the outbox pattern, ARCHITECTURE.md) — a status message is never lost and never phantom.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mpps.model import PerformedStep, StepReference
from mpps.report import OrderContext
from mwl.model import SPSStatus
from mwl.ports import Journal, StoreFailure, UnitOfWork, WorklistStore


class DuplicateInstance(StoreFailure):
    """An MPPS with this SOP Instance UID exists already (raised at add or commit)."""


@dataclass(frozen=True, slots=True)
class LinkedStep:
    """A scheduled step an MPPS refers to, with what a status message needs of its order."""

    step_id: int
    order_id: int
    status: SPSStatus
    order: OrderContext


@dataclass(frozen=True, slots=True)
class StoredMpps:
    """An MPPS instance as stored."""

    id: int
    performed: PerformedStep
    calling_ae: str
    steps: tuple[LinkedStep, ...]

    @property
    def unscheduled(self) -> bool:
        return not self.steps


class MppsStore(Protocol):
    """MPPS instances and their links to scheduled steps."""

    def find(self, sop_instance_uid: str) -> StoredMpps | None:
        """The instance, locked for update within this unit of work, or None."""

    def add(self, performed: PerformedStep, *, calling_ae: str, step_ids: Sequence[int]) -> int:
        """Store a new instance linked to ``step_ids`` (none: unscheduled); its row id.
        Raises :class:`DuplicateInstance` when the SOP Instance UID exists."""

    def update(self, mpps_id: int, performed: PerformedStep) -> None:
        """Replace the stored state and dataset of the instance."""

    def match_steps(self, reference: StepReference) -> list[LinkedStep]:
        """Scheduled steps one Scheduled Step Attributes Sequence item refers to
        (standards.md §4.4): by SPS ID within the Study Instance UID or Requested Procedure ID
        or Accession; by Requested Procedure ID, Accession or Study Instance UID alone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    """One message to deliver; ``event`` is JSON-serialisable and says what to render."""

    destination: str
    kind: str
    """``hl7`` for an ``[[outbound]]`` receiver, ``dicom`` for an ``[[mpps_forward]]`` peer."""
    order_key: str
    """Messages with one destination and order key are delivered in the order added."""
    operation: str
    control_id: str
    """MSH-10 (HL7) or a message ID reference (DICOM): fixed for every retry."""
    event: dict[str, Any] = field(default_factory=dict)
    payload: bytes | None = None
    """The message as it will be sent, when rendered already (HL7); None: the sender renders
    it from ``event`` at the first attempt."""


class Outbox(Protocol):
    def add(self, entry: OutboxEntry) -> int:
        """Queue a message in this unit of work; its row id."""


class MppsUnitOfWork(UnitOfWork, Protocol):
    """One transaction over worklist, journal, MPPS instances and the outbox."""

    worklist: WorklistStore
    journal: Journal
    mpps: MppsStore
    outbox: Outbox

    def __enter__(self) -> MppsUnitOfWork: ...


MppsUnitOfWorkFactory = Callable[[], MppsUnitOfWork]
