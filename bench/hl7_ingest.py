"""HL7 order intake benchmark: ORM^O01 over MLLP into the worklist store, end to end.

Starts the real broker (``mwl-broker serve`` as a subprocess, so the load generator never
shares the server's GIL) on a fresh SQLite file and/or a fresh PostgreSQL database, then

1. warm-up: a few orders on every connection (not measured);
2. full load: ``--orders`` unique ORM^O01 v2.3.1 (PID/PV1/ORC/OBR/ZDS, ~1 KB each) over
   ``--connections`` connections, each sending one message and waiting for its ACK (original
   mode) before the next: durable throughput (an AA is only sent after the commit) and ACK
   latency p50/p99;
3. paced: ``--paced-rate`` orders/s for ``--paced-seconds`` over ``--paced-connections``
   connections, open loop (latency counted from each message's due time, so a slow ACK
   cannot hide the messages queued behind it);
4. checks: every ACK is read with :func:`hl7.ack.read_ack` and must be AA with the message's
   control ID; the store must hold exactly one scheduled step and one AA journal row per order.

Server CPU per order is read from /proc for the event-loop thread, the store threads and the
parse worker processes. ``--profile DIR`` also records the server (and its workers) with py-spy
during the full load (``pip install py-spy``) and prints where the samples fall.

Run ``python bench/hl7_ingest.py --help``; ``--write`` puts the results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import random
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path: the other scripts in it (bench/mpps.py) must
# not shadow the project's packages; the repository root gives the ``bench`` package.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import func, select
from sqlalchemy.engine import URL, make_url

from bench.harness import DOC, stop_broker, write_results
from broker.config import DatabaseConfig
from broker.store import Store
from broker.store.schema import JournalRow, ScheduledStep
from hl7.ack import read_ack
from hl7.client import AsyncMLLPClient

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"HL7 MLLP listener on [^\s:]+:(\d+)")
WARMUP_PER_CONNECTION = 10
TARGET_RATE, TARGET_P99_MS = 300.0, 50.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- the orders ------------------------------------------------------------------------------

# fmt: off
LAST = ("MILLER", "NGUYEN", "GARCIA", "SCHMIDT", "ROSSI", "DUBOIS", "KOWALSKI", "JOHANSSON",
        "MARTIN", "BERNARD", "FISCHER", "WEBER", "MEYER", "WAGNER", "BECKER", "HOFFMANN",
        "SCHULZ", "KOCH", "RICHTER", "KLEIN", "WOLF", "NEUMANN", "SCHWARZ", "ZIMMERMANN",
        "BRAUN", "KRUEGER", "HARTMANN", "LANGE", "WERNER", "KRAUSE", "LEHMANN", "KOEHLER")
FIRST = ("ANNA", "JOHN", "MARIA", "PETER", "LENA", "PAUL", "SOFIA", "LUCAS", "EMMA", "NOAH",
         "MIA", "ELIAS", "HANNA", "FELIX", "CLARA", "JONAS", "LEA", "DAVID", "IDA", "LUKE")
# fmt: on
PROCEDURES = {
    "CT": [("CTHEAD", "CT HEAD W/O CONTRAST"), ("CTCHEST", "CT CHEST WITH CONTRAST")],
    "MR": [("MRBRAIN", "MRI BRAIN W/WO CONTRAST"), ("MRKNEE", "MRI KNEE LEFT")],
    "US": [("USABD", "US ABDOMEN COMPLETE"), ("USTHY", "US THYROID")],
    "CR": [("CRCHEST", "XR CHEST PA AND LATERAL"), ("CRHAND", "XR HAND RIGHT 3 VIEWS")],
    "MG": [("MGSCR", "MAMMOGRAPHY SCREENING BILATERAL")],
    "NM": [("NMBONE", "NM BONE SCAN WHOLE BODY")],
}
CITIES = (("SPRINGFIELD", "IL", "62701"), ("ST. LOUIS", "MO", "63110"), ("AUSTIN", "TX", "73301"))
DOCTORS = ("7101^ESTRADA^JAIME^P^^DR", "5101^NELL^FREDERICK^P^^DR", "6120^OKAFOR^GRACE^^^DR")


def order_message(n: int, run: int, rng: random.Random) -> tuple[str, bytes]:
    """The ``n``-th unique ORM^O01 v2.3.1 of run ``run``, shaped like shared sample 01."""
    tag = f"{run}{n:06d}"
    last = LAST[n % len(LAST)]
    first = FIRST[n // len(LAST) % len(FIRST)]
    middle = chr(65 + n // (len(LAST) * len(FIRST)) % 26)
    modality = rng.choice(sorted(PROCEDURES))
    code, text = rng.choice(PROCEDURES[modality])
    city, state, zip_code = rng.choice(CITIES)
    doctor, referrer = rng.choice(DOCTORS), rng.choice(DOCTORS)
    born = f"{rng.randint(1930, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    now = time.strftime("%Y%m%d%H%M%S")
    start = time.strftime("%Y%m%d%H%M", time.localtime(time.time() + 3600 + 60 * n))
    control = f"B{tag}"
    segments = [
        f"MSH|^~\\&|MESA_OF|XYZ_RADIOLOGY|MESA_IM|XYZ_IMAGE_MANAGER|{now}||ORM^O01|{control}"
        "|P|2.3.1||||||",
        f"PID|||P{tag}^^^ADT1||{last}^{first}^{middle}||{born}|{rng.choice('MFO')}||WH|"
        f"{rng.randint(1, 9999)} {rng.choice(('OAK', 'ELM', 'PINE'))} ST^^{city}^{state}^{zip_code}"
        f"||(314)555-{n % 10000:04d}|||||V{tag}|||||||||||||||||||||",
        f"PV1||O|RAD^{rng.randint(1, 40):02d}^1||||{referrer}|||||||||||V{tag}^^^ADT1"
        f"|||||||||||||||||||||||||{now[:12]}|||||||V|",
        f"ORC|NW|PL{tag}^MESA_ORDPLC|FL{tag}^MESA_ORDFIL||SC||1^once^^{start}^^R||{now[:12]}"
        f"|^ROSEWOOD^RANDOLPH||{doctor}||(314)555-1212|{now[:12]}||922229-10^IHE-RAD^IHE-CODE-231||",
        f"OBR|1|PL{tag}^MESA_ORDPLC|FL{tag}^MESA_ORDFIL|{code}^{text}^ERL_MESA^X_{code}^SP {text}"
        f"^DSS_MESA|||||||||R/O FRACTURE||Radiology^^^^R|{doctor}||A{tag}|R{tag}|S{tag}||||"
        f"{modality}|||1^once^^{start}^^R|||WALK||||{doctor}|||||||A|||{code}^{text}^ERL_MESA",
        f"ZDS|1.2.826.0.1.3680043.10.543.{run}.{n}^100^Application^DICOM",
    ]
    return control, "\r".join(segments).encode("ascii")


def build_orders(count: int, run: int, start: int = 0) -> list[tuple[str, bytes]]:
    rng = random.Random(run * 1_000_003 + start)
    return [order_message(n, run, rng) for n in range(start, start + count)]


# --- the broker under test -------------------------------------------------------------------


@dataclass
class Setup:
    database: str
    parse_workers: int
    url: str = ""
    workdir: Path = Path()
    drop: str = ""  # PostgreSQL database to drop at the end


def create_database(args: argparse.Namespace, setup: Setup) -> None:
    if setup.database == "sqlite":
        setup.url = f"sqlite:///{setup.workdir / 'bench.db'}"
        return
    admin = make_url(args.pg_url)
    name = f"mwl_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(_libpq(admin), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    setup.drop = name
    setup.url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )
    migrate = [sys.executable, "-m", "broker.cli", "migrate", "--config", str(write_config(setup))]
    done = subprocess.run(
        migrate, check=False, capture_output=True, text=True, cwd=setup.workdir, env=_env()
    )
    if done.returncode != 0:
        raise SystemExit(f"mwl-broker migrate failed ({done.returncode}):\n{done.stderr}")


def drop_database(args: argparse.Namespace, setup: Setup) -> None:
    if setup.drop:
        with psycopg.connect(_libpq(make_url(args.pg_url)), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{setup.drop}" WITH (FORCE)')


def _libpq(url: URL) -> str:
    """A libpq connection string for psycopg from a SQLAlchemy URL."""
    parts = {"host": url.host, "port": url.port, "user": url.username,
             "password": url.password, "dbname": url.database}  # fmt: skip
    return " ".join(f"{key}={value}" for key, value in parts.items() if value)


def write_config(setup: Setup) -> Path:
    path = setup.workdir / "broker.toml"
    path.write_text(
        f'[database]\nurl = "{setup.url}"\n'
        f'[hl7]\nhost = "127.0.0.1"\nport = 0\nparse_workers = {setup.parse_workers}\n'
        # port 0 everywhere: never collide with a broker already running on this machine
        '[dicom]\nhost = "127.0.0.1"\nport = 0\n[http]\nhost = "127.0.0.1"\nport = 0\n'
    )
    return path


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MWL_BROKER_")}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


def start_server(setup: Setup, log_level: str) -> Server:
    config = write_config(setup)
    log = setup.workdir / "broker.log"
    command = [sys.executable, "-m", "broker.cli", "serve", "--config", str(config),
               "--log-level", log_level]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, cwd=setup.workdir, env=_env())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if found := LISTENING.search(log.read_text(errors="replace")):
            return Server(process, int(found.group(1)), log)
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the broker did not start (exit {process.wait()}):\n{log.read_text()}")


# --- server CPU from /proc -------------------------------------------------------------------


def _cpu_seconds(stat_path: str) -> float:
    with open(stat_path) as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _descendants(root: int) -> list[int]:
    children: defaultdict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as stream:
                    ppid = int(stream.read().rsplit(")", 1)[1].split()[1])
                children[ppid].append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found += children[pid]
        todo += children[pid]
    return found


def machine_busy() -> float:
    """CPU seconds every core spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stream:
        ticks = [int(v) for v in stream.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK


def wait_for_quiet(limit: float, threshold: float = 0.2, window: float = 2.0) -> None:
    """Wait up to ``limit`` seconds until the machine is nearly idle (others' tests, builds)."""
    deadline = time.monotonic() + limit
    while True:
        busy = machine_busy()
        time.sleep(window)
        load = (machine_busy() - busy) / window
        if load < threshold:
            return
        if time.monotonic() > deadline:
            print(f"  warning: the machine stays busy ({load:.1f} cores); results will be noisy")
            return


def process_cpu(pid: int) -> float:
    with contextlib.suppress(OSError):
        return _cpu_seconds(f"/proc/{pid}/stat")
    return 0.0


def server_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far: event-loop thread, other threads (store), child processes."""
    usage = {"loop": 0.0, "store": 0.0, "parse": 0.0}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            kind = "loop" if int(tid) == pid else "store"
            usage[kind] += _cpu_seconds(f"/proc/{pid}/task/{tid}/stat")
    for child in _descendants(pid):
        with contextlib.suppress(OSError):
            usage["parse"] += _cpu_seconds(f"/proc/{child}/stat")
    return usage


# --- the load --------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    orders: list[tuple[str, bytes]]
    acks: list[bytes] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: float = 0.0
    others: float = 0.0
    """CPU seconds used meanwhile by processes other than the broker and this client."""

    @property
    def rate(self) -> float:
        return len(self.orders) / self.elapsed

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def failures(self) -> list[str]:
        bad = []
        for (control, _), ack in zip(self.orders, self.acks, strict=True):
            reply = read_ack(ack)
            if (reply.code, reply.control_id) != ("AA", control):
                bad.append(f"{control}: {reply.code} {reply.control_id} {reply.text}")
        return bad


async def closed_loop(clients: Sequence[AsyncMLLPClient], phase: Phase) -> None:
    """Every client sends the next order as soon as it has the ACK of its previous one."""
    count = len(phase.orders)
    phase.acks, phase.latencies = [b""] * count, [0.0] * count
    indices = iter(range(count))

    async def sender(client: AsyncMLLPClient) -> None:
        for i in indices:
            sent = time.perf_counter()
            phase.acks[i] = await client.send(phase.orders[i][1])
            phase.latencies[i] = time.perf_counter() - sent

    start = time.perf_counter()
    await asyncio.gather(*(sender(client) for client in clients))
    phase.elapsed = time.perf_counter() - start


async def open_loop(clients: Sequence[AsyncMLLPClient], phase: Phase, rate: float) -> None:
    """Order i is due at start + i/rate on client i mod len(clients); latency from due time."""
    count = len(phase.orders)
    phase.acks, phase.latencies = [b""] * count, [0.0] * count
    start = time.perf_counter() + 0.05

    async def sender(k: int) -> None:
        for i in range(k, count, len(clients)):
            due = start + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            phase.acks[i] = await clients[k].send(phase.orders[i][1])
            phase.latencies[i] = time.perf_counter() - due

    await asyncio.gather(*(sender(k) for k in range(len(clients))))
    phase.elapsed = time.perf_counter() - start


async def measured(
    server: Server, phase: Phase, load: Coroutine[Any, Any, None], spy: int | None = None
) -> None:
    """Run ``load``; note the CPU the server, this client and everything else used meanwhile
    (a py-spy process ``spy`` is left out of "everything else")."""
    pid = server.process.pid
    before, client, busy, spied = server_cpu(pid), time.process_time(), machine_busy(), 0.0
    if spy is not None:
        spied = process_cpu(spy)
    await load
    after = server_cpu(pid)
    phase.client_cpu = time.process_time() - client
    phase.cpu = {kind: after[kind] - before[kind] for kind in after}
    if spy is not None:
        spied = process_cpu(spy) - spied
    phase.others = machine_busy() - busy - phase.client_cpu - sum(phase.cpu.values()) - spied


async def drive(args: argparse.Namespace, server: Server, run: int) -> list[Phase]:
    conns = max(args.connections, args.paced_connections)
    paced_count = round(args.paced_rate * args.paced_seconds)
    warm = Phase("warm-up", build_orders(WARMUP_PER_CONNECTION * conns, run))
    full = Phase("full load", build_orders(args.orders, run, len(warm.orders)))
    paced = Phase("paced", build_orders(paced_count, run, len(warm.orders) + args.orders))
    clients = [AsyncMLLPClient("127.0.0.1", server.port, ack_timeout=120) for _ in range(conns)]
    try:
        await closed_loop(clients, warm)
        with profiled(args, server) as profile:
            load = closed_loop(clients[: args.connections], full)
            await measured(server, full, load, profile.pid)
        print(*profile.summary, sep="\n")
        if paced_count:
            load = open_loop(clients[: args.paced_connections], paced, args.paced_rate)
            await measured(server, paced, load)
    finally:
        for client in clients:
            await client.close()
    return [warm, full, paced]


# --- profiling -------------------------------------------------------------------------------


@dataclass
class Profile:
    pid: int | None = None
    summary: list[str] = field(default_factory=list)


@contextlib.contextmanager
def profiled(args: argparse.Namespace, server: Server) -> Iterator[Profile]:
    """``py-spy record --gil`` on the server and its workers while the block runs."""
    profile = Profile()
    spy = shutil.which("py-spy")
    if not args.profile or spy is None:
        if args.profile:
            print("  --profile: py-spy not found (pip install py-spy)", file=sys.stderr)
        yield profile
        return
    out = Path(args.profile) / f"{server.log.parent.name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--gil",
               "--format", "raw", "--rate", "200", "--nonblocking", "-o", str(out)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    profile.pid = process.pid
    try:
        time.sleep(1.0)  # py-spy attaches
        yield profile
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    profile.summary.append(summarise_profile(out))


PROFILE_BUCKETS = {
    "server": [
        ("store threads: one unit of work per order", "InboundProcessor.process"),
        ("  add_order: order, procedures, steps, AEs", "SqlWorklistStore.add_order"),
        ("  find_order: is the order known? (mwl.intake)", "find_order"),
        ("  upsert_patient", "SqlWorklistStore.upsert_patient"),
        ("  find_accepted: journal check (and BEGIN)", "SqlJournal.find_accepted"),
        ("  commit: journal row and COMMIT", "SqlUnitOfWork.commit"),
        ("  build_ack", "build_ack"),
        ("  SQLAlchemy compile cache keys + lookups", "ClauseElement._compile_w_cache"),
        ("process-pool manager thread: results unpickled", "_ExecutorManagerThread.run"),
        ("event loop: MLLP, logging", "BaseEventLoop._run_once"),
        ("prepare() in-thread (parse_workers = -1)", "prepare"),
    ],
    "parse worker": [
        ("prepare(): decode and map", "prepare"),
        ("  hl7apy parse_field", "parse_field"),
        ("result pickled and sent back", "_sendback_result"),
        ("call read and unpickled", "Queue.get"),
    ],
}


def summarise_profile(path: Path) -> str:
    """Inclusive share of a few known functions per process kind (collapsed py-spy stacks)."""
    if not path.exists():
        return f"  (no profile written to {path})"
    inclusive: defaultdict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        processes = sum(frame.startswith("process ") for frame in frames)
        who = "parse worker" if processes > 1 else "server"
        totals[who] += int(count)
        for name in {re.sub(r" \(.*\)$", "", frame) for frame in frames}:
            inclusive[who][name] += int(count)
    lines = [f"  py-spy --gil samples (the GIL held) in {path}, inclusive share:"]
    for who, buckets in PROFILE_BUCKETS.items():
        lines.append(f"  {who} processes: {totals[who]} samples")
        lines += [f"    {100 * inclusive[who][name] / max(1, totals[who]):5.1f}%  {label}"
                  for label, name in buckets]  # fmt: skip
    return "\n".join(lines)


# --- checking, reporting ---------------------------------------------------------------------


def stored_counts(url: str) -> tuple[int, int]:
    """(scheduled steps, AA journal rows) in the store."""
    with Store.open(DatabaseConfig(url=url)) as store, store.read_session() as session:
        steps = session.scalar(select(func.count()).select_from(ScheduledStep)) or 0
        accepted = session.scalar(
            select(func.count()).select_from(JournalRow).where(JournalRow.ack_code == "AA")
        )
        return steps, accepted or 0


@dataclass
class Result:
    database: str
    parse_workers: int
    full: Phase
    paced: Phase
    expected: int
    stored: tuple[int, int]
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures and self.stored == (self.expected, self.expected)


def run_one(args: argparse.Namespace, database: str, parse_workers: int) -> Result:
    run = random.randrange(100_000, 999_999)
    with tempfile.TemporaryDirectory(prefix=f"mwl-bench-{database}-") as tmp:
        setup = Setup(database, parse_workers, workdir=Path(tmp))
        try:
            create_database(args, setup)
            server = start_server(setup, args.log_level)
            try:
                warm, full, paced = asyncio.run(drive(args, server, run))
            except Exception:
                tail = server.log.read_text(errors="replace").splitlines()[-40:]
                print("broker log (end):", *tail, sep="\n  ", file=sys.stderr)
                raise
            finally:
                stop_broker(server.process, server.log)
            failures = [f for phase in (warm, full, paced) for f in phase.failures()]
            expected = len(warm.orders) + len(full.orders) + len(paced.orders)
            result = Result(database, parse_workers, full, paced, expected,
                            stored_counts(setup.url), failures)  # fmt: skip
        finally:
            drop_database(args, setup)
    return result


def _cpu_ms(phase: Phase) -> str:
    per = {k: 1000 * v / len(phase.orders) for k, v in phase.cpu.items()}
    return f"{per['loop']:.1f} / {per['store']:.1f} / {per['parse']:.1f}"


def _paced_cell(paced: Phase) -> str:
    if not paced.latencies:
        return "-"
    p99 = paced.percentile_ms(99)
    mark = " ✓" if p99 <= TARGET_P99_MS else " ✗"
    return f"{paced.percentile_ms(50):.1f} / {p99:.1f} / {max(paced.latencies) * 1000:.1f}{mark}"


def _ceiling(phase: Phase) -> float:
    """Orders/s the server's CPU use allows: the broker process (one GIL) on one core, and
    the whole server on every usable core."""
    per = {k: 1000 * v / len(phase.orders) for k, v in phase.cpu.items()}
    cores = len(os.sched_getaffinity(0))
    return min(1000 / max(per["loop"] + per["store"], 1e-3), cores * 1000 / sum(per.values()))


def _other_load(*phases: Phase) -> str:
    return " / ".join(f"{p.others / p.elapsed:.2f}" if p.elapsed else "-" for p in phases)


def table(results: Sequence[Result], args: argparse.Namespace) -> list[str]:
    rows = [
        f"| database | parse_workers | orders/s ({args.connections} conns) | p50 / p99 ms "
        f"| at {args.paced_rate:g}/s: p50 / p99 / max ms | server CPU ms/order: loop / other "
        "threads / parse processes | CPU ceiling, orders/s | other load, cores: full / paced "
        "| store check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        full = r.full
        target = "" if r.database != "sqlite" else " ✓" if full.rate >= TARGET_RATE else " ✗"
        check = "ok" if r.ok else f"FAILED ({len(r.failures)} not AA)"
        rows.append(
            f"| {r.database} | {r.parse_workers} | {full.rate:.0f}{target} | "
            f"{full.percentile_ms(50):.1f} / {full.percentile_ms(99):.1f} | "
            f"{_paced_cell(r.paced)} | {_cpu_ms(full)} | {_ceiling(full):.0f} | "
            f"{_other_load(full, r.paced)} | "
            f"{check}: {r.stored[0]}/{r.expected} |"
        )
    return rows


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine(args: argparse.Namespace, databases: Sequence[str]) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    memory = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    postgres = "-"
    if "postgresql" in databases:
        with psycopg.connect(_libpq(make_url(args.pg_url))) as connection:
            row = connection.execute("SHOW server_version").fetchone()
            postgres = str(row[0]) if row else "-"
    packages = ", ".join(f"{p} {_version(p)}" for p in ("hl7apy", "SQLAlchemy", "psycopg",
                                                         "alembic"))  # fmt: skip
    return [
        f"- CPU: {model.group(1) if model else platform.processor()}, "
        f"{len(os.sched_getaffinity(0))} cores usable",
        f"- RAM: {int(memory.group(1)) // 1024 if memory else 0} MiB; "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"PostgreSQL {postgres}",
        f"- {packages}",
    ]


def report(results: Sequence[Result], args: argparse.Namespace, argv: Sequence[str]) -> str:
    command = shlex.join(["python", "bench/hl7_ingest.py", *argv])
    databases = sorted({r.database for r in results})
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M %Z')}: `{command}`",
        "",
        *machine(args, databases),
        "",
        *table(results, args),
        "",
        *textwrap.wrap(
            f"Full load: {args.orders} orders, each connection waits for the ACK before its next "
            f"order. Paced: {args.paced_rate:g} orders/s for {args.paced_seconds:g} s over "
            f"{args.paced_connections} connections, open loop. Targets (2 cores): "
            f"≥ {TARGET_RATE:g} orders/s durable with SQLite; p99 ≤ {TARGET_P99_MS:g} ms at 50/s. "
            "Server CPU per order at full load, from /proc: the event-loop thread / the other "
            "threads of the broker process (store threads, process-pool manager, DICOM) / the "
            "parse worker processes. CPU ceiling: the rate that CPU use allows, the broker "
            "process (one GIL) on one core and the whole server on all cores. Other load: CPU "
            "used meanwhile by anything else on the machine (cores busy on average); above ~0.1 "
            "the run was disturbed.",
            width=100,
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/hl7_ingest.py",
        description="Throughput and ACK latency of HL7 ORM^O01 intake (MLLP -> worklist store).",
    )
    parser.add_argument(
        "--database", choices=("sqlite", "postgresql", "both"), default="both", help="(both)"
    )
    parser.add_argument("--orders", type=int, default=3000, help="orders at full load (3000)")
    parser.add_argument("--connections", type=int, default=8, help="connections at full load (8)")
    parser.add_argument(
        "--paced-rate", type=float, default=50.0, help="orders/s of the paced phase (50)"
    )
    parser.add_argument(
        "--paced-seconds",
        type=float,
        default=20.0,
        help="length of the paced phase; 0 skips it (20)",
    )
    parser.add_argument(
        "--paced-connections", type=int, default=4, help="connections of the paced phase (4)"
    )
    parser.add_argument(
        "--parse-workers",
        default="0",
        help="[hl7] parse_workers, comma-separated for several runs: 0 = one per CPU (the "
        "default), -1 = in the listener process, N = N processes (0)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server where a temporary database is created and dropped "
        "($BENCH_PG_URL, else postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        metavar="S",
        help="before each run, wait up to S seconds for the machine to be idle (20)",
    )
    parser.add_argument("--log-level", default="INFO", help="broker log level (INFO)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the server at full load")
    parser.add_argument("--write", action="store_true", help=f"update {DOC.relative_to(ROOT)}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = []
    for database in databases:
        for workers in (int(w) for w in args.parse_workers.split(",")):
            wait_for_quiet(args.quiet_wait)
            print(f"{database}, parse_workers={workers} ...", flush=True)
            result = run_one(args, database, workers)
            for phase in (result.full, result.paced):
                print(f"  {phase.name}: {len(phase.orders)} orders in {phase.elapsed:.1f} s, "
                      f"client CPU {phase.client_cpu:.1f} s")  # fmt: skip
            print(*result.failures[:5], sep="\n")
            results.append(result)
    text = report(results, args, argv)
    print("\n" + text)
    if args.write:
        write_results("hl7_ingest", "HL7 order intake", text)
        print(f"\nwritten to {DOC}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
