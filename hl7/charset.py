"""HL7 Table 0211 character sets (MSH-18) and the decoding fallback for real feeds.

:func:`lookup` maps an MSH-18 term to a Python codec and the DICOM Specific Character Set
(0008,0005) term (standards.md §5). :func:`decode_text` turns the bytes of a message into
text and never raises. Real feeds mis-declare their character set (standards.md §5 notes,
samples 03, 10, 19), so decoding follows this documented fallback, first rule that applies:

1. **UTF-8 BOM** (``EF BB BF``): strip it and decode UTF-8. ``mismatch`` is True when a
   non-UTF-8 set was declared (or the value is unknown). Bytes that are not UTF-8 after
   all → rule 5 with ``mismatch`` True.
2. **Unknown MSH-18 value** (not in Table 0211 nor an alias below): handled as undeclared
   (rule 4), ``mismatch`` True.
3. **Declared set**:

   a. UTF-8 (``UNICODE UTF-8``, ``UNICODE``): strict UTF-8; failing that, the fallback
      codec with ``mismatch`` True.
   b. single-byte sets (``8859/n``, ``ASCII``, ``ISO IR6``): 7-bit ASCII bytes
      decode as declared. Non-ASCII bytes that are valid strict UTF-8 decode as UTF-8 with
      ``mismatch`` True (sample 03 declares 8859/1 and carries a UTF-8 en dash: Latin-1 text
      that happens to be valid UTF-8 needs pairs like "Ã©", which real names do not hold).
      Otherwise the declared codec; for ``ASCII`` / ``ISO IR6`` the fallback codec, with
      ``mismatch`` True. Bytes a set leaves undefined become U+FFFD and set ``mismatch``.
   c. Japanese, Korean and Chinese sets (ISO IR14, ISO IR87, ISO IR159, KS X 1001,
      GB 18030-2000): the declared codec if the bytes decode strictly (half-width katakana
      pairs can look like UTF-8, so the declaration comes first); else strict UTF-8; else
      the fallback codec; ``mismatch`` True for both.

4. **Undeclared** (MSH-18 empty): 7-bit ASCII → ``ascii``; valid strict UTF-8 → ``utf-8``
   (sample 19); anything else → the fallback codec (sample 10: Latin-1 without MSH-18).
   ``mismatch`` stays False: there is nothing to contradict; ``declared == ""`` together
   with a non-ASCII ``codec`` tells the caller that the set was guessed.
5. The fallback codec decodes with ``errors="replace"``; an unknown fallback codec name is
   replaced by ``latin-1``, which decodes any byte.

Accepted aliases (not Table 0211, seen in feeds): ``UTF-8``/``UTF8`` → ``UNICODE UTF-8``,
``ISO-8859-n``/``ISO8859-n``/``8859-n`` → ``8859/n``. Matching ignores case and repeated
blanks.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

logger = logging.getLogger(__name__)

UTF8_BOM = codecs.BOM_UTF8
"""The UTF-8 byte order mark some senders prepend (standards.md §2.5 "Real feeds")."""

DEFAULT_FALLBACK = "latin-1"


@dataclass(frozen=True, slots=True)
class Charset:
    """One row of standards.md §5: HL7 Table 0211 term → Python codec → DICOM term.

    ``dicom`` is the (0008,0005) value; ``""`` means "omit the attribute" (default
    repertoire). ``multibyte`` (the declaration is tried first) selects rule 3c of the module
    docstring.
    """

    hl7: str
    codec: str
    dicom: str
    multibyte: bool = False

    @property
    def is_utf8(self) -> bool:
        return self.codec == "utf-8"


_ROWS = (
    Charset("ASCII", "ascii", ""),
    Charset("ISO IR6", "ascii", ""),
    Charset("8859/1", "iso8859_1", "ISO_IR 100"),
    Charset("8859/2", "iso8859_2", "ISO_IR 101"),
    Charset("8859/3", "iso8859_3", "ISO_IR 109"),
    Charset("8859/4", "iso8859_4", "ISO_IR 110"),
    Charset("8859/5", "iso8859_5", "ISO_IR 144"),
    Charset("8859/6", "iso8859_6", "ISO_IR 127"),
    Charset("8859/7", "iso8859_7", "ISO_IR 126"),
    Charset("8859/8", "iso8859_8", "ISO_IR 138"),
    Charset("8859/9", "iso8859_9", "ISO_IR 148"),
    # DICOM's term is ISO_IR 203, which pydicom cannot encode: the mapper transcodes to UTF-8.
    Charset("8859/15", "iso8859_15", "ISO_IR 192"),
    Charset("UNICODE UTF-8", "utf-8", "ISO_IR 192"),
    Charset("UNICODE", "utf-8", "ISO_IR 192"),
    Charset("ISO IR14", "shift_jis", "ISO_IR 13", multibyte=True),
    Charset("ISO IR87", "iso2022_jp", "ISO 2022 IR 87", multibyte=True),
    Charset("ISO IR159", "iso2022_jp_2", "ISO 2022 IR 159", multibyte=True),
    Charset("KS X 1001", "euc_kr", "ISO 2022 IR 149", multibyte=True),
    Charset("GB 18030-2000", "gb18030", "GB18030", multibyte=True),
)

CHARSETS: Mapping[str, Charset] = MappingProxyType({row.hl7: row for row in _ROWS})
"""HL7 Table 0211 terms as spelled in the table (standards.md §5)."""

ASCII = CHARSETS["ASCII"]

_ALIASES = {"UTF-8": "UNICODE UTF-8", "UTF8": "UNICODE UTF-8"}
_ISO8859 = re.compile(r"^(?:ISO[-_ ]?)?8859[-_/](\d{1,2})$")
_BLANKS = re.compile(r"\s+")
_INDEX = {row.hl7: row for row in _ROWS}


@dataclass(frozen=True, slots=True)
class Decoded:
    """What :func:`decode_text` produced and how (rules in the module docstring)."""

    text: str
    codec: str
    declared: str
    mismatch: bool


def lookup(term: str) -> Charset | None:
    """The Table 0211 row for an MSH-18 value, ``ASCII`` for an empty one, None if unknown."""
    key = _BLANKS.sub(" ", term.strip()).upper()
    if not key:
        return ASCII
    key = _ALIASES.get(key, key)
    match = _ISO8859.match(key)
    if match:
        key = f"8859/{int(match.group(1))}"
    return _INDEX.get(key)


def decode_text(raw: bytes, declared: str, fallback: str = DEFAULT_FALLBACK) -> Decoded:
    """Decode message bytes following the fallback rules of the module docstring; never raises."""
    fallback = _usable_codec(fallback)
    declared = declared.strip()
    charset = lookup(declared)
    if raw.startswith(UTF8_BOM):
        return _decode_bom(raw[len(UTF8_BOM) :], declared, charset, fallback)
    if charset is None:
        return _replace(_decode_undeclared(raw, declared, fallback), mismatch=True)
    if not declared:
        return _decode_undeclared(raw, declared, fallback)
    if charset.is_utf8:
        return _strict(raw, "utf-8", declared) or _loose(raw, fallback, declared, mismatch=True)
    if charset.multibyte:
        return _decode_multibyte(raw, charset, declared, fallback)
    return _decode_single_byte(raw, charset, declared, fallback)


def _decode_bom(body: bytes, declared: str, charset: Charset | None, fallback: str) -> Decoded:
    """Rule 1: a BOM means UTF-8 whatever MSH-18 says."""
    mismatch = charset is None or (bool(declared) and not charset.is_utf8)
    strict = _strict(body, "utf-8", declared, mismatch=mismatch)
    return strict or _loose(body, fallback, declared, mismatch=True)


def _decode_undeclared(raw: bytes, declared: str, fallback: str) -> Decoded:
    """Rule 4: ASCII, else UTF-8, else the fallback codec."""
    if raw.isascii():
        return Decoded(raw.decode("ascii"), "ascii", declared, False)
    return _strict(raw, "utf-8", declared) or _loose(raw, fallback, declared, mismatch=False)


def _decode_single_byte(raw: bytes, charset: Charset, declared: str, fallback: str) -> Decoded:
    """Rule 3b: trust the declaration unless the bytes are plainly UTF-8."""
    if raw.isascii():
        return Decoded(raw.decode("ascii"), charset.codec, declared, False)
    utf8 = _strict(raw, "utf-8", declared, mismatch=True)
    if utf8 is not None:
        return utf8
    if charset.codec == "ascii":
        return _loose(raw, fallback, declared, mismatch=True)
    return _loose(raw, charset.codec, declared, mismatch=False)


def _decode_multibyte(raw: bytes, charset: Charset, declared: str, fallback: str) -> Decoded:
    """Rule 3c: the declared codec, else UTF-8, else the fallback codec."""
    return (
        _strict(raw, charset.codec, declared)
        or _strict(raw, "utf-8", declared, mismatch=True)
        or _loose(raw, fallback, declared, mismatch=True)
    )


def _strict(raw: bytes, codec: str, declared: str, *, mismatch: bool = False) -> Decoded | None:
    try:
        return Decoded(raw.decode(codec), codec, declared, mismatch)
    except UnicodeDecodeError:
        return None


def _loose(raw: bytes, codec: str, declared: str, *, mismatch: bool) -> Decoded:
    """Decode with U+FFFD for undecodable bytes; a replacement counts as a mismatch."""
    strict = _strict(raw, codec, declared, mismatch=mismatch)
    return strict or Decoded(raw.decode(codec, errors="replace"), codec, declared, True)


def _replace(decoded: Decoded, *, mismatch: bool) -> Decoded:
    return Decoded(decoded.text, decoded.codec, decoded.declared, mismatch)


def _usable_codec(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError:
        logger.warning("unknown fallback codec %r, using %s", name, DEFAULT_FALLBACK)
        return DEFAULT_FALLBACK
    return name


def python_codec(term: str) -> str:
    """Python codec for an MSH-18 value (``ascii`` when empty or unknown), e.g. for the ACK."""
    charset = lookup(term)
    return charset.codec if charset else ASCII.codec


def dicom_term(term: str) -> str:
    """DICOM (0008,0005) term for an MSH-18 value; ``""`` means omit (or unknown)."""
    charset = lookup(term)
    return charset.dicom if charset else ""
