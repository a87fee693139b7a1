"""Writing an HL7 v2 segment as hl7apy writes it, without building it through hl7apy.

hl7apy writes a field it is given as ER7 text (``Segment(name, version=…,
validation_level=TOLERANT)``, one assignment per field, ``to_er7()``) mostly as a plain join, but
not quite (measured against hl7apy 1.3.5):

- it drops a blank (whitespace-only) component or sub-component of a composite type and the
  empty ones it leaves at the end (``Doe^ ^John`` → ``Doe^^John``), but keeps a blank primitive
  value and the separators up to a field it writes empty;
- it escapes the delimiters in each leaf value: ``|``, ``~``, from v2.7 ``#`` (as ``\\L\\``), and
  a backslash that is not part of an escape sequence it knows (``\\X41\\`` →
  ``\\E\\X41\\E\\``); already escaped text comes out unchanged.

What it keeps of a field depends on the segment, the field, the version and the *layout* of the
text only (where the separators, values and blank values are), as :mod:`hl7.fields` finds for
parsing: :func:`segment_er7` has hl7apy write each layout once per field and version with a
numbered marker in each leaf, which gives a :meth:`str.format` template, and fills it with the
leaves; a leaf holding a delimiter or a backslash is escaped by hl7apy's own ST type. A new
layout costs one hl7apy field build (~1 ms); a known one a few microseconds. The caches are
bounded and hold only what hl7apy's tables determine, so every process and thread may share
them.

:func:`assign` is the per-field hl7apy build itself, for a caller's reference build
(:mod:`mpps.report` compares the two once per message type and version).
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any, NamedTuple

import hl7apy
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Segment as Hl7apySegment

Fields = dict[int, str]
"""Field number → ER7 text (already escaped) of one segment."""


_LEAF = re.compile("[^^&]+")
"""A run of text between component and sub-component separators: one leaf value."""


def segment_er7(name: str, fields: Fields, library: str) -> str:
    """Name and fields joined by ``|``: unset fields empty, trailing unset fields dropped.

    A field counts as set when its value is not empty, even if hl7apy writes it empty (a blank
    value): hl7apy keeps the separators up to it. MSH-1 is the separator itself and MSH-2 the
    default encoding characters, as hl7apy writes them.
    """
    last = max((number for number, value in fields.items() if value), default=0)
    first, head = (3, f"MSH|{_encoding(library).msh_2}") if name == "MSH" else (1, name)
    texts = (_field_er7(name, n, library, fields.get(n, "")) for n in range(first, last + 1))
    return "|".join((head, *texts))


def _field_er7(name: str, number: int, library: str, text: str) -> str:
    """``text`` as hl7apy writes it into field ``number`` of ``name`` (module doc).

    The template of the text's layout comes from hl7apy once (:func:`_field_template`); the
    leaves, escaped as hl7apy escapes them, fill it in.
    """
    if not text:
        return ""
    leaves = _LEAF.findall(text)
    template = _field_template(name, number, library, _LEAF.sub(_leaf_kind, text))
    return template.format(*(_hl7apy_escaped(leaf, library) for leaf in leaves))


def _leaf_kind(match: re.Match[str]) -> str:
    """``x`` for a value, a space for a blank one (hl7apy's test is ``str.strip``)."""
    return "x" if match.group(0).strip() else " "


@functools.lru_cache(maxsize=4096)
def _field_template(name: str, number: int, library: str, layout: str) -> str:
    """What hl7apy keeps of a field layout, as a :meth:`str.format` template of the leaves.

    hl7apy writes the layout with leaf ``i`` replaced by a marker: ``x<i>`` for a value, ``i + 1``
    spaces for a blank one. Each marker in what it writes becomes ``{i}``.
    """
    count = itertools.count()
    probe = _LEAF.sub(lambda m: _marker(next(count), m.group(0)), layout)
    return _LEAF.sub(_placeholder, _hl7apy_field(name, number, library, probe))


def _marker(index: int, kind: str) -> str:
    return f"x{index}" if kind == "x" else " " * (index + 1)


def _placeholder(match: re.Match[str]) -> str:
    marker = match.group(0)
    if not marker.strip():
        return f"{{{len(marker) - 1}}}"
    if marker[0] == "x" and marker[1:].isdigit():
        return f"{{{marker[1:]}}}"
    raise ValueError(f"hl7apy rewrote the leaf marker {marker!r}")


class _Encoding(NamedTuple):
    """hl7apy's encoding characters of one library and its ST type, which escapes leaves."""

    characters: dict[str, str]
    msh_2: str
    special: re.Pattern[str]
    """The characters hl7apy may rewrite in a leaf (the delimiters, not the segment CR)."""
    text_type: Any


@functools.lru_cache(maxsize=16)
def _encoding(library: str) -> _Encoding:
    """hl7apy's encoding of ``library``: MSH-2 ``^~\\&``, from v2.7 ``^~\\&#``."""
    characters = dict(hl7apy.get_default_encoding_chars(library))
    keys = ("COMPONENT", "REPETITION", "ESCAPE", "SUBCOMPONENT", "TRUNCATION")
    msh_2 = "".join(characters.get(key, "") for key in keys)
    special = re.compile(f"[{re.escape(characters['FIELD'] + msh_2)}]")
    text_type = hl7apy.load_library(library).get_base_datatypes()["ST"]
    return _Encoding(characters, msh_2, special, text_type)


def _hl7apy_escaped(leaf: str, library: str) -> str:
    """A leaf value as hl7apy's text types write it: delimiters escaped, escapes it knows kept."""
    encoding = _encoding(library)
    if not encoding.special.search(leaf):
        return leaf
    value = encoding.text_type(leaf, validation_level=VALIDATION_LEVEL.TOLERANT)
    text: str = value.to_er7(encoding.characters)
    return text


def _hl7apy_field(name: str, number: int, library: str, text: str) -> str:
    """What hl7apy writes for ``text`` assigned to field ``number`` of segment ``name``."""
    segment = Hl7apySegment(name, version=library, validation_level=VALIDATION_LEVEL.TOLERANT)
    assign(segment, name, {number: text})
    written: str = getattr(segment, f"{name.lower()}_{number}").to_er7()
    return written


def assign(segment: Any, name: str, fields: Fields) -> None:
    for number, value in fields.items():
        if value:
            setattr(segment, f"{name.lower()}_{number}", value)
