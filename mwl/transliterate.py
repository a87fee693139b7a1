"""Text for answers in ISO_IR 100 (Latin-1) to devices that cannot take UTF-8.

The SCP may answer in another character set than the request's (standards.md §3.3, PS3.4
K.4.1.1.3); :class:`mwl.policy.AnswerCharset` ``LATIN1`` answers in ISO_IR 100 (standards.md §5
row 8859/1). Stored text is Unicode, so characters outside Latin-1 are transliterated: Unicode
NFKD splits a letter from its accents and the accents are dropped until Latin-1 can encode the
rest (``ő`` → ``o``, ``ǘ`` → ``ü``, ``ﬁ`` → ``fi``); letters with no decomposition come from a
short table (``ł`` → ``l``, ``œ`` → ``oe``); anything else becomes ``?``.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

_NO_DECOMPOSITION = {
    "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ħ": "h", "Ħ": "H", "ı": "i", "ŧ": "t", "Ŧ": "T",
    "œ": "oe", "Œ": "OE", "ŋ": "n", "Ŋ": "N", "ĸ": "k", "ƒ": "f", "ɨ": "i", "ʉ": "u",
    "‘": "'", "’": "'", "‚": ",", "‛": "'", "“": '"', "”": '"', "„": '"', "‐": "-", "‑": "-",
    "‒": "-", "–": "-", "—": "-", "−": "-", "•": "*", "€": "EUR",
}  # fmt: skip


def to_latin1(value: str) -> str:
    """``value`` with every character Latin-1 can encode kept and the others transliterated.

    >>> to_latin1("Łukasz Wałęsa-Gómez")
    'Lukasz Walesa-Gómez'
    """
    if value.isascii():
        return value
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "".join(_char_to_latin1(char) for char in value)
    return value


@lru_cache(maxsize=4096)
def _char_to_latin1(char: str) -> str:
    """One character: kept, decomposed (dropping accents from the last), tabled, or ``?``."""
    if ord(char) < 0x100:
        return char
    if char in _NO_DECOMPOSITION:
        return _NO_DECOMPOSITION[char]
    decomposed = unicodedata.normalize("NFKD", char)
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    marks = [c for c in decomposed if unicodedata.combining(c)]
    for kept in range(len(marks), -1, -1):
        candidate = unicodedata.normalize("NFC", base + "".join(marks[:kept]))
        if candidate and _is_latin1(candidate):
            return candidate
    return "?"


def _is_latin1(text: str) -> bool:
    return all(ord(char) < 0x100 for char in text)
