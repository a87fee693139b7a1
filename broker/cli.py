"""The ``mwl-broker`` command: ``serve | migrate | check-config | send | import-worklist |
outbox list|retry|discard | mpps list``.

Exit codes: 0 success; 1 a message was not accepted (AE/AR) or could not be delivered, or a
worklist file was skipped; 2 usage or configuration error (``mwl-broker: config error: <key>:
<message>`` on standard error).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from broker.config import Config, ConfigError, load_config
from broker.logs import LEVELS, LogFormat, configure_logging
from hl7.ack import AckReply, read_ack
from hl7.client import MLLPClient
from hl7.errors import HL7Error, TransportError
from mwl.ports import StoreFailure

if TYPE_CHECKING:
    from broker.store import Store
    from broker.store.outbox import Entry

PROG = "mwl-broker"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already reported
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    configure_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as error:
        print(f"{PROG}: config error: {error.key}: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    command: Callable[[Config, argparse.Namespace], int] = args.command
    return command(config, args)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="PATH", help="TOML configuration file")
    common.add_argument("--log-level", type=str.upper, choices=LEVELS, default="INFO")
    common.add_argument(
        "--log-format", choices=[f.value for f in LogFormat], default=LogFormat.TEXT.value
    )
    parser = argparse.ArgumentParser(
        prog=PROG, description="HL7 v2 to DICOM worklist and MPPS broker"
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for name, function, text in [
        ("serve", _serve, "run the MLLP, DICOM and HTTP listeners"),
        ("migrate", _migrate, "create or upgrade the database schema"),
        ("check-config", _check_config, "validate the configuration and summarise it"),
    ]:
        commands.add_parser(name, parents=[common], help=text).set_defaults(command=function)
    _add_send_parser(commands, common)
    _add_import_worklist_parser(commands, common)
    _add_outbox_parser(commands, common)
    _add_mpps_parser(commands, common)
    return parser


def _add_send_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    send = commands.add_parser(
        "send", parents=[common], help="send HL7 files over MLLP, one message per file"
    )
    send.add_argument("files", nargs="+", type=Path, metavar="FILE")
    send.add_argument("--host", help="receiver host (default: the [hl7] listener)")
    send.add_argument("--port", type=int, help="receiver port (default: the [hl7] listener)")
    send.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="connect and ACK timeout in seconds (default: 30)",
    )
    send.set_defaults(command=_send)


def _add_import_worklist_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    importer = commands.add_parser(
        "import-worklist",
        parents=[common],
        help="load DCMTK worklist files (.wl, any DICOM file; folders recursively) into the store",
    )
    importer.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    importer.add_argument(
        "--progress",
        action="store_true",
        help="draw a progress bar on standard error (default: only when it is a terminal)",
    )
    importer.set_defaults(command=_import_worklist)


def _add_outbox_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    outbox = commands.add_parser("outbox", help="list, retry or discard queued messages")
    actions = outbox.add_subparsers(title="actions", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", parents=[common], help="pending messages (oldest first), or the dead ones"
    )
    listing.add_argument("--dead", action="store_true", help="messages the receiver refused")
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="default: 100")
    listing.set_defaults(command=_outbox_list)
    retry = actions.add_parser(
        "retry", parents=[common], help="send a dead or discarded message again (or now)"
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=int, help="the message's ID (outbox list)")
    which.add_argument("--all-dead", action="store_true", help="every dead message")
    retry.set_defaults(command=_outbox_retry)
    discard = actions.add_parser("discard", parents=[common], help="give a message up")
    discard.add_argument("id", type=int, help="the message's ID (outbox list)")
    discard.set_defaults(command=_outbox_discard)


def _add_mpps_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    mpps = commands.add_parser("mpps", help="performed procedure steps received")
    actions = mpps.add_subparsers(title="actions", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="the latest MPPS, newest first")
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="default: 100")
    listing.set_defaults(command=_mpps_list)


# --- commands --------------------------------------------------------------------------------


def _serve(config: Config, args: argparse.Namespace) -> int:
    # Imported here: the listeners and their dependencies load only for this command.
    from broker.app import serve  # noqa: PLC0415

    return serve(config)


def _migrate(config: Config, args: argparse.Namespace) -> int:
    from broker.store.migrate import migrate  # noqa: PLC0415 -- SQLAlchemy models and Alembic

    try:
        migrate(config.database)
    except StoreFailure as error:
        print(f"{PROG}: migrate failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _check_config(config: Config, args: argparse.Namespace) -> int:
    print("\n".join(config_summary(config)))
    return EXIT_OK


def config_summary(config: Config) -> list[str]:
    """A few lines a person can check at a glance; the database password is masked."""
    database = make_url(config.database.url).render_as_string(hide_password=True)
    hl7, dicom, http = config.hl7, config.dicom, config.http
    lines = [
        f"config: {config.source or 'defaults (no file)'}",
        f"database: {database}",
        f"hl7: listening on {hl7.host}:{hl7.port} as {hl7.application}",
        f"dicom: listening on {dicom.host}:{dicom.port} as AE {dicom.ae_title}",
        f"http: listening on {http.host}:{http.port}",
    ]
    lines += [
        f"outbound {o.name}: {o.host}:{o.port} {o.message_type} v{o.version}"
        f" events {','.join(o.events)}{'' if o.enabled else ' (disabled)'}"
        for o in config.outbound
    ]
    lines += [f"mpps_forward {f.name}: {f.ae_title}@{f.host}:{f.port}" for f in config.mpps_forward]
    return lines


def _import_worklist(config: Config, args: argparse.Namespace) -> int:
    """Load worklist files, one unit of work each; 1 when some file was skipped."""
    from broker.importer import ProgressBar, import_worklist  # noqa: PLC0415 -- pydicom, store
    from broker.store import Store, migrate  # noqa: PLC0415

    progress = ProgressBar(sys.stderr) if args.progress or sys.stderr.isatty() else None
    try:
        if config.database.url.startswith("sqlite"):
            migrate(config.database)  # as serve does for the embedded default
        with Store.open(config.database) as store:
            report = import_worklist(store, args.paths, config.mapping, progress)
    except StoreFailure as error:
        print(f"{PROG}: import-worklist failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(report.summary_lines()))
    return EXIT_OK if report.all_loaded else EXIT_FAILED


def _send(config: Config, args: argparse.Namespace) -> int:
    host = args.host or _WILDCARDS.get(config.hl7.host, config.hl7.host)
    port = config.hl7.port if args.port is None else args.port
    client = MLLPClient(
        host,
        port,
        connect_timeout=args.timeout,
        ack_timeout=args.timeout,
        max_frame_size=config.hl7.max_frame_size,
    )
    with client:  # one connection for all files; the client reopens it after a failure
        results = [_send_file(client, path) for path in args.files]
    return EXIT_OK if all(results) else EXIT_FAILED


def _send_file(client: MLLPClient, path: Path) -> bool:
    """Send one file and print its ACK; True when the receiver answered AA."""
    try:
        reply = read_ack(client.send(read_message(path)))
    except (OSError, ValueError, TransportError, HL7Error) as error:
        print(f"{path}: failed: {str(error) or type(error).__name__}", file=sys.stderr)
        return False
    print("\n".join(ack_lines(path, reply)))
    return str(reply.code) == "AA"


def read_message(path: Path) -> bytes:
    """One HL7 message from a file, segments separated by CR whatever the file used."""
    raw = path.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r")
    if not raw.strip():
        raise ValueError("the file holds no message")
    return raw + b"\r"


def ack_lines(path: Path, reply: AckReply) -> list[str]:
    head = f"{path}: {reply.code} {reply.control_id} {reply.text}".rstrip()
    return [head, *(f"  ERR {error}" for error in reply.errors)]


# --- outbox and MPPS (operators) ---------------------------------------------------------------


def _with_store(config: Config, name: str, action: Callable[[Store], int]) -> int:
    """Run ``action`` on the configured store; 1 with a message when the store fails."""
    from broker.store import Store  # noqa: PLC0415 -- SQLAlchemy loads only for these commands

    try:
        with Store.open(config.database) as store:
            return action(store)
    except StoreFailure as error:
        print(f"{PROG}: {name} failed: {error}", file=sys.stderr)
        return EXIT_FAILED


def _outbox_list(config: Config, args: argparse.Namespace) -> int:
    from broker.store.outbox import OutboxLedger, State  # noqa: PLC0415

    state = State.DEAD if args.dead else State.PENDING

    def show(store: Store) -> int:
        entries = OutboxLedger(store.engine).entries(state=state, limit=args.limit)
        print("\n".join(outbox_table(entries)))
        return EXIT_OK

    return _with_store(config, "outbox list", show)


def _outbox_retry(config: Config, args: argparse.Namespace) -> int:
    from broker.store.outbox import OutboxLedger  # noqa: PLC0415

    def retry(store: Store) -> int:
        ledger, now = OutboxLedger(store.engine), datetime.now(UTC)
        if args.all_dead:
            print(f"{ledger.retry_all_dead(now=now)} dead messages queued again")
            return EXIT_OK
        return _done(ledger.retry(args.id, now=now), f"message {args.id} queued again", args.id)

    return _with_store(config, "outbox retry", retry)


def _outbox_discard(config: Config, args: argparse.Namespace) -> int:
    from broker.store.outbox import OutboxLedger  # noqa: PLC0415

    def discard(store: Store) -> int:
        done = OutboxLedger(store.engine).discard(args.id)
        return _done(done, f"message {args.id} discarded", args.id)

    return _with_store(config, "outbox discard", discard)


def _done(done: bool, message: str, row_id: int) -> int:
    if done:
        print(message)
        return EXIT_OK
    print(f"{PROG}: no message {row_id} that is not sent already", file=sys.stderr)
    return EXIT_FAILED


def _mpps_list(config: Config, args: argparse.Namespace) -> int:
    def show(store: Store) -> int:
        print("\n".join(mpps_table(mpps_rows(store, args.limit))))
        return EXIT_OK

    return _with_store(config, "mpps list", show)


def outbox_table(entries: Sequence[Entry]) -> list[str]:
    """One line per outbox row, under a header."""
    header = ["ID", "STATE", "DESTINATION", "ORDER", "OPERATION", "CONTROL ID", "ATTEMPTS"]
    header += ["NEXT ATTEMPT", "LAST ERROR"]
    return table(header, [_entry_cells(entry) for entry in entries])


def _entry_cells(entry: Entry) -> list[str]:
    cells = [str(entry.id), entry.state, entry.destination, entry.order_key, entry.operation]
    cells += [entry.control_id, str(entry.attempts), _local(entry.next_attempt_at)]
    return [*cells, _short(entry.last_error)]


@dataclass(frozen=True, slots=True, kw_only=True)
class MppsLine:
    """One MPPS instance as ``mpps list`` shows it."""

    id: int
    sop_instance_uid: str
    status: str
    start: str
    end: str
    station: str
    modality: str
    unscheduled: bool
    accessions: tuple[str, ...]


def mpps_rows(store: Store, limit: int) -> list[MppsLine]:
    """The latest ``limit`` MPPS instances with the accession numbers of their orders."""
    from sqlalchemy import select  # noqa: PLC0415

    from broker.store.errors import store_errors  # noqa: PLC0415
    from broker.store.schema import (  # noqa: PLC0415  # noqa: PLC0415
        MppsStepLink,
        Order,
        PerformedStepRow,
        RequestedProcedure,
        ScheduledStep,
    )

    latest = select(PerformedStepRow).order_by(PerformedStepRow.id.desc()).limit(limit)
    linked = (
        select(MppsStepLink.mpps_id, Order.accession)
        .join(ScheduledStep, ScheduledStep.id == MppsStepLink.step_id)
        .join(RequestedProcedure, RequestedProcedure.id == ScheduledStep.procedure_id)
        .join(Order, Order.id == RequestedProcedure.order_id)
    )
    with store_errors(), store.read_session() as session:
        instances = list(session.scalars(latest))
        ids = [row.id for row in instances]
        accessions: dict[int, set[str]] = {}
        for mpps_id, accession in session.execute(linked.where(MppsStepLink.mpps_id.in_(ids))):
            accessions.setdefault(mpps_id, set()).add(accession)
    return [
        MppsLine(
            id=row.id,
            sop_instance_uid=row.sop_instance_uid,
            status=row.status,
            start=row.start_datetime,
            end=row.end_datetime,
            station=row.performed_station_ae,
            modality=row.modality,
            unscheduled=row.unscheduled,
            accessions=tuple(sorted(accessions.get(row.id, ()))),
        )
        for row in instances
    ]


def mpps_table(lines: Sequence[MppsLine]) -> list[str]:
    """One line per MPPS instance, under a header."""
    header = ["ID", "STATUS", "START", "END", "STATION", "MODALITY", "UNSCHEDULED", "ACCESSION"]
    return table([*header, "SOP INSTANCE UID"], [_mpps_cells(line) for line in lines])


def _mpps_cells(line: MppsLine) -> list[str]:
    cells = [str(line.id), line.status, _dicom_time(line.start), _dicom_time(line.end)]
    cells += [line.station, line.modality, "yes" if line.unscheduled else "no"]
    return [*cells, ",".join(line.accessions), line.sop_instance_uid]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; ``(none)`` under the header when empty."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    body = [line(row).rstrip() for row in rows] or ["(none)"]
    return [line(header).rstrip(), *body]


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _dicom_time(value: str) -> str:
    """``YYYYMMDDHHMMSS`` → ``YYYY-MM-DD HH:MM:SS`` (what is there of it)."""
    if len(value) < 8:
        return value
    date = f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    time = ":".join(value[i : i + 2] for i in range(8, min(len(value), 14), 2))
    return f"{date} {time}".strip()


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


if __name__ == "__main__":
    raise SystemExit(main())
