"""Field text → unescaped tuples, parsed with hl7apy when it knows the field.

hl7apy's ``parse_field`` (TOLERANT) runs per repetition, memoised on (text, field name,
version, separators, codec): it costs ~0.1–0.2 ms per field (pitfalls.md) and real feeds repeat
values. Z-segments, names or versions hl7apy does not know and any hl7apy exception use plain
splitting, which gives the same tuples. Both paths treat a whitespace-only (sub-)component as
empty and drop trailing empty parts; typed leaves (DTM, NM, SI…) keep the sender's text.
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
    """Escaped field text → unescaped tuples; hl7apy first, plain splitting as fallback."""
    reps = None
    if text and library is not None and not name.startswith("Z"):
        try:
            reps = _hl7apy_reps(text, name, library, d)
        except Exception as exc:  # hl7apy raises many types; splitting gives the same shape
            logger.debug("hl7apy could not parse %s (%s); splitting", name, type(exc).__name__)
    if reps is None:
        reps = _split_reps(text, d)
    if d.escape not in text:
        return reps
    return tuple(
        tuple(tuple(unescape_with(s, d, codec) for s in comp) for comp in rep) for rep in reps
    )


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
