"""``mwl-broker import-worklist``: DCMTK worklist files (``.wl``) into the store.

Each file is one unit of work (one transaction), converted by :func:`mwl.wlfile.
read_worklist_file` and applied **idempotently on (Study Instance UID, SPS ID)**: a file whose
Study Instance UID the store has already updates that requested procedure — its steps are
matched by SPS ID, unknown ones added — instead of adding a second one, so importing the same
files twice changes nothing (standards.md §1.4: the Study Instance UID is "the unique key of
the Requested Procedure"). A new step takes the file's (0040,0020) SPS Status; a step the
store has keeps its status, which HL7 order control and MPPS move on.

Outcome of each file (:class:`Outcome`): ``loaded`` (a new order), ``updated`` (an existing
procedure changed), ``unchanged`` (it already held exactly this), ``skipped`` with the reason
(not DICOM, a missing Type 1 key, the Study Instance UID belongs to another patient, a store
failure …). A bad file never stops the others.

Errors: :class:`mwl.wlfile.WorklistFileError` (the file), :class:`ConflictingPatient` (its Study
Instance UID belongs to another patient) and :class:`mwl.ports.StoreFailure` skip one file;
none of them leaves :func:`import_worklist`.

Folders are searched recursively; DCMTK's ``lockfile`` and hidden files are left out, every
other file is tried (``.wl`` or not: any DICOM file holding one worklist item).
"""

from __future__ import annotations

import enum
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from broker.store import Store
from mwl.model import OrderRecord, PatientRecord, SPSStatus, WorklistItem
from mwl.policy import MappingPolicy
from mwl.ports import StoreFailure, UnitOfWork
from mwl.wlfile import WorklistFileError, read_worklist_file, step_status

log = logging.getLogger(__name__)

SENDER = ("mwl-broker import-worklist", "")
"""Recorded as the sending application of orders created by an import."""
IGNORED_NAMES = frozenset({"lockfile"})
"""DCMTK's ``wlmscpfs`` locks each worklist folder through an empty file of this name."""


class Outcome(enum.StrEnum):
    LOADED = "loaded"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one file."""

    path: Path
    outcome: Outcome
    reason: str = ""
    study_uid: str = ""


@dataclass(slots=True)
class ImportReport:
    """The results of one import, in the order the files were processed."""

    results: list[FileResult] = field(default_factory=list)

    @property
    def counts(self) -> Counter[Outcome]:
        return Counter(result.outcome for result in self.results)

    @property
    def all_loaded(self) -> bool:
        """True when no file was skipped (exit code 0)."""
        return self.counts[Outcome.SKIPPED] == 0

    def summary_lines(self) -> list[str]:
        """One line of counts, then one line per skipped file with its reason."""
        counts = self.counts
        head = ", ".join(f"{counts[outcome]} {outcome.value}" for outcome in Outcome)
        skipped = [
            f"skipped {result.path}: {result.reason}"
            for result in self.results
            if result.outcome is Outcome.SKIPPED
        ]
        return [f"{len(self.results)} files: {head}", *skipped]


class ConflictingPatient(Exception):
    """The file's Study Instance UID is scheduled for another patient in the store."""


Progress = Callable[[int, int, Path], None]
"""Called after each file with (files done, files in all, the file just done)."""


def worklist_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files to import: given files as they are, folders searched recursively (sorted,
    DCMTK's ``lockfile`` and hidden entries left out); each file once."""
    seen: set[Path] = set()
    for path in paths:
        found = _folder_files(path) if path.is_dir() else [path]
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                yield file


def _folder_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [
            Path(root) / name
            for name in sorted(names)
            if name not in IGNORED_NAMES and not name.startswith(".")
        ]
    return files


def import_worklist(
    store: Store,
    paths: Iterable[Path],
    policy: MappingPolicy | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import every file under ``paths``, one unit of work each; never raises for one file."""
    files = list(worklist_files(paths))
    report = ImportReport()
    for done, path in enumerate(files, 1):
        result = import_file(store, path, policy)
        report.results.append(result)
        if progress is not None:
            progress(done, len(files), path)
    return report


def import_file(store: Store, path: Path, policy: MappingPolicy | None = None) -> FileResult:
    """Import one file; the result says whether it was loaded, updated, unchanged or skipped."""
    try:
        patient, order = read_worklist_file(path, policy)
    except WorklistFileError as error:
        _log_skipped(path, error.reason)
        return FileResult(path, Outcome.SKIPPED, error.reason)
    study_uid = order.procedures[0].study_uid
    try:
        before = _snapshot(store, study_uid)
        with store.unit_of_work() as uow:
            created = apply_order(uow, patient, order)
            uow.commit()
        changed = created or _snapshot(store, study_uid) != before
    except (StoreFailure, ConflictingPatient) as error:
        _log_skipped(path, str(error))
        return FileResult(path, Outcome.SKIPPED, str(error), study_uid)
    outcome = Outcome.LOADED if created else Outcome.UPDATED if changed else Outcome.UNCHANGED
    log.info("worklist file %s %s: study %s", path, outcome.value, study_uid)
    return FileResult(path, outcome, study_uid=study_uid)


def _log_skipped(path: Path, reason: str) -> None:
    """The file at INFO; the reason, which may quote patient data, at DEBUG only (it is in the
    command's summary)."""
    log.info("worklist file %s skipped", path)
    log.debug("worklist file %s: %s", path, reason)


def apply_order(uow: UnitOfWork, patient: PatientRecord, order: OrderRecord) -> bool:
    """Store the file's order, or merge it into the order holding its Study Instance UID;
    True when a new order was created."""
    study_uid = order.procedures[0].study_uid
    stored = uow.worklist.find_order_by_study(study_uid)
    patient_row = uow.worklist.upsert_patient(patient)
    if stored is None:
        status = SPSStatus(order.order_status)
        uow.worklist.add_order(patient_row, order, status, sender=SENDER)
        _set_new_step_statuses(uow, order, known=set())
        return True
    if stored.patient_id != patient_row:
        raise ConflictingPatient(
            f"Study Instance UID {study_uid} is scheduled for another patient in the store, "
            f"not for Patient ID {patient.key}"
        )
    uow.worklist.update_order(stored, order, SPSStatus.SCHEDULED)
    _set_new_step_statuses(uow, order, known={step.id for step in stored.steps})
    return False


def _set_new_step_statuses(uow: UnitOfWork, order: OrderRecord, known: set[int]) -> None:
    """Give each step added by this file the (0040,0020) SPS Status its item carried; steps
    in ``known`` (stored before) keep theirs."""
    procedure = order.procedures[0]
    wanted = {step.sps_id: step_status(step) for step in procedure.steps}
    stored = uow.worklist.find_order_by_study(procedure.study_uid)
    steps = [
        step
        for stored_procedure in (stored.procedures if stored else ())
        if stored_procedure.study_uid == procedure.study_uid
        for step in stored_procedure.steps
        if step.id not in known
    ]
    for step in steps:
        status = wanted.get(step.sps_id)
        if status is not None and status is not step.status:
            uow.worklist.set_step_status([step.id], status)


def _snapshot(store: Store, study_uid: str) -> list[tuple[str, SPSStatus, str]]:
    """What a modality would see of the procedure: each step's merged item."""
    items: Sequence[WorklistItem] = store.worklist_items(study_uid=study_uid)
    return [(item.sps_id, item.status, repr(item.dataset)) for item in items]


class ProgressBar:
    """A one-line progress bar, redrawn in place with ``\\r`` (no extra dependency)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self._stream = stream
        self._width = width

    def __call__(self, done: int, total: int, path: Path) -> None:
        filled = self._width * done // max(total, 1)
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(f"\r[{bar}] {done}/{total} {path.name[:40]:<40}")
        if done == total:
            self._stream.write("\n")
        self._stream.flush()
