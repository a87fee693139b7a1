"""Person Name (PN) values as the worklist matches them.

PS3.4 C.2.2.2.1.1 leaves it to the SCP whether PN matching is case-sensitive and whether it
ignores accents ("… may be performed in a case-insensitive manner …"); modality operators type
``muller`` for ``Müller^Hans``, so the broker matches both ways. The store keeps a folded copy
of every name it matches on (``patients.name_folded`` …) and the C-FIND query folds the
requested value the same way, so one indexed equality or prefix comparison answers the match.
"""

from __future__ import annotations

import unicodedata

_DIACRITICAL_MARKS = (
    (0x0300, 0x036F),  # Combining Diacritical Marks
    (0x1AB0, 0x1AFF),  # … Extended
    (0x1DC0, 0x1DFF),  # … Supplement
    (0x20D0, 0x20FF),  # … for Symbols
    (0xFE20, 0xFE2F),  # Combining Half Marks
)


def fold_person_name(value: str) -> str:
    """The case- and accent-insensitive form of a PN value (PS3.4 C.2.2.2.1.1).

    Unicode NFKD splits accented letters into base letter + combining mark and maps
    compatibility forms (full-width Latin, ligatures) to plain letters; the diacritical marks
    are dropped; ``casefold`` then ``upper`` gives one spelling for every case variant
    (``ß`` → ``SS``). Only the diacritical-mark blocks are dropped, not every combining mark:
    the kana voicing marks (``だ`` = ``た`` + U+3099) and the marks of Indic scripts carry
    meaning, and NFC puts those letters back together. The delimiters ``^`` and ``=`` and the
    wildcards ``*`` and ``?`` are kept, so a folded query matches a folded stored value.

    >>> fold_person_name("Müller^Hans")
    'MULLER^HANS'
    >>> fold_person_name("straße^józef*")
    'STRASSE^JOZEF*'
    """
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    bare = "".join(char for char in decomposed if not _is_diacritical_mark(char))
    return unicodedata.normalize("NFC", bare).upper()


def _is_diacritical_mark(char: str) -> bool:
    code = ord(char)
    return any(first <= code <= last for first, last in _DIACRITICAL_MARKS)
