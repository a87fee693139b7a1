"""One frozen configuration tree: a TOML file plus ``MWL_BROKER_*`` environment overrides.

:func:`load_config` reads the file (``--config``, else ``$MWL_BROKER_CONFIG``, else none: defaults
only), applies the environment overrides and validates everything once, at start-up. Every problem
is a :class:`ConfigError` whose ``key`` names the setting (``hl7.port``, ``outbound[0].port``, or
the environment variable) and whose message says what was expected and what was found.

Environment overrides: every scalar key of a non-array section (``[database]``, ``[hl7]``,
``[dicom]``, ``[http]``, ``[mapping]``, ``[worklist]``, ``[mpps]``, ``[outbox]``,
``[retention]``) can be set as ``MWL_BROKER_<SECTION>_<KEY>``, e.g.
``MWL_BROKER_HL7_PORT=2575`` or ``MWL_BROKER_MAPPING_DEFAULT_STATION_AE=CT1,CT2``. Booleans take
``true/false/1/0/yes/no``; lists are comma-separated. An unknown ``MWL_BROKER_*`` variable is an
error, so a typo never silently falls back to a default.

Tables are checked against the fields of the dataclass they become, so the dataclasses below are
the schema; :data:`_CHECKS` adds the range and format rules a type cannot say.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import enum
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mpps.policy import MppsPolicy
from mpps.report import MessageType, check_layout
from mwl.policy import CallerRule, MappingPolicy, StationRule, WorklistPolicy

CONFIG_ENV = "MWL_BROKER_CONFIG"
ENV_PREFIX = "MWL_BROKER_"


class ConfigError(Exception):
    """A configuration problem; ``key`` is the dotted key or the environment variable name."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    url: str = "sqlite:///mwl-broker.db"
    """SQLAlchemy URL; a relative SQLite path is relative to the working directory."""
    pool_size: int = 5
    echo: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class HL7Config:
    host: str = "127.0.0.1"
    port: int = 2575
    max_frame_size: int = 1_048_576
    idle_timeout: float = 300.0
    max_connections: int = 200
    parse_workers: int = 0
    """Parse processes: 0 = one per two CPUs (at least 1, at most 4), -1 = parse in the
    listener process. Decoding and mapping cost ~0.4 ms per order against ~2 ms for the store
    writer, so half the CPUs leave the rest to the broker process (docs/benchmarks.md)."""
    application: str = "MWLBROKER"
    """MSH-3 Sending Application of our ACKs."""
    facility: str = ""
    """MSH-4 Sending Facility of our ACKs."""
    fallback_charset: str = "latin-1"
    """Python codec for non-UTF-8 bytes of a message without MSH-18 (also in the mapping policy)."""

    def parse_process_count(self, cpu_count: int | None) -> int:
        """Number of parse processes to start; 0 means parse in the listener process."""
        if self.parse_workers == -1:
            return 0
        if self.parse_workers == 0:
            return max(1, min((cpu_count or 1) // 2, 4))
        return self.parse_workers


@dataclass(frozen=True, slots=True, kw_only=True)
class DicomConfig:
    ae_title: str = "MWLBROKER"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_callers: tuple[str, ...] = ()
    """Calling AE titles accepted; empty: any."""
    require_called_ae: bool = True
    """Reject associations whose Called AE Title is not ``ae_title``."""
    max_associations: int = 50
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    maximum_pdu_size: int = 65536
    """Largest P-DATA PDU we receive (0: unlimited)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundConfig:
    """One HL7 receiver of MPPS status messages (``[[outbound]]``)."""

    name: str
    host: str
    port: int
    message_type: str = "ORM^O01"
    version: str = "2.3.1"
    events: tuple[str, ...] = ("IP", "CM", "DC", "SC")
    """ORC-5 values reported: IP in progress, CM completed, DC discontinued, SC scheduled again
    (a 110514 discontinuation that reschedules; not sent as ORU^R01)."""
    connect_timeout: float = 10.0
    ack_timeout: float = 30.0
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxConfig:
    """Delivery of queued messages (``[outbox]``): retries with exponential back-off."""

    poll_interval: float = 1.0
    """Seconds between looks for due messages (new messages of this process go at once)."""
    retry_initial: float = 5.0
    """Seconds before the first retry after AR, a timeout or a refused connection."""
    retry_factor: float = 2.0
    retry_max: float = 600.0
    """Longest wait between two attempts, in seconds."""
    lease: float = 120.0
    """Seconds a claimed message stays reserved for the process sending it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionConfig:
    """Housekeeping (``[retention]``); 0 disables a rule."""

    final_steps_days: int = 30
    """Delete orders whose steps all ended (COMPLETED/DISCONTINUED/CANCELED) this long ago."""
    journal_days: int = 90
    """Delete inbound journal entries older than this."""
    delivered_days: int = 30
    """Delete sent or discarded outbox messages older than this."""
    expire_scheduled_days: int = 7
    """Mark SCHEDULED steps whose start is this far in the past as DISCONTINUED (expired)."""
    interval_minutes: int = 60
    """How often housekeeping runs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardConfig:
    """One DICOM peer that receives a copy of every MPPS (``[[mpps_forward]]``)."""

    name: str
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    hl7: HL7Config = field(default_factory=HL7Config)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    outbound: tuple[OutboundConfig, ...] = ()
    mpps_forward: tuple[ForwardConfig, ...] = ()
    mapping: MappingPolicy = field(default_factory=MappingPolicy)
    worklist: WorklistPolicy = field(default_factory=WorklistPolicy)
    mpps: MppsPolicy = field(default_factory=MppsPolicy)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    source: Path | None = None
    """The file the configuration was read from; None: defaults and environment only."""


# --- the schema ------------------------------------------------------------------------------

_SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseConfig,
    "hl7": HL7Config,
    "dicom": DicomConfig,
    "http": HttpConfig,
    "mapping": MappingPolicy,
    "worklist": WorklistPolicy,
    "mpps": MppsPolicy,
    "outbox": OutboxConfig,
    "retention": RetentionConfig,
}
_ARRAYS: dict[str, type[Any]] = {"outbound": OutboundConfig, "mpps_forward": ForwardConfig}
_FROM_ELSEWHERE: dict[type[Any], frozenset[str]] = {
    MappingPolicy: frozenset({"fallback_charset"}),  # set from [hl7] fallback_charset
}


def _rule(test: Callable[[Any], bool], expected: str) -> Callable[[Any], Any]:
    """A check: the value itself when ``test`` passes, else ValueError(what was expected)."""

    def check(value: Any) -> Any:
        if not test(value):
            raise ValueError(expected)
        return value

    return check


def _matches(pattern: str, expected: str) -> Callable[[Any], Any]:
    regex = re.compile(pattern)
    return _rule(lambda value: value is None or regex.fullmatch(value) is not None, expected)


_AE = re.compile(r"(?=.*[^ ])[ -\[\]-~]{1,16}")
"""AE VR (PS3.5 §6.2): 1-16 printable default-repertoire characters, no backslash, not blank."""
_CS = re.compile(r"[A-Z0-9_ ]{1,16}")
"""CS VR (PS3.5 §6.2): upper-case letters, digits, space, underscore, at most 16."""
_UID_PREFIX = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.?")
"""A UID root (PS3.5 §9.1), with or without its trailing dot."""

_LISTEN_PORT = _rule(lambda v: 0 <= v <= 65535, "a port from 0 to 65535 (0: chosen by the OS)")
_PEER_PORT = _rule(lambda v: 1 <= v <= 65535, "a port from 1 to 65535")
_POSITIVE = _rule(lambda v: v > 0, "a number greater than 0")
_NOT_BLANK = _matches(r"(?s).*\S.*", "a non-empty string")
_AE_TITLE = _matches(_AE.pattern, "an AE title: 1 to 16 printable ASCII characters, no backslash")
_AE_TITLES = _rule(
    lambda v: bool(v) and all(_AE.fullmatch(ae) for ae in v),
    "one or more AE titles of 1 to 16 printable ASCII characters, no backslash",
)
_HL7_NAME = _matches(r"[^|^~\\&\r\n]*", "text without the HL7 delimiters | ^ ~ \\ &")
_MODALITIES = _rule(
    lambda v: all(_CS.fullmatch(term) for term in v.values()),
    "DICOM modality code strings as values (A-Z, 0-9, _; 16 at most)",
)
_CODE_STRING = _matches(_CS.pattern, "a DICOM code string (A-Z, 0-9, _, space; 16 at most)")


def _known_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _supported_database(url: str) -> bool:
    try:
        return make_url(url).get_backend_name() in ("sqlite", "postgresql")
    except ArgumentError:
        return False


def _uid_prefix(value: str) -> str:
    """Empty, or a UID root stored with its trailing dot, ready for a suffix."""
    if not value:
        return value
    prefix = value if value.endswith(".") else value + "."
    if not _UID_PREFIX.fullmatch(value) or len(prefix) > 40:
        raise ValueError("'' or a UID prefix of digits and dots, at most 40 characters")
    return prefix


_CHECKS: dict[tuple[type[Any], str], Callable[[Any], Any]] = {
    (DatabaseConfig, "url"): _rule(
        _supported_database, "a 'sqlite:///path' or 'postgresql+psycopg://' SQLAlchemy URL"
    ),
    (DatabaseConfig, "pool_size"): _rule(lambda v: v >= 1, "an integer of at least 1"),
    (HL7Config, "host"): _NOT_BLANK,
    (HL7Config, "port"): _LISTEN_PORT,
    (HL7Config, "max_frame_size"): _rule(lambda v: v >= 1024, "an integer of at least 1024"),
    (HL7Config, "idle_timeout"): _POSITIVE,
    (HL7Config, "max_connections"): _rule(lambda v: v >= 1, "an integer of at least 1"),
    (HL7Config, "parse_workers"): _rule(lambda v: v >= -1, "-1, 0 or a number of processes"),
    (HL7Config, "application"): lambda v: _HL7_NAME(_NOT_BLANK(v)),
    (HL7Config, "facility"): _HL7_NAME,
    (HL7Config, "fallback_charset"): _rule(
        _known_codec, "a Python codec name like 'latin-1' or 'cp1252'"
    ),
    (DicomConfig, "ae_title"): _AE_TITLE,
    (DicomConfig, "host"): _NOT_BLANK,
    (DicomConfig, "port"): _LISTEN_PORT,
    (HttpConfig, "host"): _NOT_BLANK,
    (HttpConfig, "port"): _LISTEN_PORT,
    (OutboundConfig, "name"): _NOT_BLANK,
    (OutboundConfig, "host"): _NOT_BLANK,
    (OutboundConfig, "port"): _PEER_PORT,
    (OutboundConfig, "message_type"): _rule(
        lambda v: v in set(MessageType), f"one of {', '.join(MessageType)}"
    ),
    (OutboundConfig, "version"): _matches(r"2\.[0-9](\.[0-9])?", "an HL7 version like '2.3.1'"),
    (OutboundConfig, "events"): _rule(
        lambda v: bool(v) and set(v) <= {"IP", "CM", "DC", "SC"},
        "a non-empty list of IP, CM, DC, SC",
    ),
    (OutboundConfig, "connect_timeout"): _POSITIVE,
    (OutboundConfig, "ack_timeout"): _POSITIVE,
    (ForwardConfig, "name"): _NOT_BLANK,
    (ForwardConfig, "ae_title"): _AE_TITLE,
    (ForwardConfig, "host"): _NOT_BLANK,
    (ForwardConfig, "port"): _PEER_PORT,
    (MappingPolicy, "uid_root"): _uid_prefix,
    (MappingPolicy, "default_station_ae"): _AE_TITLES,
    (MappingPolicy, "sps_description_component"): _rule(lambda v: v in (5, 2), "5 or 2"),
    (MappingPolicy, "modality_map"): _MODALITIES,
    (MappingPolicy, "procedure_modality"): _MODALITIES,
    (MappingPolicy, "default_modality"): _matches(
        f"({_CS.pattern})?", "'' or a modality like 'CT'"
    ),
    (DicomConfig, "allowed_callers"): _rule(
        lambda v: all(_AE.fullmatch(ae) for ae in v), "AE titles (1-16 characters, no backslash)"
    ),
    (DicomConfig, "max_associations"): _rule(lambda v: v >= 1, "an integer of at least 1"),
    (DicomConfig, "acse_timeout"): _POSITIVE,
    (DicomConfig, "dimse_timeout"): _POSITIVE,
    (DicomConfig, "network_timeout"): _POSITIVE,
    (DicomConfig, "maximum_pdu_size"): _rule(
        lambda v: v == 0 or v >= 4096, "0 (unlimited) or at least 4096 bytes"
    ),
    (OutboxConfig, "poll_interval"): _POSITIVE,
    (OutboxConfig, "retry_initial"): _POSITIVE,
    (OutboxConfig, "retry_factor"): _rule(lambda v: v >= 1.0, "a factor of at least 1.0"),
    (OutboxConfig, "retry_max"): _POSITIVE,
    (OutboxConfig, "lease"): _POSITIVE,
    (RetentionConfig, "final_steps_days"): _rule(lambda v: v >= 0, "0 (keep) or days"),
    (RetentionConfig, "journal_days"): _rule(lambda v: v >= 0, "0 (keep) or days"),
    (RetentionConfig, "delivered_days"): _rule(lambda v: v >= 0, "0 (keep) or days"),
    (RetentionConfig, "expire_scheduled_days"): _rule(lambda v: v >= 0, "0 (never) or days"),
    (RetentionConfig, "interval_minutes"): _rule(lambda v: v >= 1, "at least 1 minute"),
    (WorklistPolicy, "max_matches"): _rule(lambda v: v >= 1, "an integer of at least 1"),
    (CallerRule, "ae_title"): _AE_TITLE,
    (CallerRule, "station_ae"): _rule(
        lambda v: all(_AE.fullmatch(ae) for ae in v), "AE titles (1-16 characters, no backslash)"
    ),
    (CallerRule, "modality"): _matches(f"({_CS.pattern})?", "'' or a modality like 'CT'"),
    (CallerRule, "hours_around_now"): _rule(lambda v: 0 <= v <= 24 * 31, "0 to 744 hours"),
    (StationRule, "station_ae"): _AE_TITLES,
    (StationRule, "modality"): _CODE_STRING,
}


# --- loading ---------------------------------------------------------------------------------


def load_config(path: Path | None, environ: Mapping[str, str]) -> Config:
    """Read, override from ``environ`` and validate once; raise :class:`ConfigError`."""
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    document = _read_toml(path) if path is not None else {}
    origins = _apply_environment(document, environ)
    try:
        return _document_to_config(document, path)
    except ConfigError as error:
        if error.key in origins:
            raise ConfigError(origins[error.key], error.message) from None
        raise


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(str(path), "configuration file not found") from None
    except OSError as error:
        raise ConfigError(str(path), f"cannot read configuration file: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), f"invalid TOML: {error}") from None


def _document_to_config(document: Mapping[str, Any], source: Path | None) -> Config:
    _reject_unknown(document, {*_SECTIONS, *_ARRAYS}, "")
    hl7 = _build(HL7Config, _table(document, "hl7"), "hl7")
    return Config(
        database=_build(DatabaseConfig, _table(document, "database"), "database"),
        hl7=hl7,
        dicom=_build(DicomConfig, _table(document, "dicom"), "dicom"),
        http=_build(HttpConfig, _table(document, "http"), "http"),
        outbound=_buildable(_build_array(OutboundConfig, document, "outbound")),
        mpps_forward=_build_array(ForwardConfig, document, "mpps_forward"),
        mapping=_build(
            MappingPolicy,
            _table(document, "mapping"),
            "mapping",
            fixed={"fallback_charset": hl7.fallback_charset},
        ),
        worklist=_build(WorklistPolicy, _table(document, "worklist"), "worklist"),
        mpps=_build(MppsPolicy, _table(document, "mpps"), "mpps"),
        outbox=_build(OutboxConfig, _table(document, "outbox"), "outbox"),
        retention=_build(RetentionConfig, _table(document, "retention"), "retention"),
        source=source,
    )


def _table(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(name, f"expected a table [{name}], found {_describe(value)}")
    return value


def _build_array(cls: type[Any], document: Mapping[str, Any], name: str) -> tuple[Any, ...]:
    built = _table_list(cls, document.get(name, []), name)
    _reject_duplicate_names(built, name)
    return built


def _buildable(receivers: tuple[OutboundConfig, ...]) -> tuple[OutboundConfig, ...]:
    """Each receiver's message type can be built in its version (:func:`mpps.report.check_layout`:
    hl7apy has the structure, its segments and fields), or the key is named now, not at the
    first delivery."""
    for index, receiver in enumerate(receivers):
        try:
            check_layout(MessageType(receiver.message_type), receiver.version)
        except ValueError as error:
            raise ConfigError(f"outbound[{index}].version", str(error)) from None
    return receivers


def _reject_duplicate_names(items: tuple[Any, ...], name: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.name in seen:
            raise ConfigError(f"{name}[{index}].name", f"duplicate name {item.name!r}")
        seen.add(item.name)


def _build(
    cls: type[Any],
    table: Mapping[str, Any],
    where: str,
    *,
    fixed: Mapping[str, Any] | None = None,
) -> Any:
    """Instance of dataclass ``cls`` from a TOML table, each value checked against its field."""
    fixed = fixed or {}
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in fixed}
    _reject_unknown(table, known, where)
    _require(known, table, where)
    values = {
        name: _value_for(cls, name, hints[name], value, f"{where}.{name}")
        for name, value in table.items()
    }
    return cls(**values, **fixed)


def _value_for(cls: type[Any], name: str, hint: Any, value: Any, key: str) -> Any:
    converted = _convert(hint, value, key)
    check = _CHECKS.get((cls, name))
    if check is None:
        return converted
    try:
        return check(converted)
    except ValueError as error:
        raise ConfigError(key, f"expected {error}, found {_describe(value)}") from None


def _reject_unknown(table: Mapping[str, Any], known: typing.Collection[str], where: str) -> None:
    for name in table:
        if name not in known:
            key = f"{where}.{name}" if where else name
            hint = _suggest(name, known)
            raise ConfigError(key, f"unknown key; expected one of {', '.join(known)}{hint}")


def _require(
    known: Mapping[str, dataclasses.Field[Any]], table: Mapping[str, Any], where: str
) -> None:
    for name, spec in known.items():
        no_default = spec.default is dataclasses.MISSING
        if no_default and spec.default_factory is dataclasses.MISSING and name not in table:
            raise ConfigError(f"{where}.{name}", "required key is missing")


def _suggest(name: str, known: typing.Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- values ----------------------------------------------------------------------------------


def _convert(hint: Any, value: Any, key: str) -> Any:
    """TOML value -> the field's type, or ConfigError saying what was expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType and type(None) in args:
        (inner,) = (arg for arg in args if arg is not type(None))
        return _convert(inner, value, key)
    if origin is tuple and args[0] is str:
        return _string_list(value, key)
    if origin is tuple and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        return _table_list(args[0], value, key)
    if origin is Mapping:
        return _string_table(value, key)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_member(hint, value, key)
    return _scalar(hint, value, key)


_SCALAR_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _scalar(hint: type[Any], value: Any, key: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(key, f"expected {_SCALAR_NAMES[hint]}, found {_describe(value)}")


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(key, f"expected a string or an array of strings, found {_describe(value)}")


def _table_list(cls: type[Any], value: Any, key: str) -> tuple[Any, ...]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(key, f"expected an array of tables, found {_describe(value)}")
    return tuple(_build(cls, item, f"{key}[{i}]") for i, item in enumerate(value))


def _string_table(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table of strings, found {_describe(value)}")
    for name, item in value.items():
        if not isinstance(item, str):
            raise ConfigError(f"{key}.{name}", f"expected a string, found {_describe(item)}")
    return dict(value)


def _enum_member(cls: type[enum.Enum], value: Any, key: str) -> enum.Enum:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in cls)
        raise ConfigError(key, f"expected one of {choices}, found {_describe(value)}") from None


def _describe(value: Any) -> str:
    kinds = {bool: "boolean", str: "string", int: "integer", float: "float", list: "array"}
    if isinstance(value, dict):
        return f"table {value!r}"
    kind = kinds.get(type(value), type(value).__name__)
    return f"{kind} {value!r}"


# --- environment -----------------------------------------------------------------------------


def _apply_environment(document: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Write ``MWL_BROKER_*`` overrides into ``document``; return dotted key -> variable name."""
    targets = _environment_targets()
    origins: dict[str, str] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_ENV:
            continue
        if variable not in targets:
            hint = _suggest(variable, targets)
            raise ConfigError(variable, f"unknown environment variable{hint}")
        section, name, hint_type = targets[variable]
        table = document.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(section, f"expected a table [{section}], found {_describe(table)}")
        table[name] = _parse_environment(hint_type, environ[variable], variable)
        origins[f"{section}.{name}"] = variable
    return origins


def _environment_targets() -> dict[str, tuple[str, str, Any]]:
    targets: dict[str, tuple[str, str, Any]] = {}
    for section, cls in _SECTIONS.items():  # arrays take no overrides
        hints = typing.get_type_hints(cls)
        skipped = _FROM_ELSEWHERE.get(cls, frozenset())
        for spec in dataclasses.fields(cls):
            if spec.name not in skipped and _is_env_scalar(hints[spec.name]):
                variable = f"{ENV_PREFIX}{section.upper()}_{spec.name.upper()}"
                targets[variable] = (section, spec.name, hints[spec.name])
    return targets


def _is_env_scalar(hint: Any) -> bool:
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0] is str
    return typing.get_origin(hint) is None


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _parse_environment(hint: Any, text: str, variable: str) -> Any:
    """Environment text -> a TOML-like value; the field checks run on it afterwards."""
    if hint is bool:
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(variable, f"expected true/false/1/0/yes/no, found {text!r}")
        return word in _TRUE
    if hint in (int, float):
        try:
            return hint(text.strip())
        except ValueError:
            raise ConfigError(variable, f"expected {_SCALAR_NAMES[hint]}, found {text!r}") from None
    if typing.get_origin(hint) is tuple:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text
