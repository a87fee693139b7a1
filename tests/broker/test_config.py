from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from broker.config import (
    Config,
    ConfigError,
    DatabaseConfig,
    DicomConfig,
    ForwardConfig,
    HL7Config,
    HttpConfig,
    OutboundConfig,
    load_config,
)
from mwl.policy import (
    LongIdentifierPolicy,
    MappingPolicy,
    MissingKeyPolicy,
    NewInProgress,
    StationRule,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"

README_EXAMPLE = """\
[database]
url = "sqlite:///mwl-broker.db"
[hl7]
host = "127.0.0.1"
port = 2575
[dicom]
ae_title = "MWLBROKER"
host = "127.0.0.1"
port = 11112
[http]
host = "127.0.0.1"
port = 8080
[[outbound]]
name = "ris"
host = "127.0.0.1"
port = 2576
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mwl-broker.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ or {})


def error_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text, environ)
    return caught.value


# --- defaults and example files --------------------------------------------------------------


def test_no_file_gives_the_defaults() -> None:
    config = load_config(None, {})

    assert config == Config()
    assert config.source is None
    assert config.database == DatabaseConfig(url="sqlite:///mwl-broker.db", pool_size=5, echo=False)
    assert config.hl7 == HL7Config(
        host="127.0.0.1",
        port=2575,
        max_frame_size=1_048_576,
        idle_timeout=300.0,
        max_connections=200,
        parse_workers=0,
        application="MWLBROKER",
        facility="",
        fallback_charset="latin-1",
    )
    assert config.dicom == DicomConfig(ae_title="MWLBROKER", host="127.0.0.1", port=11112)
    assert config.http == HttpConfig(host="127.0.0.1", port=8080, token="")
    assert config.outbound == ()
    assert config.mpps_forward == ()
    assert config.mapping == MappingPolicy()


def test_config_is_frozen() -> None:
    config = load_config(None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hl7.port = 1  # type: ignore[misc]


def test_the_readme_example_loads_verbatim(tmp_path: Path) -> None:
    config = load_text(tmp_path, README_EXAMPLE)

    assert config.source == tmp_path / "mwl-broker.toml"
    assert config.hl7.port == 2575
    assert config.outbound == (OutboundConfig(name="ris", host="127.0.0.1", port=2576),)
    assert config.outbound[0].events == ("IP", "CM", "DC", "SC")
    assert config.outbound[0].message_type == "ORM^O01"


def test_docs_example_file_is_the_readme_example() -> None:
    path = DOCS / "mwl-broker.example.toml"
    assert path.read_text(encoding="utf-8") == README_EXAMPLE
    assert load_config(path, {}).outbound[0].name == "ris"


def test_docs_full_file_sets_every_key_to_its_default() -> None:
    config = load_config(DOCS / "mwl-broker.full.toml", {})

    defaults = Config()
    assert (config.database, config.hl7, config.dicom, config.http) == (
        defaults.database,
        defaults.hl7,
        defaults.dicom,
        defaults.http,
    )
    assert config.outbound == (OutboundConfig(name="ris", host="127.0.0.1", port=2576),)
    assert config.mpps_forward == (
        ForwardConfig(name="archive", ae_title="ARCHIVE", host="127.0.0.1", port=11113),
    )
    examples = {"procedure_modality", "station_rules"}
    for spec in dataclasses.fields(MappingPolicy):
        if spec.name not in examples:
            assert getattr(config.mapping, spec.name) == getattr(defaults.mapping, spec.name)


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("database", DatabaseConfig),
        ("hl7", HL7Config),
        ("dicom", DicomConfig),
        ("http", HttpConfig),
        ("outbound", OutboundConfig),
        ("mpps_forward", ForwardConfig),
        ("mapping", MappingPolicy),
    ],
)
def test_docs_full_file_lists_every_key(section: str, cls: type[Any]) -> None:
    document = tomllib.loads((DOCS / "mwl-broker.full.toml").read_text(encoding="utf-8"))
    table = document[section][0] if isinstance(document[section], list) else document[section]
    from_hl7 = {"fallback_charset"} if cls is MappingPolicy else set()
    assert set(table) == {spec.name for spec in dataclasses.fields(cls)} - from_hl7


def test_full_file_lists_every_station_rule_key() -> None:
    document = tomllib.loads((DOCS / "mwl-broker.full.toml").read_text(encoding="utf-8"))
    rule = document["mapping"]["station_rules"][0]
    assert set(rule) == {spec.name for spec in dataclasses.fields(StationRule)}


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[hl7]\nport = 3000\n")

    config = load_config(None, {"MWL_BROKER_CONFIG": str(path)})

    assert config.hl7.port == 3000
    assert config.source == path


def test_explicit_path_wins_over_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[hl7]\nport = 3000\n")

    config = load_config(path, {"MWL_BROKER_CONFIG": str(tmp_path / "absent.toml")})

    assert config.hl7.port == 3000


# --- the mapping policy ----------------------------------------------------------------------


MAPPING = """\
[hl7]
fallback_charset = "cp1252"
[mapping]
missing_study_uid = "reject"
missing_requested_procedure_id = "reject"
missing_sps_id = "generate"
uid_root = "1.2.826.0.1.3680043.10.543"
default_station_ae = "CT_DEFAULT"
sps_description_component = 2
new_in_progress = "SCHEDULED"
long_identifiers = "truncate"
default_modality = "OT"
[mapping.procedure_modality]
USABD = "US"
[mapping.modality_map]
NMR = "MR"
CAT = "CT"
[[mapping.station_rules]]
station_ae = ["CT1", "CT2"]
modality = "CT"
sending_facility = "RAD"
station_name = "CT room"
[[mapping.station_rules]]
station_ae = "US1"
procedure_code = "USABD"
"""


def test_mapping_policy_is_built_from_the_mapping_section(tmp_path: Path) -> None:
    policy = load_text(tmp_path, MAPPING).mapping

    assert policy == MappingPolicy(
        missing_study_uid=MissingKeyPolicy.REJECT,
        missing_requested_procedure_id=MissingKeyPolicy.REJECT,
        missing_sps_id=MissingKeyPolicy.GENERATE,
        uid_root="1.2.826.0.1.3680043.10.543.",
        modality_map={"NMR": "MR", "CAT": "CT"},
        station_rules=(
            StationRule(
                station_ae=("CT1", "CT2"),
                modality="CT",
                sending_facility="RAD",
                station_name="CT room",
            ),
            StationRule(station_ae=("US1",), procedure_code="USABD"),
        ),
        default_station_ae=("CT_DEFAULT",),
        sps_description_component=2,
        new_in_progress=NewInProgress.SCHEDULED,
        long_identifiers=LongIdentifierPolicy.TRUNCATE,
        procedure_modality={"USABD": "US"},
        default_modality="OT",
        fallback_charset="cp1252",
    )
    assert isinstance(policy.missing_study_uid, MissingKeyPolicy)
    assert type(policy.modality_map) is dict  # pickles into the parse workers


def test_mapping_policy_rules_choose_the_station(tmp_path: Path) -> None:
    policy = load_text(tmp_path, MAPPING).mapping

    ct = policy.station_for(
        modality=policy.map_modality("CAT"), sending_facility="RAD", procedure_code="X"
    )
    us = policy.station_for(modality="US", sending_facility="ELSE", procedure_code="USABD")
    other = policy.station_for(modality="MR", sending_facility="RAD", procedure_code="X")

    assert ct == (("CT1", "CT2"), "CT room")
    assert us == (("US1",), None)
    assert other == (("CT_DEFAULT",), None)


def test_a_modality_map_table_replaces_the_default_one(tmp_path: Path) -> None:
    default = load_config(None, {}).mapping.modality_map
    config = load_text(tmp_path, '[mapping.modality_map]\nRX = "CR"\n')

    assert default == MappingPolicy().modality_map
    assert config.mapping.modality_map == {"RX": "CR"}


def test_uid_root_keeps_a_trailing_dot(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[mapping]\nuid_root = "1.2.3."\n')
    assert config.mapping.uid_root == "1.2.3."


def test_fallback_charset_is_set_in_hl7_not_in_mapping(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[mapping]\nfallback_charset = "cp1252"\n')
    assert error.key == "mapping.fallback_charset"


# --- environment overrides -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text", "path", "expected"),
    [
        ("MWL_BROKER_DATABASE_URL", "sqlite:////var/lib/mwl.db", "database.url", None),
        ("MWL_BROKER_DATABASE_ECHO", "yes", "database.echo", True),
        ("MWL_BROKER_DATABASE_POOL_SIZE", "12", "database.pool_size", 12),
        ("MWL_BROKER_HL7_PORT", "3575", "hl7.port", 3575),
        ("MWL_BROKER_HL7_IDLE_TIMEOUT", "2.5", "hl7.idle_timeout", 2.5),
        ("MWL_BROKER_HL7_PARSE_WORKERS", "-1", "hl7.parse_workers", -1),
        ("MWL_BROKER_DICOM_PORT", "104", "dicom.port", 104),
        ("MWL_BROKER_DICOM_AE_TITLE", "MWL_SCP", "dicom.ae_title", None),
        ("MWL_BROKER_HTTP_PORT", "0", "http.port", 0),
        ("MWL_BROKER_HTTP_TOKEN", "s3cret", "http.token", None),
        ("MWL_BROKER_MAPPING_UID_ROOT", "1.2.3.4", "mapping.uid_root", "1.2.3.4."),
        ("MWL_BROKER_MAPPING_MISSING_SPS_ID", "reject", "mapping.missing_sps_id", "reject"),
        (
            "MWL_BROKER_MAPPING_DEFAULT_STATION_AE",
            "CT1, CT2",
            "mapping.default_station_ae",
            ("CT1", "CT2"),
        ),
    ],
)
def test_environment_overrides_a_key(
    tmp_path: Path, variable: str, text: str, path: str, expected: object
) -> None:
    config = load_text(tmp_path, README_EXAMPLE, {variable: text})

    section, key = path.split(".")
    assert getattr(getattr(config, section), key) == (text if expected is None else expected)


def test_environment_applies_without_a_file() -> None:
    config = load_config(None, {"MWL_BROKER_HL7_PORT": "0", "MWL_BROKER_DATABASE_ECHO": "FALSE"})
    assert (config.hl7.port, config.database.echo) == (0, False)


def test_hl7_fallback_charset_override_reaches_the_mapping_policy() -> None:
    config = load_config(None, {"MWL_BROKER_HL7_FALLBACK_CHARSET": "iso8859_15"})
    assert config.mapping.fallback_charset == "iso8859_15"


@pytest.mark.parametrize(
    ("environ", "key", "words"),
    [
        ({"MWL_BROKER_HL7_PORTT": "1"}, "MWL_BROKER_HL7_PORTT", "MWL_BROKER_HL7_PORT"),
        ({"MWL_BROKER_OUTBOUND_PORT": "1"}, "MWL_BROKER_OUTBOUND_PORT", "unknown"),
        ({"MWL_BROKER_MAPPING_MODALITY_MAP": "x"}, "MWL_BROKER_MAPPING_MODALITY_MAP", "unknown"),
        ({"MWL_BROKER_HL7_PORT": "x"}, "MWL_BROKER_HL7_PORT", "integer"),
        ({"MWL_BROKER_HL7_PORT": "70000"}, "MWL_BROKER_HL7_PORT", "65535"),
        ({"MWL_BROKER_DATABASE_ECHO": "maybe"}, "MWL_BROKER_DATABASE_ECHO", "yes/no"),
        ({"MWL_BROKER_HL7_IDLE_TIMEOUT": "soon"}, "MWL_BROKER_HL7_IDLE_TIMEOUT", "number"),
        ({"MWL_BROKER_DICOM_AE_TITLE": "A\\B"}, "MWL_BROKER_DICOM_AE_TITLE", "backslash"),
        ({"MWL_BROKER_MAPPING_UID_ROOT": "1.a"}, "MWL_BROKER_MAPPING_UID_ROOT", "UID"),
    ],
)
def test_environment_errors_name_the_variable(
    environ: dict[str, str], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ)
    assert caught.value.key == key
    assert words in caught.value.message


def test_other_environment_variables_are_ignored() -> None:
    config = load_config(None, {"PATH": "/bin", "MWL_BROKER_CONFIG": "", "MWLBROKER_X": "1"})
    assert config == Config()


# --- errors name the key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[hl7]\nport = "2575"\n', "hl7.port", "expected an integer, found string '2575'"),
        ("[hl7]\nport = 70000\n", "hl7.port", "65535"),
        ("[hl7]\nport = -1\n", "hl7.port", "65535"),
        ("[dicom]\nport = true\n", "dicom.port", "integer"),
        ("[http]\nport = 1.5\n", "http.port", "integer"),
        ('[database]\necho = "yes"\n', "database.echo", "true or false"),
        ("[database]\npool_size = 0\n", "database.pool_size", "at least 1"),
        ('[database]\nurl = "nonsense"\n', "database.url", "SQLAlchemy URL"),
        ('[database]\nurl = "mysql://h/db"\n', "database.url", "postgresql"),
        ("[hl7]\nidle_timeout = 0\n", "hl7.idle_timeout", "greater than 0"),
        ("[hl7]\nparse_workers = -2\n", "hl7.parse_workers", "-1, 0"),
        ('[hl7]\nfallback_charset = "klingon"\n', "hl7.fallback_charset", "codec"),
        ('[hl7]\napplication = "A^B"\n', "hl7.application", "delimiters"),
        ('[hl7]\napplication = ""\n', "hl7.application", "non-empty"),
        ('[dicom]\nae_title = "ABCDEFGHIJKLMNOPQ"\n', "dicom.ae_title", "16"),
        ('[dicom]\nae_title = "    "\n', "dicom.ae_title", "AE title"),
        ('[dicom]\nae_title = ""\n', "dicom.ae_title", "AE title"),
        ('[dicom]\nae_title = "A\\\\B"\n', "dicom.ae_title", "backslash"),
        ("[hl7]\nprot = 1\n", "hl7.prot", "did you mean 'port'"),
        ("[dicom]\nmax_pdu = 1\n", "dicom.max_pdu", "unknown key"),
        ("[database]\nurl = 'sqlite://'\n[smtp]\nhost = 'x'\n", "smtp", "unknown key"),
        ("hl7 = 5\n", "hl7", "table"),
        ('[[outbound]]\nname = "a"\nhost = "h"\n', "outbound[0].port", "required"),
        ('[[outbound]]\nname = "a"\nhost = "h"\nport = 0\n', "outbound[0].port", "1 to 65535"),
        ('[outbound]\nname = "a"\n', "outbound", "array of tables"),
        (
            '[[outbound]]\nname = "a"\nhost = "h"\nport = 1\n'
            '[[outbound]]\nname = "a"\nhost = "h"\nport = 2\n',
            "outbound[1].name",
            "duplicate",
        ),
        (
            '[[outbound]]\nname = "a"\nhost = "h"\nport = 1\nevents = ["XX"]\n',
            "outbound[0].events",
            "IP, CM, DC",
        ),
        (
            '[[outbound]]\nname = "a"\nhost = "h"\nport = 1\nmessage_type = "ORM"\n',
            "outbound[0].message_type",
            "ORM^O01",
        ),
        (
            '[[outbound]]\nname = "a"\nhost = "h"\nport = 1\nmessage_type = "ADT^A08"\n',
            "outbound[0].message_type",
            "OMG^O19",
        ),
        (
            '[[outbound]]\nname = "a"\nhost = "h"\nport = 1\nmessage_type = "OMI^O23"\n',
            "outbound[0].version",
            "OMI^O23 cannot be built in HL7 version '2.3.1'",
        ),
        (
            '[[outbound]]\nname = "a"\nhost = "h"\nport = 1\nversion = "2.9"\n',
            "outbound[0].version",
            "hl7apy has no such version",
        ),
        (
            '[[outbound]]\nname = "a"\nhost = "h"\nport = 1\nack_timeout = "30"\n',
            "outbound[0].ack_timeout",
            "number",
        ),
        ('[[mpps_forward]]\nname = "a"\nhost = "h"\nport = 1\n', "mpps_forward[0].ae_title", ""),
        ('[mapping]\nmissing_sps_id = "ignore"\n', "mapping.missing_sps_id", "'generate'"),
        ('[mapping]\nnew_in_progress = "started"\n', "mapping.new_in_progress", "'STARTED'"),
        ("[mapping]\nsps_description_component = 3\n", "mapping.sps_description_component", "5"),
        ('[mapping]\nuid_root = "1.02.3"\n', "mapping.uid_root", "UID prefix"),
        ('[mapping]\nuid_root = "1.2.x"\n', "mapping.uid_root", "UID prefix"),
        (f'[mapping]\nuid_root = "1.{"2" * 40}"\n', "mapping.uid_root", "40"),
        ("[mapping]\ndefault_station_ae = []\n", "mapping.default_station_ae", "one or more"),
        ("[mapping]\ndefault_station_ae = [1]\n", "mapping.default_station_ae", "array of"),
        ("[mapping.modality_map]\nNMR = 1\n", "mapping.modality_map.NMR", "string"),
        ('[mapping.modality_map]\nNMR = "mr"\n', "mapping.modality_map", "code strings"),
        ('[mapping.procedure_modality]\nX = "c t"\n', "mapping.procedure_modality", "code"),
        ('[mapping]\ndefault_modality = "ct"\n', "mapping.default_modality", "'CT'"),
        ('[mapping]\nlong_identifiers = "cut"\n', "mapping.long_identifiers", "'shorten'"),
        ('[[mapping.station_rules]]\nmodality = "CT"\n', "mapping.station_rules[0].station_ae", ""),
        (
            '[[mapping.station_rules]]\nstation_ae = "CT1"\nroom = "1"\n',
            "mapping.station_rules[0].room",
            "unknown key",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    error = error_of(tmp_path, text)

    assert error.key == key
    assert words in error.message
    assert str(error) == f"{key}: {error.message}"


def test_type_error_says_what_was_expected_and_found(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[hl7]\nmax_connections = [1, 2]\n")

    assert error.key == "hl7.max_connections"
    assert error.message == "expected an integer, found array [1, 2]"


def test_integer_is_accepted_for_a_float(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[hl7]\nidle_timeout = 60\n")
    assert config.hl7.idle_timeout == 60.0
    assert isinstance(config.hl7.idle_timeout, float)


def test_bad_toml_reports_the_line(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[hl7]\nport = 2575\nhost = \n")

    assert error.key == str(tmp_path / "mwl-broker.toml")
    assert "invalid TOML" in error.message
    assert "line 3" in error.message


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.key == str(path)
    assert "not found" in caught.value.message


def test_missing_file_named_by_the_environment_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"MWL_BROKER_CONFIG": str(path)})
    assert caught.value.key == str(path)


@pytest.mark.parametrize(
    ("workers", "cpus", "expected"),
    [(0, 16, 4), (0, 4, 2), (0, 2, 1), (0, 1, 1), (0, None, 1), (-1, 8, 0), (6, 2, 6)],
)
def test_parse_process_count(workers: int, cpus: int | None, expected: int) -> None:
    assert HL7Config(parse_workers=workers).parse_process_count(cpus) == expected


def test_token_stays_out_of_repr() -> None:
    assert "s3cret" not in repr(HttpConfig(token="s3cret"))
