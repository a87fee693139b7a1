"""HL7 delimiters and escape sequences (standards.md §1.3 "HL7 escapes").

``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and ``\\P\\`` with a v2.7 truncation character) → the
delimiter; ``\\.br\\`` → CR LF (what DICOM LT/ST/UT use for a line break); ``\\Xhh…\\`` →
those bytes decoded with the message codec, or UTF-8, or Latin-1 when it cannot;
``\\H\\`` and ``\\N\\`` (highlighting) are dropped; anything else is kept literally.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import NamedTuple

from hl7.errors import ErrorCode, ErrorLocation, MessageError


class Delimiters(NamedTuple):
    """MSH-1 and the MSH-2 encoding characters (``truncation`` only from v2.7, else "")."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @classmethod
    def from_msh(cls, field_separator: str, encoding_characters: str) -> Delimiters:
        """Validate MSH-1/MSH-2 (4 or 5 distinct, non-alphanumeric characters)."""
        chars = field_separator + encoding_characters
        bad = len(field_separator) != 1 or len(encoding_characters) not in (4, 5)
        if bad or len(set(chars)) != len(chars) or any(c.isalnum() or c.isspace() for c in chars):
            where = ErrorLocation("MSH", field=2 if len(field_separator) == 1 else 1)
            raise MessageError.single(ErrorCode.DATA_TYPE, "invalid MSH-1/MSH-2 separators", where)
        return cls(field_separator, *encoding_characters)

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


def unescape(
    text: str,
    encoding_characters: str = "^~\\&",
    *,
    field_separator: str = "|",
    codec: str = "ascii",
) -> str:
    """Resolve HL7 escape sequences (rules in the module docstring)."""
    return unescape_with(text, Delimiters(field_separator, *encoding_characters), codec)


def unescape_with(text: str, d: Delimiters, codec: str) -> str:
    if d.escape not in text:
        return text
    table = _escape_table(d)

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in table:
            return table[code]
        text = _hex_text(code[1:], codec) if code[:1] == "X" else None
        return match.group(0) if text is None else text

    return _escape_pattern(d.escape).sub(replace, text)


@functools.lru_cache(maxsize=16)
def _escape_table(d: Delimiters) -> dict[str, str]:
    table = {
        "F": d.field,
        "S": d.component,
        "T": d.subcomponent,
        "R": d.repetition,
        "E": d.escape,
        "H": "",
        "N": "",
        ".br": "\r\n",
    }
    if d.truncation:
        table["P"] = d.truncation
    return table


@functools.lru_cache(maxsize=16)
def _escape_pattern(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(f"{e}([^{e}]*){e}")


def _hex_text(digits: str, codec: str) -> str | None:
    """``\\Xhh…\\`` bytes in the message codec (UTF-8, then Latin-1 if that fails)."""
    if not digits or not digits.isascii():
        return None
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        return None
    for name in (codec, "utf-8"):
        try:
            return data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def escape(text: str, encoding_characters: str = "^~\\&", *, field_separator: str = "|") -> str:
    """Escape delimiters and line breaks for ER7 (CR LF → ``\\.br\\``, lone CR/LF → ``\\Xhh\\``)."""
    d = Delimiters(field_separator, *encoding_characters)
    return _escaper(d)(text)


@functools.lru_cache(maxsize=16)
def _escaper(d: Delimiters) -> Callable[[str], str]:
    e = d.escape
    table = {
        d.escape: f"{e}E{e}",
        d.field: f"{e}F{e}",
        d.component: f"{e}S{e}",
        d.subcomponent: f"{e}T{e}",
        d.repetition: f"{e}R{e}",
        "\r\n": f"{e}.br{e}",
        "\r": f"{e}X0D{e}",
        "\n": f"{e}X0A{e}",
    }
    if d.truncation:
        table[d.truncation] = f"{e}P{e}"
    pattern = re.compile("|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)))
    return functools.partial(pattern.sub, lambda m: table[m.group(0)])
