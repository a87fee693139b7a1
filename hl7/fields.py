"""Field text → unescaped tuples: split on the message's delimiters, with hl7apy checking
each field layout once.

The tuples come from the delimiters (repetition → component → sub-component); a
whitespace-only part is empty and trailing empty parts are dropped. hl7apy's ``parse_field``
(TOLERANT) builds the same tree for every field it can parse (checked by the tests on every
sample and a fuzz run), at ~0.1–0.3 ms per field (pitfalls.md), which is most of the cost of a
message. So hl7apy is spent where its structure model can say something and only once for
each: it parses the first field of each *layout* (the text with its values replaced by a
placeholder: ``DOE^JOHN`` and ``ROE^JANE`` share one) per field name and version, and a layout
it reads differently is logged. Lone values (no component, sub-component or repetition) and
Z-segments are not given to it. Parsed fields are memoised on their text as well.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

import hl7apy
from hl7apy.base_datatypes import TextualDataType
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_field

from hl7.escape import Delimiters, unescape_with

logger = logging.getLogger(__name__)

Reps = tuple[tuple[tuple[str, ...], ...], ...]

_CACHE_SIZE = 8192


def library_version(version: str) -> str | None:
    """hl7apy library for MSH-12 ("2.5.0" → "2.5", "2.7.1" → "2.7"); None if it has none."""
    supported = hl7apy.SUPPORTED_LIBRARIES
    candidates = (version, re.sub(r"(?:\.0)+$", "", version), ".".join(version.split(".")[:2]))
    return next((c for c in candidates if c in supported), None)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def parse(text: str, name: str, library: str | None, d: Delimiters, codec: str) -> Reps:
    """Escaped field text → unescaped tuples (see the module docstring for hl7apy's part)."""
    reps = _split_reps(text, d)
    if _structured(text, d) and library is not None and not name.startswith("Z"):
        check_layout(text, name, library, d)
    if d.escape not in text:
        return reps
    return tuple(
        tuple(tuple(unescape_with(s, d, codec) for s in comp) for comp in rep) for rep in reps
    )


def _structured(text: str, d: Delimiters) -> bool:
    """Whether the text has components, sub-components or repetitions for hl7apy to parse.

    A lone value (an ID, a date, a code) is one leaf: hl7apy would build a field, a component
    and a sub-component object around it and hand back the same text.
    """
    return d.component in text or d.subcomponent in text or d.repetition in text


_LAYOUTS: dict[tuple[str, str, str, Delimiters], bool] = {}
_MAX_LAYOUTS = 4096


def check_layout(text: str, name: str, library: str, d: Delimiters) -> bool:
    """hl7apy's verdict on the layout of ``text``, parsed once per layout and field.

    The layout is the text with every value replaced by a placeholder (``DOE^JOHN`` and
    ``ROE^JANE`` share ``x^x``). hl7apy parses the first field of each layout; a layout it
    cannot parse, or parses into another tree than the split, is logged once. A pure memo.
    """
    key = (layout(text, d), name, library, d)
    verdict = _LAYOUTS.get(key)
    if verdict is None:
        verdict = _hl7apy_agrees(text, name, library, d)
        if len(_LAYOUTS) < _MAX_LAYOUTS:
            _LAYOUTS[key] = verdict
    return verdict


def layout(text: str, d: Delimiters) -> str:
    """``text`` with each value replaced by ``x`` (blank ones by a space)."""
    return _value_runs(d).sub(lambda m: "x" if m.group(0).strip() else " ", text)


@functools.lru_cache(maxsize=16)
def _value_runs(d: Delimiters) -> re.Pattern[str]:
    separators = re.escape(d.component + d.repetition + d.subcomponent)
    return re.compile(f"[^{separators}]+")


def _hl7apy_agrees(text: str, name: str, library: str, d: Delimiters) -> bool:
    try:
        agrees = _hl7apy_reps(text, name, library, d) == _split_reps(text, d)
    except Exception as exc:  # hl7apy raises many types for what it cannot parse
        logger.debug("hl7apy could not parse %s (%s)", name, type(exc).__name__)
        return False
    if not agrees:
        logger.warning("hl7apy reads a %s layout differently from its delimiters", name)
    return agrees


def _split_reps(text: str, d: Delimiters) -> Reps:
    """Plain splitting (the fallback and the reference for the hl7apy path)."""
    return _trim(
        tuple(
            tuple(tuple(_blank(s) for s in c.split(d.subcomponent)) for c in r.split(d.component))
            for r in text.split(d.repetition)
        )
    )


def _hl7apy_reps(text: str, name: str, library: str, d: Delimiters) -> Reps:
    """Parse each repetition with hl7apy's ``parse_field`` and convert it to tuples."""
    encoding = {
        "FIELD": d.field,
        "COMPONENT": d.component,
        "REPETITION": d.repetition,
        "ESCAPE": d.escape,
        "SUBCOMPONENT": d.subcomponent,
    }
    reps = []
    for rep in text.split(d.repetition):
        element = parse_field(
            rep,
            name=name,
            version=library,
            encoding_chars=encoding,
            validation_level=VALIDATION_LEVEL.TOLERANT,
        )
        if element.name is None:
            raise LookupError(f"hl7apy does not know {name}")
        reps.append(_convert(element.children, rep.split(d.component), d))
    return _trim(tuple(reps))


def _convert(components: Any, texts: list[str], d: Delimiters) -> tuple[tuple[str, ...], ...]:
    """hl7apy components → tuples, placed by position (hl7apy drops blank named children)."""
    result: list[tuple[str, ...]] = [() for _ in texts]
    for slot, component in _aligned(components, texts):
        subs = texts[slot].split(d.subcomponent)
        values = ["" for _ in subs]
        for sub_slot, sub in _aligned(component.children, subs):
            values[sub_slot] = _leaf_text(sub.value, subs[sub_slot])
        result[slot] = tuple(_blank(v) for v in values)
    return tuple(result)


def _aligned(children: Any, texts: list[str]) -> list[tuple[int, Any]]:
    """Pair hl7apy children with the split slots they came from."""
    children = list(children)
    slots = list(range(len(texts)))
    if len(children) != len(texts):
        slots = [i for i, text in enumerate(texts) if text.strip()]
    if len(slots) != len(children):
        raise ValueError("hl7apy tree does not match the field text")
    return list(zip(slots, children, strict=True))


def _leaf_text(value: Any, sent: str) -> str:
    """hl7apy's text of a textual leaf; the sender's text for typed ones it rewrites."""
    if isinstance(value, TextualDataType) and isinstance(value.value, str):
        return value.value
    return sent


def _blank(text: str) -> str:
    return text if text.strip() else ""


def _trim(reps: Reps) -> Reps:
    """Drop trailing empty sub-components, components and repetitions."""
    return _rstrip(tuple(_rstrip(tuple(_rstrip(comp) for comp in rep)) for rep in reps))


def _rstrip(values: tuple[Any, ...]) -> tuple[Any, ...]:
    end = len(values)
    while end and not values[end - 1]:
        end -= 1
    return values[:end]
