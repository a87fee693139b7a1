"""A worklist item → the identifier of one C-FIND Pending response (PS3.4 K.2.2.1.2, K.4.1.1.3).

Only the requested keys are answered (standards.md §3.2 "Return keys"): a requested attribute
the item does not store is present and zero length (Type 2, "Type handling" row; our intake
always stores the Type 1 keys); a sequence key asked with zero length or one empty item gets
every stored item whole, one asked with an item gets each stored item with only those item keys
— so the SPS Sequence carries its single item with the requested step attributes. Multi-valued
attributes come back whole (K.2.2.3: Scheduled Station AE Title ``CT1\\CT2``). Added without
being asked, as K.4.1.1.3.2 allows: Specific Character Set (0008,0005) when a text value is not
ASCII, and Timezone Offset From UTC (0008,0201) when the item stores one.

Character set (standards.md §3.3, §5): ``ISO_IR 192`` answers stored text as it is;
``ISO_IR 100`` transliterates what Latin-1 cannot encode (:mod:`mwl.transliterate`) and sends
only the alphabetic group of person names (ideographic and phonetic groups need ISO 2022).

The Dataset is built from the DICOM JSON values of the requested tags only (no
``Dataset.from_json`` of the whole item) and without pydicom's value validation: the values were
validated and fitted to their VR when the order was taken in (:mod:`mwl.dicomjson`).

:class:`IdentifierEncoder` gives the same identifier already encoded in a transfer syntax
(PS3.5 7.1, 7.5), which is what the SCP sends: building a pydicom Dataset and having pydicom
write it cost ~0.3 ms per response, most of the SCP's time per match (docs/benchmarks.md). It
writes the string, text, PN, UI and SQ elements a worklist is made of itself, from the JSON,
and hands every other element (numbers, AT, binary, ambiguous VRs) to pydicom's writer. Its
output is byte for byte what pydicom writes for :func:`item_to_identifier` (the tests compare
both in the three uncompressed transfer syntaxes): the same element order, value padding (space,
NUL for UI), character set, defined lengths for sequences and items, zero-length elements.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

from pydicom import Dataset, config
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName

from mwl.model import DicomJson, WorklistItem
from mwl.policy import AnswerCharset
from mwl.query import ReturnKey, ReturnKeys
from mwl.transliterate import to_latin1

_CHARSET_TAG = BaseTag(0x00080005)
_TIMEZONE_TAG = BaseTag(0x00080201)
_CHARSET_INT, _TIMEZONE_INT = int(_CHARSET_TAG), int(_TIMEZONE_TAG)
_TIMEZONE = "00080201"
_CHARSET_TEXT = frozenset({"SH", "LO", "ST", "LT", "UC", "UT"})
"""VRs whose values may use the Specific Character Set (PS3.5 6.1.2.3); PN apart."""
_STRINGS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR", *_CHARSET_TEXT})
_NUMBER_STRINGS = frozenset({"IS", "DS"})
_EMPTY_BINARY = dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), b"")
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_Elements = dict[BaseTag, DataElement | RawDataElement]
"""A Dataset's element mapping (``Dataset(mapping)`` takes it as is: no per-element checks)."""
_IGNORE = config.IGNORE


class _Text:
    """Text values for one answer in one character set; remembers whether any is not ASCII."""

    __slots__ = ("latin1", "non_ascii")

    def __init__(self, charset: AnswerCharset) -> None:
        self.latin1 = charset is AnswerCharset.LATIN1
        self.non_ascii = False

    def text(self, value: str | None) -> str:
        if not value:
            return ""
        if value.isascii():
            return value
        value = to_latin1(value) if self.latin1 else value
        self.non_ascii = self.non_ascii or not value.isascii()
        return value

    def person_name(self, value: dict[str, str] | None) -> str:
        """PS3.18 F.2.2 PN object → ``Alphabetic=Ideographic=Phonetic`` (PS3.5 6.2.1)."""
        if not value:
            return ""
        if self.latin1:
            return self.text(value.get("Alphabetic", ""))
        groups = "=".join(value.get(group, "") for group in _PN_GROUPS).rstrip("=")
        return self.text(groups)


def item_to_identifier(item: WorklistItem, keys: ReturnKeys, charset: AnswerCharset) -> Dataset:
    """The response identifier of one matching step (PS3.4 K.2.2.1.2, K.4.1.1.3.2)."""
    text = _Text(charset)
    elements = _requested(item.dataset, keys, text)
    timezone = item.dataset.get(_TIMEZONE)
    if timezone and timezone.get("Value"):
        elements[_TIMEZONE_TAG] = _element(_TIMEZONE_TAG, timezone, None, text)
    if text.non_ascii:
        elements[_CHARSET_TAG] = _converted(_CHARSET_TAG, "CS", charset.value)
    return Dataset(elements)


def _requested(data: DicomJson, keys: ReturnKeys, text: _Text) -> _Elements:
    """One level with exactly the requested keys; absent ones zero length (Type 2)."""
    elements: _Elements = {}
    for key in keys.keys:
        tag = BaseTag(key.tag)
        stored = data.get(key.json_tag)
        if stored is None:
            elements[tag] = _converted(tag, key.vr, _empty_value(key.vr))
        else:
            elements[tag] = _element(tag, stored, key.item, text)
    return elements


def _everything(data: DicomJson, text: _Text) -> _Elements:
    """A whole stored item (a sequence key asked with zero length or an empty item)."""
    elements: _Elements = {}
    for json_tag, stored in data.items():
        tag = BaseTag(int(json_tag, 16))
        elements[tag] = _element(tag, stored, None, text)
    return elements


def _element(
    tag: BaseTag, stored: dict[str, Any], item_keys: ReturnKeys | None, text: _Text
) -> DataElement:
    """A DataElement from one PS3.18 F.2 JSON attribute (``InlineBinary`` decoded, F.2.7;
    a ``BulkDataURI`` is not resolved: zero length)."""
    vr: str = stored["vr"]
    values = stored.get("Value")
    if vr == "SQ":
        items = [
            Dataset(
                _requested(entry, item_keys, text)
                if item_keys is not None
                else _everything(entry, text)
            )
            for entry in values or ()
        ]
        return _converted(tag, vr, Sequence(items))
    if values is None:
        binary = stored.get("InlineBinary")
        return _converted(tag, vr, base64.b64decode(binary) if binary else _empty_value(vr))
    return _converted(tag, vr, _value(vr, values, text))


def _value(vr: str, values: list[Any], text: _Text) -> Any:
    """The pydicom value of a JSON ``Value`` array: one value bare, several as a list, in the
    types pydicom's writer takes (PersonName for PN, str for strings, numbers as they are)."""
    converted: list[Any]
    if vr == "PN":
        converted = [
            PersonName(text.person_name(value), validation_mode=_IGNORE) for value in values
        ]
    elif vr in _CHARSET_TEXT:
        converted = [text.text(value) for value in values]
    elif vr in _STRINGS:
        converted = ["" if value is None else str(value) for value in values]
    elif vr == "AT":
        converted = [int(value, 16) for value in values]
    else:
        converted = ["" if value is None and vr in _NUMBER_STRINGS else value for value in values]
    return converted[0] if len(converted) == 1 else converted


def _converted(tag: BaseTag, vr: str, value: Any) -> DataElement:
    """A DataElement whose value is already in pydicom's type: no conversion, no validation
    (the values were fitted to their VR at intake, :mod:`mwl.dicomjson`)."""
    return DataElement(tag, vr, value, already_converted=True, validation_mode=_IGNORE)


def _empty_value(vr: str) -> Any:
    """A zero-length value pydicom writes as such."""
    if vr == "SQ":
        return Sequence()
    if vr in _STRINGS or vr in _NUMBER_STRINGS or vr == "PN":
        return ""
    return [] if vr == "AT" else _EMPTY_BINARY.get(vr)


# --- the identifier encoded directly (PS3.5 7.1 data elements, 7.5 nesting) -------------------

_VRS = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
     "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
     "UR", "US", "UT", "UV"}
)  # fmt: skip
"""The VRs of PS3.5 Table 6.2-1: a zero-length element of any of them is written here."""
_ITEM, _ITEM_HEADER = 0xFFFEE000, "item"
_Plan = tuple[tuple[int, str, str, Any], ...]
"""A level of the answer: ``(tag, JSON tag, VR when not stored, item plan)`` in tag order; the
item plan of a sequence key is None when it asks for every stored attribute of every item."""
_Header = tuple[bytes, Callable[[int], bytes]]


class IdentifierEncoder:
    """The response identifiers of one request, encoded in one transfer syntax.

    ``encode(item)`` is ``item_to_identifier(item, keys, charset)`` written as pydicom writes it
    in ``transfer_syntax`` (Implicit VR Little Endian, Explicit VR Little or Big Endian), built
    without a Dataset (module doc).

    Raises
    ------
    ValueError
        ``transfer_syntax`` is not one of the three uncompressed, undeflated ones.
    """

    __slots__ = (
        "_charset", "_codec", "_headers", "_implicit", "_little", "_plan", "_text_set",
        "_timezone_asked",
    )  # fmt: skip

    def __init__(self, keys: ReturnKeys, charset: AnswerCharset, transfer_syntax: UID) -> None:
        syntax = transfer_syntax
        if not syntax.is_transfer_syntax or syntax.is_encapsulated or syntax.is_deflated:
            raise ValueError(f"cannot encode identifiers in {syntax}")
        self._implicit = bool(syntax.is_implicit_VR)
        self._little = bool(syntax.is_little_endian)
        self._headers: dict[tuple[int, str], _Header] = {}
        self._charset = charset
        self._codec = convert_encodings([charset.value])[0]
        self._plan = _plan(keys)
        self._timezone_asked = any(tag == _TIMEZONE_INT for tag, *_ in self._plan)
        value = charset.value.encode("ascii")
        self._text_set = self._with_header(_CHARSET_INT, "CS", value + b" " * (len(value) % 2))

    def encode(self, item: WorklistItem) -> bytes:
        """One Pending response's identifier (PS3.4 K.2.2.1.2, K.4.1.1.3.2)."""
        text = _Text(self._charset)
        data = item.dataset
        parts = [(tag, self._stored(tag, data.get(json_tag), vr, sub, text))
                 for tag, json_tag, vr, sub in self._plan]  # fmt: skip
        timezone = data.get(_TIMEZONE)
        if timezone and timezone.get("Value") and not self._timezone_asked:
            parts.append((_TIMEZONE_INT, self._stored(_TIMEZONE_INT, timezone, "SH", None, text)))
            parts.sort(key=_first)
        if text.non_ascii:
            parts.insert(0, (_CHARSET_INT, self._text_set))
            parts.sort(key=_first)
        return b"".join(part for _, part in parts)

    def _stored(
        self, tag: int, stored: dict[str, Any] | None, vr: str, sub: Any, text: _Text
    ) -> bytes:
        """One element: as stored, or zero length in the requested VR when not stored."""
        values = binary = None
        if stored is not None:
            vr, values = stored["vr"], stored.get("Value")
            binary = stored.get("InlineBinary") if values is None else None
        value = self._value(vr, values, sub, text) if values else b""
        if value is None or binary or vr not in _VRS or self._too_long(vr, value):
            return self._pydicom(tag, stored, vr, text, sub)
        return self._with_header(tag, vr, value)

    def _value(self, vr: str, values: list[Any], sub: Any, text: _Text) -> bytes | None:
        """The value field, padded to even length; None: pydicom writes this VR."""
        if vr == "PN":
            names = [text.person_name(v) for v in values]
            return _padded((names[0] if len(names) == 1 else "\\".join(names)).encode(self._codec))
        if vr in _CHARSET_TEXT:
            texts = [text.text(v) for v in values]
            return _padded((texts[0] if len(texts) == 1 else "\\".join(texts)).encode(self._codec))
        if vr in _PLAIN_STRINGS:
            return _padded(_joined(values).encode("latin_1"))
        if vr == "UI":
            joined = _joined(values).encode("latin_1")
            return joined + b"\0" if len(joined) % 2 else joined
        if vr == "SQ":
            return b"".join([self._item(entry, sub, text) for entry in values])
        return None

    def _too_long(self, vr: str, value: bytes) -> bool:
        """Over the 2-byte length of explicit VR: pydicom writes it as UN (PS3.5 6.2.2)."""
        return len(value) > 0xFFFF and not self._implicit and vr not in _LONG

    def _item(self, entry: DicomJson, sub: Any, text: _Text) -> bytes:
        """One sequence item, its length defined (as pydicom writes it)."""
        if sub is None:
            stored = sorted((int(json_tag, 16), value) for json_tag, value in entry.items())
            content = b"".join([self._stored(tag, value, "", None, text) for tag, value in stored])
        else:
            content = b"".join([self._stored(tag, entry.get(json_tag), vr, item, text)
                                for tag, json_tag, vr, item in sub])  # fmt: skip
        return self._with_header(_ITEM, _ITEM_HEADER, content)

    def _with_header(self, tag: int, vr: str, value: bytes) -> bytes:
        try:
            prefix, length = self._headers[tag, vr]
        except KeyError:
            prefix, length = self._headers[tag, vr] = _header(self._implicit, self._little, tag, vr)
        return prefix + length(len(value)) + value

    def _pydicom(
        self, tag: int, stored: dict[str, Any] | None, vr: str, text: _Text, sub: Any = None
    ) -> bytes:
        """The element as pydicom writes :func:`item_to_identifier`'s DataElement for it."""
        base = BaseTag(tag)
        if stored is None:
            element = _converted(base, vr, _empty_value(vr))
        else:
            element = _element(base, stored, _return_keys(sub), text)
        out = DicomBytesIO()
        out.is_implicit_VR, out.is_little_endian = self._implicit, self._little
        write_data_element(out, element, [self._charset.value])
        return out.getvalue()


_PLAIN_STRINGS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UR"})
"""Written in the default repertoire whatever the character set (pydicom's ``write_string``)."""
_LONG = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
"""VRs with a 4-byte length in explicit VR (PS3.5 Table 7.1-1)."""


def _first(part: tuple[int, bytes]) -> int:
    return part[0]


def _joined(values: list[Any]) -> str:
    return "\\".join(["" if value is None else str(value) for value in values])


def _padded(value: bytes) -> bytes:
    return value + b" " if len(value) % 2 else value


def _plan(keys: ReturnKeys) -> _Plan:
    """``keys`` in tag order, each sequence key with its item plan (None: whole items)."""
    return tuple(
        (int(key.tag), key.json_tag, key.vr, None if key.item is None else _plan(key.item))
        for key in sorted(keys.keys, key=lambda key: key.tag)
    )


def _return_keys(sub: Any) -> ReturnKeys | None:
    """The ReturnKeys of an item plan, for pydicom's path (None: whole items)."""
    if sub is None:
        return None
    return ReturnKeys(tuple(ReturnKey(tag, vr, _return_keys(item)) for tag, _, vr, item in sub))


def _header(implicit: bool, little: bool, tag: int, vr: str) -> _Header:
    """The bytes before an element's length, and the length's packer (PS3.5 7.1.1–7.1.3)."""
    order = "<" if little else ">"
    prefix = struct.pack(order + "HH", tag >> 16, tag & 0xFFFF)
    if implicit or vr == _ITEM_HEADER:
        return prefix, struct.Struct(order + "L").pack
    if vr in _LONG:
        return prefix + vr.encode("ascii") + b"\0\0", struct.Struct(order + "L").pack
    return prefix + vr.encode("ascii"), struct.Struct(order + "H").pack
