"""``mwl-broker import-worklist``: worklist files into a real store (SQLite and PostgreSQL).

DCMTK's ten sample items are written as ``.wl`` files with pydicom (tests/interop/dcmtk.py),
so no DCMTK is needed here.
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from broker.cli import main
from broker.config import DatabaseConfig
from broker.importer import (
    Outcome,
    ProgressBar,
    import_file,
    import_worklist,
    worklist_files,
)
from broker.store import Store, migrate
from broker.store.schema import ScheduledStep
from mwl.model import SPSStatus
from tests.interop.dcmtk import sample_datasets, write_worklist_file

SAMPLE_KEYS = {
    ("1.2.276.0.7230010.3.2.101", "SPD3445"), ("1.2.276.0.7230010.3.2.102", "SPD1342"),
    ("1.2.276.0.7230010.3.2.103", "SPD4564"), ("1.2.276.0.7230010.3.2.104", "SPD73843"),
    ("1.2.276.0.7230010.3.2.105", "SPD1234"), ("1.2.276.0.7230010.3.2.106", "SPD9478"),
    ("1.2.76.0.7230010.3.2.107", "SPD43645"), ("1.2.276.0.7230010.3.2.108", "SPD8265"),
    ("1.2.276.0.7230010.3.2.109", "SPD57584"), ("1.2.276.0.7230010.3.2.110", "SPD4548"),
}  # fmt: skip
WKLIST1 = "1.2.276.0.7230010.3.2.101"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MWL_BROKER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A wlmscpfs-style database: <root>/OFFIS/*.wl + lockfile, one item in a sub-folder."""
    root = tmp_path / "wlistdb"
    for stem, dataset in sample_datasets().items():
        where = root / "OFFIS" / ("old" if stem == "wklist10" else "")
        write_worklist_file(dataset, where / f"{stem}.wl")
    (root / "OFFIS" / "lockfile").touch()
    (root / "OFFIS" / ".hidden.wl").write_text("editor backup")
    return root


def keys(store: Store) -> set[tuple[str, str]]:
    return {(item.study_uid, item.sps_id) for item in store.worklist_items()}


def step_versions(store: Store) -> list[tuple[int, int]]:
    """Each step's version counter: it grows with every UPDATE of the row."""
    query = select(ScheduledStep.id, ScheduledStep.version).order_by(ScheduledStep.id)
    with store.read_session() as session:
        return [(row.id, row.version) for row in session.execute(query)]


def sample(stem: str) -> Dataset:
    return copy.deepcopy(sample_datasets()[stem])


# --- files and folders -----------------------------------------------------------------------


def test_folders_are_searched_recursively_without_lockfile_and_hidden_files(
    folder: Path,
) -> None:
    names = [path.name for path in worklist_files([folder])]

    assert sorted(names) == sorted(f"wklist{n}.wl" for n in range(1, 11))
    assert "lockfile" not in names


def test_a_file_given_twice_is_imported_once(folder: Path) -> None:
    path = folder / "OFFIS" / "wklist1.wl"

    assert list(worklist_files([path, folder / "OFFIS" / ".." / "OFFIS" / "wklist1.wl"])) == [path]


def test_folder_import_loads_every_item(store: Store, folder: Path) -> None:
    report = import_worklist(store, [folder])

    assert report.counts[Outcome.LOADED] == 10
    assert report.all_loaded
    assert keys(store) == SAMPLE_KEYS
    [item] = store.worklist_items(study_uid=WKLIST1)
    assert item.status is SPSStatus.SCHEDULED
    assert item.dataset["00400100"]["Value"][0]["00400001"]["Value"] == ["AA32", "AA33"]
    assert item.dataset["00102000"]["Value"] == ["METASTASIS"]  # its own, not wklist3's


# --- idempotency -----------------------------------------------------------------------------


def test_importing_twice_changes_nothing(store: Store, folder: Path) -> None:
    import_worklist(store, [folder])
    items = store.worklist_items()
    versions = step_versions(store)

    again = import_worklist(store, [folder])

    assert again.counts[Outcome.UNCHANGED] == 10
    assert again.all_loaded
    assert store.worklist_items() == items
    assert step_versions(store) == versions  # not even a rewrite of equal values


def test_a_changed_file_updates_its_procedure(store: Store, tmp_path: Path) -> None:
    path = write_worklist_file(sample("wklist1"), tmp_path / "a.wl")
    import_file(store, path)
    changed = sample("wklist1")
    changed.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate = "20261127"
    write_worklist_file(changed, path)

    result = import_file(store, path)

    assert (result.outcome, result.study_uid) == (Outcome.UPDATED, WKLIST1)
    [item] = store.worklist_items()
    assert item.dataset["00400100"]["Value"][0]["00400002"]["Value"] == ["20261127"]


def test_a_new_sps_item_adds_a_step_with_its_status(store: Store, tmp_path: Path) -> None:
    path = write_worklist_file(sample("wklist1"), tmp_path / "a.wl")
    import_file(store, path)
    two = sample("wklist1")
    second = copy.deepcopy(two.ScheduledProcedureStepSequence[0])
    second.ScheduledProcedureStepID = "SPD3446"
    second.ScheduledProcedureStepStatus = "ARRIVED"
    two.ScheduledProcedureStepSequence.append(second)
    write_worklist_file(two, path)

    assert import_file(store, path).outcome is Outcome.UPDATED
    statuses = {item.sps_id: item.status for item in store.worklist_items()}
    assert statuses == {"SPD3445": SPSStatus.SCHEDULED, "SPD3446": SPSStatus.ARRIVED}


def test_a_reimport_keeps_the_status_mpps_gave_a_step(store: Store, tmp_path: Path) -> None:
    path = write_worklist_file(sample("wklist1"), tmp_path / "a.wl")
    import_file(store, path)
    [item] = store.worklist_items()
    with store.unit_of_work() as uow:
        uow.worklist.set_step_status([item.step_id], SPSStatus.STARTED)
        uow.commit()

    assert import_file(store, path).outcome is Outcome.UNCHANGED
    assert [item.status for item in store.worklist_items()] == [SPSStatus.STARTED]


def test_a_new_item_takes_the_sps_status_of_its_file(store: Store, tmp_path: Path) -> None:
    dataset = sample("wklist2")
    dataset.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus = "COMPLETED"

    import_file(store, write_worklist_file(dataset, tmp_path / "a.wl"))

    assert [item.status for item in store.worklist_items()] == [SPSStatus.COMPLETED]


# --- skipped files ---------------------------------------------------------------------------


def test_bad_files_are_skipped_with_reasons_and_the_rest_load(store: Store, folder: Path) -> None:
    (folder / "notes.txt").write_text("not DICOM")
    no_id = sample("wklist3")
    del no_id.PatientID
    write_worklist_file(no_id, folder / "no-id.wl")

    report = import_worklist(store, [folder])

    assert not report.all_loaded
    assert report.counts == {Outcome.LOADED: 10, Outcome.SKIPPED: 2}
    reasons = {r.path.name: r.reason for r in report.results if r.outcome is Outcome.SKIPPED}
    assert reasons["notes.txt"] == "not a DICOM file (no DICM preamble, no worklist item)"
    assert reasons["no-id.wl"] == "(0010,0020) PatientID is missing or empty (Type 1)"
    assert keys(store) == SAMPLE_KEYS


def test_a_study_uid_of_another_patient_is_skipped(store: Store, tmp_path: Path) -> None:
    import_file(store, write_worklist_file(sample("wklist1"), tmp_path / "a.wl"))
    other = sample("wklist1")
    other.PatientID = "SOMEONE-ELSE"

    result = import_file(store, write_worklist_file(other, tmp_path / "b.wl"))

    assert result.outcome is Outcome.SKIPPED
    assert "scheduled for another patient" in result.reason
    assert {item.patient_key.patient_id for item in store.worklist_items()} == {"AV35674"}


def test_summary_lists_counts_and_skipped_files(store: Store, folder: Path) -> None:
    (folder / "notes.txt").write_text("not DICOM")

    lines = import_worklist(store, [folder]).summary_lines()

    assert lines[0] == "11 files: 10 loaded, 0 updated, 0 unchanged, 1 skipped"
    assert lines[1:] == [f"skipped {folder / 'notes.txt'}: " + NOT_DICOM]


NOT_DICOM = "not a DICOM file (no DICM preamble, no worklist item)"


def test_progress_is_reported_per_file(store: Store, folder: Path) -> None:
    stream = io.StringIO()

    import_worklist(store, [folder], progress=ProgressBar(stream, width=10))

    out = stream.getvalue()
    assert out.count("\r") == 10
    assert "\r[##########] 10/10 " in out
    assert out.endswith("\n")


# --- the command -----------------------------------------------------------------------------


def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DatabaseConfig:
    database = DatabaseConfig(url=f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("MWL_BROKER_DATABASE_URL", database.url)
    return database


def test_command_exits_0_when_all_loaded(
    tmp_path: Path,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = cli_database(tmp_path, monkeypatch)

    assert main(["import-worklist", str(folder), "--log-level", "WARNING"]) == 0

    captured = capsys.readouterr()
    assert captured.out == "10 files: 10 loaded, 0 updated, 0 unchanged, 0 skipped\n"
    assert captured.err == ""  # no progress bar: standard error is not a terminal
    with Store.open(database) as store:
        assert keys(store) == SAMPLE_KEYS


def test_command_exits_1_when_a_file_is_skipped(
    tmp_path: Path,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_database(tmp_path, monkeypatch)
    bad = tmp_path / "bad.wl"
    bad.write_text("not DICOM")
    good = folder / "OFFIS" / "wklist1.wl"

    code = main(["import-worklist", str(good), str(bad), "--progress", "--log-level", "WARNING"])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.splitlines() == [
        "2 files: 1 loaded, 0 updated, 0 unchanged, 1 skipped",
        f"skipped {bad}: {NOT_DICOM}",
    ]
    assert "2/2 bad.wl" in captured.err


def test_command_twice_reports_unchanged(
    tmp_path: Path,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = cli_database(tmp_path, monkeypatch)
    migrate(database)
    argv = ["import-worklist", str(folder), "--log-level", "WARNING"]

    assert main(argv) == 0
    assert main(argv) == 0

    assert capsys.readouterr().out.splitlines()[-1] == (
        "10 files: 0 loaded, 0 updated, 10 unchanged, 0 skipped"
    )


def test_command_without_paths_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import-worklist"]) == 2
    assert "the following arguments are required: PATH" in capsys.readouterr().err
