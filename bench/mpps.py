"""MPPS benchmark: N-CREATE + N-SET pairs into the broker, HL7 status messages out to a RIS.

Starts the real broker (``mwl-broker serve`` as a subprocess, so the modality and the RIS
never share its GIL) on a fresh SQLite file and/or PostgreSQL database, with one
``[[outbound]]`` RIS: the fake RIS of ``tests/fake_ris.py``, in this process, answering AA.
Orders for every procedure go in over MLLP first (not measured). The modality is
``bench/dimse_scu.py`` (``--modality pynetdicom`` for a pynetdicom SCU), its datasets built and
encoded before the clock starts. First the same modality measures a bare pynetdicom MPPS SCP
(``--serve-bare``, in a process of its own): the ceiling of the DICOM stack. Then, for each
database:

1. **one association**: ``--procedures`` pairs (N-CREATE IN PROGRESS, N-SET COMPLETED) back to
   back on one association: pairs/s with the store and the outbox in the path (each pair
   commits two MPPS units of work and queues IP and CM);
2. **one association per procedure**: the same with associate / release around each pair, as
   modalities do;
3. **paced**: ``--paced-rate`` pairs/s for ``--paced-seconds``, one association per procedure,
   open loop: the time from the N-SET response to the RIS holding the CM message (and from the
   N-CREATE response to IP), p50 / p99 / max. Phases 1 and 2 report the same latency, which
   there is mostly the backlog the burst built.

Every phase waits until the RIS has every message; the run checks that each control ID arrived
once and that IP came before CM for every order. Server CPU per pair is read from /proc (the
broker process and its parse workers).

Run ``python bench/mpps.py --help``; ``--write`` puts the results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dimse_scu import DimseAssociation, encode_dataset  # noqa: E402
from bench.harness import stop_broker, write_results  # noqa: E402
from broker.mpps_service import MODALITY_PERFORMED_PROCEDURE_STEP as MPPS  # noqa: E402
from broker.outbound import no_delay_on_open  # noqa: E402
from hl7.ack import read_ack  # noqa: E402
from hl7.client import AsyncMLLPClient  # noqa: E402
from tests.fake_ris import FakeRIS, Received  # noqa: E402
from tests.mpps.datasets import completion, n_create, step_item  # noqa: E402

HL7_PORT = re.compile(r"HL7 MLLP listener on [^\s:]+:(\d+)")
DICOM_PORT = re.compile(r"DICOM listener on [^\s:]+:(\d+)")
TARGET_PAIRS, TARGET_P99_S = 100.0, 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
STATION = "BENCH_CT"
MODALITIES = 8
WARMUP = 10


# --- orders and the modality -------------------------------------------------------------------


def order_message(n: int, run: str) -> bytes:
    number = f"B{run}{n}"
    segments = [
        f"MSH|^~\\&|RIS|HOSP|MWL|RAD|20261126||ORM^O01|O{run}{n}|P|2.3.1",
        f"PID|||BP{n}^^^HOSP||BENCH^PATIENT{n}||19700101|F",
        "PV1||O",
        f"ORC|NW|{number}^RIS|{number}^RIS||SC||^^^202611261030" + "|" * 11 + STATION,
        f"OBR|1|{number}^RIS|{number}^RIS|CTHEAD^CT Head^L" + "|" * 14
        + f"ACC{run}{n}|RP{run}{n}|SPS{run}{n}||||CT",
    ]  # fmt: skip
    return "\r".join(segments).encode()


async def send_orders(port: int, numbers: Sequence[int], run: str, connections: int = 4) -> None:
    clients = [AsyncMLLPClient("127.0.0.1", port, ack_timeout=60) for _ in range(connections)]

    async def one(client: AsyncMLLPClient, share: Sequence[int]) -> None:
        for n in share:
            code = read_ack(await client.send(order_message(n, run))).code
            if code != "AA":
                raise SystemExit(f"order {n} answered {code}")

    await asyncio.gather(*(one(c, numbers[i::connections]) for i, c in enumerate(clients)))
    for client in clients:
        await client.close()


def performed(n: int, run: str) -> tuple[Dataset, Dataset]:
    """The N-CREATE and the final N-SET a modality sends for procedure ``n``."""
    reference = step_item(
        StudyInstanceUID=generate_uid(),  # not the stored one: matched by RP ID and SPS ID
        AccessionNumber=f"ACC{run}{n}",
        RequestedProcedureID=f"RP{run}{n}",
        ScheduledProcedureStepID=f"SPS{run}{n}",
        PlacerOrderNumberImagingServiceRequest=None,
        FillerOrderNumberImagingServiceRequest=None,
    )
    create = n_create(ScheduledStepAttributesSequence=[reference], PatientID=f"BP{n}",
                      PerformedStationAETitle=STATION)  # fmt: skip
    return create, completion()


@dataclass(frozen=True)
class Work:
    """One procedure's requests, built before the clock starts (a modality has its datasets
    ready; building them with pydicom is not the broker's cost)."""

    n: int
    uid: str
    create: Dataset | bytes
    final: Dataset | bytes


@dataclass
class Pair:
    placer: str
    created: float = 0.0
    """monotonic time of the N-CREATE response."""
    set: float = 0.0
    """monotonic time of the N-SET response."""


class Modality(Protocol):
    """An MPPS SCU: :meth:`report` runs the pairs of ``work`` on one association."""

    def prepare(self, numbers: Sequence[int], run: str) -> list[Work]: ...

    def report(self, work: Sequence[Work], run: str) -> list[Pair]: ...


class FastModality:
    """:class:`bench.dimse_scu.DimseAssociation`: one thread, blocking socket, datasets
    encoded beforehand (Explicit VR Little Endian), as a C++ or Java modality sends them."""

    name = "bench/dimse_scu.py"

    def __init__(self, port: int) -> None:
        self.port = port

    def prepare(self, numbers: Sequence[int], run: str) -> list[Work]:
        return [Work(n, generate_uid(), *(encode(ds) for ds in performed(n, run))) for n in numbers]

    def report(self, work: Sequence[Work], run: str) -> list[Pair]:
        pairs = []
        with DimseAssociation.open("127.0.0.1", self.port, calling_ae=STATION,
                                   called_ae="MWLBROKER") as assoc:  # fmt: skip
            for item in work:
                pair = Pair(placer=f"B{run}{item.n}")
                created = assoc.n_create(item.uid, item.create)
                pair.created = time.monotonic()
                _check_status("N-CREATE", item.n, created.status)
                final = assoc.n_set(item.uid, item.final)
                pair.set = time.monotonic()
                _check_status("N-SET", item.n, final.status)
                pairs.append(pair)
        return pairs


def encode(dataset: Dataset) -> bytes:
    return encode_dataset(dataset, ExplicitVRLittleEndian)


class PynetdicomModality:
    """A pynetdicom MPPS SCU (``TCP_NODELAY`` on, like the broker's side). Its reactor threads
    cost ~10 ms of CPU per pair here, on the same two cores as the broker."""

    name = "pynetdicom SCU"

    def __init__(self, port: int) -> None:
        self.port = port
        self.ae = AE(ae_title=STATION)
        self.ae.add_requested_context(MPPS)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 60

    def prepare(self, numbers: Sequence[int], run: str) -> list[Work]:
        return [Work(n, generate_uid(), *performed(n, run)) for n in numbers]

    def report(self, work: Sequence[Work], run: str) -> list[Pair]:
        assoc = self.ae.associate("127.0.0.1", self.port, ae_title="MWLBROKER",
                                  evt_handlers=[(evt.EVT_CONN_OPEN, no_delay_on_open)])  # fmt: skip
        if not assoc.is_established:
            raise SystemExit("association refused")
        try:
            return [self._pair(assoc, item, run) for item in work]
        finally:
            assoc.release()

    @staticmethod
    def _pair(assoc: Association, item: Work, run: str) -> Pair:
        pair = Pair(placer=f"B{run}{item.n}")
        assert isinstance(item.create, Dataset) and isinstance(item.final, Dataset)
        status, _ = assoc.send_n_create(item.create, MPPS, item.uid)
        pair.created = time.monotonic()
        _check_status("N-CREATE", item.n, status.get("Status"))
        status, _ = assoc.send_n_set(item.final, MPPS, item.uid)
        pair.set = time.monotonic()
        _check_status("N-SET", item.n, status.get("Status"))
        return pair


def _check_status(operation: str, n: int, status: int | None) -> None:
    if status is None:
        raise RuntimeError(f"{operation} {n}: no response (association aborted or timed out)")
    if status != 0:
        raise RuntimeError(f"{operation} {n}: status 0x{status:04X}")


# --- the server ------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    hl7_port: int
    dicom_port: int
    log: Path


def write_config(workdir: Path, url: str, ris_port: int, args: argparse.Namespace) -> Path:
    path = workdir / "broker.toml"
    path.write_text(
        f'[database]\nurl = "{url}"\n'
        f'[hl7]\nhost = "127.0.0.1"\nport = 0\nparse_workers = {args.parse_workers}\n'
        '[dicom]\nhost = "127.0.0.1"\nport = 0\n[http]\nhost = "127.0.0.1"\nport = 0\n'
        f"[outbox]\npoll_interval = {args.poll_interval}\n"
    )
    if not args.without_ris:
        path.write_text(
            path.read_text()
            + f'[[outbound]]\nname = "RIS"\nhost = "127.0.0.1"\nport = {ris_port}\n'
        )
    return path


def start_server(config: Path) -> Server:
    log = config.parent / "broker.log"
    command = [sys.executable, "-m", "broker.cli", "serve", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MWL_BROKER_")}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text(errors="replace")
        if (hl7 := HL7_PORT.search(text)) and (dicom := DICOM_PORT.search(text)):
            return Server(process, int(hl7.group(1)), int(dicom.group(1)), log)
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the broker did not start (exit {process.wait()}):\n{log.read_text()}")


def machine_cpu() -> float:
    """CPU seconds every process on the machine used so far (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4))  # not idle, iowait
    return busy / CLK_TCK


def own_cpu() -> float:
    """CPU seconds of this process (the modality and the RIS)."""
    times = os.times()
    return times.user + times.system


def server_cpu(pid: int) -> float:
    """CPU seconds of the broker process and its children (parse workers) so far."""
    total = 0.0
    for process in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [grandchild for child in found for grandchild in _children(child)]


# --- phases ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    pairs: list[Pair] = field(default_factory=list)
    elapsed: float = 0.0
    cpu: float = 0.0
    other: float = 0.0
    """Cores used meanwhile by neither the broker nor this process."""
    cm_latency: list[float] = field(default_factory=list)
    ip_latency: list[float] = field(default_factory=list)
    drained: float = 0.0
    """Seconds from the last N-SET response to the last CM at the RIS."""

    @property
    def rate(self) -> float:
        return len(self.pairs) / self.elapsed if self.elapsed else 0.0


def one_association(modality: Modality, work: Sequence[Work], run: str) -> list[Pair]:
    return modality.report(work, run)


def association_each(modality: Modality, work: Sequence[Work], run: str) -> list[Pair]:
    return [modality.report([item], run)[0] for item in work]


def paced(rate: float) -> Callable[[Modality, Sequence[Work], str], list[Pair]]:
    """Open loop: pair ``i`` starts at ``i / rate`` s on an association of its own, from up to
    :data:`MODALITIES` modalities at once, so a slow pair does not delay the next."""

    def drive(modality: Modality, work: Sequence[Work], run: str) -> list[Pair]:
        start, futures = time.monotonic(), []
        with ThreadPoolExecutor(MODALITIES, thread_name_prefix="modality") as modalities:
            for index, item in enumerate(work):
                time.sleep(max(0.0, start + index / rate - time.monotonic()))
                futures.append(modalities.submit(modality.report, [item], run))
        return [future.result()[0] for future in futures]

    return drive


@dataclass(frozen=True)
class Rig:
    """What every phase drives and watches."""

    modality: Modality
    server: Server
    ris: FakeRIS
    run: str
    outbound: bool = True


def measure(rig: Rig, name: str, drive: Callable[..., list[Pair]], numbers: Sequence[int]) -> Phase:
    modality, server, ris, run = rig.modality, rig.server, rig.ris, rig.run
    phase = Phase(name)
    work = modality.prepare(numbers, run)
    cpu, start = server_cpu(server.process.pid), time.monotonic()
    everything, mine = machine_cpu(), own_cpu()
    phase.pairs = drive(modality, work, run)
    phase.elapsed = time.monotonic() - start
    if rig.outbound:
        wait_for_messages(ris, name, phase.pairs)
    phase.cpu = server_cpu(server.process.pid) - cpu
    others = machine_cpu() - everything - phase.cpu - (own_cpu() - mine)
    phase.other = max(0.0, others) / (time.monotonic() - start)
    if rig.outbound:
        latencies(phase, ris)
    return phase


def wait_for_messages(ris: FakeRIS, name: str, pairs: Sequence[Pair]) -> None:
    placers = {pair.placer for pair in pairs}
    expected = 2 * len(placers)
    if not ris.wait_for(lambda got: sum(r.placer in placers for r in got) >= expected, 600):
        raise SystemExit(f"{name}: the RIS did not get every message")


def latencies(phase: Phase, ris: FakeRIS) -> None:
    arrivals = {(r.placer, r.order_status): r.received_at for r in ris.received}
    phase.cm_latency = [arrivals[(p.placer, "CM")] - p.set for p in phase.pairs]
    phase.ip_latency = [arrivals[(p.placer, "IP")] - p.created for p in phase.pairs]
    phase.drained = max(arrivals[(p.placer, "CM")] for p in phase.pairs) - phase.pairs[-1].set


def check(received: list[Received]) -> str:
    """Each control ID once, IP before CM for each order."""
    ids = [r.control_id for r in received]
    sequences: dict[str, list[str]] = {}
    for message in received:
        sequences.setdefault(message.placer, []).append(message.order_status)
    wrong = [p for p, s in sequences.items() if s != ["IP", "CM"]]
    if len(ids) != len(set(ids)) or wrong:
        return f"FAILED: {len(ids) - len(set(ids))} repeats, {len(wrong)} orders out of order"
    return f"ok: {len(ids)} messages once, in order"


# --- one database ------------------------------------------------------------------------------


@dataclass
class Result:
    database: str
    phases: list[Phase]
    check: str


def run_one(args: argparse.Namespace, database: str) -> Result:
    run = uuid.uuid4().hex[:4].upper()
    with tempfile.TemporaryDirectory(prefix="mwl-mpps-bench-") as tmp, FakeRIS() as ris:
        workdir, drop = Path(tmp), None
        url = f"sqlite:///{workdir / 'bench.db'}"
        if database == "postgresql":
            url, drop = create_postgres(args.pg_url)
            subprocess.run([sys.executable, "-m", "broker.cli", "migrate", "--config",
                            str(write_config(workdir, url, ris.port, args))],
                           check=True, capture_output=True, cwd=ROOT)  # fmt: skip
        server = start_server(write_config(workdir, url, ris.port, args))
        try:
            return drive_all(args, server, ris, database, run)
        except Exception:
            tail = server.log.read_text(errors="replace").splitlines()[-30:]
            print("broker log (last lines):", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            stop_broker(server.process, server.log)
            if drop:
                drop_postgres(args.pg_url, drop)


def drive_all(args: argparse.Namespace, server: Server, ris: FakeRIS, database: str,
              run: str) -> Result:  # fmt: skip
    n, paced_count = args.procedures, int(args.paced_rate * args.paced_seconds)
    total = WARMUP + 2 * n + paced_count
    print(f"{database}: {total} orders in over MLLP …", file=sys.stderr)
    asyncio.run(send_orders(server.hl7_port, range(total), run))
    modality = MODALITY_KINDS[args.modality](server.dicom_port)
    rig = Rig(modality, server, ris, run, outbound=not args.without_ris)
    measure(rig, "warm-up", association_each, range(WARMUP))
    plan = [
        ("one association", one_association, range(WARMUP, WARMUP + n)),
        ("association per procedure", association_each, range(WARMUP + n, WARMUP + 2 * n)),
        (f"paced {args.paced_rate:g}/s", paced(args.paced_rate), range(WARMUP + 2 * n, total)),
    ]
    phases = []
    for name, drive, numbers in plan:
        print(f"{database}: {name} …", file=sys.stderr)
        phases.append(measure(rig, name, drive, numbers))
    return Result(database, phases, check(ris.received) if rig.outbound else "no RIS")


# --- the ceiling: a bare pynetdicom MPPS SCP -----------------------------------------------------


def serve_bare() -> int:
    """``--serve-bare``: an MPPS SCP with handlers that decode the request and answer Success,
    nothing else (no store, no outbox), ``TCP_NODELAY`` on; prints its port, runs until killed."""

    def created(event: Event) -> tuple[int, None]:
        return (0x0000 if len(event.attribute_list) else 0x0120), None

    def set_(event: Event) -> tuple[int, None]:
        return (0x0000 if len(event.modification_list) else 0x0120), None

    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before pynetdicom's threads inherit it
    ae = AE(ae_title="MWLBROKER")
    ae.add_supported_context(MPPS)
    handlers: list[EventHandlerType] = [(evt.EVT_N_CREATE, created), (evt.EVT_N_SET, set_),
                                        (evt.EVT_CONN_OPEN, no_delay_on_open)]  # fmt: skip
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    assert server is not None and server.socket is not None
    print(server.socket.getsockname()[1], flush=True)
    signal.sigwait(stop)
    server.shutdown()
    return 0


def bare_ceiling(args: argparse.Namespace) -> Phase:
    """Pairs/s of the same modality against :func:`serve_bare` in a process of its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-bare"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert process.stdout is not None
        modality = MODALITY_KINDS[args.modality](int(process.stdout.readline()))
        modality.report(modality.prepare(range(WARMUP), "W"), "W")
        phase = Phase("bare pynetdicom SCP, one association")
        work = modality.prepare(range(args.procedures), "BARE")
        cpu, start = server_cpu(process.pid), time.monotonic()
        phase.pairs = modality.report(work, "BARE")
        phase.elapsed = time.monotonic() - start
        phase.cpu = server_cpu(process.pid) - cpu
        return phase
    finally:
        process.terminate()
        process.wait(timeout=30)


def create_postgres(admin_url: str) -> tuple[str, str]:
    name = f"mwl_mpps_bench_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False), name


def drop_postgres(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the report --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: Sequence[float]) -> str:
    if not values:
        return "–"
    return " / ".join(f"{1000 * v:.0f}" for v in (statistics.median(values),
                      percentile(values, 0.99), max(values)))  # fmt: skip


def table(results: Sequence[Result]) -> list[str]:
    lines = [
        "| database | phase | pairs | pairs/s | CM at RIS after N-SET rsp: p50 / p99 / max ms "
        "| IP after N-CREATE rsp: p50 / p99 / max ms | backlog drained after last N-SET, s "
        "| server CPU ms/pair | other load, cores | check |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        for phase in result.phases:
            paced = phase.name.startswith("paced")
            mark = ""
            if not paced and phase.rate < TARGET_PAIRS:
                mark = " ✗"
            p99 = percentile(phase.cm_latency, 0.99) if phase.cm_latency else 0.0
            late = " ✗" if paced and p99 > TARGET_P99_S else ""
            lines.append(
                f"| {result.database} | {phase.name} | {len(phase.pairs)} | "
                f"{phase.rate:.0f}{mark} | {ms(phase.cm_latency)}{late} | {ms(phase.ip_latency)} | "
                f"{phase.drained:.1f} | {1000 * phase.cpu / len(phase.pairs):.1f} | "
                f"{phase.other:.2f} | {result.check} |"
            )
    return lines


def machine(databases: Sequence[str], args: argparse.Namespace) -> list[str]:
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}"
                         for p in ("hl7apy", "pynetdicom", "pydicom", "SQLAlchemy"))  # fmt: skip
    system = f"Linux {platform.release()}; Python {platform.python_version()}"
    lines = [f"- {os.cpu_count()} CPUs; {system}", f"- {versions}"]
    if "postgresql" in databases:
        with psycopg.connect(args.pg_url) as connection:
            version = connection.execute("SHOW server_version").fetchone()
        lines.append(f"- PostgreSQL {version[0] if version else '?'}")
    return lines


def report(
    results: Sequence[Result], ceiling: Phase, args: argparse.Namespace, argv: Sequence[str]
) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = " ".join(["python bench/mpps.py", *argv])
    body = [f"Run {stamp}: `{command}`", "", *machine([r.database for r in results], args), "",
            *table(results), "",
            f"Modality: {MODALITY_KINDS[args.modality].name}. The same modality against a bare "
            f"pynetdicom MPPS SCP (handlers that decode the request and answer Success; no "
            f"store, no outbox), one association: **{ceiling.rate:.0f} pairs/s**, "
            f"{1000 * ceiling.cpu / len(ceiling.pairs):.1f} ms of SCP CPU per pair.", "",
            f"Targets: ≥ {TARGET_PAIRS:.0f} pairs/s with the store and the outbox in the path; "
            f"CM at the RIS p99 ≤ {TARGET_P99_S:.0f} s after the N-SET response while the RIS is "
            f"up (paced phase). [hl7] parse_workers = {args.parse_workers}, "
            f"outbox poll_interval = {args.poll_interval:g} s.",
            ]  # fmt: skip
    return "\n".join(body)


MODALITY_KINDS: dict[str, type[FastModality] | type[PynetdicomModality]] = {
    "fast": FastModality,
    "pynetdicom": PynetdicomModality,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql", help="sqlite,postgresql")
    parser.add_argument("--procedures", type=int, default=400, help="pairs per burst (400)")
    parser.add_argument("--paced-rate", type=float, default=10.0, help="pairs/s (10)")
    parser.add_argument("--paced-seconds", type=float, default=15.0, help="seconds (15)")
    parser.add_argument("--parse-workers", type=int, default=0, help="[hl7] parse_workers (0)")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="[outbox] poll_interval (1.0)"
    )
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--without-ris", action="store_true", help="no [[outbound]]: the MPPS SCP and store alone"
    )
    parser.add_argument(
        "--modality",
        choices=sorted(MODALITY_KINDS),
        default="fast",
        help="the MPPS SCU: fast (bench/dimse_scu.py, datasets encoded beforehand; default) "
        "or pynetdicom",
    )
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.serve_bare:
        return serve_bare()
    print("bare pynetdicom SCP …", file=sys.stderr)
    ceiling = bare_ceiling(args)
    results = [run_one(args, database) for database in args.databases.split(",")]
    text = report(results, ceiling, args, argv)
    print(text)
    if args.write:
        write_results("mpps", "MPPS", text)
    return 0 if all(r.check.startswith("ok") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
