"""Modality Worklist C-FIND benchmark: the broker's DICOM SCP over stores of 1k … 1M steps, and
DCMTK's ``wlmscpfs`` beside it on the same items.

For each store size (``--sizes``), the steps are bulk-loaded (:func:`broker.store.bulk.
bulk_load_steps`, 200 steps a day for ``size / 200`` days ending on the load day, 10 station AE
titles, 7 modalities; SQLite temp files, or ``--database postgresql``). The real broker
(:class:`broker.app.Broker`, HL7 and DICOM ports 0) serves it in a subprocess of its own, so
client and server never share a GIL. Five queries, each asking the same ~25 return keys a
modality asks for, run ``--repeat`` times (the big one ``--big-repeat`` times) after one warm-up:

====================  =========================================================  ==========
query                 matching keys                                               matches
====================  =========================================================  ==========
station AE + today    Scheduled Station AE Title + SPS Start Date (last day)      ~20
Patient ID            Patient ID of a random step (another one each time)         1
Accession             Accession Number of a random step                           1
modality + 7 days     Modality + SPS Start Date range over the last 7 days        ~200
10,000 matches        SPS Start Date range over the last 50 days                  ≤ 10,000
====================  =========================================================  ==========

The client is DCMTK's ``findscu`` (``TCP_NODELAY=1``), one association per query kind with all
its query files; per query, client-side latency is the time between its "Sending Find Request"
and "Received Final Find Response" log lines (log4cplus timestamps, microseconds). Server-side
time is the broker's own DEBUG line per C-FIND (``broker.dicom``: handler start to the last
Pending sent). Server CPU is read from /proc for the broker process.

For the sizes of ``--dcmtk-sizes`` the same items are exported (``Store.worklist_items`` →
``Dataset.from_json`` → ``.wl`` files) and ``wlmscpfs`` serves them in a loopback-only network
namespace (``unshare -n``, reached with ``nsenter``: it cannot bind loopback alone); both SCPs
get the same query files from the same client, side by side, kind by kind.

``--keep DIR`` keeps the stores, their description and the ``.wl`` files in DIR and reuses them
(the 1M store takes ~4 minutes to load on SQLite); queries then use the store's own last day as
"today". ``--write`` puts the results in docs/benchmarks.md (the "C-FIND" results block).
Run ``python bench/cfind.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg
import pydicom
import pynetdicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from sqlalchemy.engine import make_url

# Run as a script, bench/ comes first on sys.path, and a module there (bench/mpps.py) would
# shadow the project's package of the same name: the checkout's root comes first instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from bench.harness import DOC, write_results  # noqa: E402
from broker.app import Broker  # noqa: E402
from broker.config import (  # noqa: E402
    Config,
    DatabaseConfig,
    DicomConfig,
    HL7Config,
    HttpConfig,
    RetentionConfig,
)
from broker.store import Store, migrate  # noqa: E402
from broker.store.bulk import bulk_load_steps  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MWL_FIND = UID("1.2.840.10008.5.1.4.31")
BROKER_AE, DCMTK_AE = "MWLBROKER", "OFFIS"
STATIONS = tuple(f"ST{n:02d}" for n in range(10))
MODALITIES = ("CT", "MR", "US", "CR", "DX", "MG", "NM")
PER_DAY, BIG_DAYS, SEED = 200, 50, 7
CLK_TCK = os.sysconf("SC_CLK_TCK")
TIMEOUT = 120.0
TARGET_ONE_MATCH_MS, TARGET_RATIO, TARGET_RATE = 20.0, 10.0, 3000.0
KINDS = ("station AE + today", "Patient ID", "Accession", "modality + 7 days", "10,000 matches")
BIG = KINDS[-1]
SELECTIVE = KINDS[:3]
"""The queries of ≤ ~20 matches, where the target ratio to wlmscpfs applies: on the big answers
both SCPs spend their time streaming."""
RETENTION_RULES = [f.name for f in fields(RetentionConfig) if f.name.endswith("_days")]
"""Housekeeping switched off (0): it would expire the steps more than a week old (DISCONTINUED)
and then delete them, i.e. most of a benchmark store."""
SERVED = re.compile(r"C-FIND from \S+: (\d+) pending in ([\d.]+) ms")
FINDSCU_LOG = """log4cplus.rootLogger = INFO, out
log4cplus.logger.dcmtk.dcmnet.responses = WARN
log4cplus.appender.out = log4cplus::ConsoleAppender
log4cplus.appender.out.layout = log4cplus::PatternLayout
log4cplus.appender.out.layout.ConversionPattern = %D{%s} %D{%Q} %m%n
"""
"""findscu's log: every line stamped (seconds, then milliseconds with microseconds); no dumps of
the response identifiers."""


# --- stores ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreInfo:
    """One bulk-loaded store: where it is and what :func:`bulk_load_steps` put in it."""

    size: int
    url: str
    first_day: str
    days: int

    @property
    def last_day(self) -> date:
        return date.fromisoformat(self.first_day) + timedelta(days=self.days - 1)


def open_store(args: argparse.Namespace, size: int, workdir: Path) -> StoreInfo:
    """The store of ``size`` steps: reused from ``--keep`` when described there, else loaded."""
    folder = Path(args.keep) if args.keep else workdir
    description = folder / f"cfind-{args.database}-{size}.json"
    if args.keep and description.exists():
        info = StoreInfo(**json.loads(description.read_text()))
        print(f"  {size:,} steps: reusing {info.url}", flush=True)
        return info
    url = _store_url(args, size, folder)
    days = max(1, size // PER_DAY)
    first = datetime.combine(date.today() - timedelta(days=days - 1), datetime.min.time())
    info = StoreInfo(size=size, url=url, first_day=first.date().isoformat(), days=days)
    _bulk_load(info, first)
    description.write_text(json.dumps(asdict(info)))
    return info


def _store_url(args: argparse.Namespace, size: int, folder: Path) -> str:
    if args.database == "sqlite":
        path = folder / f"cfind-{size}.db"
        for stale in folder.glob(f"cfind-{size}.db*"):
            stale.unlink()
        return f"sqlite:///{path}"
    name = f"mwl_bench_cfind_{size}"
    admin = make_url(args.pg_url)
    with _pg_admin(args.pg_url) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin.set(drivername="postgresql+psycopg", database=name).render_as_string(False)


@contextlib.contextmanager
def _pg_admin(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    admin = make_url(url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(False), autocommit=True) as connection:
        yield connection


def _bulk_load(info: StoreInfo, first: datetime) -> None:
    database = DatabaseConfig(url=info.url)
    migrate(database)
    started = time.perf_counter()
    with Store.open(database) as store:
        bulk_load_steps(
            store,
            info.size,
            seed=SEED,
            start=first,
            days=info.days,
            stations=STATIONS,
            modalities=MODALITIES,
        )
    print(f"  {info.size:,} steps loaded in {time.perf_counter() - started:.0f} s", flush=True)


def drop_store(args: argparse.Namespace, info: StoreInfo) -> None:
    if args.keep or args.database != "postgresql":
        return
    with _pg_admin(args.pg_url) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{make_url(info.url).database}"')


def export_worklist_files(info: StoreInfo, folder: Path) -> Path:
    """Every item of the store as a ``.wl`` file of a ``wlmscpfs`` data folder (reused when
    complete): the merged DICOM JSON, with (0008,0005) ISO_IR 192, Explicit VR Little Endian."""
    database = folder / f"wlist-{info.size}"
    files = database / DCMTK_AE
    if (database / "complete").exists():
        return database
    shutil.rmtree(database, ignore_errors=True)
    files.mkdir(parents=True)
    started = time.perf_counter()
    with Store.open(DatabaseConfig(url=info.url)) as store:
        for item in store.worklist_items():
            dataset = Dataset.from_json(item.dataset)
            dataset.SpecificCharacterSet = "ISO_IR 192"
            # Type 2 sequences wlmscpfs adds (and warns about, per file and query) when missing
            dataset.ReferencedStudySequence = []
            dataset.ReferencedPatientSequence = []
            write_dicom_file(dataset, files / f"{item.step_id:07d}.wl")
    (files / "lockfile").touch()
    (database / "complete").touch()
    print(f"  {info.size:,} .wl files written in {time.perf_counter() - started:.0f} s")
    return database


def write_dicom_file(dataset: Dataset, path: Path) -> None:
    """A worklist or query file as DCMTK tools read them: meta header, Explicit VR LE."""
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = MWL_FIND
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.save_as(path, enforce_file_format=True)


# --- queries ---------------------------------------------------------------------------------


def identifier(**matching: str) -> Dataset:
    """A Modality Worklist request with the return keys a modality typically asks for, and
    ``matching`` (keyword → value) filled in at the top level or in the SPS item."""
    top = Dataset()
    for keyword in (
        "AccessionNumber",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "RequestedProcedureDescription",
        "AdmissionID",
        "RequestedProcedureID",
        "RequestedProcedurePriority",
    ):
        setattr(top, keyword, matching.get(keyword, ""))
    top.RequestedProcedureCodeSequence = []
    step = Dataset()
    for keyword in (
        "Modality",
        "ScheduledStationAETitle",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepDescription",
        "ScheduledProcedureStepID",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStatus",
    ):
        setattr(step, keyword, matching.get(keyword, ""))
    step.ScheduledProtocolCodeSequence = []
    top.ScheduledProcedureStepSequence = [step]
    return top


def query_keys(kind: str, info: StoreInfo, rng: random.Random) -> dict[str, str]:
    """The matching keys of one query of ``kind`` (see the module doc)."""
    last = info.last_day
    week = f"{last - timedelta(days=6):%Y%m%d}-{last:%Y%m%d}"
    index = rng.randrange(info.size)
    match kind:
        case "station AE + today":
            return {
                "ScheduledStationAETitle": rng.choice(STATIONS),
                "ScheduledProcedureStepStartDate": f"{last:%Y%m%d}",
            }
        case "Patient ID":
            return {"PatientID": f"P{SEED}-{index:07d}"}
        case "Accession":
            return {"AccessionNumber": f"A{SEED}-{index:07d}"}
        case "modality + 7 days":
            return {
                "Modality": rng.choice(MODALITIES),
                "ScheduledProcedureStepStartDate": week,
            }
        case _:
            first = last - timedelta(days=BIG_DAYS - 1)
            return {"ScheduledProcedureStepStartDate": f"{first:%Y%m%d}-{last:%Y%m%d}"}


def query_files(kind: str, info: StoreInfo, count: int, folder: Path) -> list[Path]:
    """``count`` + 1 query files (the first is the warm-up), random keys seeded by kind."""
    rng = random.Random(f"{SEED}-{kind}-{info.size}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count + 1):
        path = folder / f"{KINDS.index(kind)}-{n:03d}.dcm"
        write_dicom_file(identifier(**query_keys(kind, info, rng)), path)
        paths.append(path)
    return paths


# --- the two SCPs ----------------------------------------------------------------------------


def dcmtk_environment() -> dict[str, str]:
    """DCMTK tools with Nagle off (pitfalls.md "Nagle")."""
    return {**os.environ, "TCP_NODELAY": "1"}


class BrokerProcess:
    """The broker serving one store, in a subprocess (``--serve``); its DEBUG lines per C-FIND
    (the server-side time) are collected as they come."""

    def __init__(self, url: str) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", url]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dcmtk_environment(),
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit(f"the broker did not start: {line}{self.process.stderr.read()}")
        self.port = int(line.split()[1])
        self.served: list[tuple[int, float]] = []
        self.errors: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if found := SERVED.search(line):
                self.served.append((int(found[1]), float(found[2])))
            elif line.strip():
                self.errors.append(line.rstrip())

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stream:
            fields = stream.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def server_times(self, first: int, count: int) -> list[tuple[int, float]]:
        """The (pending, ms) lines of queries ``first`` … ``first + count - 1``."""
        deadline = time.monotonic() + 5
        while len(self.served) < first + count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.served[first : first + count]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve(url: str) -> int:
    """``--serve URL``: the broker on ports 0, its DICOM port on stdout, DEBUG timing on stderr."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    logging.getLogger("broker.dicom").setLevel(logging.DEBUG)
    config = Config(
        database=DatabaseConfig(url=url),
        hl7=HL7Config(port=0, parse_workers=-1),
        dicom=DicomConfig(ae_title=BROKER_AE, port=0),
        http=HttpConfig(port=0),
        retention=RetentionConfig(**dict.fromkeys(RETENTION_RULES, 0)),
    )

    async def run() -> None:
        broker = Broker(config)
        await broker.start()
        print("PORT", broker.dicom_port, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await broker.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


class Wlmscpfs:
    """``wlmscpfs`` on ``data_dir`` in a loopback-only network namespace (it binds every
    interface): started with ``unshare -n``, reached with ``nsenter`` (``prefix``). Ready when
    an ``echoscu`` through the namespace succeeds; no trace logging (it would slow it down)."""

    def __init__(self, data_dir: Path, port: int = 11112) -> None:
        script = f"ip link set lo up && exec {shutil.which('wlmscpfs')} -dfp {data_dir} {port}"
        self.port = port
        self.process = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", script],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dcmtk_environment(),
        )
        self.prefix = ["nsenter", f"--net=/proc/{self.process.pid}/ns/net"]
        deadline = time.monotonic() + 30
        echo = [*self.prefix, dcmtk("echoscu"), "-aec", DCMTK_AE, "127.0.0.1", str(port)]
        while subprocess.run(echo, capture_output=True, check=False).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise SystemExit("wlmscpfs did not start in its network namespace")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@dataclass
class Run:
    """The queries of one kind against one SCP."""

    latencies: list[float] = field(default_factory=list)
    """Client-side seconds per query."""
    matches: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    """Broker CPU seconds over the measured queries (all threads)."""


def findscu(
    prefix: Sequence[str], port: int, called: str, files: Sequence[Path], log_config: Path
) -> Run:
    """All ``files`` in one association; per query its latency, responses and final status."""
    command = [
        *prefix,
        dcmtk("findscu"),
        "-W",
        "-lc",
        str(log_config),
        "-aec",
        called,
        "-to",
        "30",
        "-ta",
        "30",
        "-td",
        str(int(TIMEOUT)),
        "127.0.0.1",
        str(port),
        *map(str, files),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIMEOUT * len(files),
        env=dcmtk_environment(),
        check=False,
    )
    run, sent, count = Run(), 0.0, 0
    for line in done.stdout.splitlines():
        seconds, _, rest = line.partition(" ")
        stamp, _, message = rest.partition(" ")
        if message.startswith("Sending Find Request"):
            sent, count = int(seconds) + float(stamp) / 1000, 0
        elif message.startswith("Received Find Response"):
            count += 1
        elif message.startswith("Received Final Find Response"):
            run.latencies.append(int(seconds) + float(stamp) / 1000 - sent)
            run.matches.append(count)
            run.statuses.append(message.partition("(")[2].rstrip(")"))
    if done.returncode != 0 or len(run.latencies) != len(files):
        raise SystemExit(f"findscu failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return run


@contextlib.contextmanager
def measured(broker: BrokerProcess | None) -> Iterator[Run]:
    """A Run whose server CPU and server-side times are filled in at the end (broker only)."""
    first, cpu = (len(broker.served), broker.cpu_seconds()) if broker else (0, 0.0)
    holder = Run()
    yield holder
    if broker is not None:
        holder.server_cpu = broker.cpu_seconds() - cpu
        times = broker.server_times(first, len(holder.latencies))
        holder.server_ms = [ms for _, ms in times]


def ask(
    prefix: Sequence[str],
    port: int,
    called: str,
    files: Sequence[Path],
    log: Path,
    *,
    broker: BrokerProcess | None = None,
) -> Run:
    """One warm-up query (own association), then the measured ones in one association."""
    before = len(broker.served) if broker else 0
    findscu(prefix, port, called, files[:1], log)
    if broker is not None:
        broker.server_times(before, 1)  # its line is in before the measured ones start
    with measured(broker) as run:
        found = findscu(prefix, port, called, files[1:], log)
        run.latencies, run.matches, run.statuses = found.latencies, found.matches, found.statuses
    return run


def dcmtk(name: str) -> str:
    """DCMTK's tool, not the one of the same name pynetdicom puts into the venv."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which(name, path=folder)
        if candidate and "dcmtk" in _version(candidate).lower():
            return candidate
    raise SystemExit(f"DCMTK's {name} is not installed (apt-get install dcmtk)")


def _version(tool: str) -> str:
    done = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return done.stdout


# --- one store -------------------------------------------------------------------------------


@dataclass
class SizeResult:
    info: StoreInfo
    broker: dict[str, Run]
    dcmtk: dict[str, Run]
    others: float
    """Cores that everything else on the machine kept busy on average meanwhile."""


def bench_size(args: argparse.Namespace, info: StoreInfo, workdir: Path) -> SizeResult:
    compare = info.size in args.dcmtk_sizes
    folder = Path(args.keep) if args.keep else workdir
    database = export_worklist_files(info, folder) if compare else None
    log = workdir / "findscu.log.cfg"
    log.write_text(FINDSCU_LOG)
    wait_for_quiet(args.quiet_wait)
    busy, own, started = machine_busy(), own_cpu(), time.monotonic()
    broker, server = BrokerProcess(info.url), None
    results: dict[str, dict[str, Run]] = {"broker": {}, "dcmtk": {}}
    try:
        server = Wlmscpfs(database) if database is not None else None
        for kind in KINDS:
            count = args.big_repeat if kind == BIG else args.repeat
            files = query_files(kind, info, count, workdir / f"queries-{info.size}")
            results["broker"][kind] = ask((), broker.port, BROKER_AE, files, log, broker=broker)
            if server is not None:
                results["dcmtk"][kind] = ask(server.prefix, server.port, DCMTK_AE, files, log)
            print(f"  {info.size:,} {kind}: {summary(results, kind)}", flush=True)
    finally:
        broker.stop()
        if server is not None:
            server.stop()
    if broker.errors:
        print("  broker stderr:", *broker.errors[-5:], sep="\n    ")
    others = (machine_busy() - busy - (own_cpu() - own)) / (time.monotonic() - started)
    return SizeResult(info, results["broker"], results["dcmtk"], others)


def summary(results: dict[str, dict[str, Run]], kind: str) -> str:
    parts = []
    for name, runs in results.items():
        if kind in runs:
            run = runs[kind]
            failed = sorted({s for s in run.statuses if s != "Success"})
            parts.append(
                f"{name} p50 {ms(percentile(run.latencies, 50))} ms "
                f"({median_int(run.matches)} matches"
                f"{', NOT SUCCESS: ' + ','.join(failed) if failed else ''})"
            )
    return ", ".join(parts)


def machine_busy() -> float:
    """CPU seconds every core spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stream:
        ticks = [int(v) for v in stream.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK


def own_cpu() -> float:
    """CPU seconds of this process and of its children waited for: the broker, wlmscpfs (and
    its per-association processes), every findscu."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def wait_for_quiet(limit: float, threshold: float = 0.2, window: float = 2.0) -> None:
    """Wait up to ``limit`` seconds until the machine is nearly idle (others' tests, builds)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        busy = machine_busy()
        time.sleep(window)
        if (machine_busy() - busy) / window < threshold:
            return
    print(f"  the machine stays busy after {limit:g} s; the figures will be noisy", flush=True)


# --- the report ------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * p / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def median_int(values: Sequence[int]) -> str:
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def broker_table(results: Sequence[SizeResult]) -> list[str]:
    lines = [
        "| steps | query | matches | client p50 / p99 ms | server p50 / p99 ms "
        "| server CPU ms/query | matches/s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for kind, run in result.broker.items():
            server = (
                f"{ms(percentile(run.server_ms, 50) / 1000)} / "
                f"{ms(percentile(run.server_ms, 99) / 1000)}"
                if run.server_ms
                else "n/a"
            )
            cpu = 1000 * run.server_cpu / len(run.latencies)
            rate = sum(run.matches) / sum(run.latencies)
            lines.append(
                f"| {result.info.size:,} | {kind} | {median_int(run.matches)} "
                f"| {ms(percentile(run.latencies, 50))} / {ms(percentile(run.latencies, 99))} "
                f"| {server} | {cpu:.1f} | {rate:,.0f} |"
            )
    return lines


def dcmtk_table(results: Sequence[SizeResult]) -> list[str]:
    lines = [
        "| items | query | matches broker / wlmscpfs | broker p50 / p99 ms "
        "| wlmscpfs p50 / p99 ms | wlmscpfs ÷ broker (p50) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for result in results:
        for kind, theirs in result.dcmtk.items():
            ours = result.broker[kind]
            ratio = percentile(theirs.latencies, 50) / percentile(ours.latencies, 50)
            lines.append(
                f"| {result.info.size:,} | {kind} "
                f"| {median_int(ours.matches)} / {median_int(theirs.matches)} "
                f"| {ms(percentile(ours.latencies, 50))} / {ms(percentile(ours.latencies, 99))} "
                f"| {ms(percentile(theirs.latencies, 50))} / "
                f"{ms(percentile(theirs.latencies, 99))} | {ratio:.1f}× |"
            )
    return lines


def targets(results: Sequence[SizeResult]) -> list[str]:
    """The three targets of the C-FIND issue, each with its figure."""
    largest = max(results, key=lambda r: r.info.size)
    one = [
        percentile(largest.broker[k].server_ms, 50)
        for k in ("Patient ID", "Accession")
        if largest.broker[k].server_ms
    ]
    lines = []
    if one:
        ok = max(one) <= TARGET_ONE_MATCH_MS
        lines.append(
            f"- 1-match query at {largest.info.size:,} steps, server-side p50 "
            f"{max(one):.1f} ms (target ≤ {TARGET_ONE_MATCH_MS:g} ms): "
            f"{'met' if ok else 'NOT met'}"
        )
    compared = [r for r in results if r.dcmtk]
    if compared:
        biggest = max(compared, key=lambda r: r.info.size)
        ratios = {
            kind: percentile(biggest.dcmtk[kind].latencies, 50)
            / percentile(biggest.broker[kind].latencies, 50)
            for kind in KINDS[:-1]
        }
        worst = min(SELECTIVE, key=ratios.__getitem__)
        ok = ratios[worst] >= TARGET_RATIO
        lines.append(
            f"- vs wlmscpfs at {biggest.info.size:,} items, same client, client-side p50: "
            f"{ratios[worst]:.0f}× faster or more on the selective queries (lowest: {worst}; "
            f"target ≥ {TARGET_RATIO:g}×): {'met' if ok else 'NOT met'}; "
            f"{ratios[KINDS[3]]:.0f}× on {KINDS[3]} (~200 matches)"
        )
    rates = [
        sum(r.broker[BIG].matches) / sum(r.broker[BIG].latencies)
        for r in results
        if median_int(r.broker[BIG].matches) == "10,000"
    ]
    if rates:
        ok = min(rates) >= TARGET_RATE
        lines.append(
            f"- 10,000-match answer streamed at {min(rates):,.0f} matches/s or more "
            f"(target ≥ {TARGET_RATE:,.0f}): {'met' if ok else 'NOT met'}"
        )
    return lines


def checks(results: Sequence[SizeResult]) -> list[str]:
    """What would make the figures wrong: failed queries, answers of the wrong size."""
    problems = []
    for result in results:
        for name, runs in (("broker", result.broker), ("wlmscpfs", result.dcmtk)):
            for kind, run in runs.items():
                if set(run.statuses) != {"Success"}:
                    problems.append(f"{result.info.size:,} {kind}: {name} answered "
                                    f"{sorted(set(run.statuses))}")  # fmt: skip
        for kind in ("Patient ID", "Accession"):
            if set(result.broker[kind].matches) != {1}:
                problems.append(f"{result.info.size:,} {kind}: not exactly one match")
        big = result.broker[BIG].matches
        if set(big) != {min(result.info.size, PER_DAY * BIG_DAYS)}:
            problems.append(f"{result.info.size:,}: the broad query found {median_int(big)}")
        for kind, theirs in result.dcmtk.items():
            if theirs.matches != result.broker[kind].matches:
                problems.append(f"{result.info.size:,} {kind}: wlmscpfs matched other counts")
    return [f"- CHECK FAILED: {problem}" for problem in problems]


def machine(args: argparse.Namespace) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    memory = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    versions = [
        f"Python {platform.python_version()}",
        f"SQLite {sqlite3.sqlite_version}",
        f"pynetdicom {pynetdicom.__version__}",
        f"pydicom {pydicom.__version__}",
        "DCMTK " + re.findall(r" v(\S+)", _version(dcmtk("findscu")))[0],
    ]
    if args.database == "postgresql":
        with _pg_admin(args.pg_url) as connection:
            row = connection.execute("SHOW server_version").fetchone()
        versions.append(f"PostgreSQL {row[0] if row else '?'}")
    return [
        f"- Machine: {model[1] if model else platform.processor()}, {os.cpu_count()} cores, "
        f"{int(memory[1]) / 1024**2 if memory else 0:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}",
        f"- Software: {', '.join(versions)}",
        f"- Store: {args.database}, bulk-loaded ({PER_DAY} steps a day, {len(STATIONS)} station "
        f"AE titles, {len(MODALITIES)} modalities, seed {SEED})",
    ]


def report(results: Sequence[SizeResult], args: argparse.Namespace, argv: Sequence[str]) -> str:
    loads = ", ".join(f"{r.info.size:,}: {r.others:.1f}" for r in results)
    lines = [
        f"Run {datetime.now():%Y-%m-%d %H:%M} with `python bench/cfind.py {shlex.join(argv)}`",
        "",
        *machine(args),
        f"- Other load: cores kept busy by everything but the benchmark, the broker and "
        f"wlmscpfs, on average during each store's queries (above ~0.2 the latencies suffer): "
        f"{loads}",
        "",
        *targets(results),
        *checks(results),
        "",
        f"Broker, {args.repeat} queries per kind ({args.big_repeat} for the big answer) after a "
        "warm-up, one association per kind; client-side: findscu's request sent → final "
        "response received; server-side: handler start → last Pending sent; server CPU: the "
        "broker process, all threads, per query; matches/s: matches ÷ client-side time.",
        "",
        *broker_table(results),
    ]
    compared = [r for r in results if r.dcmtk]
    if compared:
        lines += [
            "",
            "Side by side, same query files, same client (DCMTK findscu, "
            "TCP_NODELAY=1), wlmscpfs on the same items as `.wl` files:",
            "",
            *dcmtk_table(compared),
        ]
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    return sorted({int(value.replace("_", "")) for value in text.split(",") if value})


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/cfind.py",
        description="Modality Worklist C-FIND latency and throughput of the broker's DICOM SCP, "
        "with DCMTK wlmscpfs side by side.",
    )
    parser.add_argument(
        "--sizes",
        type=sizes,
        default=sizes("1000,10000,100000,1000000"),
        help="store sizes in steps (1000,10000,100000,1000000)",
    )
    parser.add_argument(
        "--dcmtk-sizes",
        type=sizes,
        default=sizes("1000,10000"),
        help="sizes also served by wlmscpfs side by side; added to --sizes (1000,10000)",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="(sqlite: temporary files)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server for --database postgresql; a database per size is created "
        "(and dropped unless --keep)",
    )
    parser.add_argument("--repeat", type=int, default=50, help="queries per kind (50)")
    parser.add_argument(
        "--big-repeat", type=int, default=5, help="queries of the 10,000-match kind (5)"
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the stores and .wl files in DIR and reuse them on the next run",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        metavar="S",
        help="before each store size, wait up to S seconds for the machine to be idle (20)",
    )
    parser.add_argument("--write", action="store_true", help=f"update {DOC.relative_to(ROOT)}")
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = sorted(set(args.sizes) | set(args.dcmtk_sizes))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.serve:
        return serve(args.serve)
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="mwl-bench-cfind-") as temporary:
        workdir = Path(temporary)
        for size in args.sizes:
            print(f"{size:,} steps ...", flush=True)
            info = open_store(args, size, workdir)
            try:
                results.append(bench_size(args, info, workdir))
            finally:
                drop_store(args, info)
    text = report(results, args, argv)
    print("\n" + text)
    if args.write:
        write_results("cfind", "C-FIND", text)
        print(f"\nwritten to {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
