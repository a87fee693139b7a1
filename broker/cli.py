"""The ``mwl-broker`` command: ``serve | migrate | check-config | send | import-worklist``.

Exit codes: 0 success; 1 a message was not accepted (AE/AR) or could not be delivered, or a
worklist file was skipped; 2 usage or configuration error (``mwl-broker: config error: <key>:
<message>`` on standard error).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from broker.config import Config, ConfigError, load_config
from broker.logs import LEVELS, LogFormat, configure_logging
from hl7.ack import AckReply, read_ack
from hl7.client import MLLPClient
from hl7.errors import HL7Error, TransportError
from mwl.ports import StoreFailure

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


if __name__ == "__main__":
    raise SystemExit(main())
