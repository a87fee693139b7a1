"""HL7 v2 ER7 bytes → :class:`Message` with lazily parsed, unescaped fields.

Contract (used by ``mwl.mapping``; keep names and signatures):

- ``decode(raw: bytes, *, fallback_charset: str = "latin-1") -> Message`` raises nothing but
  :class:`hl7.errors.HL7Error` subclasses (``MessageError``). ``default_charset`` is accepted
  as an alias of ``fallback_charset`` (name used by the first interface stub).
- ``read_header(raw: bytes) -> Header | None``: best effort, never raises (addresses the ACK of
  a message that could not be decoded, e.g. the first 4 KiB of an oversize frame).
- ``Message``: ``header``, ``segments``, ``first(name)``, ``all(name)``, ``charset``
  (:class:`hl7.charset.Decoded`), ``text``.
- ``Segment``: ``name``, ``sequence`` (1-based among segments of that name), ``position``
  (0-based index), ``raw(n)`` (escaped field text, MSH counted like the standard: MSH-1 is the
  field separator), ``field(n)`` → :class:`Field`, ``value(n, comp=1, sub=1, rep=1)``.
- ``Field``: ``repetitions`` (repetition → component → sub-component, unescaped), ``get``,
  ``components``, ``is_empty``, ``is_null``; ``get`` returns ``'""'`` (:data:`NULL`) for an
  explicit HL7 null (standards.md §1.3: the mapper writes a zero-length DICOM attribute).

Framing: a UTF-8 BOM and surrounding whitespace / MLLP bytes (VT, FS) are stripped; segments
end with CR, LF or CRLF (standards.md §2.5 "Real feeds"); a line that does not start like a
segment (``[A-Z][A-Z0-9]{2}`` then the field separator or end of line) is a line break inside
a field and is joined to the previous segment with ``"\\n"``. MSH-18 is read from the raw bytes
before decoding (standards.md §5); see :mod:`hl7.charset` for the fallback rules.

Fields are parsed only when asked for, with hl7apy's ``parse_field`` (TOLERANT) per repetition,
memoised on (text, field name, version, separators, codec): hl7apy costs ~0.1-0.2 ms per field
(pitfalls.md) and real feeds repeat values. Z-segments, names or versions hl7apy does not know
and any hl7apy exception use plain splitting, which gives the same tuples. Two normalisations
apply on both paths: a whitespace-only (sub-)component is empty (hl7apy drops it), trailing
empty sub-components, components and repetitions are removed. Typed leaves (DTM, NM, SI…) keep
the sender's text: hl7apy rewrites them (SI "01" → "1").

Escapes (standards.md §1.3): ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and ``\\P\\`` with a v2.7
truncation character) → the delimiter; ``\\.br\\`` → CR LF (what DICOM LT/ST/UT use for a line
break); ``\\Xhh…\\`` → those bytes decoded with the message codec, or UTF-8, or Latin-1 when it
cannot (so ``\\X0D\\\\X0A\\`` is CR LF); ``\\H\\`` and ``\\N\\`` (highlighting) are dropped;
anything else (``\\.sp\\``, ``\\Cxxyy\\``, ``\\Zxx\\``…) is kept literally.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import ClassVar

from hl7.charset import UTF8_BOM, Decoded, decode_text
from hl7.errors import ErrorCode, ErrorLocation, HL7Error, MessageError
from hl7.escape import Delimiters
from hl7.fields import Reps, library_version, parse

logger = logging.getLogger(__name__)

NULL = '""'
"""HL7 explicit null (standards.md §1.3)."""

_FRAME_BYTES = b"\x0b\x1c\x00\r\n\t "
_FRAME_CHARS = "\x0b\x1c\x00\r\n\t \ufeff"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
_VERSION = re.compile(r"\d+(?:\.\d+)*")
_CACHE_SIZE = 8192


@dataclass(frozen=True, slots=True)
class Header:
    """The MSH fields the broker routes and acknowledges on.

    MSH-3..6 and MSH-10 are the escaped text as sent (the ACK copies them back unchanged);
    ``timestamp``, ``processing_id`` and ``version`` are the first components of MSH-7, -11
    and -12; ``message_type``/``trigger_event``/``message_structure`` are MSH-9.1/.2/.3;
    ``charset`` is the first repetition of MSH-18. Codes are stripped of blanks.
    """

    field_separator: str = "|"
    encoding_characters: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    timestamp: str = ""
    message_type: str = ""
    trigger_event: str = ""
    message_structure: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    accept_ack_type: str = ""
    application_ack_type: str = ""
    charset: str = ""

    @property
    def version_tuple(self) -> tuple[int, ...]:
        """MSH-12.1 as numbers, e.g. ``(2, 5, 0)``; ``()`` if unparsable."""
        if not _VERSION.fullmatch(self.version):
            return ()
        return tuple(int(part) for part in self.version.split("."))

    @property
    def sender(self) -> tuple[str, str]:
        """(MSH-3, MSH-4)."""
        return self.sending_application, self.sending_facility

    @property
    def delimiters(self) -> Delimiters:
        return Delimiters(self.field_separator, *self.encoding_characters)


@dataclass(frozen=True, slots=True)
class Field:
    """One field: repetition → component → sub-component, unescaped (see module docstring)."""

    repetitions: Reps = ()
    NULL: ClassVar[str] = NULL

    def get(self, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        """The sub-component text, ``""`` when absent, ``'""'`` for an explicit null."""
        components = self._repetition(rep)
        if not 1 <= comp <= len(components):
            return ""
        subs = components[comp - 1]
        return subs[sub - 1] if 1 <= sub <= len(subs) else ""

    def components(self, rep: int = 1) -> tuple[str, ...]:
        """First sub-component of each component of repetition ``rep``."""
        return tuple(subs[0] if subs else "" for subs in self._repetition(rep))

    def _repetition(self, rep: int) -> tuple[tuple[str, ...], ...]:
        return self.repetitions[rep - 1] if 1 <= rep <= len(self.repetitions) else ()

    @property
    def is_empty(self) -> bool:
        return not self.repetitions

    @property
    def is_null(self) -> bool:
        return self.repetitions == (((NULL,),),)


@dataclass(frozen=True, slots=True)
class _Context:
    delimiters: Delimiters
    library: str | None
    codec: str


class Segment:
    """One segment; fields are split on construction and parsed on demand."""

    __slots__ = ("_context", "_fields", "name", "position", "sequence", "text")

    def __init__(self, text: str, sequence: int, position: int, context: _Context) -> None:
        self.text = text
        self.name = text[:3]
        self.sequence = sequence
        self.position = position
        self._context = context
        self._fields = text.split(context.delimiters.field)

    def raw(self, n: int) -> str:
        """Escaped text of field ``n``; ``""`` when absent. MSH-1 is the field separator."""
        if self.name == "MSH":
            if n == 1:
                return self._context.delimiters.field
            n -= 1
        return self._fields[n] if 1 <= n < len(self._fields) else ""

    def field(self, n: int) -> Field:
        """Field ``n`` parsed (hl7apy, memoised) and unescaped."""
        raw = self.raw(n)
        if self.name == "MSH" and n in (1, 2):
            return Field((((raw,),),)) if raw else Field()
        ctx = self._context
        return Field(parse(raw, f"{self.name}_{n}", ctx.library, ctx.delimiters, ctx.codec))

    def value(self, n: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        return self.field(n).get(rep, comp, sub)

    def __repr__(self) -> str:
        return f"<Segment {self.name} #{self.sequence} at {self.position}>"


class Message:
    """A decoded message: header, segments and the charset decision."""

    __slots__ = ("_index", "charset", "header", "segments")

    def __init__(self, header: Header, segments: tuple[Segment, ...], charset: Decoded) -> None:
        self.header = header
        self.segments = segments
        self.charset = charset
        index: defaultdict[str, list[Segment]] = defaultdict(list)
        for segment in segments:
            index[segment.name].append(segment)
        self._index = {name: tuple(found) for name, found in index.items()}

    @property
    def text(self) -> str:
        """The decoded message, segments joined by CR."""
        return "\r".join(segment.text for segment in self.segments)

    def first(self, name: str) -> Segment | None:
        found = self._index.get(name, ())
        return found[0] if found else None

    def all(self, name: str) -> tuple[Segment, ...]:
        return self._index.get(name, ())

    def __repr__(self) -> str:
        h = self.header
        return f"<Message {h.message_type}^{h.trigger_event} {h.control_id!r} {h.version}>"


# --- decoding --------------------------------------------------------------------------------


def decode(
    raw: bytes, *, fallback_charset: str = "latin-1", default_charset: str | None = None
) -> Message:
    """Decode one ER7 message; only :class:`HL7Error` subclasses escape (standards.md §2.4)."""
    try:
        return _decode(raw, default_charset or fallback_charset)
    except HL7Error:
        raise
    except Exception as exc:
        logger.warning("message could not be decoded: %s", type(exc).__name__)
        logger.debug("decode failure", exc_info=True)
        error = ErrorCode.INTERNAL_ERROR
        raise MessageError.single(error, "message could not be decoded") from exc


def _decode(raw: bytes, fallback: str) -> Message:
    body = raw.strip(_FRAME_BYTES)
    head = body.removeprefix(UTF8_BOM).lstrip(_FRAME_BYTES)
    if not head.startswith(b"MSH"):
        raise _missing_msh()
    raw_delimiters, parts = _split_msh(_first_line(head).decode("latin-1"))
    declared = _msh_field(parts, 18).split(raw_delimiters.repetition)[0].strip()
    decoded = decode_text(body, declared, fallback)
    texts = _segment_texts(decoded.text.strip(_FRAME_CHARS))
    delimiters, msh = _split_msh(texts[0])
    header = _header(msh, delimiters)
    context = _Context(delimiters, library_version(header.version), decoded.codec)
    message = Message(header, _segments(texts, context), decoded)
    _log_decoded(message)
    return message


def _missing_msh() -> HL7Error:
    where = ErrorLocation("MSH")
    return MessageError.single(ErrorCode.SEGMENT_SEQUENCE, "MSH must be the first segment", where)


def _first_line(data: bytes) -> bytes:
    return re.split(rb"\r|\n", data, maxsplit=1)[0]


def _split_msh(line: str) -> tuple[Delimiters, list[str]]:
    """Delimiters from MSH-1/MSH-2 and the split MSH (``parts[n - 1]`` is MSH-n, n ≥ 2)."""
    if not line.startswith("MSH") or len(line) < 4:
        raise _missing_msh()
    parts = line.split(line[3])
    delimiters = Delimiters.from_msh(line[3], parts[1])
    return delimiters, parts


def _msh_field(parts: list[str], n: int) -> str:
    return parts[n - 1] if n - 1 < len(parts) else ""


def _header(parts: list[str], d: Delimiters) -> Header:
    def comp(n: int, index: int = 0) -> str:
        components = _msh_field(parts, n).split(d.component)
        return components[index].strip() if index < len(components) else ""

    return Header(
        field_separator=d.field,
        encoding_characters=d.encoding_characters,
        sending_application=_msh_field(parts, 3),
        sending_facility=_msh_field(parts, 4),
        receiving_application=_msh_field(parts, 5),
        receiving_facility=_msh_field(parts, 6),
        timestamp=comp(7),
        message_type=comp(9),
        trigger_event=comp(9, 1),
        message_structure=comp(9, 2),
        control_id=_msh_field(parts, 10).strip(),
        processing_id=comp(11),
        version=comp(12),
        accept_ack_type=_msh_field(parts, 15).strip(),
        application_ack_type=_msh_field(parts, 16).strip(),
        charset=_msh_field(parts, 18).split(d.repetition)[0].strip(),
    )


def _segment_texts(text: str) -> list[str]:
    """Segments split on CR/LF/CRLF; a line that is no segment start continues the previous."""
    if not text.startswith("MSH") or len(text) < 4:
        raise _missing_msh()
    separator = text[3]
    texts: list[str] = []
    for line in _LINE_BREAK.split(text):
        if _SEGMENT_NAME.match(line) and (len(line) == 3 or line[3] == separator):
            texts.append(line)
        elif line:
            texts[-1] += "\n" + line
    return texts


def _segments(texts: list[str], context: _Context) -> tuple[Segment, ...]:
    seen: defaultdict[str, int] = defaultdict(int)
    segments = []
    for position, text in enumerate(texts):
        seen[text[:3]] += 1
        segments.append(Segment(text, seen[text[:3]], position, context))
    return tuple(segments)


def _log_decoded(message: Message) -> None:
    h, cs = message.header, message.charset
    if cs.mismatch:
        logger.info("control id %r: MSH-18 %r decoded as %s", h.control_id, cs.declared, cs.codec)
    logger.debug(
        "decoded %s^%s control id %r, %d segments",
        h.message_type,
        h.trigger_event,
        h.control_id,
        len(message.segments),
    )


def read_header(raw: bytes) -> Header | None:
    """Best-effort MSH of bytes that may be truncated or undecodable; never raises."""
    try:
        body = raw.strip(_FRAME_BYTES).removeprefix(UTF8_BOM)
        start = body.find(b"MSH")
        if start < 0:
            return None
        line = _first_line(body[start:])
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("latin-1")
        delimiters, parts = _split_msh(text)
        return _header(parts, delimiters)
    except Exception:  # an ACK address is optional; a broken MSH just means "no header"
        logger.debug("no readable MSH", exc_info=True)
        return None
