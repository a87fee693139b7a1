"""The whole worklist loop over real sockets: HL7 orders over MLLP → store → MWL C-FIND.

One broker for the module (SQLite in a temporary directory, HL7 and DICOM on 127.0.0.1 port 0,
parsing in the listener process) takes the shared HL7 samples and a small schedule of orders
for today, one of them cancelled and one discontinued. Then the queries real modalities send
(PS3.4 K.6-1 keys; IHE RAD-5 broad and patient-based queries) come from a pynetdicom SCU and
from DCMTK's ``findscu -W`` with a ``.dump`` query file turned into DICOM by ``dump2dcm``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE

from broker.app import Broker
from broker.config import Config, DatabaseConfig, DicomConfig, HL7Config, HttpConfig
from broker.dicom import MODALITY_WORKLIST_FIND, VERIFICATION
from broker.store import Store
from hl7.ack import read_ack
from hl7.client import MLLPClient
from tests.orders import order

DATA = Path(__file__).parent.parent / "data" / "hl7"
TIMEOUT = 20.0
SCP_AE = "MWLBROKER"


@dataclass(frozen=True)
class Scheduled:
    """One order of the test schedule: ORC-18 station AE titles, ORC-7.4 start."""

    n: int
    patient_id: str
    name: str
    modality: str
    stations: tuple[str, ...]
    days_ahead: int
    time: str

    @property
    def accession(self) -> str:
        return f"E2EACC{self.n}"

    def message(self, today: date, control: str = "NW", status: str = "SC") -> bytes:
        start = (today + timedelta(days=self.days_ahead)).strftime("%Y%m%d") + self.time
        number = f"E2E{self.n}"
        orc = f"{control}|{number}^RIS|{number}^RIS||{status}||^^^{start}" + "|" * 11
        obr = (
            f"OBR|1|{number}^RIS|{number}^RIS|{self.modality}X^{self.modality} exam^L"
            + "|" * 14
            + f"{self.accession}|E2ERP{self.n}|E2ESPS{self.n}||||{self.modality}"
        )
        return order(
            orc=orc + "~".join(self.stations),
            obr=obr,
            pid=f"PID|||{self.patient_id}^^^HOSP||{self.name}||19700101|F",
            control_id=f"E2E{self.n}{control}",
        )


SCHEDULE = (
    Scheduled(1, "E2E-PAT1", "Doe^John", "CT", ("E2E_CT",), 0, "0830"),
    Scheduled(2, "E2E-PAT2", "Roe^Jane", "MR", ("E2E_MR1", "E2E_MR2"), 0, "0900"),
    Scheduled(3, "E2E-PAT3", "Poe^Ann", "CT", ("E2E_CT",), 1, "1000"),
    Scheduled(4, "E2E-PAT4", "Cancel^Carl", "CT", ("E2E_CT",), 0, "1100"),
    Scheduled(5, "E2E-PAT5", "Stop^Dora", "CT", ("E2E_CT",), 0, "1200"),
)
CANCELLED, DISCONTINUED = SCHEDULE[3], SCHEDULE[4]


@dataclass(frozen=True)
class Worklist:
    """The running broker with its orders taken."""

    broker: Broker
    config: Config
    today: str


@contextmanager
def running(config: Config) -> Iterator[Broker]:
    """The broker on an event loop of its own thread, so the test can block on sockets."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="broker-loop")
    thread.start()
    broker = Broker(config)
    try:
        asyncio.run_coroutine_threadsafe(broker.start(), loop).result(TIMEOUT)
        yield broker
    finally:
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


def send_orders(port: int, today: date) -> None:
    messages = [path.read_bytes() for path in sorted(DATA.glob("*.hl7"))]
    messages += [scheduled.message(today) for scheduled in SCHEDULE]
    messages += [CANCELLED.message(today, "CA", "CA"), DISCONTINUED.message(today, "DC", "DC")]
    with MLLPClient("127.0.0.1", port, connect_timeout=TIMEOUT, ack_timeout=TIMEOUT) as client:
        for message in messages:
            assert read_ack(client.send(message)).code in {"AA", "AE"}
    # the schedule itself must have been taken
    with MLLPClient("127.0.0.1", port, ack_timeout=TIMEOUT) as client:
        assert read_ack(client.send(SCHEDULE[0].message(today))).code == "AA"


@pytest.fixture(scope="module")
def worklist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worklist]:
    directory = tmp_path_factory.mktemp("worklist")
    config = Config(
        database=DatabaseConfig(url=f"sqlite:///{directory / 'broker.db'}"),
        hl7=HL7Config(port=0, parse_workers=-1),
        dicom=DicomConfig(port=0, ae_title=SCP_AE),
        http=HttpConfig(port=0),
    )
    today = date.today()
    with running(config) as broker:
        send_orders(broker.hl7_port, today)
        yield Worklist(broker, config, today.strftime("%Y%m%d"))


def test_broker_announces_the_dicom_listener_and_stops_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker.app")
    config = Config(
        database=DatabaseConfig(url=f"sqlite:///{tmp_path / 'broker.db'}"),
        hl7=HL7Config(port=0, parse_workers=-1),
        dicom=DicomConfig(port=0, ae_title="E2E_MWL"),
        http=HttpConfig(port=0),
    )
    scu = AE(ae_title="E2E_SCU")
    scu.add_requested_context(VERIFICATION)
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = TIMEOUT
    with running(config) as broker:
        port = broker.dicom_port
        assoc = scu.associate("127.0.0.1", port, ae_title="E2E_MWL")
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()

    assert f"DICOM listener on 127.0.0.1:{port} as AE E2E_MWL" in caplog.messages
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()


# --- the queries modalities send ---------------------------------------------------------------


def sps_item(**keys: str) -> Dataset:
    item = Dataset()
    for keyword, value in keys.items():
        setattr(item, keyword, value)
    return item


def query(sps: Dataset, **top: str) -> Dataset:
    """Patient and order return keys a modality shows, the given keys, and the SPS item."""
    identifier = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "AccessionNumber", "RequestedProcedureID", "StudyInstanceUID"):  # fmt: skip
        setattr(identifier, keyword, top.pop(keyword, ""))
    for keyword, value in top.items():
        setattr(identifier, keyword, value)
    identifier.ScheduledProcedureStepSequence = [sps]
    return identifier


def step_keys(**given: str) -> Dataset:
    """An SPS item with the usual return keys, some given a value."""
    keys = {
        "Modality": "",
        "ScheduledStationAETitle": "",
        "ScheduledProcedureStepStartDate": "",
        "ScheduledProcedureStepStartTime": "",
        "ScheduledProcedureStepID": "",
        "ScheduledProcedureStepDescription": "",
    }
    return sps_item(**(keys | given))


def c_find(port: int, identifier: Dataset, calling: str = "E2E_SCU") -> list[Dataset]:
    """The identifiers of a C-FIND from a pynetdicom SCU; every response Pending, then Success."""
    scu = AE(ae_title=calling)
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = TIMEOUT
    scu.add_requested_context(MODALITY_WORKLIST_FIND)
    assoc = scu.associate("127.0.0.1", port, ae_title=SCP_AE)
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(identifier, MODALITY_WORKLIST_FIND))
    finally:
        assoc.release()
    statuses = [status.Status for status, _ in responses]
    assert statuses == [0xFF00] * (len(statuses) - 1) + [0x0000]
    return [found for _, found in responses if found is not None]


def accessions(found: list[Dataset]) -> set[str]:
    return {str(identifier.AccessionNumber) for identifier in found}


def ours(found: list[Dataset]) -> set[str]:
    return {accession for accession in accessions(found) if accession.startswith("E2EACC")}


def test_empty_sps_item_returns_every_open_step_with_its_whole_item(worklist: Worklist) -> None:
    found = c_find(worklist.broker.dicom_port, query(Dataset()))

    assert ours(found) == {"E2EACC1", "E2EACC2", "E2EACC3"}
    with Store.open(worklist.config.database) as store:
        assert len(found) == len(store.worklist_items(include_final=False))
    mine = next(ds for ds in found if ds.AccessionNumber == "E2EACC1")
    (sps,) = mine.ScheduledProcedureStepSequence
    assert (sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledProcedureStepID) == (
        "CT", "E2E_CT", "E2ESPS1"
    )  # fmt: skip
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime[:4]) == (
        worklist.today, "0830"
    )  # fmt: skip
    assert (mine.PatientName, mine.PatientID, mine.PatientSex) == ("Doe^John", "E2E-PAT1", "F")


def test_modality_and_today_only(worklist: Worklist) -> None:
    identifier = query(step_keys(Modality="CT", ScheduledProcedureStepStartDate=worklist.today))

    found = c_find(worklist.broker.dicom_port, identifier)

    assert accessions(found) == {"E2EACC1"}  # 3 is tomorrow, 4 cancelled, 5 discontinued
    (sps,) = found[0].ScheduledProcedureStepSequence
    assert sps.ScheduledProcedureStepStartDate == worklist.today


def test_scheduled_station_ae_only(worklist: Worklist) -> None:
    port = worklist.broker.dicom_port

    assert accessions(c_find(port, query(step_keys(ScheduledStationAETitle="E2E_CT")))) == {
        "E2EACC1", "E2EACC3"
    }  # fmt: skip
    (mr,) = c_find(port, query(step_keys(ScheduledStationAETitle="E2E_MR2")))
    assert mr.AccessionNumber == "E2EACC2"
    stations = mr.ScheduledProcedureStepSequence[0].ScheduledStationAETitle
    assert list(stations) == ["E2E_MR1", "E2E_MR2"]  # any value matches, all come back


def test_patient_based_by_patient_id_and_by_accession(worklist: Worklist) -> None:
    port = worklist.broker.dicom_port

    (by_patient,) = c_find(port, query(step_keys(), PatientID="E2E-PAT2"))
    (by_accession,) = c_find(port, query(step_keys(), AccessionNumber="E2EACC3"))

    assert (by_patient.AccessionNumber, by_patient.PatientName) == ("E2EACC2", "Roe^Jane")
    assert (by_accession.PatientID, by_accession.RequestedProcedureID) == ("E2E-PAT3", "E2ERP3")


def test_patient_name_wildcard_is_case_insensitive(worklist: Worklist) -> None:
    found = c_find(worklist.broker.dicom_port, query(step_keys(), PatientName="doe*"))

    assert ours(found) == {"E2EACC1"}


def test_cancelled_and_discontinued_orders_are_hidden_but_kept(worklist: Worklist) -> None:
    port = worklist.broker.dicom_port
    for scheduled in (CANCELLED, DISCONTINUED):
        assert c_find(port, query(step_keys(), PatientID=scheduled.patient_id)) == []

    asked = step_keys(ScheduledProcedureStepStatus="CANCELED")
    (cancelled,) = c_find(port, query(asked, PatientID=CANCELLED.patient_id))
    assert cancelled.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "CANCELED"


def test_every_sample_patient_is_answered_as_stored(worklist: Worklist) -> None:
    with Store.open(worklist.config.database) as store:
        stored = store.worklist_items(include_final=False)
    samples = {item.patient_key.patient_id for item in stored} - {s.patient_id for s in SCHEDULE}
    assert len(samples) >= 5
    for patient_id in sorted(samples):
        found = c_find(worklist.broker.dicom_port, query(step_keys(), PatientID=patient_id))
        expected = [item for item in stored if item.patient_key.patient_id == patient_id]
        assert sorted(str(ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID)
                      for ds in found) == sorted(item.sps_id for item in expected)  # fmt: skip
        stored_name = expected[0].dataset.get("00100010", {}).get("Value", [{}])[0]
        assert {str(ds.PatientName) for ds in found} == {stored_name.get("Alphabetic", "")}


# --- DCMTK findscu -W ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dcmtk:
    findscu: str
    dump2dcm: str

    @property
    def echoscu(self) -> str:
        return str(Path(self.findscu).with_name("echoscu"))


def find_dcmtk() -> Dcmtk | None:
    """DCMTK's findscu sits beside its dump2dcm: pynetdicom installs a ``findscu`` of its own
    into the virtual environment, which comes first on PATH."""
    dump2dcm = shutil.which("dump2dcm")
    if dump2dcm is None:
        return None
    findscu = Path(dump2dcm).with_name("findscu")
    return Dcmtk(str(findscu), dump2dcm) if findscu.exists() else None


def install_dcmtk() -> None:
    """``apt-get install -y dcmtk``; when that fails, refresh the package lists and retry."""
    environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "dcmtk"]
    for command in (install, ["apt-get", "update", "-qq"], install):
        if find_dcmtk() is not None:
            return
        subprocess.run(command, env=environment, capture_output=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def dcmtk() -> Dcmtk:
    found = find_dcmtk()
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        install_dcmtk()
        found = find_dcmtk()
    if found is None:
        reason = "DCMTK's findscu and dump2dcm are not installed and could not be installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@dataclass(frozen=True)
class FindscuResult:
    statuses: list[str]
    """``Pending`` per response, as findscu logs ``Received Find Response N (Pending)``."""
    final: str
    """From ``Received Final Find Response (Success)``."""
    responses: list[Dataset]
    """The response identifiers findscu extracted (``-X``: rsp0001.dcm …)."""


def findscu(dcmtk: Dcmtk, port: int, dump: str, directory: Path, *options: str) -> FindscuResult:
    """Write ``dump`` as a DICOM query with dump2dcm, run ``findscu -W``, read what it says."""
    directory.mkdir()
    (directory / "query.dump").write_text(dump)
    subprocess.run([dcmtk.dump2dcm, "query.dump", "query.dcm"], cwd=directory,
                   check=True, capture_output=True, timeout=TIMEOUT)  # fmt: skip
    command = [dcmtk.findscu, "-v", "-W", *options, "-aet", "E2E_DCMTK", "-aec", SCP_AE,
               "-to", "20", "-ta", "20", "-td", "20", "-X", "-od", str(directory),
               "127.0.0.1", str(port), "query.dcm"]  # fmt: skip
    run = subprocess.run(
        command,
        cwd=directory,
        env=os.environ | {"TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    final = re.search(r"Received Final Find Response \(([^)]*)\)", log)
    assert final is not None, log
    return FindscuResult(
        re.findall(r"Received Find Response \d+ \((\w+)\)", log),
        final.group(1),
        [dcmread(path) for path in sorted(directory.glob("rsp*.dcm"))],
    )


def dump(top: str, sps: str) -> str:
    """A DCMTK dump query (the wlistqry*.dump form): top-level keys, then the SPS item."""
    item = f"(fffe,e000) na (Item)\n{sps}(fffe,e00d) na (ItemDelimitationItem)\n"
    return f"{top}(0040,0100) SQ (Sequence)\n{item}(fffe,e0dd) na (SequenceDelimitationItem)\n"


TOP = """\
(0008,0050) SH [{accession}]                      # AccessionNumber
(0010,0010) PN []                                 # PatientName
(0010,0020) LO [{patient_id}]                     # PatientID
(0010,0030) DA []                                 # PatientBirthDate
(0020,000d) UI []                                 # StudyInstanceUID
(0040,1001) SH []                                 # RequestedProcedureID
"""
STEP = """\
(0008,0060) CS [{modality}]                       # Modality
(0040,0001) AE [{station}]                        # ScheduledStationAETitle
(0040,0002) DA [{date}]                           # ScheduledProcedureStepStartDate
(0040,0003) TM []                                 # ScheduledProcedureStepStartTime
(0040,0009) SH []                                 # ScheduledProcedureStepID
"""


def top(patient_id: str = "", accession: str = "") -> str:
    return TOP.format(patient_id=patient_id, accession=accession)


def step(modality: str = "", station: str = "", date: str = "") -> str:
    return STEP.format(modality=modality, station=station, date=date)


def echoscu(dcmtk: Dcmtk, port: int, called_ae: str) -> subprocess.CompletedProcess[str]:
    command = [dcmtk.echoscu, "-v", "-aet", "E2E_DCMTK", "-aec", called_ae, "-to", "20",
               "-ta", "20", "-td", "20", "127.0.0.1", str(port)]  # fmt: skip
    return subprocess.run(command, env=os.environ | {"TCP_NODELAY": "1"}, capture_output=True,
                          text=True, timeout=TIMEOUT * 2, check=False)  # fmt: skip


def test_dcmtk_echoscu_is_answered_and_a_wrong_called_ae_refused(
    worklist: Worklist, dcmtk: Dcmtk
) -> None:
    answered = echoscu(dcmtk, worklist.broker.dicom_port, SCP_AE)
    refused = echoscu(dcmtk, worklist.broker.dicom_port, "NOBODY")

    log = answered.stdout + answered.stderr
    assert answered.returncode == 0, log
    assert "Received Echo Response (Success)" in log
    assert refused.returncode != 0
    assert "Called AE Title Not Recognized" in refused.stdout + refused.stderr


@pytest.mark.parametrize(
    "syntax", ["-xi", "-xe", "-xb"], ids=["implicit-le", "explicit-le", "explicit-be"]
)
def test_findscu_empty_sps_item(
    worklist: Worklist, dcmtk: Dcmtk, tmp_path: Path, syntax: str
) -> None:
    query_text = dump(top(), "")  # an SPS Sequence with one empty item

    result = findscu(dcmtk, worklist.broker.dicom_port, query_text, tmp_path / "q", syntax)

    assert result.final == "Success"
    assert result.statuses == ["Pending"] * len(result.responses)
    assert ours(result.responses) == {"E2EACC1", "E2EACC2", "E2EACC3"}


def test_findscu_modality_and_today(worklist: Worklist, dcmtk: Dcmtk, tmp_path: Path) -> None:
    query_text = dump(top(), step(modality="CT", date=worklist.today))

    result = findscu(dcmtk, worklist.broker.dicom_port, query_text, tmp_path / "q")

    assert (result.final, result.statuses) == ("Success", ["Pending"])
    assert accessions(result.responses) == {"E2EACC1"}


def test_findscu_multi_valued_station_ae(worklist: Worklist, dcmtk: Dcmtk, tmp_path: Path) -> None:
    query_text = dump(top(), step(station="E2E_MR1"))

    result = findscu(dcmtk, worklist.broker.dicom_port, query_text, tmp_path / "q")

    (found,) = result.responses
    assert found.AccessionNumber == "E2EACC2"
    assert list(found.ScheduledProcedureStepSequence[0].ScheduledStationAETitle) == [
        "E2E_MR1", "E2E_MR2"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"patient_id": "E2E-PAT1"}, {"E2EACC1"}),
        ({"accession": "E2EACC2"}, {"E2EACC2"}),
        ({"patient_id": CANCELLED.patient_id}, set()),
        ({"patient_id": DISCONTINUED.patient_id}, set()),
    ],
    ids=["patient-id", "accession", "cancelled", "discontinued"],
)
def test_findscu_patient_based(
    worklist: Worklist, dcmtk: Dcmtk, tmp_path: Path, keys: dict[str, str], expected: set[str]
) -> None:
    query_text = dump(top(**keys), step())

    result = findscu(dcmtk, worklist.broker.dicom_port, query_text, tmp_path / "q")

    assert result.final == "Success"
    assert accessions(result.responses) == expected
    assert len(result.statuses) == len(expected)
